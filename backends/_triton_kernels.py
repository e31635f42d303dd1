"""Triton kernels of the `triton` backend. Imported only when that backend runs (it imports
triton at module level); backends/triton.py holds the launch logic and the probe.

One pass: each program loads a BLOCK_M x BLOCK_K tile once, as (BLOCK_M, BLOCK_K // 32, 32)
blocks, and writes its elements and its scale bytes once; for the swizzled layout the scale
bytes go straight to their 128x4-layout offsets, and programs over the padding rows/columns
load nothing (masked loads read zero blocks) and write the zero padding bytes themselves.

Exactness (docs/semantics.md): amax is an integer max over the fp32 bits with the sign
cleared (NaN/Inf compare above every finite value); the shared exponent comes from the bits;
2**-s is built from bits (always a normal fp32); the multiply by it is exact; clamping and
cvt.rn.satfinite round to nearest-even. No exp2/log2/division/reciprocal, so no flush to zero
of 2**-127 and no approximation.
"""

import triton
import triton.language as tl


@triton.jit
def _scale_offsets(rows, sblk, scale_cols, SWIZZLED: tl.constexpr):
    # rows: (BM, 1) global row; sblk: (1, NB) global scale column.
    if SWIZZLED:
        tile = (rows // 128) * (scale_cols // 4) + sblk // 4
        r = rows % 128
        return tile * 512 + (r % 32) * 16 + (r // 32) * 4 + sblk % 4
    else:
        return rows * scale_cols + sblk


@triton.jit
def mxfp8_quantize_kernel(
    x_ptr, data_ptr, scale_ptr,
    M, K, stride_xm,
    scale_rows, scale_cols, n_k,
    EMAX: tl.constexpr, MAX_FINITE: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    MASK_M: tl.constexpr, MASK_K: tl.constexpr, EVICT: tl.constexpr,
):
    NB: tl.constexpr = BLOCK_K // 32
    # A 1-D grid in row-major tile order: consecutive programs stream consecutive memory.
    pid = tl.program_id(0)
    pid_m = pid // n_k
    pid_k = pid % n_k
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)                    # (BM,)
    sblk = pid_k * NB + tl.arange(0, NB)                                # (NB,)
    r3 = rows[:, None, None]
    c3 = sblk[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]   # (1, NB, 32) element column

    x_offs = r3.to(tl.int64) * stride_xm + c3
    d_offs = r3.to(tl.int64) * K + c3
    if MASK_M or MASK_K:
        mask = (r3 < M) & (c3 < K)
        x = tl.load(x_ptr + x_offs, mask=mask, other=0.0, eviction_policy=EVICT)
    else:
        x = tl.load(x_ptr + x_offs, eviction_policy=EVICT)
    x = x.to(tl.float32)

    abs_bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    amax = tl.max(abs_bits, axis=2)                                      # (BM, NB) fp32 bits of amax
    special = amax >= 0x7F800000                                         # NaN or Inf in the block
    s = (amax >> 23) - (127 + EMAX)
    if RCEIL:
        s += ((amax & 0x7FFFFF) > 0x600000).to(tl.int32)
    if TIE_UP:  # scale_mode "compressed-tensors": rceil with the tie at 1.75 going up
        s += ((amax & 0x7FFFFF) >= 0x600000).to(tl.int32)
    s = tl.minimum(tl.maximum(s, -127), 127)

    inv = ((127 - s) << 23).to(tl.float32, bitcast=True)                # 2**-s, a normal fp32
    q = x * inv[:, :, None]
    q = tl.minimum(tl.maximum(q, -MAX_FINITE), MAX_FINITE)
    if E5M2:
        q8 = q.to(tl.float8e5).to(tl.uint8, bitcast=True)
    else:
        q8 = q.to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    q8 = tl.where(special[:, :, None], 0x7F, q8).to(tl.uint8).to(data_ptr.dtype.element_ty, bitcast=True)
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
def mxfp8_dequantize_kernel(
    data_ptr, scale_ptr, out_ptr,
    M, K, stride_dm, scale_cols, n_k,
    E5M2: tl.constexpr, SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    NB: tl.constexpr = BLOCK_K // 32
    pid = tl.program_id(0)
    rows = (pid // n_k) * BLOCK_M + tl.arange(0, BLOCK_M)
    sblk = (pid % n_k) * NB + tl.arange(0, NB)
    r3 = rows[:, None, None]
    c3 = sblk[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]
    mask = (r3 < M) & (c3 < K)
    raw = tl.load(data_ptr + r3.to(tl.int64) * stride_dm + c3, mask=mask, other=0)
    if E5M2:
        q = raw.to(tl.float8e5, bitcast=True).to(tl.float32)
    else:
        q = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)

    r2 = rows[:, None]
    b2 = sblk[None, :]
    sb = tl.load(scale_ptr + _scale_offsets(r2, b2, scale_cols, SWIZZLED),
                 mask=(r2 < M) & (b2 < K // 32), other=127).to(tl.int32)
    # 2**(sb - 127) from bits; sb == 0 is the subnormal 2**-127 (bit 22 set), 255 is NaN.
    factor = tl.where(sb == 0, 0x400000, sb << 23).to(tl.float32, bitcast=True)
    factor = tl.where(sb == 255, float("nan"), factor)
    out = q * factor[:, :, None]
    tl.store(out_ptr + r3.to(tl.int64) * K + c3, out.to(out_ptr.dtype.element_ty), mask=mask)
