"""Triton kernels of the `triton` backend's MXFP4 / NVFP4 calls (docs/semantics.md, "MXFP4 and
NVFP4"). Imported only when one of those calls runs (it imports triton); the launch side is
backends/_triton_fp4_ops.py. The pieces shared with the MXFP8 kernels come from
backends/_triton_kernels.py (the NaN-propagating amax from bits, the bf16 widening, the e4m3
conversion, the packed 128x4 scale words).

- fp4_quantize_kernel: one tile of BLOCK_M x BLOCK_K elements loaded once as (BLOCK_M, NB, G)
  groups (G = 32 MXFP4, 16 NVFP4); packed bytes (element 2j in the low nibble) and scale bytes
  written once; swizzled scales go straight to their 128x4 offsets, tiles over the padding rows
  and columns load nothing and write the zero padding bytes.
- amax_kernel: NVFP4's global amax over the finite elements, as an integer max of |x|'s bits
  (exact), one atomic max per program; fp4_quantize_kernel derives g from it in every program.
- fp4_dequantize_kernel: packed bytes and scale bytes to values, rounded once to out_dtype.

Exactness: MXFP4's exponent and 2**-s come from amax's bits (no log2, no exp2); its elements are
x * 2**-s, exact. NVFP4 follows the contract's fp32 operation order with IEEE divisions
(tl.math.div_rn: PTX div.rn.f32, no flush to zero; never the approximate `/`), x's-dtype
roundings from the bits (bf16) or by the conversion (fp16). e2m1 rounding is done by fp32
additions (the FMA pipe), not integer rounding of the bits (the ALU pipe, which bounded MXFP4 on
an H100: Nsight Compute, 2026-12-06): from 1 up, |y| + 2**(e + 22) (e: |y|'s exponent, from its
bits) rounds |y| to one mantissa bit, ties to even, and subtracting it back is exact; below 1,
|y| + 2**22, whose ulp is 0.5, and the steps read from the bits. MXFP4's nibble sign is y's sign
bit, put in place per packed byte by multiplications (umulhi, the FMA pipe). NVFP4's e4m3 scale byte
is computed from the fp32 bits everywhere (_soft_fp8), never by the hardware conversion: on an
H100 the converted byte of groups that round to 0 escaped the 0 -> 0x20 rule for fp32 inputs
(tests/test_triton_fp4.py, 2026-12-05). INTERPRETED (CPU tensors, TRITON_INTERPRET=1) swaps the
bf16 conversion for one from the bits, as the MXFP8 kernels do (the interpreter's casts flush
bf16 subnormals).
"""

import triton
import triton.language as tl

from ._triton_kernels import _amax_bits, _scale_words, _soft_fp8, _to_f32

_FP32_INF = tl.constexpr(0x7F800000)


@triton.jit
def _round_x(v, X_KIND: tl.constexpr):
    """fp32 v rounded to the input dtype (X_KIND 0 fp32, 1 bf16, 2 fp16), as fp32: RN_x."""
    if X_KIND == 1:  # bf16: round to nearest even on the fp32 bits (Inf stays Inf, overflow gives Inf)
        b = v.to(tl.int32, bitcast=True)
        return ((b + 0x7FFF + ((b >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
    elif X_KIND == 2:
        return v.to(tl.float16).to(tl.float32)
    else:
        return v


@triton.jit
def _e2m1(y, sign8):
    """Nibbles (int32) of fp32 y: |y| clamped to 6, rounded to nearest even on the e2m1 grid
    (0, 0.5, 1, 1.5, 2, 3, 4, 6); sign8 (int32, 0 or 8) is the nibble's sign bit."""
    return _e2m1_code(tl.minimum(tl.abs(y), 6.0)) | sign8


@triton.jit
def _e2m1_code(y):
    """The nibble's magnitude code (0..7) of fp32 y, |y| < 7 (MXFP4 passes min(|y|, 6); NVFP4's
    2-byte kernel y unclamped, see its Y_BOUND), less 512 where y < 0 and |y| >= 1 (the arithmetic
    shift of the sign bit sets bits 9-31): only the low byte holds, and the packed bytes' (uint8)
    arithmetic keeps nothing above it. From 1 up y + 2**(e + 22) * sign(y) (e: y's exponent; the
    sign and exponent masked from y's bits, one instruction) rounds y to its 1-bit steps,
    2**(e - 1), to nearest even; subtracting it again is exact, and the result's bits, shifted,
    give the code. Below 1, |y| + 2**22 (|.| an operand modifier of the addition and the
    comparison: no instruction for |y|)."""
    m = (y.to(tl.int32, bitcast=True) & -8388608).to(tl.float32, bitcast=True) * 4194304.0   # 0xFF800000
    normal = (((y + m) - m).to(tl.int32, bitcast=True) >> 22) - 252     # 1.0 (0x3F800000) -> code 2
    a = tl.abs(y)
    sub = (a + 4194304.0).to(tl.int32, bitcast=True) - 0x4A800000        # steps of 0.5 below 1
    return tl.where(a < 1.0, sub, normal)


@triton.jit
def _e4m3_value(b):
    """float8_e4m3fn bytes (int32, 0..255) as fp32, exactly; 0x7F / 0xFF are NaN."""
    mag = b & 0x7F
    e = mag >> 3
    m = mag & 7
    v = tl.where(e == 0, m.to(tl.float32) * 0.001953125, (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True))
    v = tl.where(mag == 0x7F, float("nan"), v)
    return (v.to(tl.int32, bitcast=True) | ((b & 0x80) << 24)).to(tl.float32, bitcast=True)  # the sign bit (-0 too)


@triton.jit
def _global_scale(amax_bits, X_KIND: tl.constexpr):
    """compressed-tensors' g from the finite amax's bits: RN_x(RN_x(1 / amax) * 2688); 1.0 when
    that is not finite."""
    amax = amax_bits.to(tl.float32, bitcast=True)
    r = _round_x(tl.math.div_rn(tl.full(amax.shape, 1.0, tl.float32), amax), X_KIND)
    g = _round_x(r * 2688.0, X_KIND)
    return tl.where((g.to(tl.int32, bitcast=True) & 0x7FFFFFFF) < _FP32_INF, g, 1.0)


@triton.jit
def _tile_ids(tile, n_k, NK_SHIFT: tl.constexpr):
    """(row tile, column tile) of program `tile` over n_k column tiles: by shifts when n_k is
    2**NK_SHIFT (K within one tile: 1), else by an integer division (tens of instructions)."""
    if NK_SHIFT >= 0:
        return tile >> NK_SHIFT, tile & ((1 << NK_SHIFT) - 1)
    return tile // n_k, tile % n_k


@triton.jit
def _tile_rows(pid_m, BLOCK_M: tl.constexpr, SPREAD: tl.constexpr):
    """The rows of row tile pid_m: BLOCK_M consecutive rows, or with SPREAD (swizzled scales,
    BLOCK_M a multiple of 4 dividing 128) rows 32 apart, r, r + 32, r + 64, r + 96 (then r + 1,
    ...), whose 4 scale words of a column tile are adjacent in the 128x4 layout: 16 contiguous
    bytes a program writes whole, not 4-byte words 16 (or, at one row, 512) bytes apart."""
    if SPREAD:
        PER: tl.constexpr = 128 // BLOCK_M                                 # programs per 128 rows
        ii = tl.arange(0, BLOCK_M)
        return (pid_m // PER) * 128 + (BLOCK_M // 4) * (pid_m % PER) + ii // 4 + 32 * (ii % 4)
    return pid_m * BLOCK_M + tl.arange(0, BLOCK_M)


@triton.jit
def amax_kernel(x_ptr, out_ptr, M, K, stride_xm, n_k,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BIG: tl.constexpr, INTERPRETED: tl.constexpr):
    """atomic max into out_ptr (int32, zeroed) of the bits of |x| over x's finite elements."""
    tile = tl.program_id(0)
    rows = (tile // n_k) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (tile % n_k) * BLOCK_K + tl.arange(0, BLOCK_K)
    rw = rows.to(tl.int64) if BIG else rows
    x = tl.load(x_ptr + rw[:, None] * stride_xm + cols[None, :], mask=(rows[:, None] < M) & (cols[None, :] < K),
                other=0.0)
    bits = _to_f32(x, INTERPRETED).to(tl.int32, bitcast=True) & 0x7FFFFFFF
    tl.atomic_max(out_ptr, tl.max(tl.max(tl.where(bits < _FP32_INF, bits, 0), 1), 0))


@triton.jit
def fp4_quantize_kernel(
    x_ptr, data_ptr, scale_ptr, g_ptr, g_out_ptr,
    M, K, stride_xm, scale_rows, scale_cols, n_k,
    NV: tl.constexpr, GIVEN: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, X_KIND: tl.constexpr,
    SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, MASK: tl.constexpr,
    EVICT: tl.constexpr, BIG: tl.constexpr, INTERPRETED: tl.constexpr, NK_SHIFT: tl.constexpr,
    SPREAD: tl.constexpr,
):
    """MXFP4 (NV off: E8M0 per 32) or NVFP4 (NV: e4m3 per 16 and the global scale: read from
    g_ptr when GIVEN, else derived from the amax bits at g_ptr; program 0 writes it to g_out_ptr).
    The grid covers scale_rows x scale_cols * G (the swizzled padding included)."""
    G: tl.constexpr = 16 if NV else 32
    NB: tl.constexpr = BLOCK_K // G
    tile = tl.program_id(0)
    pid_m, pid_k = _tile_ids(tile, n_k, NK_SHIFT)
    rows = _tile_rows(pid_m, BLOCK_M, SPREAD)
    sblk = pid_k * NB + tl.arange(0, NB)
    # loaded as a 2-D tile, then viewed as groups: Triton then spreads the lanes along the row
    # (the 3-D load spread them over rows first when a program had several), which the packed
    # bytes' store below needs to take its layout as it is
    r2 = rows[:, None]
    c2 = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    rw = r2.to(tl.int64) if BIG else r2
    if MASK:
        x = tl.load(x_ptr + rw * stride_xm + c2, mask=(r2 < M) & (c2 < K), other=0.0, eviction_policy=EVICT)
    else:
        x = tl.load(x_ptr + rw * stride_xm + c2, eviction_policy=EVICT)
    x = tl.reshape(_to_f32(x, INTERPRETED), (BLOCK_M, NB, G))
    amax = _amax_bits(x, 2, INTERPRETED)                                # (BM, NB) fp32 bits
    special = amax >= _FP32_INF                                         # a NaN or an Inf in the group
    if NV:
        if GIVEN:
            g = tl.load(g_ptr)
        else:
            g = _global_scale(tl.load(g_ptr), X_KIND)
        tl.store(g_out_ptr, g, mask=tile == 0)
        # group scale: e4m3(min(g * RN_x(amax / 6), 448)), 0 -> 0.125 (0x20), NaN group -> 0x7F
        per = tl.minimum(g * _round_x(tl.math.div_rn(amax.to(tl.float32, bitcast=True), 6.0), X_KIND), 448.0)
        # the e4m3 byte from per's bits, not the hardware cvt: on an H100 (Triton 3.6, fp32 input,
        # BLOCK 16 x 256, 4 warps) groups whose per rounds to 0 came out with scale byte 0, not
        # 0x20 (the rule below did not apply; why was not established), and every element +-6
        sbyte = _soft_fp8(per, False).to(tl.int32)
        sbyte = tl.where(special, 0x7F, tl.where(sbyte == 0, 0x20, sbyte))
        if SWIZZLED:  # padding rows / columns: zero bytes (their zero groups would give 0x20)
            sbyte = tl.where((rows[:, None] < M) & (sblk[None, :] < K // G), sbyte, 0)
        d = tl.math.div_rn(_e4m3_value(sbyte), g)                       # scale / g, fp32
        y = tl.math.div_rn(x, d[:, :, None])                            # x / (scale / g), fp32
        sign8 = tl.where(y < 0, 8, 0)
    else:
        s = (amax >> 23) - 129                                          # floor(log2 amax) - 2
        if RCEIL:
            s += ((amax & 0x7FFFFF) > 0x400000).to(tl.int32)            # significand > 1.5
        if TIE_UP:
            s += ((amax & 0x7FFFFF) >= 0x600000).to(tl.int32)           # compressed-tensors: >= 1.75
        s = tl.minimum(tl.maximum(s, -127), 127)
        sbyte = tl.where(special, 255, s + 127)
        # 2**-s from bits: finite groups have s <= 126, so a normal fp32; the product is exact
        y = x * ((127 - s) << 23).to(tl.float32, bitcast=True)[:, :, None]
        if TIE_UP:  # the sign of y rounded to x's dtype: nonzero there (bits above half its smallest subnormal)
            HALF: tl.constexpr = 0x8000 if X_KIND == 1 else ((102 << 23) if X_KIND == 2 else 0)
            sign8 = tl.where((y < 0) & ((y.to(tl.int32, bitcast=True) & 0x7FFFFFFF) > HALF), 8, 0)
        else:  # every sign kept, -0.0 included: y's sign bit (x's: 2**-s > 0), placed per byte below
            sign8 = 0
    nib = _e2m1(y, sign8)
    lo, hi = tl.split(tl.reshape(nib, (BLOCK_M, BLOCK_K // 2, 2)))
    # the packed bytes a thread holds: half its 16-byte load's elements (4 for 2-byte input, 2 for
    # fp32). Claiming no longer a contiguous run than that makes the store take their layout as
    # it is (no shared-memory round trip to gather 8 bytes per thread for a wider store).
    PACKED_RUN: tl.constexpr = 2 if X_KIND == 0 else 4
    packed = hi * 16 + lo                                                # the low byte; bits above it are dropped
    if not NV and not TIE_UP:  # the sign bits of a byte's two elements, by multiplications (the FMA
        # pipe): umulhi(b, 2**k) is b >> (32 - k), y's sign bit at bit 3 and bit 7
        y_lo, y_hi = tl.split(tl.reshape(y.to(tl.int32, bitcast=True), (BLOCK_M, BLOCK_K // 2, 2)))
        packed = packed | (tl.umulhi(y_lo, 16) & 8) | (tl.umulhi(y_hi, 256) & 0x80)
    # a NaN / Inf group's bytes are 0: its flag taken to the bytes as the nibbles were (the same
    # layouts: no data moves between threads)
    sp = tl.reshape(tl.broadcast_to(special[:, :, None], (BLOCK_M, NB, G)), (BLOCK_M, BLOCK_K // 2, 2))
    packed = tl.where(tl.split(sp)[0], 0, packed).to(tl.uint8)
    p2 = pid_k * (BLOCK_K // 2) + tl.max_contiguous(tl.arange(0, BLOCK_K // 2), PACKED_RUN)[None, :]
    d_offs = (r2.to(tl.int64) if BIG else r2) * (K // 2) + p2
    if MASK:
        tl.store(data_ptr + d_offs, packed, mask=(r2 < M) & (p2 < K // 2))
    else:
        tl.store(data_ptr + d_offs, packed)
    _store_scales(sbyte, scale_ptr, r2, sblk, pid_k, M, scale_rows, scale_cols, SWIZZLED, BLOCK_M, NB)


@triton.jit
def _store_scales(sbyte, scale_ptr, r2, sblk, pid_k, M, scale_rows, scale_cols, SWIZZLED: tl.constexpr,
                  BLOCK_M: tl.constexpr, NB: tl.constexpr):
    """The scale bytes (BLOCK_M, NB) of rows r2 (BLOCK_M, 1) and groups sblk: linear, or in the
    128x4 layout, 4 adjacent bytes of a row in one 32-bit store (NB % 4 == 0)."""
    if SWIZZLED:
        word, w_offs, g2 = _scale_words(sbyte, r2, pid_k * (NB // 4), scale_cols, BLOCK_M, NB)
        w_ptr = scale_ptr.to(tl.pointer_type(tl.uint32), bitcast=True)
        tl.store(w_ptr + w_offs, word, mask=(r2 < scale_rows) & (g2 < scale_cols // 4))
    else:
        b2 = sblk[None, :]
        tl.store(scale_ptr + r2 * scale_cols + b2, sbyte.to(tl.uint8), mask=(r2 < M) & (b2 < scale_cols))


@triton.jit
def _e2m1_value(n):
    """e2m1 nibbles (int32) as fp32 values; nibble 8 is -0.0."""
    c = n & 7
    v = tl.where(c < 2, c.to(tl.float32) * 0.5, (((c >> 1) + 126) << 23 | ((c & 1) << 22)).to(tl.float32, bitcast=True))
    return (v.to(tl.int32, bitcast=True) | ((n & 8) << 28)).to(tl.float32, bitcast=True)  # the sign bit (-0 too)


@triton.jit
def _to_out(v, out_ptr, INTERPRETED: tl.constexpr):
    """fp32 -> out_ptr's dtype, round to nearest even (bf16 under the interpreter from the bits:
    its own conversion flushes bf16 subnormals)."""
    if INTERPRETED and out_ptr.dtype.element_ty == tl.bfloat16:
        b = v.to(tl.int32, bitcast=True)
        return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    return v.to(out_ptr.dtype.element_ty)


@triton.jit
def _contract_nan(v, y, out_ptr):
    """y (the fp32 values v converted to out_ptr's dtype) with every NaN written as the contract's
    one NaN of that dtype: fp32 0x7FC00000, bf16 0xFFFF, fp16 0x7E00 (a GPU's conversion writes
    0x7FFF, x * NaN keeps an operand's payload; docs/semantics.md, MXFP4 and NVFP4)."""
    ty: tl.constexpr = out_ptr.dtype.element_ty
    if ty == tl.float32:
        nan = tl.full(v.shape, 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)
    elif ty == tl.bfloat16:
        nan = tl.full(v.shape, -1, tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        nan = tl.full(v.shape, 0x7E00, tl.int16).to(tl.float16, bitcast=True)
    return tl.where(v != v, nan, y)


@triton.jit
def fp4_dequantize_kernel(
    data_ptr, scale_ptr, g_ptr, out_ptr, M, K, stride_dm, scale_cols, n_k,
    NV: tl.constexpr, SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    EVICT: tl.constexpr, BIG: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """MXFP4: e2m1 * 2**(b - 127), exact in fp32, 0xFF -> NaN; NVFP4: e2m1 * RN(scale / g) in
    fp32; then rounded once to out_ptr's dtype, each NaN the contract's. K counts elements (the
    data holds K / 2 bytes a row)."""
    G: tl.constexpr = 16 if NV else 32
    NB: tl.constexpr = BLOCK_K // G
    tile = tl.program_id(0)
    rows = (tile // n_k) * BLOCK_M + tl.arange(0, BLOCK_M)
    sblk = (tile % n_k) * NB + tl.arange(0, NB)
    r2 = rows[:, None]
    rw = r2.to(tl.int64) if BIG else r2
    p2 = (tile % n_k) * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)[None, :]
    raw = tl.load(data_ptr + rw * stride_dm + p2, mask=(r2 < M) & (p2 < K // 2), other=0, eviction_policy=EVICT)
    raw = raw.to(tl.int32)
    v = tl.reshape(_e2m1_value(tl.join(raw & 0xF, raw >> 4)), (BLOCK_M, NB, G))
    b2 = sblk[None, :]
    if SWIZZLED:
        r = r2 % 128
        s_offs = ((r2 // 128) * (scale_cols // 4) + b2 // 4) * 512 + (r % 32) * 16 + (r // 32) * 4 + b2 % 4
    else:
        s_offs = r2 * scale_cols + b2
    sb = tl.load(scale_ptr + s_offs, mask=(r2 < M) & (b2 < K // G), other=0).to(tl.int32)
    if NV:
        factor = tl.math.div_rn(_e4m3_value(sb), tl.load(g_ptr))
    else:  # 2**(sb - 127) from bits: sb == 0 is the subnormal 2**-127, 255 is NaN
        factor = tl.where(sb == 0, 0x400000, sb << 23).to(tl.float32, bitcast=True)
        factor = tl.where(sb == 255, float("nan"), factor)
    out = tl.reshape(v * factor[:, :, None], (BLOCK_M, BLOCK_K))
    c2 = (tile % n_k) * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    y = _contract_nan(out, _to_out(out, out_ptr, INTERPRETED), out_ptr)
    tl.store(out_ptr + rw * K + c2, y, mask=(r2 < M) & (c2 < K))
