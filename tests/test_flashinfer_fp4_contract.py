"""CPU contract tests of the `flashinfer` backend's FP4 call (backends/_flashinfer_fp4.py).

No GPU and no FlashInfer here: an injected fake `flashinfer` module (tests/flashinfer_fake.py)
stands in. Its `fp4_quantize` records its calls, behaves as flashinfer 0.7.2's Python wrapper
does (column-major inputs transposed, scales reshaped per layout) and computes its bytes with a
PyTorch model of the kernel's arithmetic (`cvt_warp_fp16_to_fp4`, UE8M0 branch), written from
the kernel source and independent of mxquant's reference. These tests check the wrapper's calls
and argument mapping, the layouts against the NumPy oracle (tests/fp4_oracle.py), that each
declared deviation covers exactly the blocks where the modelled kernel differs from the contract,
and that the registry routes an FP4 call to flashinfer only on SM100+ with its deviations allowed
and never routes NVFP4 there.
"""

from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch

import mxquant
import mxquant.cli
from mxquant import reference_fp4
from mxquant.backend import Call
from mxquant.conformance.deviation_rules import DEVIATION_RULES
from mxquant.conformance.fp4_inputs import fp4_inputs
from mxquant.formats import E2M1 as E2M1_FORMAT
from mxquant.errors import BackendIncapableError, BackendUnavailableError, NoBackendError
from mxquant.layouts import round_up, swizzle, unswizzle
from mxquant.selection import ENV_ALLOW

import fp4_oracle  # tests/ on sys.path
from flashinfer_fake import (RN_RCP6, ULP_UP_RCP6, FakeFlashInfer, flashinfer_128x4, mxfp4_kernel_model,
                             nvfp4_kernel_model)
from test_flashinfer_contract import _lookup_as_cuda, capability, fake, fib, resolved  # noqa: F401 (fixtures)

BF16, F16, U8 = torch.bfloat16, torch.float16, torch.uint8
E2M1 = torch.float4_e2m1fn_x2
CUDA0 = torch.device("cuda", 0)
CODES = ["nan-ignored", "inf-saturates", "tiny-flush", "approx-scale"]


def sample(shape, dtype=BF16, seed=0):
    """Finite, normal values over many binades (fewer for fp16, whose range is narrow)."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    spread = 20 if dtype == BF16 else 8
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-spread, spread + 1, (n,), generator=g).float())
    return x.reshape(shape).to(dtype)


def as_u8(t):
    return t.contiguous().view(U8)


# ---- declaration ----------------------------------------------------------------------------

def test_fp4_contract_declaration():
    b = fib().backend
    assert b.capabilities.ops == {"mxfp4_quantize"}  # NVFP4 and both dequantizes: not claimed
    assert b.mxfp4_quantize is not None and b.nvfp4_quantize is None
    assert b.mxfp4_dequantize is None and b.nvfp4_dequantize is None
    assert b.capabilities.scale_modes == {"rceil"} and b.capabilities.input_dtypes == {BF16, F16}
    assert [d.code for d in b.deviations] == CODES  # the MXFP8 codes, no new ones


def test_fp4_contract_probe_needs_fp4_quantize(capability, monkeypatch):
    capability((10, 0))
    old = types.ModuleType("flashinfer")
    old.__version__, old.mxfp8_quantize = "0.7.0", lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "flashinfer", old)
    assert fib().probe(CUDA0) == "flashinfer 0.7.0 has no fp4_quantize (needs flashinfer-python >= 0.7.2)"


# ---- translation (backend.mxfp4_quantize on CPU tensors, through the fake) ------------------------

@pytest.mark.parametrize("layout", ["linear", "swizzled"])
@pytest.mark.parametrize("shape", [(1, 32), (4, 64), (130, 96), (3, 5, 64), (2, 129, 32), (96,), (1, 288)])
@pytest.mark.parametrize("dtype", [BF16, F16])
def test_fp4_contract_translation_byte_for_byte(fake, shape, dtype, layout):
    """Finite normal data, where the modelled kernel follows the contract: the wrapper's bytes
    and shapes are the NumPy oracle's, and FlashInfer got the arguments of its MXFP4 recipe."""
    x = sample(shape, dtype)
    data, scale = fib().backend.mxfp4_quantize(x, "rceil", layout)
    want_data, want_scale = fp4_oracle.mxfp4_quantize(x, "rceil", layout)
    rows, nb = math.prod(shape[:-1]), shape[-1] // 32
    assert data.dtype == U8 and tuple(data.shape) == (*shape[:-1], shape[-1] // 2) and data.is_contiguous()
    assert scale.dtype == torch.float8_e8m0fnu and scale.is_contiguous()
    assert tuple(scale.shape) == ((*shape[:-1], nb) if layout == "linear" else (round_up(rows, 128), round_up(nb, 4)))
    assert torch.equal(data, want_data)
    assert torch.equal(as_u8(scale).reshape(want_scale.shape), want_scale)
    (call,) = fake.calls
    assert call["fn"] == "fp4_quantize" and call["shape"] == (rows, shape[-1]) and call["contiguous"]
    assert not call["column_major"] and call["global_scale"] is None
    assert call["sf_vec_size"] == 32 and call["sf_use_ue8m0"] is True and call["backend"] == "cuda"
    assert call["is_sf_swizzled_layout"] is (layout == "swizzled") and call["is_sf_8x4_layout"] is False
    assert call["is_global_scale_inversed"] is False


@pytest.mark.parametrize("cols", [1, 3, 4, 7, 9])
def test_fp4_contract_swizzle_layouts_agree(cols):
    """FlashInfer's 128x4 offsets (its get_sf_out_offset_128x4, the same for sf_vec_size 32)
    are the contract's swizzled layout for K/32 scale columns, padding included."""
    lin = torch.randint(1, 255, (200, cols), dtype=U8)
    assert torch.equal(flashinfer_128x4(lin, cols * 32), torch.from_numpy(fp4_oracle.swizzle(lin).numpy()).reshape(-1))


@pytest.mark.parametrize("layout", ["linear", "swizzled"])
def test_fp4_contract_strided_and_size_one_rows(fake, layout):
    """Transposed, row-sliced and (1, K) inputs whose stride(-2) is 1 (FlashInfer would take the
    last for column-major and transpose it) all reach FlashInfer as row-major (M, K)."""
    one_row = torch.randn(64, 1).t().to(BF16)  # (1, 64), strides (1, 1): contiguous, stride(-2) == 1
    assert one_row.is_contiguous() and one_row.stride(-2) == 1
    inputs = [sample((64, 3, 96)).transpose(0, 1), sample((40, 192))[:, :128], one_row, one_row.unsqueeze(0)]
    for x in inputs:
        data, scale = fib().backend.mxfp4_quantize(x, "rceil", layout)
        want_data, want_scale = fp4_oracle.mxfp4_quantize(x, "rceil", layout)
        assert torch.equal(data, want_data) and torch.equal(as_u8(scale).reshape(want_scale.shape), want_scale)
    assert len(fake.calls) == len(inputs)
    assert all(c["contiguous"] and not c["column_major"] for c in fake.calls)


@pytest.mark.parametrize("layout", ["linear", "swizzled"])
@pytest.mark.parametrize("shape", [(0, 64), (4, 0), (2, 0, 32), (0,)])
def test_fp4_contract_empty_inputs_skip_the_kernel(fake, shape, layout):
    x = torch.zeros(shape, dtype=BF16)
    data, scale = fib().backend.mxfp4_quantize(x, "rceil", layout)
    want_data, want_scale = reference_fp4.mxfp4_quantize(x, "rceil", layout)
    assert data.shape == want_data.shape and data.dtype == U8
    assert scale.shape == want_scale.shape and torch.equal(as_u8(scale), as_u8(want_scale))
    assert fake.calls == []


def test_fp4_contract_unexpected_output_shape_is_an_error(monkeypatch, fake):
    def padded(input, *args, **kw):
        data, scale = FakeFlashInfer.fp4_quantize(fake, input, *args, **kw)
        return torch.cat([data, data[:, :16]], dim=1), scale

    monkeypatch.setattr(fake, "fp4_quantize", padded)
    with pytest.raises(RuntimeError, match="flashinfer.fp4_quantize returned"):
        fib().backend.mxfp4_quantize(sample((4, 64)), "rceil", "linear")


# ---- the declared deviations against the model of the kernel's arithmetic ------------------------



RULES = {code: (lambda b, code=code: DEVIATION_RULES[code][1](b, E2M1_FORMAT)) for code in CODES}


@pytest.mark.parametrize("rcp6", [RN_RCP6, ULP_UP_RCP6], ids=["rcp-exact", "rcp-one-ulp-up"])
@pytest.mark.parametrize("dtype", [BF16, F16])
@pytest.mark.parametrize("layout", ["linear", "swizzled"])
def test_fp4_contract_modelled_kernel_differs_only_as_declared(fake, dtype, rcp6, layout):
    """Over the conformance kit's FP4 inputs (named special blocks, the adversarial batch, random
    shapes): every block where the wrapper's bytes (the kernel model) differ from the contract is
    covered by a declared code's rule, in the order verify attributes them; every NaN / Inf block
    differs; and each code is needed (tiny-flush only for bf16, approx-scale only when
    rcp.approx(6) is above 1/6)."""
    fake.rcp6 = rcp6
    attributed = dict.fromkeys(CODES, 0)
    for case, x in fp4_inputs(dtype, 0):
        if x.numel() == 0:
            continue
        data, scale = fib().backend.mxfp4_quantize(x, "rceil", layout)
        want_data, want_scale = reference_fp4.mxfp4_quantize(x, "rceil", layout)
        rows, nb = math.prod(x.shape[:-1]), x.shape[-1] // 32
        got_s, want_s = as_u8(scale), as_u8(want_scale)
        if layout == "swizzled":
            padding = swizzle(torch.ones(rows, nb, dtype=U8)) == 0
            assert torch.equal(got_s[padding], want_s[padding]) and not want_s[padding].any(), case
            got_s, want_s = (unswizzle(t.reshape(-1), rows, nb) for t in (got_s, want_s))
        diff = (data.reshape(-1, 16) != want_data.reshape(-1, 16)).any(-1) | (got_s.reshape(-1) != want_s.reshape(-1))
        blocks = x.contiguous().float().reshape(-1, 32)
        explained = torch.zeros_like(diff)
        for code in CODES:
            hit = RULES[code](blocks) & diff & ~explained
            attributed[code] += int(hit.sum())
            explained |= hit
        assert not (diff & ~explained).any(), f"{case}: blocks {(diff & ~explained).nonzero().flatten().tolist()[:8]} unexplained"
        special = ~blocks.isfinite().all(-1)
        assert diff[special].all(), case  # the NaN / Inf rules are tight: every such block differs
    needed = {c for c, n in attributed.items() if n}
    expected = {"nan-ignored", "inf-saturates"} | ({"tiny-flush"} if dtype == BF16 else set())
    expected |= {"approx-scale"} if rcp6 != RN_RCP6 else set()
    assert needed == expected, attributed


def test_fp4_contract_model_on_named_blocks():
    """The modelled kernel's bytes on the blocks the docs quote (bf16, rcp.approx(6) = RN(1/6))."""
    from mxquant.conformance.fp4_inputs import fp4_special_blocks

    named = fp4_special_blocks()
    data, scale = mxfp4_kernel_model(torch.stack([named[n] for n in ("one_nan", "pos_inf", "all_nan")]).to(BF16), RN_RCP6)
    assert scale.flatten().tolist() == [0x7E, 0xFE, 0xFF]  # amax 2 (the NaN ignored) -> 2**-1; Inf -> 2**127
    assert data[0, :2].tolist() == [0x44, 0x74]  # ones * 2 -> 2.0 (nibble 4); -NaN -> +6 (0x7)
    assert data[1, :2].tolist() == [0x07, 0x00]  # +Inf * 0 = NaN -> 0x7, ones * 0 -> +0
    assert set(data[2].tolist()) == {0x77}


# ---- NVFP4: not claimed, and why ------------------------------------------------------------------

@pytest.mark.parametrize("dtype,at_least", [(BF16, 0.01), (F16, 0.0002)])
def test_fp4_contract_nvfp4_kernel_differs_on_ordinary_data(dtype, at_least):
    """Why NVFP4 is not claimed: the modelled kernel (even with exact reciprocals) rounds the
    group scale from g * amax / 6 in fp32, the contract from g * RN_dtype(amax / 6), so ordinary
    N(0, 1) data already differs in a share of its groups (docs/backends.md gives the figures)."""
    x = torch.randn(512, 1024, generator=torch.Generator().manual_seed(1)).to(dtype)
    want_data, want_scale, g = reference_fp4.nvfp4_quantize(x, None, "compressed-tensors", "linear")
    data, scale = nvfp4_kernel_model(x, float(g), RN_RCP6)
    differs = (scale != as_u8(want_scale)).reshape(-1) | (data.reshape(-1, 8) != want_data.reshape(-1, 8)).any(-1)
    assert differs.float().mean() >= at_least


# ---- through the registry ------------------------------------------------------------------------

def fp4_call(op="mxfp4_quantize", hp=BF16, mode="rceil", layout="linear"):
    return Call(op, CUDA0, hp, E2M1, mode, layout)


EVERY_CODE = frozenset(f"flashinfer:{c}" for c in CODES)


@pytest.mark.parametrize("cap", [(9, 0), (10, 0), (12, 0)])
def test_fp4_contract_routing(registry, capability, fake, cap):
    capability(cap)
    blackwell = cap >= (10, 0)
    for layout in ("linear", "swizzled"):
        for hp in (BF16, F16):
            call = fp4_call(hp=hp, layout=layout)
            assert resolved(registry, call) != "flashinfer"  # deviations not allowed
            assert resolved(registry, call, frozenset({"flashinfer:nan-ignored"})) != "flashinfer"
            for allowed in (frozenset({"flashinfer"}), EVERY_CODE, frozenset({"*"})):
                assert (resolved(registry, call, allowed) == "flashinfer") is blackwell
    for allowed in (frozenset(), frozenset({"*"})):  # outside its claim: never flashinfer
        assert resolved(registry, fp4_call(hp=torch.float32), allowed) != "flashinfer"
        for mode in ("floor", "compressed-tensors"):
            assert resolved(registry, fp4_call(mode=mode), allowed) != "flashinfer"
        for op, mode in (("nvfp4_quantize", "compressed-tensors"), ("mxfp4_dequantize", None),
                         ("nvfp4_dequantize", None)):
            assert resolved(registry, fp4_call(op, mode=mode), allowed) != "flashinfer"
    assert fake.calls == []


def test_fp4_contract_forced_on_hopper_is_a_strict_error(registry, capability, fake, monkeypatch):
    capability((9, 0))
    monkeypatch.setattr(registry, "lookup", _lookup_as_cuda(registry))
    with pytest.raises(BackendUnavailableError, match="compiled out below SM100"):
        mxquant.mxfp4_quantize(sample((3, 5, 64)), backend="flashinfer")
    assert fake.calls == []


def test_fp4_contract_forced_on_blackwell(registry, capability, fake, monkeypatch):
    """The public call forced onto flashinfer runs through the fake and returns the oracle's bytes
    (public swizzled scales are flat); NVFP4 forced onto it is incapable, not a fallback."""
    capability((10, 0))
    monkeypatch.setattr(registry, "lookup", _lookup_as_cuda(registry))
    x = sample((3, 5, 64))
    data, scale = mxquant.mxfp4_quantize(x, backend="flashinfer", scale_layout="swizzled")
    want_data, want_scale = fp4_oracle.mxfp4_quantize(x, "rceil", "swizzled")
    assert torch.equal(data, want_data) and torch.equal(as_u8(scale), want_scale) and len(fake.calls) == 1
    with pytest.raises(BackendIncapableError, match="does not claim nvfp4_quantize"):
        mxquant.nvfp4_quantize(x, backend="flashinfer")
    assert len(fake.calls) == 1


def test_fp4_contract_env_opt_in(registry, capability, fake, monkeypatch):
    capability((10, 0))
    monkeypatch.setenv(ENV_ALLOW, "flashinfer")
    fn = registry.lookup("mxfp4_quantize", CUDA0, BF16, E2M1, "rceil", "linear", None)
    assert fn is fib().backend.mxfp4_quantize


def test_fp4_contract_info_lists_the_call(registry, capsys):
    assert mxquant.cli.main(["info", "--json"]) == 0
    (entry,) = [b for b in json.loads(capsys.readouterr().out)["backends"] if b["name"] == "flashinfer"]
    assert entry["capabilities"]["ops"] == ["mxfp4_quantize"]
    assert [d["code"] for d in entry["deviations"]] == CODES
    assert mxquant.cli.main(["info", "--full"]) == 0
    assert "MXFP8 and MXFP4 kernels" in capsys.readouterr().out


@pytest.mark.parametrize("rcp6", [RN_RCP6, ULP_UP_RCP6], ids=["rcp-exact", "rcp-one-ulp-up"])
@pytest.mark.parametrize("dtype", [BF16, F16])
def test_fp4_contract_verify_attributes_the_declared_deviations(fake, dtype, rcp6):
    """`mxquant verify`'s FP4 check (verify_fp4.check_fp4) on the fake serving the kernel model:
    status deviation, every differing block attributed to a declared code (none unexplained), the
    codes needed as above. Before verify read deviations for mxfp4_quantize, these rows failed."""
    from mxquant.conformance.verify_fp4 import check_fp4

    fake.rcp6 = rcp6
    for layout in ("linear", "swizzled"):
        r = check_fp4(fib().backend, torch.device("cpu"), "mxfp4_quantize", dtype, "rceil", layout, 0)
        assert r.status == "deviation" and r.unexplained_blocks == 0 and r.unattributed_blocks == 0, r.reason
        expected = {"nan-ignored", "inf-saturates"} | ({"tiny-flush"} if dtype == BF16 else set())
        expected |= {"approx-scale"} if rcp6 != RN_RCP6 else set()
        assert set(r.deviations) == expected, r.deviations
