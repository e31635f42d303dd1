"""mxfp8_quantize_grouped(..., axis=-2), K-groups for the MoE weight gradient (docs/semantics.md,
"Grouped scales for MoE"): data byte for byte the NumPy oracle's column-wise data (NumPy's own
transpose) and the column-wise call's; the scale byte for byte what torchao's K-groups rearrange
(`torch_to_blocked_2d_K_groups`, pure PyTorch, flattened) makes of the oracle's linear
column-wise scales with group_ends // 32. Every backend claiming the call on CPU (the reference
and, where built, cpu-native on each instruction-set variant), every input / element dtype and
scale mode; adversarial blocks down the token dimension, ragged / empty groups, odd N, no
tokens, no columns; errors; fakes (the scale size never depends on the offsets' values);
opcheck and torch.compile; routing (a backend claiming only quantize_grouped never serves it)."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant.backend import TRAINING_OPS
from mxquant.conformance.training_inputs import kgroup_inputs
from mxquant.errors import BackendIncapableError

import mx_oracle as oracle
from cpu_auto import loaded_backend
from inline_plugin import Plugin
from native_isa import NATIVE_VARIANTS, native_isa
from training_helpers import GRID, assert_bytes, ids

ao_quant = pytest.importorskip("torchao.prototype.moe_training.kernels.mxfp8.quant",
                               reason="torchao (pip install torchao; the test extra lists it)")


def torchao_kgroups(linear: torch.Tensor, group_ends: torch.Tensor) -> torch.Tensor:
    """torchao's K-groups layout (flat) of linear column-wise scale bytes (N, T/32)."""
    n, c = linear.shape
    if n == 0:  # torchao's reference cannot take zero rows; no rows: no bytes (round_up(0, 128) = 0)
        return torch.empty(0, dtype=torch.uint8)
    blocked, _ = ao_quant.torch_to_blocked_2d_K_groups(linear, group_ends // 32)
    return blocked.reshape(-1)


def check(x, ends, dtype, mode, backend, name):
    got = mxquant.mxfp8_quantize_grouped(x, ends, dtype, scale_mode=mode, backend=backend, axis=-2)
    want_data, linear = oracle.quantize_colwise(x, dtype, mode, "linear")
    assert_bytes(got.data, want_data, f"{name}: data vs the oracle")
    assert got.data.dtype == dtype and got.scale.dtype == torch.float8_e8m0fnu
    assert_bytes(got.scale, torchao_kgroups(linear, ends), f"{name}: scale vs torchao's K-groups layout")
    return got


@pytest.fixture(params=["cpu", *NATIVE_VARIANTS])
def backend(request):
    """The reference, and cpu-native forced to each instruction-set variant."""
    name, _, isa = request.param.partition("@")
    be = loaded_backend(name)
    if "quantize_grouped_colwise" not in be.capabilities.ops:
        pytest.skip(f"{name} does not claim quantize_grouped_colwise")
    with native_isa(isa or None):
        yield name


@pytest.mark.parametrize("hp, dtype, mode", GRID, ids=[ids(c) for c in GRID])
def test_kgroups_against_torchao_and_the_oracle(backend, hp, dtype, mode):
    for name, x, ends in kgroup_inputs(hp, 0):
        check(x, ends, dtype, mode, backend, name)


def test_data_is_the_colwise_call_and_auto_choice(backend):
    for name, x, ends in kgroup_inputs(torch.bfloat16, 1):
        got = mxquant.mxfp8_quantize_grouped(x, ends, torch.float8_e5m2, scale_mode="floor", backend=backend, axis=-2)
        col = mxquant.mxfp8_quantize(x, torch.float8_e5m2, scale_mode="floor", axis=-2)
        assert_bytes(got.data, col.data, f"{name}: data vs mxfp8_quantize(axis=-2)")
        auto = mxquant.mxfp8_quantize_grouped(x, ends, torch.float8_e5m2, scale_mode="floor", axis=0)  # dim 0 of (T, N)
        assert_bytes(auto.scale, got.scale.view(torch.uint8), f"{name}: automatic choice")


def test_many_groups_and_threads(backend):
    """(2048, 1000) in 45 ragged groups (runs of empty ones), big enough for two threads."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(1000, 2048, generator=g) * torch.exp2(torch.randint(-60, 60, (1000, 64, 1), generator=g)
                                                           .float()).repeat_interleave(32, 1).reshape(1000, 2048))
    x = x.mT.contiguous().to(torch.bfloat16)
    x[5, 7], x[900, 3], x[33, 999] = float("nan"), float("inf"), -float("inf")
    ends = (torch.randint(0, 65, (45,), generator=g).sort().values * 32).to(torch.int32)
    ends[10:14] = ends[9]
    ends[-1] = 2048
    for mode in ("rceil", "compressed-tensors"):
        check(x, ends, torch.float8_e4m3fn, mode, backend, f"45 groups, {mode}")


def _ends(*v, dtype=torch.int32):
    return torch.tensor(v, dtype=dtype)


X = torch.zeros(128, 40)
CALL = "mxfp8_quantize_grouped\\(axis=-2\\)"
ERRORS = [
    (X, _ends(64, 128, dtype=torch.int64), TypeError, rf"{CALL}: group_ends has dtype int64; it must be int32"),
    (X, [64, 128], TypeError, rf"{CALL}: group_ends must be a torch\.Tensor"),
    (X, _ends(64, 128).reshape(1, 2), ValueError, r"group_ends must be 1-D .*got shape \(1, 2\)"),
    (X, _ends(), ValueError, r"group_ends must be 1-D with one end per group \(at least one\)"),
    (X, None, ValueError, rf"{CALL}: group_ends \(int32 cumulative ends over T = x\.shape\[0\].*is required"),
    (torch.zeros(2, 128, 40), _ends(1, 2), ValueError, rf"{CALL}: x must be 2-D token-sorted \(T, N\)"),
    (torch.zeros(100, 40), _ends(100), ValueError, rf"{CALL}: x\.shape\[0\] = 100 \(T\) must be a multiple of 32"),
    (X, _ends(-32, 128), ValueError, rf"{CALL}: group_ends\[0\] = -32 is negative"),
    (X, _ends(40, 128), ValueError, rf"{CALL}: group_ends\[0\] = 40 is not a multiple of 32: column-wise blocks"),
    (X, _ends(32, 32, 127), ValueError, r"group_ends\[2\] = 127 is not a multiple of 32"),
    (X, _ends(64, 32, 128), ValueError, rf"{CALL}: group_ends must be non-decreasing, but group_ends\[1\] = 32 < group_ends\[0\] = 64"),
    (X, _ends(32, 96), ValueError, rf"{CALL}: group_ends\[-1\] = 96 must equal the number of rows T = x\.shape\[0\] = 128"),
    (X, _ends(32, 160), ValueError, r"group_ends\[-1\] = 160 must equal"),
    (X.to(torch.int32), _ends(128), TypeError, r"^mxfp8_quantize_grouped\(axis=-2\): x has dtype int32; accepted: float32, bfloat16, float16$"),
]


@pytest.mark.parametrize("x, ends, exc, match", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors(x, ends, exc, match):
    with pytest.raises(exc, match=match):
        mxquant.mxfp8_quantize_grouped(x, ends, axis=-2)
    if isinstance(ends, torch.Tensor) or ends is None:
        with pytest.raises(exc, match=match):
            torch.ops.mxquant.quantize_grouped_colwise(x, ends, torch.float8_e4m3fn, "rceil", None)


def test_bad_axis():
    with pytest.raises(ValueError, match=r"axis=0 is not supported for x of 3 dimensions"):
        mxquant.mxfp8_quantize_grouped(torch.zeros(2, 64, 32), None, axis=0)


def test_fake_shapes_do_not_read_the_offsets():
    with FakeTensorMode() as fake:
        x = fake.from_tensor(torch.empty(544, 130, dtype=torch.bfloat16))
        ends = fake.from_tensor(_ends(160, 160, 288, 544, 544))
        data, scale = mxquant.mxfp8_quantize_grouped(x, ends, torch.float8_e5m2, axis=-2)
    assert data.shape == (130, 544) and data.dtype == torch.float8_e5m2
    assert scale.shape == (256 * (17 + 4 * 5),) and scale.dtype == torch.float8_e8m0fnu
    real = kgroup_inputs(torch.bfloat16, 0)[3]  # random (544, 130), 5 groups
    assert mxquant.mxfp8_quantize_grouped(real[1], real[2], axis=-2).scale.shape == scale.shape


def test_opcheck_and_compile():
    _, x, ends = kgroup_inputs(torch.float32, 0)[3]
    torch.library.opcheck(torch.ops.mxquant.quantize_grouped_colwise.default,
                          (x, ends, torch.float8_e4m3fn, "rceil", None))

    def f(x, ends):
        return mxquant.mxfp8_quantize_grouped(x, ends, torch.float8_e5m2, scale_mode="floor", axis=-2)

    torch._dynamo.reset()
    _, x, ends = kgroup_inputs(torch.bfloat16, 0)[0]
    for got, want in zip(torch.compile(f, fullgraph=True)(x, ends), f(x, ends)):
        assert_bytes(got, want, "compiled")


def test_a_backend_claiming_quantize_grouped_only_never_serves_it(registry):
    from mxquant import reference, reference_training

    calls = []

    def grouped(*args):
        calls.append("quantize_grouped")
        return reference_training.quantize_grouped(*args)

    be = mxquant.Backend(name="rows-only", capabilities=mxquant.Capabilities(devices=frozenset({"cpu"}),
                                                                            ops=frozenset({"quantize_grouped"})),
                         probe=lambda d: None, quantize=reference.quantize, priority=100, quantize_grouped=grouped)
    registry.register_plugin(Plugin(be), "rows-only")
    x, ends = torch.randn(64, 64), _ends(32, 64)
    mxquant.mxfp8_quantize_grouped(x, ends)
    assert calls == ["quantize_grouped"]
    mxquant.mxfp8_quantize_grouped(x, ends, axis=-2)  # served by another backend
    with pytest.raises(BackendIncapableError, match=r"'rows-only'.*does not claim quantize_grouped_colwise"):
        mxquant.mxfp8_quantize_grouped(x, ends, axis=-2, backend="rows-only")
    assert calls == ["quantize_grouped"]
    assert "quantize_grouped_colwise" in TRAINING_OPS


def _one_swizzle_for_all_groups(x, ends, dtype, mode):
    """The column-wise swizzled scale of the whole (N, T/32), not per group, zero padded to size."""
    from mxquant import reference_training

    data, scale = reference_training.quantize_grouped_colwise(x, ends, dtype, mode)
    whole = reference_training.quantize_colwise(x, dtype, mode, "swizzled")[1].view(torch.uint8).reshape(-1)
    out = torch.zeros_like(scale.view(torch.uint8))
    out[:whole.numel()] = whole
    return data, out.view(torch.float8_e8m0fnu)


def _nonzero_tail(x, ends, dtype, mode):
    from mxquant import reference_training

    data, scale = reference_training.quantize_grouped_colwise(x, ends, dtype, mode)
    scale = scale.view(torch.uint8).clone()
    if scale.numel():
        scale[-1] = 1  # the tail past the last group: padding in every K-groups input with columns
    return data, scale.view(torch.float8_e8m0fnu)


def _data_byte_off(x, ends, dtype, mode):
    from mxquant import reference_training

    data, scale = reference_training.quantize_grouped_colwise(x, ends, dtype, mode)
    data = data.view(torch.uint8).clone()
    if data.numel():
        data.view(-1)[0] ^= 1
    return data.view(dtype), scale


@pytest.mark.parametrize("fn, reason", [(_data_byte_off, "blocks differ from the reference"),
                                        (_one_swizzle_for_all_groups, "padding bytes of the scale layout are not zero"),
                                        (_nonzero_tail, "padding bytes of the scale layout are not zero")])
def test_verify_fails_a_wrong_kgroups_layout(registry, fn, reason):
    from test_verify_training import _plugin_backend, _statuses

    got, report = _statuses(registry, _plugin_backend("wrong", ops=("quantize_grouped_colwise",),
                                                      quantize_grouped_colwise=fn))
    assert got["quantize_grouped_colwise"] == {"fail"}
    assert all(reason in r["reason"] for r in report["results"] if r["op"] == "quantize_grouped_colwise")
