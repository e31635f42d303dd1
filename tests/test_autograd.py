"""Issue 11, item 2: autograd. mxfp8_quantize's outputs are non-differentiable, and an input
that requires grad (a plain tensor or an nn.Parameter) works eagerly and under
torch.compile(fullgraph=True), with no error at backward (on main an nn.Parameter raised "no
autograd formula" at backward, and BackendCompilerFailed under compile).
mxfp8_fake_quantize: the round trip in x's dtype with a straight-through gradient."""

from __future__ import annotations

import math

import pytest
import torch

import mxquant
from mxquant.conformance import cases

E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2
F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16


def _x(shape=(4, 64), dtype=F32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 10).to(dtype)


def _bits(t):
    return t.view({4: torch.int32, 2: torch.int16, 1: torch.uint8}[t.element_size()])


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


def _loss_through_quantize_and_another_path(x, layout):
    """sum(dequantize(quantize(x)) * x) + sum(x * x): x reaches the loss directly twice; the
    quantized path carries no gradient, so d/dx = dequantize(quantize(x)) + 2x."""
    data, scale = mxquant.mxfp8_quantize(x, scale_layout=layout)
    assert not data.requires_grad and not scale.requires_grad
    assert data.grad_fn is None and scale.grad_fn is None
    y = mxquant.mxfp8_dequantize(data, scale, scale_layout=layout, out_dtype=x.dtype)
    assert not y.requires_grad
    return (y * x).sum() + (x * x).sum()


def _expected_grad(x, layout):
    d = x.detach()
    data, scale = mxquant.mxfp8_quantize(d, scale_layout=layout)
    return mxquant.mxfp8_dequantize(data, scale, scale_layout=layout, out_dtype=x.dtype) + 2 * d


# ---- mxfp8_quantize / mxfp8_dequantize: non-differentiable outputs ---------------------------


@pytest.mark.parametrize("layout", ["linear", "swizzled"])
@pytest.mark.parametrize("kind", ["requires_grad", "parameter"])
def test_input_that_requires_grad_works_eagerly(kind, layout):
    x = _x().requires_grad_() if kind == "requires_grad" else torch.nn.Parameter(_x())
    _loss_through_quantize_and_another_path(x, layout).backward()
    assert torch.equal(x.grad, _expected_grad(x, layout))


@pytest.mark.parametrize("kind", ["requires_grad", "parameter"])
def test_input_that_requires_grad_works_under_torch_compile(kind):
    torch._dynamo.reset()
    x = _x((2, 64)).requires_grad_() if kind == "requires_grad" else torch.nn.Parameter(_x((2, 64)))
    loss = torch.compile(_loss_through_quantize_and_another_path, fullgraph=True)(x, "swizzled")
    loss.backward()
    assert torch.equal(x.grad, _expected_grad(x, "swizzled"))


def test_quantize_alone_of_a_parameter_then_backward_elsewhere():
    """A module that quantizes its weight for a side output must still train the weight."""
    w = torch.nn.Parameter(_x((2, 32)))
    data, scale = mxquant.mxfp8_quantize(w)
    (w * 3).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 3.0))
    assert not data.requires_grad


def test_opcheck_with_inputs_that_require_grad():
    # opcheck's autograd registration test wants the custom op's formula when an input requires
    # grad; finite inputs only (opcheck compares with assert_close, where NaN != NaN)
    x = _x((2, 3, 64)).requires_grad_()
    torch.library.opcheck(torch.ops.mxquant.quantize.default, (x, E4, "rceil", "swizzled", "cpu"))
    torch.library.opcheck(torch.ops.mxquant.fake_quantize.default, (x, E5, "floor", "cpu"))


# ---- mxfp8_fake_quantize --------------------------------------------------------------------

# Hand-derived (docs/semantics.md's worked example, and one subnormal): fp32 values in, fp32 out.
# rceil e4m3: s = 2; 1000/4 = 250 -> 256 -> 1024; 1 and -2.5 exact; pi/4 -> 0.8125 -> 3.25.
# floor e4m3: s = 1; 1000/2 = 500 saturates to 448 -> 896; pi/2 -> 1.625 -> 3.25.
# e5m2 (2 mantissa bits): floor s = -6: 64000 -> 57344 -> 896, pi*64 = 201.1 -> 192 -> 3.0;
# rceil s = -5: 32000 -> 32768 -> 1024, pi*32 = 100.5 -> 96 -> 3.0.
WORKED = [1000.0, 1.0, -2.5, math.pi]
GOLDEN = [
    (E4, "rceil", [1024.0, 1.0, -2.5, 3.25]),
    (E4, "floor", [896.0, 1.0, -2.5, 3.25]),
    (E5, "rceil", [1024.0, 1.0, -2.5, 3.0]),
    (E5, "floor", [896.0, 1.0, -2.5, 3.0]),
]


@pytest.mark.parametrize("dtype, mode, want", GOLDEN, ids=[f"{d}-{m}".replace("torch.", "") for d, m, _ in GOLDEN])
def test_fake_quantize_golden_values(dtype, mode, want):
    x = torch.zeros(2, 32)
    x[0, :4] = torch.tensor(WORKED)
    x[1] = 2.0**-130  # a tiny block comes back unchanged: s = -127, 2**-130 * 2**127 = 1/8 is exact
    y = mxquant.mxfp8_fake_quantize(x, dtype, scale_mode=mode)
    assert y.dtype == F32 and y.shape == x.shape
    assert y[0, :4].tolist() == want and (y[0, 4:] == 0).all()
    assert torch.equal(y[1], x[1])


def test_fake_quantize_golden_compressed_tensors_tie():
    # amax = 448 = max_finite exactly: rceil s = 0 keeps 3 * 2**-9 (e4m3 subnormal 3); the
    # compressed-tensors rule goes to s = 1: 3 * 2**-10 = 1.5 subnormal steps rounds (RNE) to 2,
    # and back 2 * 2**-9 * 2 = 2**-7. 448 is exact either way.
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 1] = 448.0, 3 * 2.0**-9
    assert mxquant.mxfp8_fake_quantize(x)[0, :2].tolist() == [448.0, 3 * 2.0**-9]
    assert mxquant.mxfp8_fake_quantize(x, scale_mode="compressed-tensors")[0, :2].tolist() == [448.0, 2.0**-7]


@pytest.mark.parametrize("input_dtype", [F32, BF16, F16])
@pytest.mark.parametrize("dtype, mode", [(E4, "rceil"), (E5, "floor"), (E4, "compressed-tensors")])
def test_fake_quantize_bytes_equal_the_two_calls(input_dtype, dtype, mode):
    x = cases.adversarial_batch(input_dtype, seed=3)  # NaN, Inf, zero, subnormal, saturating blocks
    y = mxquant.mxfp8_fake_quantize(x, dtype, scale_mode=mode)
    data, scale = mxquant.mxfp8_quantize(x, dtype, scale_mode=mode)
    assert _same(y, mxquant.mxfp8_dequantize(data, scale, out_dtype=input_dtype))
    x3 = x[: 6 * (x.shape[0] // 6)].reshape(2, 3, -1, x.shape[-1])  # leading dims are kept
    assert _same(mxquant.mxfp8_fake_quantize(x3, dtype, scale_mode=mode),
                 y[: 6 * (x.shape[0] // 6)].reshape(x3.shape))


@pytest.mark.parametrize("kind", ["requires_grad", "parameter"])
def test_fake_quantize_gradient_is_straight_through(kind):
    x = _x((3, 64), BF16)
    x = x.requires_grad_() if kind == "requires_grad" else torch.nn.Parameter(x)
    upstream = _x((3, 64), BF16, seed=1)
    y = mxquant.mxfp8_fake_quantize(x)
    assert y.requires_grad and y.dtype == BF16
    assert _same(y.detach(), mxquant.mxfp8_fake_quantize(x.detach()))
    y.backward(upstream)
    assert _same(x.grad, upstream)


def test_fake_quantize_gradient_adds_to_other_paths():
    x = _x((2, 64)).requires_grad_()
    w = _x((2, 64), seed=2)
    loss = (mxquant.mxfp8_fake_quantize(x) * w).sum() + (x * x).sum()
    loss.backward()
    assert torch.equal(x.grad, w + 2 * x.detach())


def test_fake_quantize_under_torch_compile_fullgraph():
    torch._dynamo.reset()

    def f(x):
        return mxquant.mxfp8_fake_quantize(x, E5, scale_mode="floor")

    x = torch.nn.Parameter(_x((2, 64), F16))
    upstream = _x((2, 64), F16, seed=4)
    y = torch.compile(f, fullgraph=True)(x)
    assert _same(y.detach(), f(x.detach()))
    y.backward(upstream)
    assert _same(x.grad, upstream)


def test_fake_quantize_argument_errors():
    with pytest.raises(ValueError, match=r"x\.shape\[-1\] = 33 must be a multiple of 32"):
        mxquant.mxfp8_fake_quantize(torch.zeros(2, 33, requires_grad=True))
    with pytest.raises(TypeError, match=r"x has dtype int32"):
        mxquant.mxfp8_fake_quantize(torch.zeros(2, 32, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"scale_mode='ceil'"):
        mxquant.mxfp8_fake_quantize(torch.zeros(2, 32), scale_mode="ceil")


def test_fake_quantize_is_exported():
    assert "mxfp8_fake_quantize" in mxquant.__all__ and mxquant.mxfp8_fake_quantize.__module__ == "mxquant.fake_quant"
