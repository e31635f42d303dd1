"""A CPU model of Intel's MXFP8 quantize kernel (vllm-xpu-kernels'
`per_token_group_fp8_quant`), written from its published SYCL source, and the explanation of
each way its bytes differ from mxquant.reference. Used by tests/test_xpu_contract.py, which
registers `vendor_kernel` as a fake `torch.ops._C.per_token_group_fp8_quant`. Not a test
module itself (no test_ prefix)."""

from __future__ import annotations

import torch

from mxquant import reference
from mxquant.formats import ELEMENT_FORMATS

E4 = torch.float8_e4m3fn
F32 = torch.float32

SCHEMA = ("per_token_group_fp8_quant(Tensor input, Tensor! output_q, Tensor! output_s, int group_size, "
          "float eps, float fp8_min, float fp8_max, bool scale_ue8m0{extra}) -> ()")
EXTRA = {8: "", 10: ", bool dummy_is_scale_transposed, bool dummy_is_tma_aligned"}


def _f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=F32)


def vendor_kernel(input, output_q, output_s, group_size, eps, fp8_min, fp8_max, scale_ue8m0, *dummies):
    """per_token_group_quant_8bit_kernel, in fp32 exactly as the SYCL source writes it.

    absmax:  starts at 0.0 (thread_max_vec; eps is used only when group_size % 4 != 0), then
             sycl::max(absmax, fabs(x)) per lane and a sub-group max. sycl::max(a, NaN) returns a
             (both as SYCL defines max, "y if x < y else x", and as Intel GPUs' max instruction
             does), so a NaN never enters absmax; +-Inf does.
    scale:   y = max(absmax / M, 1 / (M * 512))  with M = numeric_limits<fp8>::max() (448 / 57344;
             the fp8_min/fp8_max arguments are unused), then with scale_ue8m0
             y = exp2(ceil(log2(fmax(fabs(y), 1e-10)))). log2 is modelled as correctly rounded
             fp32 (computed in fp64, rounded once); a device log2 with larger error can only
             widen the approx-scale band.
    element: fmax(-M, fmin(x * (1 / y), M)), then the c10 cast (round to nearest even).
             fmin(NaN, M) = M, so NaN (and Inf * 0) become +M.
    """
    assert output_s.dim() == 2 and not output_s.stride(0) < output_s.stride(1), "row-major scales expected"
    m = float(torch.finfo(output_q.dtype).max)
    x = input.reshape(-1, group_size).to(F32)
    a = x.abs()
    absmax = torch.where(a.isnan(), torch.zeros_like(a), a).amax(dim=-1)
    y = torch.maximum(absmax / _f32(m), _f32(1.0) / _f32(m * 512.0))
    if scale_ue8m0:
        log2 = torch.log2(torch.fmax(y.abs(), _f32(1e-10)).double()).to(F32)
        y = torch.exp2(torch.ceil(log2).double()).to(F32)
    output_s.view(-1).copy_(y)
    scaled = x * (_f32(1.0) / y).unsqueeze(-1)
    clamped = torch.fmax(_f32(-m), torch.fmin(scaled, _f32(m)))
    output_q.view(-1, group_size).copy_(clamped.to(output_q.dtype))


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        assert args[0].data_ptr() % 16 == 0, "the kernel's vector loads need an aligned input"
        vendor_kernel(*args)


def floor_exponent(dtype) -> int:
    """The kernel's smallest scale: ceil(log2(1 / (M * 512))) = -(emax + 9)."""
    return -(ELEMENT_FORMATS[dtype].emax + 9)


def requantize(x: torch.Tensor, s: int, dtype) -> torch.Tensor:
    """The contract's element rule with exponent `s` forced: RNE(clamp(x * 2**-s, +-M))."""
    m = ELEMENT_FORMATS[dtype].max_finite
    y = x.to(F32) * reference.power_of_two(torch.tensor(-s, dtype=torch.int32))
    return y.clamp(-m, m).to(dtype).view(torch.uint8)


def explain(x: torch.Tensor, dtype, got, want):
    """The deviation code that accounts for the kernel's bytes `got` = (scale byte, 32 element
    bytes) differing from the reference's `want` on block `x`, checked against that code's
    summary; None when nothing declared accounts for them."""
    (gs, gd), (ws, wd) = got, want
    m_byte = 0x7E if dtype == E4 else 0x7B  # +M: 448 = 1.75 * 2**8, 57344 = 1.75 * 2**15
    xf = x.to(F32)
    nan, inf = xf.isnan(), xf.isinf()
    finite_amax = float(torch.where(nan | inf, 0.0, xf.abs()).max())
    floor_s = floor_exponent(dtype)
    if nan.any():
        # scale from the other values (Inf -> 0xFF), NaN elements -> +M
        if inf.any():
            ok_scale, rest_ok = gs == 0xFF, bool(((gd == 0x00) | (gd == 0x80) | (gd == m_byte)).all())
        else:
            s = max(int(reference.quantize(torch.where(nan, 0.0, xf).reshape(1, -1), dtype, "rceil", "linear")[1]
                        .view(torch.uint8)) - 127, floor_s)
            ok_scale = gs == s + 127
            rest_ok = torch.equal(gd[~nan], requantize(xf[~nan], s, dtype))
        return "nan-ignored" if ok_scale and rest_ok and bool((gd[nan] == m_byte).all()) else None
    if inf.any():
        signed_zero = torch.where(xf.signbit(), 0x80, 0x00).to(torch.uint8)
        ok = gs == ws == 0xFF and torch.equal(gd[~inf], signed_zero[~inf]) and bool((gd[inf] == m_byte).all())
        return "inf-elements" if ok else None
    if finite_amax == 0:
        return "zero-block-scale" if (gs, ws) == (floor_s + 127, 0) and torch.equal(gd, wd) else None
    if finite_amax <= 1.75 * 2.0**-10:
        ok = gs == floor_s + 127 and ws < gs and torch.equal(gd, requantize(xf, floor_s, dtype))
        return "min-scale" if ok else None
    # approx-scale: the kernel took 2**k for an amax just above M * 2**k, where the fp32 log2 of
    # amax / M rounds to k (up to 39 ulps of amax above it, for k >= 64; see the docs' table).
    k = gs - 127
    boundary = ELEMENT_FORMATS[dtype].max_finite * 2.0**k
    if gs == ws - 1 and 0 < finite_amax / boundary - 1 < 2.0**-17 and torch.equal(gd, requantize(xf, k, dtype)):
        return "approx-scale"
    return None
