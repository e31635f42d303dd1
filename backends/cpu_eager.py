"""The `cpu-eager` backend: a fast pure-PyTorch path for CPUs where the native kernel is not built.

Byte-exact with the reference and the same arithmetic (x * 2**-s in fp32, clamp, torch's RNE
cast), reorganised for speed and bounded memory:

* rows are processed in chunks of about CHUNK_ELEMS elements, with one fp32 and one integer
  work buffer reused across chunks, so extra memory is a small constant, not 7-9x the input;
* amax is an int32 reduction of the fp32 bits with the sign masked off (for non-negative
  floats integer order is float order; NaN/Inf sort above every finite value). int32, because
  torch's int16 and float reductions over 32-element rows are several times slower;
* x * 2**-s is multiplied in place in the fp32 buffer (bf16/fp16 upcast into it exactly); the
  clamp runs only for floor (rceil and compressed-tensors never exceed M on a finite block),
  and torch's RNE cast writes straight into the output (it is most of the time);
* NaN/Inf blocks are patched only in chunks that have one.

`quantize_into` / `dequantize_into` write into caller-provided buffers (for the benchmark).
"""

from __future__ import annotations

import math

import torch

from mxquant import reference
from mxquant.backend import Backend
from mxquant.formats import (BLOCK, E8M0_BIAS, E8M0_NAN, ELEMENT_FORMATS, ELEMENT_NAN, INPUT_DTYPES, SWIZZLE_ROWS,
                             scale_shape, swizzled_scale_shape)

from ._cpu_shared import CPU_CAPABILITIES, rows_view

CHUNK_ELEMS = 1 << 18
"""Elements per chunk: 1 MiB of fp32 work buffer, large enough for torch's intra-op threads."""

_INF_BITS = 0x7F800000  # fp32 bits of +Inf: NaN and Inf sort at or above it


def _chunk_rows(rows: int, k: int, swizzled: bool) -> int:
    n = max(1, CHUNK_ELEMS // max(k, 1))
    if swizzled:  # whole 128-row tiles, so each chunk's scales are one contiguous byte range
        n = max(SWIZZLE_ROWS, n // SWIZZLE_ROWS * SWIZZLE_ROWS)
    return min(n, max(rows, 1))


def quantize_into(x, data, scale, dtype, scale_mode, scale_layout) -> None:
    """Quantize `x` into `data` (x's shape, `dtype` or uint8, contiguous) and `scale` (the
    layout's shape, float8_e8m0fnu or uint8, contiguous). Checks the buffers first."""
    for name, t, shape, dts in (("data", data, x.shape, (dtype, torch.uint8)),
                                ("scale", scale, scale_shape(tuple(x.shape), scale_layout),
                                 (torch.float8_e8m0fnu, torch.uint8))):
        if t.dtype not in dts or not t.is_contiguous() or t.numel() != math.prod(shape) or t.device != x.device:
            raise ValueError(f"{name} must be a contiguous tensor of {math.prod(shape)} elements of "
                             f"{' or '.join(map(str, dts))} on {x.device}; got {t.dtype} {tuple(t.shape)}")
    k, hp = x.shape[-1], x.dtype
    rows = math.prod(x.shape[:-1])
    nb = k // BLOCK
    swizzled = scale_layout == "swizzled"
    scale_u8 = scale.view(torch.uint8).view(-1)
    if swizzled:
        scale_u8.zero_()  # padding bytes
    if rows == 0 or k == 0:
        return
    fmt = ELEMENT_FORMATS[dtype]
    x2 = rows_view(x)
    out = data.view(torch.uint8).view(rows, k)
    cr = _chunk_rows(rows, k, swizzled)
    fbuf = torch.empty(cr * k, dtype=torch.float32)
    ibuf = torch.empty(cr * k, dtype=torch.int32)
    pcols = swizzled_scale_shape(rows, k)[1]
    for r0 in range(0, rows, cr):
        r1 = min(rows, r0 + cr)
        n = r1 - r0
        fc = fbuf[: n * k].view(n, k)
        src = x2[r0:r1] if hp == torch.float32 else fc.copy_(x2[r0:r1])  # exact upcast
        abs_bits = torch.bitwise_and(src.view(torch.int32), 0x7FFFFFFF, out=ibuf[: n * k].view(n, k))
        amax = abs_bits.view(n, nb, BLOCK).amax(dim=-1)
        special = amax >= _INF_BITS
        s = reference.scale_exponents(amax, dtype, scale_mode)
        sbytes = torch.where(special, E8M0_NAN, s + E8M0_BIAS).to(torch.uint8)
        y = torch.mul(src.view(n, nb, BLOCK), reference.power_of_two(-s).unsqueeze(-1), out=fc.view(n, nb, BLOCK))
        if scale_mode == "floor":  # the only mode in which a finite block can exceed M
            y.clamp_(-fmt.max_finite, fmt.max_finite)
        oc = out[r0:r1]
        oc.view(dtype).view(n, nb, BLOCK).copy_(y)  # RNE cast straight into the output
        if bool(special.any()):
            oc.view(n, nb, BLOCK).masked_fill_(special.unsqueeze(-1), ELEMENT_NAN)
        if swizzled:
            tile0 = r0 // SWIZZLE_ROWS * SWIZZLE_ROWS * pcols
            sw = reference.swizzle(sbytes)
            scale_u8[tile0: tile0 + sw.numel()].copy_(sw.view(-1))
        else:
            scale_u8[r0 * nb: r1 * nb].copy_(sbytes.view(-1))


def quantize(x, dtype, scale_mode, scale_layout):
    data = torch.empty(x.shape, dtype=dtype)
    scale = torch.empty(scale_shape(tuple(x.shape), scale_layout), dtype=torch.float8_e8m0fnu)
    quantize_into(x, data, scale, dtype, scale_mode, scale_layout)
    return data, scale


def dequantize_into(data, scale, scale_layout, out) -> None:
    """Dequantize into `out` (contiguous, data's element count; its dtype is the output's)."""
    if out.dtype not in INPUT_DTYPES or not out.is_contiguous() or out.numel() != data.numel():
        raise ValueError(f"out must be a contiguous tensor of {data.numel()} elements of float32, bfloat16 or "
                         f"float16; got {out.dtype} {tuple(out.shape)}")
    k = data.shape[-1]
    rows = data.numel() // k if k else 0
    if rows == 0 or k == 0:
        return
    nb = k // BLOCK
    sb = scale.view(torch.uint8)
    sb = reference.unswizzle(sb.reshape(-1), rows, nb) if scale_layout == "swizzled" else sb.reshape(rows, nb)
    d2 = rows_view(data)
    o2 = out.view(rows, k)
    cr = _chunk_rows(rows, k, False)
    fbuf = None if out.dtype == torch.float32 else torch.empty(cr * k, dtype=torch.float32)
    for r0 in range(0, rows, cr):
        r1 = min(rows, r0 + cr)
        n = r1 - r0
        b = sb[r0:r1].to(torch.int32)
        factor = reference.power_of_two(b.clamp(max=254) - E8M0_BIAS)
        factor = factor.masked_fill_(b == E8M0_NAN, float("nan"))
        f = o2[r0:r1] if fbuf is None else fbuf[: n * k].view(n, k)
        f.copy_(d2[r0:r1])  # fp8 -> fp32, exact
        f.view(n, nb, BLOCK).mul_(factor.unsqueeze(-1))  # exact (see docs/semantics.md)
        if fbuf is not None:
            o2[r0:r1].copy_(f)  # the one rounding, RNE


def dequantize(data, scale, scale_layout, out_dtype):
    out = torch.empty(data.shape, dtype=out_dtype)
    dequantize_into(data, scale, scale_layout, out)
    return out


backend = Backend(
    name="cpu-eager",
    capabilities=CPU_CAPABILITIES,
    probe=lambda device: None if device.type == "cpu" else f"serves cpu only, not {device.type}",
    quantize=quantize,
    dequantize=dequantize,
    priority=1,
    description=f"pure PyTorch, chunked ({CHUNK_ELEMS} elements), bit tricks; byte-exact with the reference",
)
