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


# 2-D x with M % 128 == 0 and (K / 32) % 4 == 0: the linear shape is also the 2-D swizzled form
AMBIGUOUS = {(256, 4096), (128, 128)}


@pytest.mark.parametrize("shape, swizzled_len", SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_linear_scale_passed_as_swizzled_is_an_error(shape, swizzled_len):
    data, lin = mxquant.mxfp8_quantize(_x(shape))
    hint = (r"is ambiguous here.*pass scale\.reshape\(-1\).*pass scale_layout='linear'" if shape in AMBIGUOUS
            else r"this scale has the linear layout's shape: pass scale_layout='linear'$")
    with pytest.raises(ValueError, match=rf"swizzled layout needs a 1-D tensor of {swizzled_len} bytes.*{hint}"):
        mxquant.mxfp8_dequantize(data, lin, scale_layout="swizzled")


def _error(data, scale, layout) -> str:
    """The message after the call's name, which every argument error begins with."""
    with pytest.raises(ValueError) as info:
        mxquant.mxfp8_dequantize(data, scale, scale_layout=layout)
    call, _, message = str(info.value).partition(": ")
    assert call == "mxfp8_dequantize"
    return message


def test_an_ambiguous_2d_swizzled_scale_says_so_and_both_readings_follow_from_its_origin():
    """Issue 19: (256, 128) is the 2-D swizzled form and the linear shape of (256, 4096) data.
    The old hint ("pass scale_layout='linear'") dequantized the swizzled bytes at ~25 % error
    without an error. The message now says the shape is ambiguous and which fix fits which
    origin; each fix, followed for its origin, gives the reference's bytes."""
    x = _x((256, 4096))
    data, lin = mxquant.mxfp8_quantize(x)
    two_d = reference.quantize(x, torch.float8_e4m3fn, "rceil", "swizzled")[1]  # a backend's 2-D form
    assert two_d.shape == lin.shape == (256, 128)
    expected = (
        "scale.shape = (256, 128) does not match data.shape = (256, 4096); the swizzled layout needs a 1-D "
        "tensor of 32768 bytes (round_up(M, 128) * round_up(K // 32, 4) = 256 * 128); (256, 128) is ambiguous "
        "here: it is both the 2-D swizzled form backends use and the linear layout's shape, so the shape cannot "
        "tell which layout the bytes are in: if they are swizzled (a backend's 2-D scale), pass "
        "scale.reshape(-1); if mxfp8_quantize returned them with scale_layout='linear', pass "
        "scale_layout='linear' (the wrong one of the two dequantizes wrong values without an error)")
    assert _error(data, two_d, "swizzled") == expected
    assert _error(data, lin, "swizzled") == expected
    want = reference.dequantize(data, two_d, "swizzled", torch.float32)
    got = mxquant.mxfp8_dequantize(data, two_d.reshape(-1), scale_layout="swizzled", out_dtype=torch.float32)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    got = mxquant.mxfp8_dequantize(data, lin, scale_layout="linear", out_dtype=torch.float32)
    assert torch.equal(got.view(torch.int32), reference.dequantize(data, lin, "linear", torch.float32).view(torch.int32))
    # what the old hint led to: the swizzled bytes read as linear, no error, wrong values
    wrong = mxquant.mxfp8_dequantize(data, two_d, scale_layout="linear", out_dtype=torch.float32)
    assert not torch.equal(wrong, want)


def test_unambiguous_shapes_get_one_hint_whose_fix_gives_the_reference_bytes():
    x = _x((4, 64))  # M = 4: the 2-D swizzled form is (128, 4), the linear shape (4, 2)
    data, lin = mxquant.mxfp8_quantize(x)
    two_d = reference.quantize(x, torch.float8_e4m3fn, "rceil", "swizzled")[1]
    head = "scale.shape = {} does not match data.shape = (4, 64); "
    need_swz = "the swizzled layout needs a 1-D tensor of 512 bytes (round_up(M, 128) * round_up(K // 32, 4) = 128 * 4)"
    assert _error(data, two_d, "swizzled") == (head.format((128, 4)) + need_swz +
                                               "; this is the 2-D swizzled form backends use: pass scale.reshape(-1)")
    assert _error(data, lin, "swizzled") == (head.format((4, 2)) + need_swz +
                                             "; this scale has the linear layout's shape: pass scale_layout='linear'")
    assert _error(data, two_d.reshape(-1), "linear") == (
        head.format((512,)) + "linear layout needs (4, 2); this scale has the swizzled layout's shape: "
        "pass scale_layout='swizzled'")
    want = reference.dequantize(data, two_d, "swizzled", torch.float32)
    for fixed, layout in ((two_d.reshape(-1), "swizzled"), (lin, "linear")):
        got = mxquant.mxfp8_dequantize(data, fixed, scale_layout=layout, out_dtype=torch.float32)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_a_flat_swizzled_scale_of_the_flattened_linear_length_names_both_readings():
    x = _x((256, 4096))
    data, lin = mxquant.mxfp8_quantize(x)
    _, swz = mxquant.mxfp8_quantize(x, scale_layout="swizzled")
    expected = ("scale.shape = (32768,) does not match data.shape = (256, 4096); linear layout needs (256, 128); "
                "this scale has the swizzled layout's shape: pass scale_layout='swizzled' (unless it is a linear "
                "scale flattened by hand, which has the same length here: then pass scale.reshape(256, 128))")
    assert _error(data, swz, "linear") == _error(data, lin.reshape(-1), "linear") == expected
    want = reference.dequantize(data, lin, "linear", torch.float32).view(torch.int32)
    for fixed, layout in ((swz, "swizzled"), (lin.reshape(-1).reshape(256, 128), "linear")):
        got = mxquant.mxfp8_dequantize(data, fixed, scale_layout=layout, out_dtype=torch.float32)
        assert torch.equal(got.view(torch.int32), want)


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
    with pytest.raises(ValueError, match=rf"the {right} layout's shape"):  # (128, 4) is ambiguous: both named
        mxquant.mxfp8_dequantize(data, scale, scale_layout=wrong, backend=backend)
    assert {b.name for b in mxquant.list_backends().backends} >= {"cpu", "triton", "flashinfer", "xpu"}


@pytest.mark.parametrize("wrong", ["linear", "swizzled"])
def test_wrong_layout_is_an_error_in_the_custom_op_and_its_fake(wrong):
    right = "swizzled" if wrong == "linear" else "linear"
    data, scale = mxquant.mxfp8_quantize(_x((256, 4096)), scale_layout=right)
    match = rf"the {right} layout's shape"  # (256, 128) is ambiguous: the message names both readings
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


@pytest.mark.parametrize("fmt", ["mxfp8", "mxfp4", "nvfp4"])
@pytest.mark.parametrize("layout", ["linear", "swizzled"])
def test_a_flattened_linear_scale_of_nd_data_is_named_ambiguous_not_swizzled(fmt, layout):
    """Review of the ninth session: data (2, 64, 256) with the (128, C) scale of the same bytes
    quantized as 2-D. (128, C) is the 2-D swizzled form of this data and also the linear scale of
    the data flattened to 2-D; the hint named only the swizzled reading, and following it
    dequantized a linear scale wrongly without an error. Now the message names both readings,
    and each fix, followed for its origin, gives the reference's values."""
    x = _x((128, 256))
    block = 16 if fmt == "nvfp4" else 32
    if fmt == "mxfp8":
        q = mxquant.mxfp8_quantize(x)
        deq = lambda d, s, lay: mxquant.mxfp8_dequantize(d, s, scale_layout=lay, out_dtype=torch.float32)
        data, scale, shown = q.data, q.scale, "(2, 64, 256)"
    elif fmt == "mxfp4":
        q = mxquant.mxfp4_quantize(x)
        deq = lambda d, s, lay: mxquant.mxfp4_dequantize(d, s, scale_layout=lay, out_dtype=torch.float32)
        data, scale, shown = q.data, q.scale, "(2, 64, 128)"
    else:
        q = mxquant.nvfp4_quantize(x)
        deq = lambda d, s, lay: mxquant.nvfp4_dequantize(d, s, q.global_scale, scale_layout=lay, out_dtype=torch.float32)
        data, scale, shown = q.data, q.scale, "(2, 64, 128)"
    c = 256 // block
    assert tuple(scale.shape) == (128, c)  # also the 2-D swizzled form of 128 rows x 256 columns
    d3 = data.view(2, 64, data.shape[-1])
    with pytest.raises(ValueError) as err:
        deq(d3, scale, layout)
    msg = str(err.value)
    assert f"does not match data.shape = {shown}" in msg
    assert f"(128, {c}) is ambiguous here" in msg and "flattened to 2-D" in msg
    assert "scale.reshape(-1)" in msg and f"scale.reshape(2, 64, {c})" in msg
    # the linear reading (this scale's origin) gives the 2-D call's values, reshaped
    want = deq(data, scale, "linear").view(2, 64, 256)
    got = deq(d3, scale.reshape(2, 64, c), "linear")
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    # the swizzled reading of these linear bytes: accepted, and wrong (why neither is recommended alone)
    wrong = deq(d3, scale.reshape(-1), "swizzled")
    assert not torch.equal(torch.nan_to_num(wrong), torch.nan_to_num(want))
