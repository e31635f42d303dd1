"""mxfp4_quantize / mxfp4_dequantize / nvfp4_quantize / nvfp4_dequantize (docs/semantics.md,
"MXFP4 and NVFP4") byte for byte against the NumPy oracle (tests/fp4_oracle.py) on every input
dtype, scale mode and layout, on the FP4 adversarial blocks (conformance/fp4_inputs.py), random
and odd shapes; the errors, the layout-confusion guarantee, fakes, opcheck, torch.compile.
compressed-tensors and torchao are the oracles of tests/test_fp4_peers.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant.conformance.fp4_inputs import fp4_inputs

import fp4_oracle as oracle
from mx_oracle import assert_same_values
from test_api import DEQUANT_UTILS
from training_helpers import INPUTS, LAYOUTS, MODES, assert_bytes, ids

MX_GRID = list(itertools.product(INPUTS, MODES, LAYOUTS))
NV_GRID = list(itertools.product(INPUTS, LAYOUTS))


@pytest.mark.parametrize("hp, mode, layout", MX_GRID, ids=[ids(c) for c in MX_GRID])
@pytest.mark.parametrize("backend", [None, "cpu"], ids=["routed", "reference"])
def test_mxfp4_against_oracle(hp, mode, layout, backend):
    """The routed backend and the reference (`cpu`) against the NumPy oracle, both ways."""
    for name, x in fp4_inputs(hp, 0):
        got = mxquant.mxfp4_quantize(x, scale_mode=mode, scale_layout=layout, backend=backend)
        want_data, want_scale = oracle.mxfp4_quantize(x, mode, layout)
        assert_bytes(got.data, want_data, f"{name} data")
        assert_bytes(got.scale, want_scale, f"{name} scale")
        assert got.data.dtype == torch.uint8 and got.scale.dtype == torch.float8_e8m0fnu
        lin = oracle.mxfp4_quantize(x, mode, "linear")[1].numpy().reshape(-1, max(x.shape[-1] // 32, 1))
        for out in INPUTS:
            y = mxquant.mxfp4_dequantize(got.data, got.scale, scale_layout=layout, out_dtype=out, backend=backend)
            want = oracle.mxfp4_dequantize(got.data, lin[:, : x.shape[-1] // 32], out)
            assert_same_values(y, want, f"{name} dequantize -> {out}")


@pytest.mark.parametrize("hp, layout", NV_GRID, ids=[ids(c) for c in NV_GRID])
@pytest.mark.parametrize("backend", [None, "cpu"], ids=["routed", "reference"])
def test_nvfp4_against_oracle(hp, layout, backend):
    """The routed backend and the reference (`cpu`) against the NumPy oracle, both ways."""
    for name, x in fp4_inputs(hp, 0):
        for given in (None, torch.tensor([0.75]), torch.tensor(3.0e-3)):
            got = mxquant.nvfp4_quantize(x, given, scale_layout=layout, backend=backend)
            want_data, want_scale, g = oracle.nvfp4_quantize(x, None if given is None else float(given), layout)
            assert got.global_scale.dtype == torch.float32 and got.global_scale.shape == (1,)
            assert got.global_scale.item() == g, f"{name}: global scale {got.global_scale.item()} != {g}"
            assert_bytes(got.data, want_data, f"{name} data (global scale {given})")
            assert_bytes(got.scale, want_scale, f"{name} scale (global scale {given})")
        nb = x.shape[-1] // 16
        lin = oracle.nvfp4_quantize(x, g, "linear")[1].reshape(-1, max(nb, 1))[:, :nb]
        for out in INPUTS:
            y = mxquant.nvfp4_dequantize(got.data, got.scale, got.global_scale, scale_layout=layout, out_dtype=out,
                                         backend=backend)
            assert_same_values(y, oracle.nvfp4_dequantize(got.data, lin, g, out), f"{name} dequantize -> {out}")


def test_e2m1_rounding_and_packing_on_every_tie():
    """Every e2m1 tie goes to the even neighbour; element 2j is the low nibble."""
    y = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -5.0, 0.24, 0.26, -0.0, 0.0, 7.0, 4.9])
    x = torch.cat([y, torch.zeros(16)]).reshape(1, 32)
    # amax 7: MXFP4 floor s = 0; NVFP4 with g = 448: the scale min(448 * 7/6, 448) = 448, s / g = 1
    data = mxquant.mxfp4_quantize(x, scale_mode="floor").data[0, :8].tolist()
    # 0.25->0(0), 0.75->1(2) | 1.25->1(2), 1.75->2(4) | 2.5->2(4), 3.5->4(6) | 5->4(6), 6(7) |
    # -0.25->-0(8), -5->-4(E) | 0.24->0, 0.26->0.5(1) | -0.0 -> 8 (sign kept), 0 | 7->6(7), 4.9->4(6)
    assert data == [0x20, 0x42, 0x64, 0x76, 0xE8, 0x10, 0x08, 0x67]
    ct = mxquant.mxfp4_quantize(x, scale_mode="compressed-tensors").data[0, :8].tolist()
    assert ct[6] == 0x00  # compressed-tensors: an input zero is +0 whatever its sign
    nv = mxquant.nvfp4_quantize(x, torch.tensor([448.0])).data[0, :8].tolist()
    assert nv == data[:6] + [0x00, data[7]]  # NVFP4 (compressed-tensors' rule): -0.0 gives +0 too


ERRORS = [
    (lambda: mxquant.mxfp4_quantize(torch.zeros(4, 48)), ValueError, r"mxfp4_quantize: x.shape\[-1\] = 48 must be a multiple of 32"),
    (lambda: mxquant.nvfp4_quantize(torch.zeros(4, 40)), ValueError, r"nvfp4_quantize: x.shape\[-1\] = 40 must be a multiple of 16"),
    (lambda: mxquant.mxfp4_quantize(torch.zeros(4, 32, dtype=torch.int32)), TypeError, r"x has dtype int32"),
    (lambda: mxquant.mxfp4_quantize(torch.tensor(1.0)), ValueError, r"at least one dimension"),
    (lambda: mxquant.mxfp4_quantize([1.0]), TypeError, r"x must be a torch.Tensor"),
    (lambda: mxquant.mxfp4_quantize(torch.zeros(32), scale_mode="even"), ValueError, r"scale_mode='even'"),
    (lambda: mxquant.nvfp4_quantize(torch.zeros(32), scale_mode="rceil"), ValueError, r"scale_mode='rceil'.*'compressed-tensors'"),
    (lambda: mxquant.nvfp4_quantize(torch.zeros(32), scale_layout="tiled"), ValueError, r"scale_layout='tiled'"),
    (lambda: mxquant.nvfp4_quantize(torch.zeros(32), torch.tensor([1.0], dtype=torch.float64)), TypeError, r"global_scale has dtype float64"),
    (lambda: mxquant.nvfp4_quantize(torch.zeros(32), torch.ones(2)), ValueError, r"global_scale must hold one value"),
    (lambda: mxquant.nvfp4_quantize(torch.zeros(32), torch.tensor([0.0])), ValueError, r"global_scale = 0.0 must be finite and positive"),
    (lambda: mxquant.nvfp4_quantize(torch.zeros(32), 2.0), TypeError, r"global_scale must be a float32 torch.Tensor"),
    (lambda: mxquant.mxfp4_quantize(torch.zeros(32), backend=3), TypeError, r"backend must be a backend name"),
    (lambda: mxquant.mxfp4_dequantize(torch.zeros(2, 16, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.uint8)),
     TypeError, r"scale has dtype uint8; it must be float8_e8m0fnu \(view uint8"),
    (lambda: mxquant.mxfp4_dequantize(torch.zeros(2, 16), torch.zeros(2, 1, dtype=torch.float8_e8m0fnu)),
     TypeError, r"data has dtype float32; it must be uint8"),
    (lambda: mxquant.mxfp4_dequantize(torch.zeros(2, 15, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.float8_e8m0fnu)),
     ValueError, r"must be a multiple of 16"),
    (lambda: mxquant.nvfp4_dequantize(torch.zeros(2, 8, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.float8_e4m3fn), None),
     TypeError, r"global_scale is required"),
    (lambda: mxquant.nvfp4_dequantize(torch.zeros(2, 8, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.float8_e8m0fnu),
                                      torch.ones(1)), TypeError, r"scale has dtype float8_e8m0fnu; it must be float8_e4m3fn"),
    (lambda: mxquant.mxfp4_dequantize(torch.zeros(2, 16, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.float8_e8m0fnu),
                                      out_dtype=torch.int8), TypeError, r"out_dtype=torch.int8 is not supported"),
]


@pytest.mark.parametrize("call, exc, match", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors_are_one_line(call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fmt, block", [("mxfp4", 32), ("nvfp4", 16)])
@pytest.mark.parametrize("shape", [(3, 256), (256, 64), (64,), (2, 128, 64), (0,)])
def test_layouts_cannot_be_confused(fmt, block, shape):
    """A scale passed with the other layout is an error naming the layout it has (the shapes never
    coincide but for the empty 1-D input, where there is nothing to confuse)."""
    x = torch.randn(shape)
    quant = getattr(mxquant, f"{fmt}_quantize")
    deq = getattr(mxquant, f"{fmt}_dequantize")
    extra = lambda q: (q.global_scale,) if fmt == "nvfp4" else ()  # noqa: E731
    for layout, other in (("linear", "swizzled"), ("swizzled", "linear")):
        q = quant(x, scale_layout=layout)
        if shape == (0,):
            assert torch.equal(deq(q.data, q.scale, *extra(q), scale_layout=other), deq(q.data, q.scale, *extra(q)))
            continue
        assert q.scale.dim() == (1 if layout == "swizzled" else len(shape))
        # (where the linear shape is also the 2-D swizzled form, the hint says the shape is ambiguous)
        match = rf"this scale has the {layout} layout's shape|is ambiguous here: it is both"
        with pytest.raises(ValueError, match=match) as info:
            deq(q.data, q.scale, *extra(q), scale_layout=other)
        assert f"K // {block}" in str(info.value) or other == "linear"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fakes_give_the_public_shapes(layout):
    with FakeTensorMode() as fake:
        x = fake.from_tensor(torch.empty(2, 130, 96, dtype=torch.bfloat16))
        mx = mxquant.mxfp4_quantize(x, scale_layout=layout)
        nv = mxquant.nvfp4_quantize(x, scale_layout=layout)
        y = mxquant.nvfp4_dequantize(nv.data, nv.scale, nv.global_scale, scale_layout=layout, out_dtype=torch.float16)
        y4 = mxquant.mxfp4_dequantize(mx.data, mx.scale, scale_layout=layout)
    real = torch.empty(2, 130, 96, dtype=torch.bfloat16).normal_()
    for fake_out, real_out in ((mx, mxquant.mxfp4_quantize(real, scale_layout=layout)),
                               (nv, mxquant.nvfp4_quantize(real, scale_layout=layout))):
        for f, r in zip(fake_out, real_out):
            assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride())
    assert y.shape == y4.shape == (2, 130, 96) and y.dtype == torch.float16 and y4.dtype == torch.bfloat16


def test_opcheck():
    x = torch.randn(130, 64)
    q, n = mxquant.mxfp4_quantize(x), mxquant.nvfp4_quantize(x, scale_layout="swizzled")
    ops = torch.ops.mxquant
    torch.library.opcheck(ops.mxfp4_quantize.default, (x, "floor", "swizzled", None))
    torch.library.opcheck(ops.nvfp4_quantize.default, (x, None, "compressed-tensors", "linear", None))
    torch.library.opcheck(ops.nvfp4_quantize.default, (x, torch.tensor([2.0]), "compressed-tensors", "linear", None))
    # (test_schema compares fp8 / e8m0 inputs with allclose, which CPU torch lacks: test_api.py)
    torch.library.opcheck(ops.mxfp4_dequantize.default, (q.data, q.scale, "linear", torch.float32, None),
                          test_utils=DEQUANT_UTILS)
    torch.library.opcheck(ops.nvfp4_dequantize.default, (n.data, n.scale, n.global_scale, "swizzled", torch.bfloat16,
                                                         None), test_utils=DEQUANT_UTILS)


def test_torch_compile_fullgraph_and_no_gradient():
    def f(x):
        q = mxquant.mxfp4_quantize(x, scale_mode="compressed-tensors", scale_layout="swizzled")
        n = mxquant.nvfp4_quantize(x)
        return (q, n, mxquant.mxfp4_dequantize(q.data, q.scale, scale_layout="swizzled", out_dtype=x.dtype),
                mxquant.nvfp4_dequantize(n.data, n.scale, n.global_scale, out_dtype=x.dtype))

    x = torch.randn(64, 96, dtype=torch.bfloat16, requires_grad=True)
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    want = f(x.detach())
    for g, w in zip([*got[0], *got[1], got[2], got[3]], [*want[0], *want[1], want[2], want[3]]):
        assert torch.equal(g.view(torch.uint8) if g.element_size() == 1 else g, w.view(torch.uint8) if w.element_size() == 1 else w)
        assert not g.requires_grad


def test_dequantize_special_scales():
    """0xFF E8M0 / 0x7F e4m3 scales make their block NaN; the bytes the contract writes for a
    NaN / Inf block (scale NaN, nibbles 0) therefore dequantize to NaN, the contract's one NaN
    per out_dtype (fp32 0x7FC00000, bf16 0xFFFF, fp16 0x7E00), whatever the nibbles' and the
    scale's signs (e4m3 0xFF, negative nibbles) and on the default backend."""
    x = torch.ones(2, 32)
    x[0, 5] = float("inf")
    q = mxquant.mxfp4_quantize(x)
    assert q.scale.view(torch.uint8).tolist() == [[0xFF], [127 - 2 + 0]]  # amax 1: floor(0) - 2, no rceil step
    assert (q.data[0] == 0).all()
    y = mxquant.mxfp4_dequantize(q.data, q.scale, out_dtype=torch.float32)
    assert y[0].isnan().all() and torch.equal(y[1], torch.ones(32))
    n = mxquant.nvfp4_quantize(x)
    assert n.scale.view(torch.uint8)[0].tolist() == [0x7F, 0x7E] and n.global_scale.item() == np.float32(2688.0)
    yn = mxquant.nvfp4_dequantize(n.data, n.scale, n.global_scale, out_dtype=torch.float32)
    assert yn[0, :16].isnan().all() and torch.equal(yn[0, 16:], torch.ones(16)) and torch.equal(yn[1], torch.ones(32))
    data = torch.tensor([[0x00, 0x98, 0xF1, 0x7F] * 4], dtype=torch.uint8)  # +-0, negative and positive nibbles
    nan_bits = {torch.float32: 0x7FC00000, torch.bfloat16: -1, torch.float16: 0x7E00}  # the rule, stated here
    zero = torch.tensor([[(b >> s) & 7 == 0 for b in data[0].tolist() for s in (0, 4)]])
    for out, backend in itertools.product(INPUTS, ("cpu", None)):  # the reference and the default (cpu-native)
        ints, what = {2: torch.int16, 4: torch.int32}[out.itemsize], f"-> {out} on {backend or 'the default'}"
        got = mxquant.mxfp4_dequantize(data, torch.tensor([[0xFF]], dtype=torch.uint8).view(torch.float8_e8m0fnu),
                                       out_dtype=out, backend=backend)
        assert (got.view(ints) == nan_bits[out]).all(), f"mxfp4 {what}"
        nv_scale = torch.tensor([[0x7F, 0xFF]], dtype=torch.uint8).view(torch.float8_e4m3fn)
        got = mxquant.nvfp4_dequantize(data, nv_scale, torch.tensor([0.5]), out_dtype=out, backend=backend)
        assert (got.view(ints) == nan_bits[out]).all(), f"nvfp4 {what}"
        # scale / g past fp32 (448 / 2^-140): Inf for nonzero nibbles, NaN (the same bits) for 0 * Inf
        got = mxquant.nvfp4_dequantize(data, nv_scale.view(torch.uint8).fill_(0x7E).view(torch.float8_e4m3fn),
                                       torch.tensor([2.0**-140]), out_dtype=out, backend=backend)
        assert (got.view(ints)[zero] == nan_bits[out]).all() and got[~zero].isinf().all(), f"nvfp4 0 * Inf {what}"
