"""Triton dequantize kernel of the `triton` backend (imports triton; loaded on first use).

Each tile of BLOCK_M x BLOCK_K elements: the element bytes are read once (16 bytes per thread
and load), the scale bytes once per block (gathered from the 128x4 layout when SWIZZLED), and
out = element * 2**(s - 127) is written once. Exact: the product of an fp8 value and a power
of two is computed in fp32 (2**-127 built from bits as a subnormal, never flushed), then
rounded once to the output dtype, as mxquant.reference.dequantize does; every NaN (a 0xFF
scale, a NaN element) then written as the contract's one NaN of the output dtype (fp32
0x7FC00000, bf16 0xFFFF, fp16 0x7E00; docs/semantics.md, "Dequantize"), not the conversion's
(a GPU's cvt writes 0x7FFF, x * NaN keeps the element's sign and payload). INTERPRETED (CPU
tensors under TRITON_INTERPRET=1) decodes e4m3 and rounds to bf16 from the bits, as the FP4
kernels do.
"""

import triton
import triton.language as tl

from ._triton_fp4 import _contract_nan, _e4m3_value, _to_out


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
def _dequantize_tile(
    tile, data_ptr, scale_ptr, out_ptr, M, K, stride_dm, scale_cols, n_k,
    E5M2: tl.constexpr, SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    MASK_M: tl.constexpr, MASK_K: tl.constexpr, EVICT: tl.constexpr, INTERPRETED: tl.constexpr,
):
    NB: tl.constexpr = BLOCK_K // 32
    rows = (tile // n_k) * BLOCK_M + tl.arange(0, BLOCK_M)
    sblk = (tile % n_k) * NB + tl.arange(0, NB)
    r3 = rows[:, None, None]
    c3 = sblk[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]
    r2 = rows[:, None]
    b2 = sblk[None, :]
    s_offs = _scale_offsets(r2, b2, scale_cols, SWIZZLED)
    if MASK_M or MASK_K:
        mask = (r3 < M) & (c3 < K)
        raw = tl.load(data_ptr + r3.to(tl.int64) * stride_dm + c3, mask=mask, other=0, eviction_policy=EVICT)
        sb = tl.load(scale_ptr + s_offs, mask=(r2 < M) & (b2 < K // 32), other=127).to(tl.int32)
    else:
        raw = tl.load(data_ptr + r3.to(tl.int64) * stride_dm + c3, eviction_policy=EVICT)
        sb = tl.load(scale_ptr + s_offs).to(tl.int32)
    # The interpreter's fp8 conversions read e4m3 0x7F / 0xFF as +-480 and e5m2 Inf / NaN as finite
    if INTERPRETED and E5M2:  # e5m2 is the top byte of an fp16
        q = (raw.to(tl.uint16) << 8).to(tl.float16, bitcast=True).to(tl.float32)
    elif INTERPRETED:
        q = _e4m3_value(raw.to(tl.int32))
    elif E5M2:
        q = raw.to(tl.float8e5, bitcast=True).to(tl.float32)
    else:
        q = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    # 2**(sb - 127) from bits; sb == 0 is the subnormal 2**-127 (bit 22 set), 255 is NaN.
    factor = tl.where(sb == 0, 0x400000, sb << 23).to(tl.float32, bitcast=True)
    factor = tl.where(sb == 255, float("nan"), factor)
    v = q * factor[:, :, None]
    out = _contract_nan(v, _to_out(v, out_ptr, INTERPRETED), out_ptr)
    o_offs = r3.to(tl.int64) * K + c3
    if MASK_M or MASK_K:
        tl.store(out_ptr + o_offs, out, mask=mask)
    else:
        tl.store(out_ptr + o_offs, out)


@triton.jit
def mxfp8_dequantize_kernel(
    data_ptr, scale_ptr, out_ptr,
    M, K, stride_dm, scale_cols, n_k, n_tiles,
    E5M2: tl.constexpr, SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    MASK_M: tl.constexpr, MASK_K: tl.constexpr, EVICT: tl.constexpr,
    PERSISTENT: tl.constexpr, STAGES: tl.constexpr, INTERPRETED: tl.constexpr,
):
    if PERSISTENT:
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        for i in tl.range(0, tl.cdiv(n_tiles - pid, nprog), num_stages=STAGES):
            _dequantize_tile(pid + i * nprog, data_ptr, scale_ptr, out_ptr, M, K, stride_dm, scale_cols, n_k,
                             E5M2, SWIZZLED, BLOCK_M, BLOCK_K, MASK_M, MASK_K, EVICT, INTERPRETED)
    else:
        _dequantize_tile(tl.program_id(0), data_ptr, scale_ptr, out_ptr, M, K, stride_dm, scale_cols, n_k,
                         E5M2, SWIZZLED, BLOCK_M, BLOCK_K, MASK_M, MASK_K, EVICT, INTERPRETED)
