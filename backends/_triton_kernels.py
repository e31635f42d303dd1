"""Triton quantize kernel of the `triton` backend. Imported only when that backend runs (it
imports triton at module level); backends/triton.py holds the configs and the probe,
backends/_triton_launch.py the launch path, backends/_triton_dequant.py the dequantize kernel.

One pass: each tile of BLOCK_M x BLOCK_K elements is loaded once, as (BLOCK_M, BLOCK_K // 32,
32) blocks, and its elements and scale bytes are written once; for the swizzled layout the
scale bytes go straight to their 128x4-layout offsets, and tiles over the padding rows/columns
load nothing (masked loads read zero blocks) and write the zero padding bytes themselves.
PERSISTENT: a grid of a few programs per SM, each looping over tiles (software-pipelined by
Triton when STAGES > 1); otherwise one tile per program.

Exactness (docs/semantics.md): amax is a NaN-propagating max of |x| (so NaN/Inf compare
above every finite value, as the integer order of the bits does); the shared exponent comes
from its bits; 2**-s is built from bits (always a normal fp32); the multiply by it is exact;
cvt.rn.satfinite rounds to nearest-even and saturates at +-max_finite, which is the clamp. No exp2/log2/division/reciprocal, so no flush to zero
of 2**-127 and no approximation.

The pieces (_amax_bits, _scale_and_inverse, _to_fp8, _scale_words) are shared with the training
and MoE kernels (backends/_triton_training.py). INTERPRETED (set only for CPU tensors, which only
Triton's interpreter runs, TRITON_INTERPRET=1) swaps three operations for equivalents the
interpreter gets right, or fast: the hardware fp8 conversion for the same rounding from the fp32
bits (the interpreter's own cast rounds half up and does not saturate), bfloat16 widening for
one from its bits (its cast flushes bfloat16 subnormals), and the NaN-propagating float max for
an integer max of |x|'s bits (the same value; it runs a custom reduction element by element in
Python).
"""

import triton
import triton.language as tl


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _scale_and_inverse(amax, EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr):
    """Per block, from amax's fp32 bits (int32): (2**-s as fp32, NaN for a NaN/Inf block so
    that every product is NaN and converts to 0x7F; the scale byte, 0xFF for such a block)."""
    special = amax >= 0x7F800000                                         # NaN or Inf in the block
    s = (amax >> 23) - (127 + EMAX)
    if RCEIL:
        s += ((amax & 0x7FFFFF) > 0x600000).to(tl.int32)
    if TIE_UP:  # scale_mode "compressed-tensors": rceil with the tie at 1.75 going up
        s += ((amax & 0x7FFFFF) >= 0x600000).to(tl.int32)
    s = tl.minimum(tl.maximum(s, -127), 127)
    # 2**-s from bits (a normal fp32). No clamp: cvt.rn.satfinite saturates to +-max_finite.
    inv = tl.where(special, 0x7FC00000, (127 - s) << 23).to(tl.float32, bitcast=True)
    return inv, tl.where(special, 255, s + 127).to(tl.uint8)


@triton.jit
def _amax_bits(x, axis: tl.constexpr, INTERPRETED: tl.constexpr):
    """The fp32 bits (int32) of max |x| along `axis`: a NaN-propagating float max of |x| (one
    FMNMX per element, |.| a free operand modifier), whose bits order NaN > Inf > finite as an
    integer max over the bits does (which the interpreter runs instead)."""
    if INTERPRETED:
        return tl.max(x.to(tl.int32, bitcast=True) & 0x7FFFFFFF, axis)
    return tl.reduce(tl.abs(x), axis, _max_nan).to(tl.int32, bitcast=True)


@triton.jit
def _to_f32(x, INTERPRETED: tl.constexpr):
    """The loaded input as fp32 (exact); under the interpreter (INTERPRETED) bfloat16 from its bits,
    as its own conversion flushes bfloat16 subnormals."""
    if INTERPRETED and x.dtype == tl.bfloat16:
        return (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return x.to(tl.float32)


@triton.jit
def _to_fp8(q, E5M2: tl.constexpr, INTERPRETED: tl.constexpr):
    """fp32 -> fp8 bytes (uint8): round to nearest even, saturating, NaN -> 0x7F. The hardware's
    cvt.rn.satfinite, or (INTERPRETED, for Triton's interpreter, whose fp8 cast rounds half up and
    does not saturate) the same from the fp32 bits."""
    if INTERPRETED:
        return _soft_fp8(q, E5M2)
    if E5M2:
        q8 = q.to(tl.float8e5)
    else:
        q8 = q.to(tl.float8e4nv)
    return q8.to(tl.uint8, bitcast=True)


@triton.jit
def _soft_fp8(q, E5M2: tl.constexpr):
    # mantissa bits, fp32 bits of the smallest normal 2**emin, bias, max, 2**(emin - p + 23), 2**(p - emin)
    P: tl.constexpr = 2 if E5M2 else 3
    MIN_NORMAL: tl.constexpr = (127 - 14) << 23 if E5M2 else (127 - 6) << 23
    BIAS: tl.constexpr = 15 if E5M2 else 7
    MAXF: tl.constexpr = 57344.0 if E5M2 else 448.0
    MAGIC: tl.constexpr = 128.0 if E5M2 else 16384.0
    SUB: tl.constexpr = 65536.0 if E5M2 else 512.0
    SH: tl.constexpr = 23 - P
    bits = q.to(tl.int32, bitcast=True)
    a = bits & 0x7FFFFFFF
    # normal result: the fp32 bits rounded to P mantissa bits (even on ties; a carry moves into
    # the exponent); subnormal result: |q| + 2**(emin - p + 23) has an ulp of 2**(emin - p)
    up = a + ((1 << (SH - 1)) - 1) + ((a >> SH) & 1)
    rn = (up & (-(1 << SH))).to(tl.float32, bitcast=True)
    aval = a.to(tl.float32, bitcast=True)
    r = tl.minimum(tl.where(a >= MIN_NORMAL, rn, (aval + MAGIC) - MAGIC), MAXF)   # saturate
    rb = r.to(tl.int32, bitcast=True)
    enc = tl.where(rb >= MIN_NORMAL, (rb >> SH) - ((127 - BIAS) << P), (tl.where(rb >= MIN_NORMAL, 0.0, r) * SUB).to(tl.int32))
    enc = tl.where(a > 0x7F800000, 0x7F, enc | ((bits >> 24) & 0x80))          # NaN: 0x7F
    return enc.to(tl.uint8)


@triton.jit
def _scale_words(sbyte, r2, g0, scale_cols, BLOCK_M: tl.constexpr, NB: tl.constexpr):
    """The scale bytes (BLOCK_M, NB) of rows r2 (BLOCK_M, 1) and block columns from 4 * g0,
    packed 4 to a 32-bit word (in the 128x4 layout the bytes of one row and 4 consecutive
    blocks are adjacent): (words, their word offsets, word columns (1, NB // 4))."""
    NG: tl.constexpr = NB // 4
    quad = tl.reshape(sbyte.to(tl.uint32), (BLOCK_M, NG, 4))
    word = tl.sum(quad << (tl.arange(0, 4) * 8)[None, None, :], axis=2)      # (BM, NG)
    g2 = (g0 + tl.arange(0, NG))[None, :]                                     # column tile
    r = r2 % 128
    return word, ((r2 // 128) * (scale_cols // 4) + g2) * 128 + (r % 32) * 4 + r // 32, g2


@triton.jit
def _quantize_tile(
    tile, x_ptr, data_ptr, scale_ptr, M, K, stride_xm, scale_rows, scale_cols, n_k,
    EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    MASK_M: tl.constexpr, MASK_K: tl.constexpr, EVICT: tl.constexpr, BIG: tl.constexpr, SPREAD: tl.constexpr,
    INTERPRETED: tl.constexpr,
):
    NB: tl.constexpr = BLOCK_K // 32
    # Tiles in row-major order: consecutive tiles stream consecutive memory.
    pid_m = tile // n_k
    pid_k = tile % n_k
    if SPREAD:  # swizzled: rows 32 apart, whose scale words are adjacent in the 128x4 layout
        PER: tl.constexpr = 128 // BLOCK_M                              # programs per 128 rows
        ii = tl.arange(0, BLOCK_M)
        rows = (pid_m // PER) * 128 + (BLOCK_M // 4) * (pid_m % PER) + ii // 4 + 32 * (ii % 4)
    else:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                # (BM,)
    sblk = pid_k * NB + tl.arange(0, NB)                                # (NB,)
    r3 = rows[:, None, None]
    c3 = sblk[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]   # (1, NB, 32) element column

    if BIG:  # offsets past 2**31 elements
        x_offs = r3.to(tl.int64) * stride_xm + c3
        d_offs = r3.to(tl.int64) * K + c3
    else:
        x_offs = r3 * stride_xm + c3
        d_offs = r3 * K + c3
    if MASK_M or MASK_K:
        mask = (r3 < M) & (c3 < K)
        x = tl.load(x_ptr + x_offs, mask=mask, other=0.0, eviction_policy=EVICT)
    else:
        x = tl.load(x_ptr + x_offs, eviction_policy=EVICT)
    x = _to_f32(x, INTERPRETED)

    amax = _amax_bits(x, 2, INTERPRETED)                                # (BM, NB) fp32 bits
    inv, sbyte = _scale_and_inverse(amax, EMAX, RCEIL, TIE_UP)
    q8 = _to_fp8(x * inv[:, :, None], E5M2, INTERPRETED).to(data_ptr.dtype.element_ty, bitcast=True)
    if MASK_M or MASK_K:
        tl.store(data_ptr + d_offs, q8, mask=mask)
    else:
        tl.store(data_ptr + d_offs, q8)

    r2 = rows[:, None]
    if SWIZZLED:
        # In the 128x4 layout the scale bytes of one row and 4 consecutive blocks are adjacent:
        # pack them into one 32-bit store (a quarter of the partial-sector writes of byte stores).
        # Needs BLOCK_K >= 128; padding rows and columns read zero blocks and write zero bytes.
        word, w_offs, g2 = _scale_words(sbyte, r2, pid_k * (NB // 4), scale_cols, BLOCK_M, NB)
        w_ptr = scale_ptr.to(tl.pointer_type(tl.uint32), bitcast=True)
        tl.store(w_ptr + w_offs, word, mask=(r2 < scale_rows) & (g2 < scale_cols // 4))
    else:
        b2 = sblk[None, :]
        s_offs = r2 * scale_cols + b2
        if MASK_M or MASK_K:
            tl.store(scale_ptr + s_offs, sbyte, mask=(r2 < scale_rows) & (b2 < scale_cols))
        else:
            tl.store(scale_ptr + s_offs, sbyte)


@triton.jit
def mxfp8_quantize_kernel(
    x_ptr, data_ptr, scale_ptr,
    M, K, stride_xm,
    scale_rows, scale_cols, n_k, n_tiles,
    EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    MASK_M: tl.constexpr, MASK_K: tl.constexpr, EVICT: tl.constexpr,
    PERSISTENT: tl.constexpr, STAGES: tl.constexpr, BIG: tl.constexpr, SPREAD: tl.constexpr,
    INTERPRETED: tl.constexpr,
):
    if PERSISTENT:
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        for i in tl.range(0, tl.cdiv(n_tiles - pid, nprog), num_stages=STAGES):
            _quantize_tile(pid + i * nprog, x_ptr, data_ptr, scale_ptr, M, K, stride_xm, scale_rows, scale_cols, n_k,
                           EMAX, RCEIL, TIE_UP, E5M2, SWIZZLED, BLOCK_M, BLOCK_K, MASK_M, MASK_K, EVICT, BIG, SPREAD, INTERPRETED)
    else:
        _quantize_tile(tl.program_id(0), x_ptr, data_ptr, scale_ptr, M, K, stride_xm, scale_rows, scale_cols, n_k,
                       EMAX, RCEIL, TIE_UP, E5M2, SWIZZLED, BLOCK_M, BLOCK_K, MASK_M, MASK_K, EVICT, BIG, SPREAD, INTERPRETED)
