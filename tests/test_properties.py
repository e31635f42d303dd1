"""Property tests (hypothesis) of the reference backend against the contract, docs/semantics.md.

The error bound checked for every element of every finite block. With s the block's shared
exponent, y = x * 2**-s (exact), q the element's value and p the element's mantissa bits
(e4m3: p = 3, emin = -6, M = 448; e5m2: p = 2, emin = -14, M = 57344):

    |y| <= M:  |y - q| <= ulp(y) / 2,  ulp(y) = 2**(max(floor(log2 |y|), emin) - p)   (RNE)
    |y| >  M:  q = sign(y) * M                                  (saturation, floor mode only)

and dequantize to fp32 is exact (q * 2**s needs at most p + 1 bits, from 2**(s + emin - p) >=
2**-149 up) unless q * 2**s reaches 2**128, which happens when an amax near fp32's max rounds up
to the next power of two (rceil: 255.6 * 2**120 -> 256 * 2**120): that dequantizes to +-Inf.
Elsewhere |x - dequantize(quantize(x))| <= 2**s * ulp(y) / 2 wherever |y| <= M.
rceil never saturates: amax * 2**-s <= M for every finite block; floor keeps it below 2 * 2**emax.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant.formats import ELEMENT_FORMATS
from mxquant.layouts import round_up

import mx_oracle as oracle
from mx_oracle import assert_same_values

ELEMS = [torch.float8_e4m3fn, torch.float8_e5m2]
MODES = ["rceil", "floor"]
LAYOUTS = ["linear", "swizzled"]
INPUTS = [torch.float32, torch.bfloat16, torch.float16]
P = {torch.float8_e4m3fn: (3, -6), torch.float8_e5m2: (2, -14)}  # mantissa bits, emin

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECIALS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0]


def q(x, dtype=torch.float8_e4m3fn, mode="rceil", layout="linear"):
    return mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, scale_layout=layout, backend="cpu")


def dq(data, scale, layout="linear", out_dtype=torch.float32):
    return mxquant.mxfp8_dequantize(data, scale, scale_layout=layout, out_dtype=out_dtype, backend="cpu")


@st.composite
def tensors(draw, max_lead=2, allow_special=True):
    """An fp32 tensor (*lead, 32 * nb): blocks of random magnitude 2**-150 .. 2**127, elements
    spread over up to 2**-30 below it, and a few planted special or arbitrary fp32 values."""
    lead = draw(st.lists(st.integers(1, 3), max_size=max_lead))
    nb = draw(st.integers(1, 3))
    rows = math.prod(lead)
    exps = draw(st.lists(st.integers(-150, 127), min_size=rows * nb, max_size=rows * nb))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    mant = torch.randn(rows * nb, 32, generator=g, dtype=torch.float64)
    spread = torch.exp2(-torch.randint(0, 31, (rows * nb, 32), generator=g).double())
    x = mant * spread * torch.exp2(torch.tensor(exps, dtype=torch.float64)).unsqueeze(-1)
    x = x.clamp(-3.4e38, 3.4e38).float().reshape(-1)
    values = st.sampled_from(SPECIALS) if allow_special else st.nothing()
    planted = draw(st.lists(st.tuples(st.integers(0, x.numel() - 1), values | st.floats(width=32)), max_size=4))
    for i, v in planted:
        if allow_special or math.isfinite(v):
            x[i] = v
    return x.reshape(*lead, 32 * nb)


def expected_exponent(amax: float, dtype, mode) -> int:
    """The contract's s, from the definitions with exact rationals (no bit tricks)."""
    fmt = ELEMENT_FORMATS[dtype]
    if amax == 0:
        return -127
    floor_log2 = math.frexp(amax)[1] - 1  # exact for any positive float
    if mode == "floor":
        s = floor_log2 - fmt.emax
    else:  # smallest s with 2**s >= amax / M
        ratio = Fraction(amax) / Fraction(fmt.max_finite)
        s = floor_log2 - fmt.emax - 1
        while Fraction(2) ** s < ratio:
            s += 1
    return max(-127, min(127, s))


@pytest.mark.parametrize("dtype", ELEMS, ids=str)
@pytest.mark.parametrize("mode", MODES)
@SETTINGS
@given(x=tensors(), input_dtype=st.sampled_from(INPUTS))
def test_round_trip_error_bound_and_scale_rule(dtype, mode, x, input_dtype):
    x = x.to(input_dtype)
    data, scale = q(x, dtype, mode)
    deq = dq(data, scale).double().reshape(-1, 32)
    xb = x.double().reshape(-1, 32)
    sb = scale.view(torch.uint8).reshape(-1).tolist()
    fmt, (p, emin) = ELEMENT_FORMATS[dtype], P[dtype]
    data_bytes = data.view(torch.uint8).reshape(-1, 32)
    elems = data.double().reshape(-1, 32)
    for b in range(xb.shape[0]):
        xs = xb[b]
        if not torch.isfinite(xs).all():
            assert sb[b] == 0xFF and (data_bytes[b] == 0x7F).all() and deq[b].isnan().all()
            continue
        amax = xs.abs().max().item()
        assert 0 <= sb[b] <= 254
        s = sb[b] - 127
        assert s == expected_exponent(amax, dtype, mode), (amax, s)
        if mode == "rceil":
            assert amax * 2.0**-s <= fmt.max_finite  # never saturates
        else:
            assert amax * 2.0**-s < 2 * 2.0**fmt.emax
        y = xs * 2.0**-s                           # exact in float64
        qv = elems[b]                              # the element values (fp8 -> float64 is exact)
        floor_log2 = torch.floor(torch.log2(y.abs())).clamp(min=emin)  # -inf for 0 -> emin
        half_ulp = torch.exp2(floor_log2 - p) / 2
        inside = y.abs() <= fmt.max_finite
        assert ((y - qv).abs() <= half_ulp)[inside].all()
        assert (qv[~inside] == fmt.max_finite * y[~inside].sign()).all()
        # dequantize is q * 2**s exactly, except where that reaches 2**128 (an amax near fp32's
        # max whose element rounded up to the next power of two): fp32 overflow, +-Inf
        exact = qv * 2.0**s
        overflow = exact.abs() >= 2.0**128
        assert torch.equal(deq[b][~overflow], exact[~overflow])
        assert (deq[b][overflow].abs() == math.inf).all()
        assert ((xs - deq[b]).abs() <= half_ulp * 2.0**s)[inside & ~overflow].all()
        assert torch.equal(torch.signbit(deq[b]), torch.signbit(xs))  # signs kept, zeros included


def _significant_strides(t):
    # The stride of a dimension of size 0 or 1 never addresses memory (torch's own fake-tensor
    # checks ignore it too): e.g. shape (0, 1, 32) may come back with strides (32, 0, 1) or (32, 32, 1).
    return [st for sz, st in zip(t.shape, t.stride()) if sz > 1]


SHAPES = st.lists(st.integers(0, 3), max_size=3).flatmap(
    lambda lead: st.integers(0, 3).map(lambda nb: (*lead, 32 * nb)))


@SETTINGS
@given(shape=SHAPES, dtype=st.sampled_from(ELEMS), mode=st.sampled_from(MODES),
       layout=st.sampled_from(LAYOUTS), input_dtype=st.sampled_from(INPUTS))
def test_outputs_match_the_fake(shape, dtype, mode, layout, input_dtype):
    x = torch.randn(shape).to(input_dtype)
    data, scale = torch.ops.mxquant.quantize(x, dtype, mode, layout, "cpu")
    deq = torch.ops.mxquant.dequantize(data, scale, layout, input_dtype, "cpu")
    with FakeTensorMode() as fake_mode:
        fx = fake_mode.from_tensor(x)
        fdata, fscale = torch.ops.mxquant.quantize(fx, dtype, mode, layout, "cpu")
        fdeq = torch.ops.mxquant.dequantize(fdata, fscale, layout, input_dtype, "cpu")
    for real, fake in ((data, fdata), (scale, fscale), (deq, fdeq)):
        assert (real.shape, real.dtype) == (fake.shape, fake.dtype)
        assert real.is_contiguous() and fake.is_contiguous()
        assert _significant_strides(real) == _significant_strides(fake)
    assert scale.dtype == torch.float8_e8m0fnu
    k, rows = shape[-1], math.prod(shape[:-1])
    if layout == "linear":
        assert scale.shape == (*shape[:-1], k // 32)
    else:
        assert scale.shape == (round_up(rows, 128) * round_up(k // 32, 4),)  # flat


def bits(t):
    return t.view(torch.uint8)




@SETTINGS
@given(x=tensors(max_lead=3), dtype=st.sampled_from(ELEMS), mode=st.sampled_from(MODES))
def test_swizzled_scales_hold_the_linear_bytes(x, dtype, mode):
    # The oracle (tests/mx_oracle.py) places each scale by the contract's flat-index formula
    # and pads with zeros; mxquant's layouts.py is not used on this side.
    data_l, lin = q(x, dtype, mode, "linear")
    data_s, swz = q(x, dtype, mode, "swizzled")
    want_d, want_lin = oracle.quantize(x, dtype, mode, "linear")
    assert torch.equal(bits(data_l), want_d) and torch.equal(bits(data_s), want_d)
    assert torch.equal(bits(lin), want_lin)
    rows, cols = math.prod(x.shape[:-1]), x.shape[-1] // 32
    assert torch.equal(bits(swz), oracle.swizzle(want_lin.reshape(rows, cols)).reshape(-1))  # public: flat
    # and dequantize reads the swizzled layout by the same formula
    want = oracle.dequantize(data_s, want_lin.reshape(rows, cols), torch.float32)
    assert_same_values(dq(data_s, swz, "swizzled"), want, "swizzled")
    assert_same_values(dq(data_l, lin), want, "linear")


@SETTINGS
@given(x=tensors(max_lead=1), how=st.sampled_from(["transpose", "step", "expand", "offset"]),
       dtype=st.sampled_from(ELEMS), layout=st.sampled_from(LAYOUTS), input_dtype=st.sampled_from(INPUTS))
def test_non_contiguous_input_gives_the_oracle_bytes(x, how, dtype, layout, input_dtype):
    x = x.to(input_dtype).reshape(-1, x.shape[-1])
    if x.shape[0] == 1:
        x = torch.cat([x, x / 2])  # two rows, so that a transposed copy is not contiguous
    if how == "transpose":
        view = x.t().contiguous().t()                 # column-major storage
    elif how == "step":
        view = torch.stack([x, x * 2], dim=-1).reshape(x.shape[0], -1)[:, ::2]  # stride 2 in K
    elif how == "expand":
        view = x[:1].expand(3, -1)                     # stride 0 rows
    else:
        view = torch.cat([x, x], dim=-1)[:, x.shape[-1]:]  # a storage offset and a row stride of 2K
    assert not view.is_contiguous()
    got_d, got_s = q(view, dtype, "rceil", layout)
    want_d, want_s = oracle.quantize(view, dtype, "rceil", layout)
    assert torch.equal(bits(got_d), want_d) and torch.equal(bits(got_s), oracle.public(want_s, layout))
    assert got_d.is_contiguous() and got_s.is_contiguous()
    # dequantize of non-contiguous data (the scale must be contiguous for "swizzled")
    data_t = got_d.t().contiguous().t()
    lin = oracle.quantize(view, dtype, "rceil", "linear")[1]
    assert_same_values(dq(data_t, got_s, layout), oracle.dequantize(got_d, lin, torch.float32), how)


@SETTINGS
@given(lead=st.lists(st.integers(0, 3), max_size=4), nb=st.integers(0, 3),
       dtype=st.sampled_from(ELEMS), layout=st.sampled_from(LAYOUTS))
def test_any_leading_dims(lead, nb, dtype, layout):
    shape = (*lead, 32 * nb)
    g = torch.Generator().manual_seed(len(lead) * 10 + nb)
    x = torch.randn(shape, generator=g) * 100
    data, scale = q(x, dtype, "floor", layout)
    want_d, want_s = oracle.quantize(x, dtype, "floor", layout)
    assert data.shape == x.shape and data.dtype == dtype
    if layout == "linear":
        assert scale.shape == (*lead, nb)
    else:
        assert scale.shape == (round_up(math.prod(lead), 128) * round_up(nb, 4),)
    assert torch.equal(bits(data), want_d) and torch.equal(bits(scale), oracle.public(want_s, layout))
    back = dq(data, scale, layout)
    assert back.shape == x.shape
    lin = oracle.quantize(x, dtype, "floor", "linear")[1]
    assert_same_values(back, oracle.dequantize(data, lin, torch.float32), str(shape))
