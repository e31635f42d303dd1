"""Issue 11, item 1: a scale passed with the wrong `scale_layout` is an error, for every shape
and every backend, including the shapes where the 2-D swizzled scale used to coincide with
the linear one (rows % 128 == 0 and (K / 32) % 4 == 0: a silent 29 % relative error on main).

The public swizzled scale is 1-D, round_up(M, 128) * round_up(K / 32, 4) bytes; a linear one
has x.dim() dims with K / 32 last (docs/semantics.md, "Scale layouts"). The expected shapes
below are written out by hand, not taken from mxquant.layouts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant import reference
from mxquant.layouts import unswizzle

# (shape, the public swizzled scale's length by hand: round_up(M, 128) * round_up(K / 32, 4))
SHAPES = [
    ((256, 4096), 256 * 128),   # the issue's example: (256, 128) was both layouts' 2-D shape
    ((128, 128), 128 * 4),      # (128, 4) both ways on main
    ((2, 64, 128), 128 * 4),    # M = 128 over two leading dims
    ((4, 64), 128 * 4),
    ((300, 96), 384 * 4),
    ((2, 3, 64), 128 * 4),
    ((224,), 128 * 8),          # 1-D x: linear (7,), swizzled (1024,)
    ((32,), 128 * 4),
]


def _x(shape):
    g = torch.Generator().manual_seed(math.prod(shape))
    return torch.randn(shape, generator=g) * 100


@pytest.mark.parametrize("shape, swizzled_len", SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_public_swizzled_scale_is_flat_and_never_linear_shaped(shape, swizzled_len):
    x = _x(shape)
    _, lin = mxquant.mxfp8_quantize(x)
    _, swz = mxquant.mxfp8_quantize(x, scale_layout="swizzled")
    assert lin.shape == (*shape[:-1], shape[-1] // 32)
    assert swz.shape == (swizzled_len,) and swz.is_contiguous()
    assert swz.shape != lin.shape
    # the flat bytes are the 128x4 layout: the same bytes as the reference's 2-D backend form
    ref = reference.quantize(x, torch.float8_e4m3fn, "rceil", "swizzled")[1]
    assert torch.equal(swz.view(torch.uint8), ref.view(torch.uint8).reshape(-1))


@pytest.mark.parametrize("shape, swizzled_len", SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_swizzled_scale_passed_as_linear_is_an_error(shape, swizzled_len):
    data, swz = mxquant.mxfp8_quantize(_x(shape), scale_layout="swizzled")
    with pytest.raises(ValueError, match=r"this scale has the swizzled layout's shape: pass scale_layout='swizzled'"):
        mxquant.mxfp8_dequantize(data, swz)


@pytest.mark.parametrize("shape, swizzled_len", SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_linear_scale_passed_as_swizzled_is_an_error(shape, swizzled_len):
    data, lin = mxquant.mxfp8_quantize(_x(shape))
    with pytest.raises(ValueError, match=rf"swizzled layout needs a 1-D tensor of {swizzled_len} bytes.*"
                                         r"this scale has the linear layout's shape: pass scale_layout='linear'"):
        mxquant.mxfp8_dequantize(data, lin, scale_layout="swizzled")


def test_the_issue_example_round_trips_only_with_the_right_layout():
    x = _x((256, 4096))
    data, swz = mxquant.mxfp8_quantize(x, scale_layout="swizzled")
    y = mxquant.mxfp8_dequantize(data, swz, scale_layout="swizzled", out_dtype=torch.float32)
    # rceil e4m3: amax / 2**s lies in (224, 448], and an element is off by at most half an ulp of
    # the top binade (2**s * 16), so by less than amax / 8 of its block (29 % with the wrong layout)
    amax = x.reshape(256, 128, 32).abs().amax(-1, keepdim=True)
    assert ((y - x).reshape(256, 128, 32).abs() < amax / 8).all()
    with pytest.raises(ValueError):
        mxquant.mxfp8_dequantize(data, swz)


@pytest.mark.parametrize("backend", ["cpu", "triton", "flashinfer", "xpu"])
@pytest.mark.parametrize("wrong", ["linear", "swizzled"])
def test_wrong_layout_is_an_error_on_every_backend(registry, backend, wrong):
    """The check runs before the backend is resolved, so a forced backend (even one that
    cannot run here) still reports the layout, not its unavailability."""
    right = "swizzled" if wrong == "linear" else "linear"
    data, scale = mxquant.mxfp8_quantize(_x((128, 128)), scale_layout=right)
    with pytest.raises(ValueError, match=rf"this scale has the {right} layout's shape"):
        mxquant.mxfp8_dequantize(data, scale, scale_layout=wrong, backend=backend)
    assert {b.name for b in mxquant.list_backends().backends} >= {"cpu", "triton", "flashinfer", "xpu"}


@pytest.mark.parametrize("wrong", ["linear", "swizzled"])
def test_wrong_layout_is_an_error_in_the_custom_op_and_its_fake(wrong):
    right = "swizzled" if wrong == "linear" else "linear"
    data, scale = mxquant.mxfp8_quantize(_x((256, 4096)), scale_layout=right)
    match = rf"this scale has the {right} layout's shape"
    with pytest.raises(ValueError, match=match):
        torch.ops.mxquant.dequantize(data, scale, wrong, torch.bfloat16, None)
    with FakeTensorMode() as mode, pytest.raises(ValueError, match=match):
        mxquant.mxfp8_dequantize(mode.from_tensor(data), mode.from_tensor(scale), scale_layout=wrong)


def test_wrong_layout_is_an_error_under_torch_compile():
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def round_trip(x):
        data, scale = mxquant.mxfp8_quantize(x, scale_layout="swizzled")
        return mxquant.mxfp8_dequantize(data, scale)  # forgot scale_layout="swizzled"

    with pytest.raises(Exception, match=r"this scale has the swizzled layout's shape"):
        round_trip(_x((128, 128)))


def test_the_two_dimensional_backend_form_gets_a_hint():
    x = _x((4, 64))
    data, _ = mxquant.mxfp8_quantize(x)
    two_d = reference.quantize(x, torch.float8_e4m3fn, "rceil", "swizzled")[1]  # (128, 4)
    for layout in ("swizzled", "linear"):
        with pytest.raises(ValueError, match=r"the 2-D swizzled form backends use: pass scale\.reshape\(-1\)"):
            mxquant.mxfp8_dequantize(data, two_d, scale_layout=layout)
    y = mxquant.mxfp8_dequantize(data, two_d.reshape(-1), scale_layout="swizzled", out_dtype=torch.float32)
    assert torch.equal(y, reference.dequantize(data, two_d, "swizzled", torch.float32))


def test_a_strided_swizzled_scale_is_read_like_its_contiguous_copy():
    x = _x((300, 96))
    data, swz = mxquant.mxfp8_quantize(x, scale_layout="swizzled")
    strided = torch.zeros(swz.numel(), 2, dtype=torch.uint8)[:, 0].copy_(swz.view(torch.uint8))
    strided = strided.view(torch.float8_e8m0fnu)
    assert not strided.is_contiguous()
    got = mxquant.mxfp8_dequantize(data, strided, scale_layout="swizzled", out_dtype=torch.float32)
    lin = unswizzle(swz.view(torch.uint8), 300, 3).contiguous().view(torch.float8_e8m0fnu)
    assert torch.equal(got, mxquant.mxfp8_dequantize(data, lin, out_dtype=torch.float32))


def test_shapes_never_coincide_except_the_empty_1d_input():
    """The proof of docs/semantics.md, checked over small shapes: a linear scale has x.dim() dims;
    the swizzled one is 1-D, so only 1-D x can collide, and there the linear scale has
    C = K / 32 elements against 128 * round_up(C, 4) >= 128 * C > C unless C = 0."""
    from mxquant.layouts import public_scale_shape

    for lead in itertools.chain([()], itertools.product(range(4), repeat=1), itertools.product(range(4), repeat=2)):
        for k in range(0, 32 * 10, 32):
            shape = (*lead, k)
            same = public_scale_shape(shape, "linear") == public_scale_shape(shape, "swizzled")
            assert same == (shape == (0,)), shape
