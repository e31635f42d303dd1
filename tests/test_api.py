"""The public API as a torch.library custom op: opcheck, torch.compile, the fake's dtypes,
argument errors, the README example and a dequantize round trip."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant

E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2
ELEMS = [E4, E5]
MODES = ["rceil", "floor"]
LAYOUTS = ["linear", "swizzled"]
INPUTS = [torch.float32, torch.bfloat16, torch.float16]


def _ids(c):
    return "-".join(str(v).replace("torch.", "") for v in c)


def _sample(shape=(2, 3, 64), dtype=torch.float32, nan=False):
    # Finite in every input dtype by default: opcheck compares eager and traced outputs with
    # torch.testing.assert_close, which counts NaN != NaN (and a NaN/Inf block quantizes to NaN
    # bytes). The compile tests below compare bytes instead, NaN blocks included.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-8, 8, shape, generator=g).float())
    x.view(-1, 32)[1] = 0.0          # an all-zero block
    x.view(-1, 32)[2, 5] = 2.0**-130  # a tiny element
    if nan:
        x.view(-1, 32)[0, 3] = float("nan")
        x.view(-1, 32)[3, 0] = -float("inf")
    return x.to(dtype)


# ---- opcheck ---------------------------------------------------------------------------------


@pytest.mark.parametrize("combo", list(itertools.product(ELEMS, MODES, LAYOUTS, INPUTS)), ids=_ids)
def test_opcheck_quantize(combo):
    dtype, mode, layout, input_dtype = combo
    torch.library.opcheck(torch.ops.mxquant.quantize.default, (_sample(dtype=input_dtype), dtype, mode, layout, "cpu"))


# opcheck's test_schema runs the op under a mode that checks the inputs are not mutated by
# comparing them with torch.allclose, which PyTorch does not implement on CPU for float8
# ("mul_cpu_reduced_float" not implemented): so dequantize (whose inputs are fp8 and e8m0) runs
# the other three utilities, and test_dequantize_does_not_mutate_its_inputs checks mutation.
DEQUANT_UTILS = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("combo", list(itertools.product(ELEMS, LAYOUTS, INPUTS)), ids=_ids)
def test_opcheck_dequantize(combo):
    dtype, layout, out_dtype = combo
    data, scale = mxquant.mxfp8_quantize(_sample(), dtype, scale_layout=layout)
    torch.library.opcheck(torch.ops.mxquant.dequantize.default, (data, scale, layout, out_dtype, "cpu"),
                          test_utils=DEQUANT_UTILS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dequantize_does_not_mutate_its_inputs(layout):
    data, scale = mxquant.mxfp8_quantize(_sample(), scale_layout=layout)
    data_bytes, scale_bytes = data.view(torch.uint8).clone(), scale.view(torch.uint8).clone()
    for call in (torch.ops.mxquant.dequantize, mxquant.mxfp8_dequantize):
        if call is mxquant.mxfp8_dequantize:
            call(data, scale, scale_layout=layout)
        else:
            call(data, scale, layout, torch.bfloat16, None)
        assert torch.equal(data.view(torch.uint8), data_bytes)
        assert torch.equal(scale.view(torch.uint8), scale_bytes)


def test_quantize_does_not_mutate_its_input():
    x = _sample()
    before = x.clone()
    mxquant.mxfp8_quantize(x, scale_mode="floor", scale_layout="swizzled")
    assert torch.equal(x.view(torch.int32), before.view(torch.int32))


# ---- torch.compile -----------------------------------------------------------------------------


def _both(x):
    data, scale = mxquant.mxfp8_quantize(x, E5, scale_mode="floor", scale_layout="swizzled")
    return data, scale, mxquant.mxfp8_dequantize(data, scale, scale_layout="swizzled", out_dtype=torch.float32)


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_torch_compile_fullgraph(dynamic):
    torch._dynamo.reset()
    compiled = torch.compile(_both, fullgraph=True, dynamic=dynamic)
    for rows in ((4, 128), (6, 96), (2, 3, 64)) if dynamic else ((4, 128),):
        x = _sample(rows, nan=True)
        for got, want in zip(compiled(x), _both(x)):
            assert _same(got, want)


def test_fake_scale_dtype_under_torch_compile():
    # Regression test for the vLLM bug this library was written after: a fake that returned
    # float32 scales while the real op returned e8m0. Inspect what dynamo traced.
    seen = []

    def backend(gm, example_inputs):
        for node in gm.graph.nodes:
            if node.op == "call_function" and "mxquant" in str(node.target):
                seen.append((str(node.target), node.meta["example_value"]))
        return gm.forward

    torch._dynamo.reset()

    def f(x):
        data, scale = mxquant.mxfp8_quantize(x)
        assert scale.dtype == torch.float8_e8m0fnu  # evaluated at trace time, on the fake
        return data, scale

    data, scale = torch.compile(f, fullgraph=True, backend=backend)(torch.randn(4, 64))
    assert scale.dtype == torch.float8_e8m0fnu and data.dtype == E4
    (target, (fdata, fscale)), = seen
    assert "quantize" in target
    assert fscale.dtype == torch.float8_e8m0fnu and fdata.dtype == E4
    assert fscale.shape == (4, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fake_mode_dtypes_and_shapes(layout):
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.empty(300, 4096, dtype=torch.bfloat16))
        data, scale = mxquant.mxfp8_quantize(x, E5, scale_layout=layout)
        out = mxquant.mxfp8_dequantize(data, scale, scale_layout=layout, out_dtype=torch.float16)
    assert data.dtype == E5 and data.shape == (300, 4096)
    assert scale.dtype == torch.float8_e8m0fnu
    assert scale.shape == ((300, 128) if layout == "linear" else (384 * 128,))  # swizzled: flat
    assert out.dtype == torch.float16 and out.shape == (300, 4096)


# ---- argument errors -----------------------------------------------------------------------------

X = torch.zeros(4, 64)

QUANTIZE_ERRORS = [
    # (x, kwargs, exception, regex the message must match)
    (torch.zeros(4, 33), {}, ValueError, r"x\.shape\[-1\] = 33 must be a multiple of 32"),
    (torch.zeros(4, 64, dtype=torch.int32), {}, TypeError, r"x has dtype int32.*float32, bfloat16, float16"),
    (torch.zeros(4, 64).to(E4), {}, TypeError, r"x has dtype float8_e4m3fn.*float32, bfloat16, float16"),
    (torch.tensor(1.0), {}, ValueError, r"x must have at least one dimension"),
    (X, {"scale_mode": "ceil"}, ValueError, r"scale_mode='ceil'.*'rceil', 'floor'"),
    (X, {"scale_layout": "blocked"}, ValueError, r"scale_layout='blocked'.*'linear', 'swizzled'"),
    (X, {"dtype": torch.float16}, TypeError, r"dtype=torch\.float16.*torch\.float8_e4m3fn, torch\.float8_e5m2"),
    (X, {"dtype": torch.float8_e4m3fnuz}, TypeError, r"dtype=.*float8_e4m3fnuz.*torch\.float8_e4m3fn, torch\.float8_e5m2"),
    ([[0.0] * 32], {}, TypeError, r"x must be a torch\.Tensor"),
]


@pytest.mark.parametrize("x, kwargs, exc, match", QUANTIZE_ERRORS, ids=[m for *_, m in QUANTIZE_ERRORS])
def test_quantize_errors(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        mxquant.mxfp8_quantize(x, **kwargs)
    if isinstance(x, torch.Tensor):  # the custom op and its fake check the same way
        args = (x, kwargs.get("dtype", E4), kwargs.get("scale_mode", "rceil"), kwargs.get("scale_layout", "linear"), None)
        with pytest.raises(exc, match=match):
            torch.ops.mxquant.quantize(*args)
        with FakeTensorMode() as mode, pytest.raises(exc, match=match):
            torch.ops.mxquant.quantize(mode.from_tensor(x), *args[1:])


D, S = mxquant.mxfp8_quantize(torch.zeros(4, 64))
DS, SS = mxquant.mxfp8_quantize(torch.zeros(4, 64), scale_layout="swizzled")

DEQUANTIZE_ERRORS = [
    # (data, scale, kwargs, exception, regex)
    (D, S.view(torch.uint8), {}, TypeError, r"scale has dtype uint8; it must be float8_e8m0fnu \(view"),
    (D, S.view(torch.uint8).float(), {}, TypeError, r"scale has dtype float32; it must be float8_e8m0fnu"),
    (D, S[:, :1], {}, ValueError, r"scale\.shape = \(4, 1\) does not match data\.shape = \(4, 64\); linear layout needs \(4, 2\)"),
    (D, S, {"scale_layout": "swizzled"}, ValueError,
     r"scale\.shape = \(4, 2\).*swizzled layout needs a 1-D tensor of 512 bytes.*linear layout's shape"),
    (DS, SS, {"scale_layout": "linear"}, ValueError, r"linear layout needs \(4, 2\); this scale has the swizzled"),
    (D, torch.empty(4, 2, dtype=torch.float8_e8m0fnu, device="meta"), {}, ValueError, r"data is on cpu but scale is on meta"),
    (D, S, {"out_dtype": torch.int8}, TypeError, r"out_dtype=torch\.int8.*float32, bfloat16, float16"),
    (D, S, {"out_dtype": E4}, TypeError, r"out_dtype=torch\.float8_e4m3fn.*float32, bfloat16, float16"),
    (D, S, {"scale_layout": "tiled"}, ValueError, r"scale_layout='tiled'.*'linear', 'swizzled'"),
    (D.float(), S, {}, TypeError, r"data has dtype float32; accepted: float8_e4m3fn, float8_e5m2"),
    (D.view(torch.uint8), S, {}, TypeError, r"data has dtype uint8"),
]


@pytest.mark.parametrize("data, scale, kwargs, exc, match", DEQUANTIZE_ERRORS, ids=[m for *_, m in DEQUANTIZE_ERRORS])
def test_dequantize_errors(data, scale, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        mxquant.mxfp8_dequantize(data, scale, **kwargs)


# ---- README, round trip ----------------------------------------------------------------------------


def test_readme_example(capsys):
    print(mxquant.mxfp8_quantize(torch.randn(4, 64)))
    out = capsys.readouterr().out
    assert out.startswith("MXFP8Quantized(data=tensor(") and "dtype=torch.float8_e8m0fnu" in out
    x = torch.randn(16, 4096, dtype=torch.bfloat16)
    data, scale = mxquant.mxfp8_quantize(x)
    assert data.dtype == E4 and scale.shape == (16, 128)
    q = mxquant.mxfp8_quantize(x, torch.float8_e5m2, scale_mode="floor", scale_layout="swizzled")
    assert q.data.dtype == E5 and q.scale.shape == (128 * 128,)  # swizzled: flat, 128 rows x 128 columns
    y = mxquant.mxfp8_dequantize(data, scale, out_dtype=torch.bfloat16)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    y2 = mxquant.mxfp8_dequantize(q.data, q.scale, scale_layout="swizzled")
    assert y2.dtype == torch.bfloat16 and y2.shape == x.shape


@pytest.mark.parametrize("mode, scale_byte, first", [("rceil", 0x81, 1024.0), ("floor", 0x80, 896.0)])
def test_dequantize_round_trip_known_values(mode, scale_byte, first):
    # 1000, 1, -2.5, pi (docs/semantics.md's worked example). rceil: s = 2, 1000/4 = 250 rounds to
    # 256 -> 1024. floor: s = 1, 500 saturates to 448 -> 896. Both: 1 and -2.5 are exact, pi/2**s
    # rounds to 1.625 * 2**(1-s) -> 3.25.
    x = torch.zeros(2, 32)
    x[0, :4] = torch.tensor([1000.0, 1.0, -2.5, math.pi])
    x[1] = 2.0**-130  # a tiny block comes back unchanged (2**-130 * 2**127 = 1/8 is exact)
    data, scale = mxquant.mxfp8_quantize(x, scale_mode=mode)
    assert scale.view(torch.uint8).tolist() == [[scale_byte], [0x00]]
    y = mxquant.mxfp8_dequantize(data, scale, out_dtype=torch.float32)
    assert y[0, :4].tolist() == [first, 1.0, -2.5, 3.25] and (y[0, 4:] == 0).all()
    assert torch.equal(y[1], x[1])
