"""scale_mode="compressed-tensors" against the INSTALLED compressed-tensors package's own MXFP8
quantizer (its group-32 qparams, then its MXFP8 compressor, as model_free_ptq calls them), and our
config.json entry
against its own config model. Optional dependency (extra `convert-test`): skipped if absent.

Found (and asserted below, so a change in either package shows up): bf16 and fp32 weights give
identical bytes everywhere except blocks with amax >= 1.75 * 2**127 (compressed-tensors rounds
amax up to a power of two in the input dtype, which overflows to Inf there). fp16 weights
differ on blocks with amax < 1.75 * 2**-15 (about 5.3e-5; all-zero blocks included): there
compressed-tensors' power-of-two rounding of the fp16-subnormal amax gives 0 (below
1.5 * 2**-15: scale 1.0, byte 127, the block's elements all zero) or 2**-14 (one scale step
above ours). mxquant keeps those blocks at full precision. And where
a zero-point tensor is present (compressed-tensors' default module initialisation), -0 and
negative elements that round to zero come out +0 (0x00) instead of -0 (0x80).
"""

import pytest
import torch

ct = pytest.importorskip("compressed_tensors", reason="compressed-tensors not installed (extra convert-test)")

import mxquant  # noqa: E402
from mxquant.checkpoint import fmt  # noqa: E402

from compressed_tensors.compressors.mxfp8.base import MXFP8QuantizationCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig, preset_name_to_scheme  # noqa: E402
from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp  # noqa: E402

SCHEME = preset_name_to_scheme("MXFP8", ["Linear"])


def ct_quantize(w, zero_point=False):
    """compressed-tensors' own path: group-32 scale from min/max, then its MXFP8 compressor.
    Without a zero-point tensor, as llm-compressor's model_free_ptq runs it (a module
    initialised with force_zero_point=False); `zero_point=True` as a module that carries one."""
    scale, zp = compute_dynamic_scales_and_zp(w, SCHEME.weights, module=None)
    state = {"weight": w, "weight_scale": scale, **({"weight_zero_point": zp} if zero_point else {})}
    out = MXFP8QuantizationCompressor.compress(state, SCHEME)
    return out["weight"].view(torch.uint8), out["weight_scale"].view(torch.uint8)


def ours(w):
    q = mxquant.mxfp8_quantize(w, scale_mode="compressed-tensors")
    return q.data.view(torch.uint8), q.scale.view(torch.uint8)


def realistic_weights(dtype, seed=0):
    """Weights like a checkpoint's: Gaussian at several scales, heavy tails (Student t),
    outlier columns, rows and blocks of zeros, tiny-magnitude rows, the 1.75 * 2**k tie."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for std in (1e-3, 0.02, 0.5, 30.0):
        out.append(torch.randn(64, 512, generator=g) * std)
    t = torch.distributions.StudentT(2.0).sample((64, 512)) * 0.01
    out.append(t)
    w = torch.randn(64, 512, generator=g) * 0.02
    w[:, 7] *= 200  # outlier channel
    w[3] = 0
    w[5, 64:96] = 0
    w[9] *= 1e-3
    w[11, :32] = 0.4375  # 1.75 * 2**-2: the tie where this mode differs from rceil
    out.append(w)
    return torch.cat(out).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_identical_to_compressed_tensors_on_weights(dtype):
    w = realistic_weights(dtype)
    (cd, cs), (od, os_) = ct_quantize(w), ours(w)
    assert torch.equal(cs, os_)
    assert torch.equal(cd, od)
    rc = mxquant.mxfp8_quantize(w, scale_mode="rceil").scale.view(torch.uint8)
    assert not torch.equal(rc, cs)  # the tie row: the inputs do exercise the mode's difference


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_identical_on_adversarial_finite_blocks_below_overflow(dtype):
    from mxquant.conformance.cases import adversarial_batch

    x = adversarial_batch(dtype).float()
    blocks = x.reshape(x.shape[0], -1, 32)
    amax = blocks.abs().amax(-1)
    # finite rows, and every block below 1.75 * 2**127 (where compressed-tensors' rounding overflows)
    keep = torch.isfinite(amax).all(-1) & (amax < 1.75 * 2.0**127).all(-1)
    w = x[keep].to(dtype)
    assert w.shape[0] > 50
    (cd, cs), (od, os_) = ct_quantize(w), ours(w)
    assert torch.equal(cs, os_) and torch.equal(cd, od)


def test_with_a_zero_point_tensor_only_the_sign_of_zero_differs():
    """x / scale + 0 turns an exact -0 quotient into +0 (0x00 instead of 0x80); a negative
    quotient that only rounds to zero in the fp8 cast keeps its sign in both."""
    w = realistic_weights(torch.bfloat16)
    w[0, :4] = -0.0
    w[1, 0], w[1, 1] = 4.0, -1e-6
    (cd, cs), (od, os_) = ct_quantize(w, zero_point=True), ours(w)
    assert torch.equal(cs, os_)
    differ = cd != od
    assert differ[0, :4].all() and not differ[1, 1] and od[1, 1] == 0x80
    assert (od[differ] == 0x80).all() and (cd[differ] == 0x00).all()
    assert ((w.view(torch.int16) == -32768) == differ).all()  # exactly the -0 inputs


def test_fp16_differs_exactly_below_its_subnormal_amax_rounding():
    """Every fp16 block amax from 0 to 2**-12 (all bit patterns): compressed-tensors rounds an
    fp16-subnormal amax to a power of two by adding to its bits, which gives 0 below
    1.5 * 2**-15 (then its scale becomes 1.0, byte 127, and the block's elements 0) and 2**-14
    from there (one scale step above ours below 1.75 * 2**-15). Identical from that amax up."""
    vals = torch.arange(0, 0x0C00, dtype=torch.int16).view(torch.float16)
    w = torch.zeros(len(vals), 32, dtype=torch.float16)
    w[:, 0], w[:, 1] = vals, -vals / 3
    (cd, cs), (od, os_) = ct_quantize(w), ours(w)
    differ = (cs[:, 0] != os_[:, 0]) | (cd != od).any(1)
    small = vals.float() < 1.75 * 2.0**-15
    assert torch.equal(differ, small)
    a = vals.float()
    zeroed = a < 1.5 * 2.0**-15  # its rounding gives 0: scale 1.0, all elements zero
    assert (cs[zeroed, 0] == 127).all() and (cd[zeroed] & 0x7F == 0).all()
    up = small & ~zeroed  # its rounding gives 2**-14 (threshold 1.5, not 1.75): one scale step up
    assert (cs[up, 0] == 105).all() and (os_[up, 0] == 104).all()
    w = realistic_weights(torch.float16)  # and normal fp16 weights: identical
    (cd, cs), (od, os_) = ct_quantize(w), ours(w)
    amax = w.float().reshape(w.shape[0], -1, 32).abs().amax(-1)
    ok = amax >= 1.75 * 2.0**-15
    assert torch.equal(cs[ok], os_[ok])
    assert torch.equal(cd.reshape(*ok.shape, 32)[ok], od.reshape(*ok.shape, 32)[ok])


def _drop_none(x):
    if isinstance(x, dict):
        return {k: _drop_none(v) for k, v in x.items() if v is not None and v != {} and v != []}
    if isinstance(x, list):
        return [_drop_none(v) for v in x]
    return x


def test_config_is_what_compressed_tensors_writes():
    ignore = ["lm_head", "re:.*mlp\\.gate$"]
    ours_cfg = fmt.quantization_config(ignore)
    body = {k: v for k, v in ours_cfg.items() if k not in ("version", "quant_method", "sparsity_config",
                                                            "transform_config")}
    parsed = QuantizationConfig.model_validate(body)
    assert parsed.format == "mxfp8-quantized" and parsed.quantization_status == "compressed"
    group = parsed.config_groups["group_0"]
    for got, want in ((group.weights, SCHEME.weights), (group.input_activations, SCHEME.input_activations)):
        # zp_dtype is not written (symmetric: no zero point is stored); all else is the preset's
        assert got.model_copy(update={"zp_dtype": None}) == want.model_copy(update={"zp_dtype": None})
    # compressed-tensors' writer (ModelCompressor.update_config dumps the model like this)
    theirs = parsed.model_dump(exclude=["quant_method"])
    assert _drop_none(theirs) == _drop_none(body)
    assert str(theirs["config_groups"]["group_0"]["weights"]["scale_dtype"]) == "torch.uint8"
