"""MXFP4 and NVFP4 in plain PyTorch (docs/semantics.md, "MXFP4 and NVFP4"): the oracle every
backend that claims the FP4 calls is compared with, byte for byte. Data is packed two e2m1
nibbles a byte, the even element in the low nibble; scales are linear or in the 128x4 layout.

Each step is written the way the contract states it, including the roundings that
compressed-tensors performs (and its checkpoints therefore hold): see the comments."""

from __future__ import annotations

import math

import torch

from .formats import (E2M1_EMAX, E2M1_MAX, E4M3_MAX, E4M3_NAN, E8M0_BIAS, E8M0_NAN, MXFP4_BLOCK, NVFP4_BLOCK,
                      NVFP4_ZERO_SCALE)
from .layouts import swizzle, unswizzle
from .reference import power_of_two
from .reference import round_to_out as _to_out  # fp32 -> out_dtype, each NaN the contract's one

_ABS_MASK = 0x7FFFFFFF
_FP32_INF_BITS = 0x7F800000
_E2M1_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
# Ties to even on the e2m1 grid: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
# Index of |y| (y finite, |y| <= 6) = how many of these it passes ("gt": strictly, "ge": or equals).
_STEPS = ((0.25, "gt"), (0.75, "ge"), (1.25, "gt"), (1.75, "ge"), (2.5, "gt"), (3.5, "ge"), (5.0, "gt"))
# MXFP4 scale exponent: floor(log2 amax) - 2, plus one when amax's significand exceeds this
# (fp32 mantissa field): rceil 1.5 (6 = 1.5 * 2**2), compressed-tensors (and torchao's EVEN) >= 1.75.
_RCEIL_FP4 = 0x400000
_CT_FP4 = 0x600000


def e2m1_nibbles(y: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Nibbles (uint8) of fp32 values y clamped to [-6, 6]: round to nearest even on the e2m1
    grid, sign bit 8 where `negative` (bool) is set."""
    a = y.abs()
    index = torch.zeros(y.shape, dtype=torch.uint8, device=y.device)
    for bound, how in _STEPS:
        index += (a > bound if how == "gt" else a >= bound).to(torch.uint8)
    return index | (negative.to(torch.uint8) << 3)


def pack(nibbles: torch.Tensor) -> torch.Tensor:
    """(..., K) nibbles -> (..., K/2) bytes: element 2j in the low nibble, 2j+1 in the high one."""
    pairs = nibbles.reshape(*nibbles.shape[:-1], nibbles.shape[-1] // 2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_values(data: torch.Tensor) -> torch.Tensor:
    """(..., K/2) packed bytes -> (..., K) fp32 e2m1 values (nibble 8 is -0.0)."""
    b = data.contiguous().view(torch.uint8)
    nib = torch.stack((b & 0xF, b >> 4), dim=-1).reshape(*b.shape[:-1], 2 * b.shape[-1]).long()
    values = _E2M1_VALUES.to(data.device)[nib & 7]
    return torch.where(nib >= 8, -values, values)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    rows, k = math.prod(x.shape[:-1]), x.shape[-1]
    return x.contiguous().reshape(rows, k // block, block)


def _amax_bits(values: torch.Tensor) -> torch.Tensor:
    bits = values.float().view(torch.int32) & _ABS_MASK
    if values.numel():
        return bits.amax(dim=-1, keepdim=True)
    return bits.sum(dim=-1, keepdim=True, dtype=torch.int32)


def _layout(scale_bytes: torch.Tensor, lead: tuple, layout: str) -> torch.Tensor:
    """(rows, nb, 1) scale bytes -> linear (*lead, nb) or the 128x4 layout (2-D)."""
    rows, nb = scale_bytes.shape[:2]
    if layout == "swizzled":
        return swizzle(scale_bytes.reshape(rows, nb))
    return scale_bytes.reshape(*lead, nb)


# ---- MXFP4 ---------------------------------------------------------------------------------------

def mxfp4_scale_exponents(amax_bits: torch.Tensor, scale_mode: str) -> torch.Tensor:
    """s per block from amax's fp32 bits: floor(log2 amax) - 2 (+1: rceil when the significand
    exceeds 1.5, compressed-tensors when it is >= 1.75), clamped to [-127, 127]."""
    s = (amax_bits >> 23) - 127 - E2M1_EMAX
    mantissa = amax_bits & 0x7FFFFF
    if scale_mode == "rceil":
        s = s + (mantissa > _RCEIL_FP4).to(s.dtype)
    elif scale_mode == "compressed-tensors":
        s = s + (mantissa >= _CT_FP4).to(s.dtype)
    return s.clamp(-127, 127)


def mxfp4_quantize(x: torch.Tensor, scale_mode: str, scale_layout: str):
    """(data uint8 (..., K/2), scale e8m0: linear (..., K/32) or the 128x4 layout, 2-D)."""
    values = _blocks(x, MXFP4_BLOCK)
    v = values.float()
    amax_bits = _amax_bits(values)
    special = amax_bits >= _FP32_INF_BITS
    s = mxfp4_scale_exponents(amax_bits, scale_mode)
    scale_bytes = torch.where(special, E8M0_NAN, s + E8M0_BIAS).to(torch.uint8)
    y = (v * power_of_two(-s)).clamp(-E2M1_MAX, E2M1_MAX)  # exact: a power-of-two scaling
    if scale_mode == "compressed-tensors":
        # its sign: that of x / 2**s computed in x's dtype; an input zero (either sign) is +0
        negative = y.to(x.dtype) < 0
    else:
        negative = torch.signbit(v)  # every sign kept, -0.0 included (as MXFP8)
    nibbles = torch.where(special, 0, e2m1_nibbles(y, negative)).to(torch.uint8)
    data = pack(nibbles.reshape(*x.shape))
    return data, _layout(scale_bytes, tuple(x.shape[:-1]), scale_layout).view(torch.float8_e8m0fnu)


def _scale_rows(scale: torch.Tensor, rows: int, nb: int, layout: str) -> torch.Tensor:
    b = scale.view(torch.uint8)
    if layout == "swizzled":
        return unswizzle(b.reshape(-1), rows, nb)
    return b.reshape(rows, nb)


def mxfp4_dequantize(data: torch.Tensor, scale: torch.Tensor, scale_layout: str, out_dtype: torch.dtype):
    """e2m1 value * 2**(b - 127) per block, exact in fp32, rounded once to out_dtype; NaN for 0xFF
    (each NaN written as _to_out's)."""
    k = 2 * data.shape[-1]
    rows, nb = math.prod(data.shape[:-1]), k // MXFP4_BLOCK
    b = _scale_rows(scale, rows, nb, scale_layout).to(torch.int32)
    factor = torch.where(b == E8M0_NAN, float("nan"), power_of_two(b.clamp(max=254) - E8M0_BIAS))
    q = unpack_values(data).reshape(rows, nb, MXFP4_BLOCK)
    return _to_out((q * factor.unsqueeze(-1)).reshape(*data.shape[:-1], k), out_dtype)


# ---- NVFP4 ---------------------------------------------------------------------------------------

def nvfp4_global_scale(x: torch.Tensor) -> torch.Tensor:
    """compressed-tensors' global scale, float32 (1,): 448 * 6 / amax as it computes it, the
    reciprocal of amax rounded to x's dtype, times 2688 rounded to x's dtype (torch evaluates
    `2688.0 / t` as `t.reciprocal() * 2688.0`); amax over the finite elements; 1.0 where the
    result is not finite (amax zero or tiny) or x has no finite element."""
    finite = x.isfinite()
    amax = torch.where(finite, x, 0).abs().amax() if x.numel() else x.new_zeros(())
    g = (amax.reciprocal() * (E4M3_MAX * E2M1_MAX)).float()
    return torch.where(g.isfinite(), g, 1.0).reshape(1)


def nvfp4_quantize(x: torch.Tensor, global_scale, scale_mode: str, scale_layout: str):
    """(data uint8 (..., K/2), scale float8_e4m3fn linear (..., K/16) or 128x4 2-D, global_scale
    float32 (1,)). global_scale None: nvfp4_global_scale(x)."""
    g = nvfp4_global_scale(x) if global_scale is None else global_scale.reshape(1).float()
    values = _blocks(x, NVFP4_BLOCK)
    special = _amax_bits(values) >= _FP32_INF_BITS
    amax = values.abs().amax(dim=-1, keepdim=True) if values.numel() else values.new_zeros(*values.shape[:-1], 1)
    # the group scale: amax / 6 rounded to x's dtype, times g in fp32, clamped to 448, rounded to
    # e4m3 (RNE); a scale that rounds to zero becomes 0.125 (compressed-tensors' eps for e4m3)
    per_group = (g * (amax / E2M1_MAX)).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    bytes_ = per_group.view(torch.uint8)
    bytes_ = torch.where(bytes_ == 0, NVFP4_ZERO_SCALE, bytes_)
    bytes_ = torch.where(special, E4M3_NAN, bytes_).to(torch.uint8)
    # elements: x / (scale / g), both divisions in fp32, clamped to 6, rounded to e2m1
    s = torch.where(special, 1, bytes_).view(torch.float8_e4m3fn).float()
    y = (values.float() / (s / g)).clamp(-E2M1_MAX, E2M1_MAX)
    nibbles = torch.where(special, 0, e2m1_nibbles(y, y < 0)).to(torch.uint8)
    data = pack(nibbles.reshape(*x.shape))
    scale = _layout(bytes_, tuple(x.shape[:-1]), scale_layout).view(torch.float8_e4m3fn)
    return data, scale, g.clone()


def nvfp4_dequantize(data: torch.Tensor, scale: torch.Tensor, global_scale: torch.Tensor, scale_layout: str,
                     out_dtype: torch.dtype):
    """e2m1 value * (scale / global_scale), the quotient and the product in fp32, then rounded to
    out_dtype; a NaN scale (0x7F / 0xFF) makes its group NaN (each NaN written as _to_out's, as is
    0 * Inf where scale / g overflows)."""
    k = 2 * data.shape[-1]
    rows, nb = math.prod(data.shape[:-1]), k // NVFP4_BLOCK
    s = _scale_rows(scale, rows, nb, scale_layout).view(torch.float8_e4m3fn).float()
    factor = s / global_scale.reshape(1).float()
    q = unpack_values(data).reshape(rows, nb, NVFP4_BLOCK)
    return _to_out((q * factor.unsqueeze(-1)).reshape(*data.shape[:-1], k), out_dtype)
