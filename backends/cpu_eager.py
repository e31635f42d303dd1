"""The `cpu-eager` backend: a fast pure-PyTorch path for CPUs where the native kernel is not built.

Byte-exact with the reference and the same arithmetic (x * 2**-s in fp32, clamp, torch's RNE
cast), reorganised for speed and bounded memory:

* rows are processed in chunks of CHUNK_ELEMS elements with fp32 and int32 work buffers
  reused across chunks, so extra memory is a small constant, not 7-9x the input;
* the chunks are spread over torch.get_num_threads() Python threads (torch releases the GIL
  in its ops) whose own ops run single-threaded: no OpenMP region per op. On a busy machine
  each such region waits for every OpenMP thread to be scheduled, which made this path 4-8x
  slower with 2 intra-op threads than with 1 (2026-11-30, 2-core machine at load 5);
* amax is an int32 reduction of the fp32 bits with the sign masked off (for non-negative
  floats integer order is float order; NaN/Inf sort above every finite value). int32, because
  torch's int16 and float reductions over 32-element rows are several times slower;
* per chunk, five full-size ops (upcast, mask, amax, multiply, cast) and about ten on the
  block-sized amax: each small op costs microseconds, so they are few, in place, with 0-dim
  int32 operands (a Python int operand costs a cast per op), the chunks' views made by one
  split, and NaN/Inf detected by one max().item() (a mask only in chunks that have one);
* x * 2**-s is multiplied in place in the fp32 buffer (bf16/fp16 upcast into it exactly); the
  clamp runs only for floor (rceil and compressed-tensors never exceed M on a finite block),
  and torch's RNE cast writes straight into the output (it is half of the time);
* swizzled scale bytes are scattered to their 128x4-layout offsets chunk by chunk (no
  full-size linear copy); fresh outputs of 4 MiB or more get madvise(MADV_HUGEPAGE) through
  ctypes on Linux, as cpu-native does (page faults otherwise cost ~10% at 4096x8192).

`quantize_into` / `dequantize_into` write into caller-provided buffers (for the benchmark).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from mxquant import reference
from mxquant.backend import Backend
from mxquant.formats import (BLOCK, E8M0_BIAS, E8M0_NAN, ELEMENT_FORMATS, ELEMENT_NAN, INPUT_DTYPES,
                             RCEIL_MANTISSA_THRESHOLD)
from mxquant.layouts import scale_shape, swizzle_offsets, swizzled_scale_shape
from mxquant.outputs import own_outputs

from ._common import as_rows
from ._cpu_shared import CPU_CAPABILITIES, check_buffer, new_outputs, new_tensor

CHUNK_ELEMS = 1 << 18
"""Elements per chunk (or one row, if a row is longer): 1 MiB of fp32 and 1 MiB of int32 work
buffer per thread, big enough that per-op dispatch costs little, small enough for L2."""

_INF_BITS = reference._FP32_INF_BITS  # NaN and Inf bits sort at or above it
_MANTISSA_BUMP = {"floor": 0, "rceil": 0x7FFFFF - RCEIL_MANTISSA_THRESHOLD,
                  "compressed-tensors": 0x800000 - RCEIL_MANTISSA_THRESHOLD}
"""Added to amax's bits before taking the exponent field: the rounding up of each scale mode."""
_pool = None  # (pid, executor): a forked child must not reuse its parent's (threadless) pool
_pool_lock = threading.Lock()


def _serial_pool(n: int) -> ThreadPoolExecutor:
    """n worker threads whose own torch ops run single-threaded (their intra-op thread count
    is 1, set once when each starts); the caller's thread count is restored afterwards."""
    caller = torch.get_num_threads()
    barrier = threading.Barrier(n + 1, timeout=60)

    def start():
        torch.set_num_threads(1)  # this thread's OpenMP setting (and, briefly, the default)
        barrier.wait()

    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="mxquant-eager")
    try:
        started = [pool.submit(start) for _ in range(n)]
        barrier.wait()
        for f in started:
            f.result()
    finally:
        torch.set_num_threads(caller)
    return pool


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1]._max_workers < n:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[1].shutdown(wait=False)
            _pool = (os.getpid(), _serial_pool(n))
        return _pool[1]


def _parallel(rows: int, k: int, work) -> None:
    """Call work(r0, r1, chunk_rows) on contiguous row ranges, one per thread."""
    cr = max(1, CHUNK_ELEMS // max(k, 1))
    n = max(1, min(torch.get_num_threads(), -(-rows // cr)))
    if n == 1:
        work(0, rows, cr)
        return
    pool = _executor(torch.get_num_threads())  # n <= that: one pool for every call
    bounds = [rows * i // n // cr * cr for i in range(n)] + [rows]
    for f in [pool.submit(work, bounds[i], bounds[i + 1], cr) for i in range(n)]:
        f.result()


def quantize_into(x, data, scale, dtype, scale_mode, scale_layout) -> None:
    """Quantize `x` into `data` (x's shape, `dtype` or uint8, contiguous) and `scale` (the
    layout's shape, float8_e8m0fnu or uint8, contiguous). Checks the buffers first."""
    check_buffer("data", data, x.shape, (dtype, torch.uint8))
    check_buffer("scale", scale, scale_shape(tuple(x.shape), scale_layout), (torch.float8_e8m0fnu, torch.uint8))
    _quantize(x, data, scale, dtype, scale_mode, scale_layout)


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

    # the scale byte t = clamp(((amax + bump) >> 23) - emax, 0, 254): subtracting emax << 23
    # before the shift is exact and keeps amax + bump from overflowing int32 on NaN bits
    # (bump < 2**22 <= emax << 23); 0-dim int32 operands: a Python int costs a cast per op
    offset = torch.tensor(bump - (fmt.emax << 23), dtype=torch.int32)
    shift = torch.tensor(23, dtype=torch.int32)
    one_exp = torch.tensor(254 << 23, dtype=torch.int32)
    magnitude = torch.tensor(0x7FFFFFFF, dtype=torch.int32)

    def work(row0, row1, cr):
        fbuf = torch.empty(cr, nb, BLOCK, dtype=torch.float32)
        ibuf = torch.empty(cr, nb, BLOCK, dtype=torch.int32)
        fbits = fbuf.view(torch.int32)
        # few torch calls per chunk, each costs microseconds: the chunks' views in one call each
        views = [x3[row0:row1].split(cr), out3[row0:row1].split(cr), out3_elements[row0:row1].split(cr),
                 range(row0, row1, cr), (scale_lin[row0:row1].split(cr) if scale_lin is not None
                                         else itertools.repeat(None))]
        for xc, oc, oec, r0, sc in zip(*views):
            n = xc.shape[0]
            fc, ic = (fbuf, ibuf) if n == cr else (fbuf[:n], ibuf[:n])
            if hp == torch.float32:
                src, bits = xc, xc.view(torch.int32)
            else:
                src, bits = fc.copy_(xc), (fbits if n == cr else fbits[:n])  # exact upcast
            amax = torch.bitwise_and(bits, magnitude, out=ic).amax(dim=-1, keepdim=True)
            # NaN/Inf blocks: one reduction finds out whether there are any; the mask only then
            special = amax >= _INF_BITS if amax.max().item() >= _INF_BITS else None
            t = amax.add_(offset).bitwise_right_shift_(shift).clamp_(0, 254)
            if sc is None:
                offsets = swizzle_offsets(r0, r0 + n, nb, pcols)
                scale_u8[offsets] = t.view(-1).to(torch.uint8)
            else:
                sc.copy_(t)
            factor = t.bitwise_left_shift_(shift).neg_().add_(one_exp).view(torch.float32)  # 2**-s
            y = torch.mul(src, factor, out=fc)
            if scale_mode == "floor":  # the only mode in which a finite block can exceed M
                y.clamp_(-fmt.max_finite, fmt.max_finite)
            oec.copy_(y)  # RNE cast straight into the output
            if special is not None:  # NaN/Inf blocks: all-NaN elements, NaN scale
                oc.masked_fill_(special, ELEMENT_NAN)
                if sc is None:
                    scale_u8[offsets[special.view(-1)]] = E8M0_NAN
                else:
                    sc.masked_fill_(special, E8M0_NAN)

    _parallel(rows, k, work)


def quantize(x, dtype, scale_mode, scale_layout):
    data, scale = new_outputs(x.shape, dtype, scale_shape(tuple(x.shape), scale_layout))
    _quantize(x, data, scale, dtype, scale_mode, scale_layout)  # our own buffers: no checks
    return data, scale


def dequantize_into(data, scale, scale_layout, out) -> None:
    """Dequantize into `out` (contiguous, data's element count; its dtype is the output's)."""
    check_buffer("out", out, data.shape, INPUT_DTYPES)
    _dequantize(data, scale, scale_layout, out)


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

    def work(row0, row1, cr):
        fbuf = None if out.dtype == torch.float32 else torch.empty(cr * k, dtype=torch.float32)
        for r0 in range(row0, row1, cr):
            r1 = min(row1, r0 + cr)
            n = r1 - r0
            b = (sb[swizzle_offsets(r0, r1, nb, pcols)] if swizzled else sb[r0:r1]).to(torch.int32).view(n, nb)
            factor = reference.power_of_two(b.clamp(max=254) - E8M0_BIAS)
            factor = factor.masked_fill_(b == E8M0_NAN, float("nan"))
            f = o2[r0:r1] if fbuf is None else fbuf[: n * k].view(n, k)
            f.copy_(d2[r0:r1])  # fp8 -> fp32, exact
            f.view(n, nb, BLOCK).mul_(factor.unsqueeze(-1))  # exact (see docs/semantics.md)
            if fbuf is not None:
                o2[r0:r1].copy_(f)  # the one rounding, RNE

    _parallel(rows, k, work)


def dequantize(data, scale, scale_layout, out_dtype):
    out = new_tensor(data.shape, out_dtype)
    _dequantize(data, scale, scale_layout, out)
    return out


backend = Backend(
    name="cpu-eager",
    capabilities=CPU_CAPABILITIES,
    probe=lambda device: None if device.type == "cpu" else f"serves cpu only, not {device.type}",
    quantize=quantize,
    dequantize=dequantize,
    priority=1,
    description=f"pure PyTorch in {CHUNK_ELEMS}-element chunks over torch.get_num_threads() threads; byte-exact",
)

own_outputs(backend)  # outputs allocated here: no per-call check (mxquant/outputs.py)
