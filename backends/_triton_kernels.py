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
"""

import triton
import triton.language as tl


@triton.jit
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _quantize_tile(
    tile, x_ptr, data_ptr, scale_ptr, M, K, stride_xm, scale_rows, scale_cols, n_k,
    EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    MASK_M: tl.constexpr, MASK_K: tl.constexpr, EVICT: tl.constexpr, BIG: tl.constexpr, SPREAD: tl.constexpr,
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
    x = x.to(tl.float32)

    # amax: a NaN-propagating float max of |x| (one FMNMX per element, |.| a free operand
    # modifier); its bits order NaN > Inf > finite, as an integer max over the bits would.
    amax = tl.reduce(tl.abs(x), 2, _max_nan).to(tl.int32, bitcast=True)   # (BM, NB) fp32 bits
    special = amax >= 0x7F800000                                         # NaN or Inf in the block
    s = (amax >> 23) - (127 + EMAX)
    if RCEIL:
        s += ((amax & 0x7FFFFF) > 0x600000).to(tl.int32)
    if TIE_UP:  # scale_mode "compressed-tensors": rceil with the tie at 1.75 going up
        s += ((amax & 0x7FFFFF) >= 0x600000).to(tl.int32)
    s = tl.minimum(tl.maximum(s, -127), 127)

    # 2**-s from bits (a normal fp32); NaN for a NaN/Inf block, so that every product is NaN
    # and the conversion writes 0x7F. No clamp: cvt.rn.satfinite saturates to +-max_finite.
    inv = tl.where(special, 0x7FC00000, (127 - s) << 23).to(tl.float32, bitcast=True)
    q = x * inv[:, :, None]
    if E5M2:
        q8 = q.to(tl.float8e5)
    else:
        q8 = q.to(tl.float8e4nv)
    q8 = q8.to(data_ptr.dtype.element_ty, bitcast=True)
    if MASK_M or MASK_K:
        tl.store(data_ptr + d_offs, q8, mask=mask)
    else:
        tl.store(data_ptr + d_offs, q8)

    sbyte = tl.where(special, 255, s + 127).to(tl.uint8)
    r2 = rows[:, None]
    if SWIZZLED:
        # In the 128x4 layout the scale bytes of one row and 4 consecutive blocks are adjacent:
        # pack them into one 32-bit store (a quarter of the partial-sector writes of byte stores).
        # Needs BLOCK_K >= 128; padding rows and columns read zero blocks and write zero bytes.
        NG: tl.constexpr = NB // 4
        quad = tl.reshape(sbyte.to(tl.uint32), (BLOCK_M, NG, 4))
        word = tl.sum(quad << (tl.arange(0, 4) * 8)[None, None, :], axis=2)      # (BM, NG)
        g2 = (pid_k * NG + tl.arange(0, NG))[None, :]                             # column tile
        r = r2 % 128
        w_offs = ((r2 // 128) * (scale_cols // 4) + g2) * 128 + (r % 32) * 4 + r // 32
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
):
    if PERSISTENT:
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        for i in tl.range(0, tl.cdiv(n_tiles - pid, nprog), num_stages=STAGES):
            _quantize_tile(pid + i * nprog, x_ptr, data_ptr, scale_ptr, M, K, stride_xm, scale_rows, scale_cols, n_k,
                           EMAX, RCEIL, TIE_UP, E5M2, SWIZZLED, BLOCK_M, BLOCK_K, MASK_M, MASK_K, EVICT, BIG, SPREAD)
    else:
        _quantize_tile(tl.program_id(0), x_ptr, data_ptr, scale_ptr, M, K, stride_xm, scale_rows, scale_cols, n_k,
                       EMAX, RCEIL, TIE_UP, E5M2, SWIZZLED, BLOCK_M, BLOCK_K, MASK_M, MASK_K, EVICT, BIG, SPREAD)
