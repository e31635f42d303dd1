"""The contract in plain PyTorch (docs/semantics.md): the oracle every backend is compared
with byte for byte. Clarity over speed: each rule is one or two lines here."""

from __future__ import annotations

import math

import torch

from .formats import BLOCK, E8M0_BIAS, E8M0_NAN, ELEMENT_FORMATS, ELEMENT_NAN, RCEIL_MANTISSA_THRESHOLD
from .layouts import swizzle, unswizzle

_ABS_MASK = 0x7FFFFFFF
_FP32_INF_BITS = 0x7F800000


def scale_exponents(amax_bits: torch.Tensor, dtype: torch.dtype, scale_mode: str) -> torch.Tensor:
    """The shared exponent s of each block, from the fp32 bit pattern of its amax (int32).

    floor: s = floor(log2(amax)) - emax                      (OCP MX v1.0)
    rceil: s = smallest integer with 2**s >= amax / max_finite (NVIDIA / cuBLAS)
    compressed-tensors: rceil, but s + 1 when amax == max_finite * 2**s exactly
    Both read the exponent and mantissa fields of amax's fp32 bits, so no rounding enters.
    A zero or fp32-subnormal amax has exponent field 0, which the clamp turns into s = -127.
    """
    emax = ELEMENT_FORMATS[dtype].emax
    biased = amax_bits >> 23  # fp32 exponent field: floor(log2(amax)) + 127 for normal amax
    s = biased - 127 - emax
    if scale_mode == "rceil":
        # max_finite = 1.75 * 2**emax, so amax / max_finite > 2**(floor(log2 amax) - emax)
        # exactly when amax's mantissa is above 1.75's.
        s = s + ((amax_bits & 0x7FFFFF) > RCEIL_MANTISSA_THRESHOLD).to(s.dtype)
    elif scale_mode == "compressed-tensors":
        # compressed-tensors / llm-compressor: amax rounded up to the next power of two when its
        # significand is >= 1.75, then minus emax: rceil except on the tie amax = max_finite * 2**k.
        s = s + ((amax_bits & 0x7FFFFF) >= RCEIL_MANTISSA_THRESHOLD).to(s.dtype)
    return s.clamp(-127, 127)


def power_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """2**exponent as fp32 built from bits, for exponent in [-127, 127] (2**-127 is subnormal)."""
    normal = ((exponent + 127).clamp(min=1) << 23).view(torch.float32)
    subnormal = torch.full_like(normal, 2.0**-127)
    return torch.where(exponent == -127, subnormal, normal)


def encode_blocks(values: torch.Tensor, dims: tuple, dtype: torch.dtype, scale_mode: str):
    """The per-block rules on fp32 `values` whose blocks span `dims` (32 elements along one dim
    for 1x32 blocks; two dims for 32x32 tiles). Returns (element bytes uint8 of values' shape,
    scale bytes uint8 of values' shape with `dims` kept at size 1)."""
    fmt = ELEMENT_FORMATS[dtype]
    # amax from the bits: for non-negative floats, integer order is float order, and NaN/Inf
    # (exponent field all ones) compare above every finite value.
    abs_bits = values.view(torch.int32) & _ABS_MASK
    # (an int32 sum for empty inputs: a plain sum would promote to int64, and power_of_two's
    # int32 -> fp32 bit view would then double the last dimension)
    if values.numel():
        amax_bits = abs_bits.amax(dim=dims, keepdim=True)
    else:
        amax_bits = abs_bits.sum(dim=dims, keepdim=True, dtype=torch.int32)
    special = amax_bits >= _FP32_INF_BITS  # a NaN or an Inf somewhere in the block

    s = scale_exponents(amax_bits, dtype, scale_mode)
    scale_bytes = torch.where(special, E8M0_NAN, s + E8M0_BIAS).to(torch.uint8)

    # Elements: x * 2**-s in fp32 (2**-s is a normal fp32 for every s a finite block can get),
    # clamped to the format's largest finite value, then rounded to nearest-even by the cast.
    scaled = values * power_of_two(-s)
    scaled = scaled.clamp(-fmt.max_finite, fmt.max_finite)
    data = scaled.to(dtype).view(torch.uint8)
    data = torch.where(special, ELEMENT_NAN, data).to(torch.uint8)
    return data, scale_bytes


def quantize(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str):
    """Quantize `x` (fp32/bf16/fp16, last dim a multiple of 32). Returns (data, scale)."""
    shape = x.shape
    k = shape[-1]
    rows = math.prod(shape[:-1])  # explicit: reshape(-1, ...) is ambiguous when K == 0
    # .contiguous(): a strided input could reshape to a strided view, and elementwise ops would
    # then return outputs with its strides; the contract (and the fake) say contiguous.
    blocks = x.contiguous().reshape(rows, k // BLOCK, BLOCK).to(torch.float32)  # exact upcast
    data, scale_bytes = encode_blocks(blocks, (-1,), dtype, scale_mode)

    data = data.reshape(shape).view(dtype)
    scale = scale_bytes.reshape(*shape[:-1], k // BLOCK)
    if scale_layout == "swizzled":
        scale = swizzle(scale.reshape(rows, k // BLOCK))
    return data, scale.view(torch.float8_e8m0fnu)


# Dequantize's one NaN per out_dtype (docs/semantics.md, "Dequantize"; MXFP8, MXFP4 and NVFP4):
# the quiet NaN 0x7FC00000 rounded as torch's vectorised CPU casts write it. Whatever NaN the
# arithmetic made (torch's e4m3 -> fp32 gives 0x7FF00000 / 0xFFF00000, x * NaN keeps one operand's
# payload and sign, 0 * Inf is the hardware's default NaN, GPU casts write 0x7FFF) is replaced by it.
# (float64: not a public out_dtype; tests sum the reference's exact values in it.)
DEQUANT_NAN_BITS = {torch.float32: (torch.int32, 0x7FC00000), torch.bfloat16: (torch.int16, -1),
                    torch.float16: (torch.int16, 0x7E00), torch.float64: (torch.int64, 0x7FF8000000000000)}


def round_to_out(v: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """fp32 values rounded once to out_dtype (RNE), every NaN the contract's NaN of out_dtype."""
    out = v.to(out_dtype)
    ints, bits = DEQUANT_NAN_BITS[out_dtype]
    # masked_fill keeps out's strides (torch.where's may differ for an empty tensor)
    return out.view(ints).masked_fill(out.isnan(), bits).view(out_dtype)


def dequantize(data: torch.Tensor, scale: torch.Tensor, scale_layout: str, out_dtype: torch.dtype):
    """data * 2**s per block, computed exactly in fp32 and rounded once to `out_dtype`; every NaN
    (a 0xFF scale's block, a NaN element) written as DEQUANT_NAN_BITS[out_dtype]."""
    shape = data.shape
    k = shape[-1]
    rows = data.numel() // k if k else 0
    scale_bytes = scale.view(torch.uint8)
    if scale_layout == "swizzled":
        scale_bytes = unswizzle(scale_bytes.reshape(-1), rows, k // BLOCK)
    scale_bytes = scale_bytes.reshape(rows, k // BLOCK).to(torch.int32)

    factor = power_of_two(scale_bytes.clamp(max=254) - E8M0_BIAS)
    factor = torch.where(scale_bytes == E8M0_NAN, float("nan"), factor)
    values = data.contiguous().reshape(rows, k // BLOCK, BLOCK).to(torch.float32) * factor.unsqueeze(-1)
    return round_to_out(values.reshape(shape), out_dtype)
