"""mxfp8_quantize_grouped (docs/semantics.md, "Grouped scales for MoE"): data byte for byte the
NumPy oracle's row-wise data; scales byte for byte what torchao's layout functions make of the
oracle's linear scales: `torch_to_blocked_per_group_3d` (3-D experts), `torch_to_blocked_2d_M_groups`
(token groups, where K/32 is a multiple of 4, the only case that torch reference handles) and
otherwise `to_blocked` per group at the offsets of torchao's Triton kernel
(`triton_mx_block_rearrange_2d_M_groups`: group g at padded row P_g, (T + 128 G) rows of
round_up(K/32, 4)); tests/test_torchao_triton_layouts.py runs that kernel itself (in the Triton
side environment). Ragged, empty and 128-row groups, no rows, odd expert sizes; every input
dtype, element dtype and scale mode; errors; fakes (the scale size never depends on the offsets'
values); compile."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant.conformance.training_inputs import grouped_inputs

import mx_oracle as oracle
from training_helpers import GRID, assert_bytes, ids

ao_quant = pytest.importorskip("torchao.prototype.moe_training.kernels.mxfp8.quant",
                               reason="torchao (pip install torchao; the test extra lists it)")
from torchao.prototype.mx_formats.utils import to_blocked  # noqa: E402


def torchao_layout(linear: torch.Tensor, group_ends) -> torch.Tensor:
    """torchao's grouped layout of linear scale bytes (uint8)."""
    if group_ends is None:
        e, n, c = linear.shape
        if e == 0:
            return torch.empty(0, mxquant.mxfp8_quantize(torch.zeros(n, 32 * c), scale_layout="swizzled").scale.numel(),
                               dtype=torch.uint8)
        return ao_quant.torch_to_blocked_per_group_3d(linear)
    t, c = linear.shape
    if c % 4 == 0:
        blocked, _ = ao_quant.torch_to_blocked_2d_M_groups(linear, group_ends)
        return blocked.reshape(-1)
    pcol = -(-c // 4) * 4  # torchao's Triton kernel: padded columns, group g at row P_g
    out = torch.zeros((t + 128 * group_ends.numel()) * pcol, dtype=torch.uint8)
    start = padded = 0
    for end in group_ends.tolist():
        if end > start:
            block = to_blocked(linear[start:end])
            out[padded * pcol:padded * pcol + block.numel()] = block
            padded += -(-(end - start) // 128) * 128
        start = end
    return out


@pytest.mark.parametrize("hp, dtype, mode", GRID, ids=[ids(c) for c in GRID])
@pytest.mark.parametrize("backend", [None, "cpu"], ids=["routed", "reference"])
def test_grouped_against_torchao_and_the_oracle(hp, dtype, mode, backend):
    """The routed backend and the reference (`cpu`) against the oracle's data and torchao's layout."""
    for name, x, ends in grouped_inputs(hp, 0):
        got = mxquant.mxfp8_quantize_grouped(x, ends, dtype, scale_mode=mode, backend=backend)
        want_data, linear = oracle.quantize(x, dtype, mode, "linear")
        assert_bytes(got.data, want_data, f"{name} data")
        assert got.scale.dtype == torch.float8_e8m0fnu
        assert_bytes(got.scale, torchao_layout(linear, ends), f"{name} scale vs torchao")


def test_experts_are_each_experts_swizzled_call():
    x = grouped_inputs(torch.bfloat16, 0)[6][1]  # experts (3, 130, 96)
    got = mxquant.mxfp8_quantize_grouped(x, None)
    for e in range(x.shape[0]):
        assert_bytes(got.scale[e], mxquant.mxfp8_quantize(x[e], scale_layout="swizzled").scale, f"expert {e}")


def _ends(*v, dtype=torch.int32):
    return torch.tensor(v, dtype=dtype)


X2, X3 = torch.zeros(100, 64), torch.zeros(2, 100, 64)
ERRORS = [
    (X2, _ends(50, 100, dtype=torch.int64), TypeError, r"group_ends has dtype int64; it must be int32"),
    (X2, [50, 100], TypeError, r"group_ends must be a torch\.Tensor"),
    (X2, _ends(50, 100).reshape(1, 2), ValueError, r"group_ends must be 1-D .*got shape \(1, 2\)"),
    (X2, _ends(), ValueError, r"group_ends must be 1-D with one end per group \(at least one\)"),
    (X2, None, ValueError, r"2-D x \(100, 64\) is token-sorted activations.*group_ends.*is required"),
    (X3, _ends(1, 2), ValueError, r"3-D x \(2, 100, 64\) is expert weights.*pass group_ends=None"),
    (torch.zeros(2, 2, 2, 64), None, ValueError, r"x must be 3-D expert weights .* or 2-D activations"),
    (torch.zeros(100, 48), _ends(100), ValueError, r"x\.shape\[-1\] = 48 \(K\) must be a multiple of 32"),
    (X2, _ends(-1, 100), ValueError, r"group_ends\[0\] = -1 is negative"),
    (X2, _ends(60, 50, 100), ValueError, r"non-decreasing, but group_ends\[1\] = 50 < group_ends\[0\] = 60"),
    (X2, _ends(50, 90), ValueError, r"group_ends\[-1\] = 90 must equal the number of rows T = x\.shape\[0\] = 100"),
    (X2, _ends(50, 101), ValueError, r"group_ends\[-1\] = 101 must equal"),
]


@pytest.mark.parametrize("x, ends, exc, match", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors(x, ends, exc, match):
    with pytest.raises(exc, match=match):
        mxquant.mxfp8_quantize_grouped(x, ends)
    if isinstance(ends, torch.Tensor) or ends is None:
        with pytest.raises(exc, match=match):
            torch.ops.mxquant.quantize_grouped(x, ends, torch.float8_e4m3fn, "rceil", None)


def test_fake_shapes_do_not_read_the_offsets():
    with FakeTensorMode() as fake:
        x = fake.from_tensor(torch.empty(300, 96, dtype=torch.bfloat16))
        ends = fake.from_tensor(_ends(1, 129, 129, 256, 300, 300))
        data, scale = mxquant.mxfp8_quantize_grouped(x, ends)
        w = fake.from_tensor(torch.empty(3, 130, 96))
        wdata, wscale = mxquant.mxfp8_quantize_grouped(w, None, torch.float8_e5m2)
    assert data.shape == (300, 96) and scale.shape == ((300 + 6 * 128) * 4,)
    assert wdata.shape == (3, 130, 96) and wdata.dtype == torch.float8_e5m2 and wscale.shape == (3, 256 * 4)
    # the real call has that size whatever the offsets
    real = grouped_inputs(torch.bfloat16, 0)[3]  # random (300, 96), 6 groups
    assert mxquant.mxfp8_quantize_grouped(real[1], real[2]).scale.shape == scale.shape


def test_opcheck_and_compile():
    _, x, ends = grouped_inputs(torch.float32, 0)[3]
    torch.library.opcheck(torch.ops.mxquant.quantize_grouped.default, (x, ends, torch.float8_e4m3fn, "rceil", None))

    def f(x, ends):
        return mxquant.mxfp8_quantize_grouped(x, ends, torch.float8_e5m2, scale_mode="floor")

    torch._dynamo.reset()
    _, x, ends = grouped_inputs(torch.bfloat16, 0)[0]
    for got, want in zip(torch.compile(f, fullgraph=True)(x, ends), f(x, ends)):
        assert_bytes(got, want, "compiled")
