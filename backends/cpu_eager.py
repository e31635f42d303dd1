"""The `cpu-eager` backend: a fast pure-PyTorch path for CPUs where the native kernel is not built.

Byte-exact with the reference and the same arithmetic (x * 2**-s in fp32, clamp, torch's RNE
cast), reorganised for speed and bounded memory:

* rows are processed in chunks of CHUNK_ELEMS elements with fp32 and int32 work buffers
  reused across chunks, so extra memory is a small constant, not 7-9x the input;
* everything runs in the caller's thread; each full-size op is spread over torch's own
  intra-op threads (torch.get_num_threads()), as any torch op is (in a forked child, on one:
  see _fork_safe). Chunks on several Python
  threads (the 0.2 design) lost more to the GIL than they gained: every torch call hands the
  GIL over, and a small op took ~55 µs instead of ~13 with two threads contending
  (docs/performance.md, "cpu-eager on torch's threads");
* amax is an int32 reduction of the fp32 bits with the sign masked off (for non-negative
  floats integer order is float order; NaN/Inf sort above every finite value). int32, because
  torch's int16 and float reductions over 32-element rows are several times slower;
* per chunk, five full-size ops (upcast, mask, amax, multiply, cast) and five on the
  block-sized amax (add, clamp, shift, the copy into the scales, and 2**-s = (254 - t) << 23
  as one subtraction with alpha): each small op costs ~10 µs here, so they are few, in
  place, with 0-dim int32 operands (a Python int operand costs a cast per op);
* NaN/Inf blocks cost nothing until there is one: they get a scale byte of at least
  255 - emax, which a finite block reaches only with amax >= 2**127 (rceil and
  compressed-tensors rounding up); one look at the scales after the pass, and only if one may
  be there, a second pass writes their NaN elements and NaN scales;
* x * 2**-s is multiplied into the fp32 buffer (bf16/fp16 upcast into it exactly; fp32 input
  reuses the int32 buffer); the clamp runs only for floor (rceil and compressed-tensors never
  exceed M on a finite block), and torch's RNE cast writes straight into the output (it is
  half of the time: a scalar conversion, ~1.4 ns per element);
* swizzled scale bytes go to their 128x4-layout places chunk by chunk, in one strided copy
  where the chunk is whole tiles or 32-row groups of one tile (layouts.swizzled_rows), else
  by offsets (no full-size linear copy); fresh outputs of 4 MiB or more get madvise(MADV_HUGEPAGE) through
  ctypes on Linux, as cpu-native does (page faults otherwise cost ~10% at 4096x8192).

`quantize_into` / `dequantize_into` write into caller-provided buffers (for the benchmark).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

from mxquant import reference
from mxquant.backend import Backend
from mxquant.forking import in_forked_child
from mxquant.formats import BLOCK, E8M0_BIAS, E8M0_NAN, ELEMENT_FORMATS, ELEMENT_NAN, RCEIL_MANTISSA_THRESHOLD
from mxquant.layouts import swizzle_offsets, swizzled_rows, swizzled_scale_shape
from mxquant.outputs import own_outputs

from ._common import as_rows
from ._cpu_shared import (CPU_CAPABILITIES, check_dequantize_buffer, check_quantize_buffers, dequantize_fresh,
                          quantize_fresh)

CHUNK_ELEMS = 1 << 19
"""Elements per chunk (or one row, if a row is longer): 2 MiB of fp32 and 2 MiB of int32 work
buffer. The fastest of 2^16..2^20 on the 2-core development machine: smaller chunks pay more
in small ops and per-call dispatch than they gain in cache, larger ones spill the L3."""

_INF_BITS = reference._FP32_INF_BITS  # NaN and Inf bits sort at or above it
_MANTISSA_BUMP = {"floor": 0, "rceil": 0x7FFFFF - RCEIL_MANTISSA_THRESHOLD,
                  "compressed-tensors": 0x800000 - RCEIL_MANTISSA_THRESHOLD}
"""Added to amax's bits before taking the exponent field: the rounding up of each scale mode."""


def _fork_safe(fn):
    """Run `fn` on one intra-op thread in a forked child (mxquant/forking.py: GNU OpenMP's
    thread pool does not survive fork). The caller's thread count is restored afterwards; it
    is process-wide, so another Python thread of the child may see 1 meanwhile."""

    @functools.wraps(fn)
    def run(*args):
        n = torch.get_num_threads()
        if n == 1 or not in_forked_child():
            return fn(*args)
        torch.set_num_threads(1)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(n)

    return run


def _chunk_rows(k: int, swizzled: bool) -> int:
    """Rows per chunk: CHUNK_ELEMS elements, or one row if a row is longer. Swizzled: whole
    128-row tiles, or 64 or 32 rows (whole 32-row groups of one tile), where a chunk holds that
    many, so that its scales are one strided copy (layouts.swizzled_rows)."""
    cr = max(1, CHUNK_ELEMS // max(k, 1))
    if swizzled and cr >= 32:
        cr = cr - cr % 128 if cr >= 128 else (64 if cr >= 64 else 32)
    return cr


def quantize_into(x, data, scale, dtype, scale_mode, scale_layout) -> None:
    """Quantize `x` into `data` (x's shape, `dtype` or uint8, contiguous) and `scale` (the
    layout's shape, float8_e8m0fnu or uint8, contiguous). Checks the buffers first."""
    check_quantize_buffers(x, data, scale, dtype, scale_layout)
    _quantize(x, data, scale, dtype, scale_mode, scale_layout)


@_fork_safe
def _quantize(x, data, scale, dtype, scale_mode, scale_layout) -> None:
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
    bump = _MANTISSA_BUMP[scale_mode]
    x3 = as_rows(x).view(rows, nb, BLOCK)
    out3 = data.view(torch.uint8).view(rows, nb, BLOCK)
    out3_elements = out3.view(dtype)
    scale_lin = None if swizzled else scale_u8.view(rows, nb, 1)
    pcols = swizzled_scale_shape(rows, k)[1]

    # the scale byte t = max(((amax + bump) >> 23) - emax, 0): subtracting emax << 23 before the
    # shift is exact and keeps amax + bump from overflowing int32 on NaN bits (bump < 2**22 <=
    # emax << 23), and t <= 256 - emax < 255 even then; 0-dim int32 operands (see above)
    offset = torch.tensor(bump - (fmt.emax << 23), dtype=torch.int32, device="cpu")
    shift = torch.tensor(23, dtype=torch.int32, device="cpu")
    one_exp = torch.tensor(254 << 23, dtype=torch.int32, device="cpu")
    magnitude = torch.tensor(0x7FFFFFFF, dtype=torch.int32, device="cpu")
    cr = _chunk_rows(k, swizzled)
    ibuf = torch.empty(cr, nb, BLOCK, dtype=torch.int32, device="cpu")
    # fp32 input is read in place, so its product can go where the masked bits were
    fbuf = ibuf.view(torch.float32) if hp == torch.float32 else torch.empty(cr, nb, BLOCK, dtype=torch.float32, device="cpu")
    abuf = torch.empty(cr, nb, 1, dtype=torch.int32, device="cpu")
    tbuf = torch.empty(cr, nb, 1, dtype=torch.int32, device="cpu")

    def chunks():
        """Per chunk: input rows, output bytes, output elements, first row, linear scales (or None)."""
        scales = scale_lin.split(cr) if scale_lin is not None else itertools.repeat(None)
        return zip(x3.split(cr), out3.split(cr), out3_elements.split(cr), range(0, rows, cr), scales)

    def amax_bits(xc, n):
        """(fp32 values, amax bits per block) of one chunk, in the work buffers."""
        fc = fbuf if n == cr else fbuf[:n]
        if hp == torch.float32:
            src, bits = xc, xc.view(torch.int32)
        else:
            src = fc.copy_(xc)  # exact upcast
            bits = src.view(torch.int32)
        masked = torch.bitwise_and(bits, magnitude, out=ibuf if n == cr else ibuf[:n])
        return src, torch.amax(masked, dim=-1, keepdim=True, out=abuf if n == cr else abuf[:n])

    for xc, oc, oec, r0, sc in chunks():
        n = xc.shape[0]
        src, amax = amax_bits(xc, n)
        t = torch.bitwise_right_shift(amax.add_(offset).clamp_(min=0), shift, out=tbuf if n == cr else tbuf[:n])
        if sc is not None:
            sc.copy_(t)
        elif (tiles := swizzled_rows(scale_u8, r0, n, nb)) is not None:
            tiles.copy_(t.view(tiles.shape))
        else:  # padding columns, or a last chunk of part of a 32-row group
            scale_u8[swizzle_offsets(r0, r0 + n, nb, pcols)] = t.view(-1).to(torch.uint8)
        factor = torch.sub(one_exp, t, alpha=1 << 23, out=amax).view(torch.float32)  # 2**-s, bits (254 - t) << 23
        y = torch.mul(src, factor, out=fbuf if n == cr else fbuf[:n])
        if scale_mode == "floor":  # the only mode in which a finite block can exceed M
            y.clamp_(-fmt.max_finite, fmt.max_finite)
        oec.copy_(y)  # RNE cast straight into the output

    if scale_u8.max().item() < 255 - fmt.emax:
        return
    for xc, oc, oec, r0, sc in chunks():  # NaN/Inf blocks may be there: all-NaN elements, NaN scale
        n = xc.shape[0]
        special = amax_bits(xc, n)[1] >= _INF_BITS
        if bool(special.any()):
            oc.masked_fill_(special, ELEMENT_NAN)
            if sc is None:
                scale_u8[swizzle_offsets(r0, r0 + n, nb, pcols)[special.view(-1)]] = E8M0_NAN
            else:
                sc.masked_fill_(special, E8M0_NAN)


def quantize(x, dtype, scale_mode, scale_layout):
    return quantize_fresh(_quantize, x, dtype, scale_mode, scale_layout)


def dequantize_into(data, scale, scale_layout, out) -> None:
    """Dequantize into `out` (contiguous, data's element count; its dtype is the output's)."""
    check_dequantize_buffer(data, scale, scale_layout, out)
    _dequantize(data, scale, scale_layout, out)


@_fork_safe
def _dequantize(data, scale, scale_layout, out) -> None:
    k = data.shape[-1]
    rows = data.numel() // k if k else 0
    if rows == 0 or k == 0:
        return
    nb = k // BLOCK
    sb = scale.view(torch.uint8)
    swizzled = scale_layout == "swizzled"
    sb = sb.reshape(-1) if swizzled else sb.reshape(rows, nb)
    pcols = swizzled_scale_shape(rows, k)[1]
    d2 = as_rows(data)
    o2 = out.view(rows, k)

    cr = _chunk_rows(k, swizzled)
    fbuf = None if out.dtype == torch.float32 else torch.empty(cr * k, dtype=torch.float32, device="cpu")
    ints, nan_bits = reference.DEQUANT_NAN_BITS[out.dtype]
    for r0 in range(0, rows, cr):
        r1 = min(rows, r0 + cr)
        n = r1 - r0
        if not swizzled:
            b = sb[r0:r1].to(torch.int32)
        elif (tiles := swizzled_rows(sb, r0, n, nb)) is not None:
            b = torch.empty(n, nb, dtype=torch.int32, device="cpu")
            b.view(tiles.shape).copy_(tiles)
        else:
            b = sb[swizzle_offsets(r0, r1, nb, pcols)].to(torch.int32).view(n, nb)
        factor = reference.power_of_two(b.clamp(max=254) - E8M0_BIAS)
        factor = factor.masked_fill_(b == E8M0_NAN, float("nan"))
        f = o2[r0:r1] if fbuf is None else fbuf[: n * k].view(n, k)
        f.copy_(d2[r0:r1])  # fp8 -> fp32, exact
        f.view(n, nb, BLOCK).mul_(factor.unsqueeze(-1))  # exact (see docs/semantics.md)
        if fbuf is not None:
            o2[r0:r1].copy_(f)  # the one rounding, RNE
        # A 0xFF scale's block, a NaN element: each NaN written as the contract's one (x * NaN keeps
        # an operand's payload and sign, casts write their own). The sum is NaN where a value is
        # (or +Inf and -Inf are both reached): a pass 20x cheaper than isnan, which then runs.
        if bool(f.sum().isnan()):
            o2[r0:r1].view(ints).masked_fill_(f.isnan(), nan_bits)


def dequantize(data, scale, scale_layout, out_dtype):
    return dequantize_fresh(_dequantize, data, scale, scale_layout, out_dtype)


backend = Backend(
    name="cpu-eager",
    capabilities=CPU_CAPABILITIES,
    probe=lambda device: None if device.type == "cpu" else f"serves cpu only, not {device.type}",
    quantize=quantize,
    dequantize=dequantize,
    priority=1,
    description=f"pure PyTorch in {CHUNK_ELEMS}-element chunks, ops on torch.get_num_threads() threads; byte-exact",
)

own_outputs(backend)  # outputs allocated here: no per-call check (mxquant/outputs.py)
