"""Triton kernels of the `triton` backend's training and MoE calls (docs/semantics.md, "Training
and MoE calls"). Imported only when one of those calls runs (it imports triton); the launch
side is backends/_triton_training_ops.py. Every kernel uses the row-wise kernel's pieces
(backends/_triton_kernels.py: the NaN-propagating amax, the scale from amax's bits, the fp8
conversion, the packed 128x4 scale words), so each block's bytes are computed exactly as there.

- rowcol_kernel: one load of a BLOCK_M x BLOCK_K tile of x (L, M, K), any strides; column-wise
  blocks are its 32-row slabs (amax along rows), stored transposed into data (L, K, M) without
  a transposed copy of x; with ROW also the row-wise blocks of the same registers. Column-wise
  alone is this kernel with ROW off.
- tiles_kernel: 32x32 tiles, amax over both axes, one scale byte per tile.
- experts_kernel: the row-wise tile (_quantize_tile) per expert of (E, N, K), swizzled scales at
  expert e's own offset.
- tokens_kernel: token groups; each program derives the groups' padded offsets from the device
  tensor group_ends itself (no host synchronisation, no second kernel) and walks rows of the
  *output* layout: a row inside a group quantizes its input row, any other row (a group's
  padding, the tail up to T + 128 G) writes zero scale bytes. With offsets the GPU call cannot
  check (ends clamped into [previous end, T]; a last end < T) the tail's rows take the rows
  after the last end, so data is always the whole row-wise data.
- kgroups_kernel: K-groups (mxfp8_quantize_grouped(axis=-2)): the column-wise call's linear
  scales (N, T/32) placed per token group in its own 128x4 layout, one 512-byte output tile
  (128 rows x 4 columns) per lane group; the groups' padded offsets derived on the device as in
  tokens_kernel (ends clamped the same way, end // 32 as the scale column).

Padding of the swizzled layouts is written by the kernels (zero blocks from masked loads), so
outputs are never cleared first.
"""

import triton
import triton.language as tl

from ._triton_kernels import _amax_bits, _quantize_tile, _scale_and_inverse, _scale_words, _to_f32, _to_fp8


@triton.jit
def _store_scale(scale_ptr, sbyte, rows, cols0, n_cols, row_limit,
                 SWIZZLED: tl.constexpr, BLOCK_R: tl.constexpr, NB: tl.constexpr):
    """Scale bytes (BLOCK_R, NB) of scale rows `rows` (BLOCK_R,) and block columns cols0 + 0..NB:
    linear, n_cols per row; swizzled (NB % 4 == 0), n_cols the padded column count. Rows from
    row_limit on and columns from n_cols on are not stored."""
    r2 = rows[:, None]
    if SWIZZLED:
        word, w_offs, g2 = _scale_words(sbyte, r2, cols0 // 4, n_cols, BLOCK_R, NB)
        w_ptr = scale_ptr.to(tl.pointer_type(tl.uint32), bitcast=True)
        tl.store(w_ptr + w_offs, word, mask=(r2 < row_limit) & (g2 < n_cols // 4))
    else:
        c2 = (cols0 + tl.arange(0, NB))[None, :]
        tl.store(scale_ptr + r2 * n_cols + c2, sbyte, mask=(r2 < row_limit) & (c2 < n_cols))


@triton.jit
def rowcol_kernel(
    x_ptr, rd_ptr, rs_ptr, cd_ptr, cs_ptr,
    M, K, stride_l, stride_m, stride_k, L, m_last, k_last, rs_cols, cs_cols, n_m, n_k,
    EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    ROW: tl.constexpr, SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    EVICT: tl.constexpr, BIG: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """Tile (l, pid_m, pid_k) of x (L, M, K). The grid reaches past M and K where the swizzled
    layouts pad: rows of the last batch up to m_last / k_last (the padding rows after L*M and
    L*K scale rows) and the padding block columns; those tiles load nothing (zero blocks) and
    write only zero scale bytes."""
    tile = tl.program_id(0)
    l = tile // (n_m * n_k)
    pid_m = (tile // n_k) % n_m
    pid_k = tile % n_k
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    if BIG:
        lw, mw, kw = l.to(tl.int64), m.to(tl.int64), k.to(tl.int64)
    else:
        lw, mw, kw = l, m, k
    inside = (m[:, None] < M) & (k[None, :] < K)
    x = tl.load(x_ptr + lw * stride_l + mw[:, None] * stride_m + kw[None, :] * stride_k,
                mask=inside, other=0.0, eviction_policy=EVICT)
    x = _to_f32(x, INTERPRETED)
    last = l == L - 1

    # column-wise: 32-row slabs, amax along the rows, stored transposed (row l*K + k of (L*K, M))
    NBM: tl.constexpr = BLOCK_M // 32
    xc = tl.reshape(x, (NBM, 32, BLOCK_K))
    amax = _amax_bits(xc, 1, INTERPRETED)                                        # (NBM, BK)
    inv, sbyte = _scale_and_inverse(amax, EMAX, RCEIL, TIE_UP)
    q = tl.reshape(_to_fp8(xc * inv[:, None, :], E5M2, INTERPRETED), (BLOCK_M, BLOCK_K))
    crow = lw * K + kw                                                            # (BK,)
    tl.store(cd_ptr + crow[:, None] * M + mw[None, :], tl.trans(q).to(cd_ptr.dtype.element_ty, bitcast=True),
             mask=(k[:, None] < K) & (m[None, :] < M))
    climit = l * K + tl.where(last, k_last, K)
    _store_scale(cs_ptr, tl.trans(sbyte), l * K + k, pid_m * NBM, cs_cols, climit, SWIZZLED, BLOCK_K, NBM)

    if ROW:  # row-wise from the same registers: blocks of 32 along K
        NBK: tl.constexpr = BLOCK_K // 32
        xr = tl.reshape(x, (BLOCK_M, NBK, 32))
        amax = _amax_bits(xr, 2, INTERPRETED)                                    # (BM, NBK)
        inv, sbyte = _scale_and_inverse(amax, EMAX, RCEIL, TIE_UP)
        q = tl.reshape(_to_fp8(xr * inv[:, :, None], E5M2, INTERPRETED), (BLOCK_M, BLOCK_K))
        rrow = lw * M + mw
        tl.store(rd_ptr + rrow[:, None] * K + kw[None, :], q.to(rd_ptr.dtype.element_ty, bitcast=True), mask=inside)
        rlimit = l * M + tl.where(last, m_last, M)
        _store_scale(rs_ptr, sbyte, l * M + m, pid_k * NBK, rs_cols, rlimit, SWIZZLED, BLOCK_M, NBK)


@triton.jit
def tiles_kernel(
    x_ptr, data_ptr, scale_ptr, R, K, stride_xm, n_k,
    EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, EVICT: tl.constexpr, BIG: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """32x32 tiles of x as rows (R = L*M, K): a 32-row slab never spans two matrices (M % 32
    == 0), so tile row i of the flat rows is scale row i of (L, M/32, K/32)."""
    NBM: tl.constexpr = BLOCK_M // 32
    NBK: tl.constexpr = BLOCK_K // 32
    tile = tl.program_id(0)
    pid_m = tile // n_k
    pid_k = tile % n_k
    r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    c = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    rw = r.to(tl.int64) if BIG else r
    mask = (r[:, None] < R) & (c[None, :] < K)
    x = tl.load(x_ptr + rw[:, None] * stride_xm + c[None, :], mask=mask, other=0.0, eviction_policy=EVICT)
    x4 = tl.reshape(_to_f32(x, INTERPRETED), (NBM, 32, NBK, 32))
    amax = tl.max(_amax_bits(x4, 3, INTERPRETED), 1)  # (NBM, NBK): rows' maxima, then their integer max
    inv, sbyte = _scale_and_inverse(amax, EMAX, RCEIL, TIE_UP)
    q = tl.reshape(_to_fp8(x4 * inv[:, None, :, None], E5M2, INTERPRETED), (BLOCK_M, BLOCK_K))
    tl.store(data_ptr + rw[:, None] * K + c[None, :], q.to(data_ptr.dtype.element_ty, bitcast=True), mask=mask)
    _store_scale(scale_ptr, sbyte, pid_m * NBM + tl.arange(0, NBM), pid_k * NBK, K // 32, R // 32,
                 False, NBM, NBK)


@triton.jit
def experts_kernel(
    x_ptr, data_ptr, scale_ptr,
    M, K, stride_xm, scale_rows, scale_cols, n_k, n_tiles, stride_xe,
    EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    MASK_M: tl.constexpr, MASK_K: tl.constexpr, EVICT: tl.constexpr,
    PERSISTENT: tl.constexpr, STAGES: tl.constexpr, BIG: tl.constexpr, SPREAD: tl.constexpr,
    INTERPRETED: tl.constexpr,
):
    """Expert e = program // n_tiles: the row-wise swizzled tile on x[e] (M = N rows), its
    scales at byte e * scale_rows * scale_cols (the row-wise plan's arguments, plus stride_xe)."""
    e = (tl.program_id(0) // n_tiles).to(tl.int64)
    _quantize_tile(tl.program_id(0) % n_tiles, x_ptr + e * stride_xe, data_ptr + e * M * K,
                   scale_ptr + e * scale_rows * scale_cols, M, K, stride_xm, scale_rows, scale_cols, n_k,
                   EMAX, RCEIL, TIE_UP, E5M2, SWIZZLED, BLOCK_M, BLOCK_K, MASK_M, MASK_K, EVICT, BIG, SPREAD, INTERPRETED)


@triton.jit
def _max_int(a, b):
    return tl.maximum(a, b)


@triton.jit
def _group_sizes(ends_ptr, G, T, G_PAD: tl.constexpr):
    """(h, used, start, size) per group h < G_PAD of the device tensor ends_ptr (G int32), each
    end clamped into [previous end, T] (any values stay inside the buffers)."""
    h = tl.arange(0, G_PAD)
    used = h < G
    ends = tl.load(ends_ptr + h, mask=used, other=0)
    prev = tl.load(ends_ptr + h - 1, mask=used & (h > 0), other=0)
    ends = tl.minimum(tl.maximum(tl.associative_scan(ends, 0, _max_int), 0), T)
    prev = tl.minimum(tl.maximum(tl.associative_scan(prev, 0, _max_int), 0), T)
    return h, used, prev, tl.where(used, ends - prev, 0)


@triton.jit
def tokens_kernel(
    x_ptr, ends_ptr, data_ptr, scale_ptr,
    T, K, stride_xm, G, scale_cols, total_words, n_k,
    EMAX: tl.constexpr, RCEIL: tl.constexpr, TIE_UP: tl.constexpr, E5M2: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, G_PAD: tl.constexpr,
    EVICT: tl.constexpr, BIG: tl.constexpr, INTERPRETED: tl.constexpr,
):
    """Output rows pid_m * BLOCK_M.. (BLOCK_M a power of two <= 128) of the flat grouped layout ((T + 128 G) * scale_cols
    bytes, rows padded to whole 128-row tiles for the grid; words past total_words not stored).
    Group g's padded rows start at P_g, a multiple of 128, so its own 128x4 layout is the
    global one's rows P_g..: the row-wise word store applies unchanged."""
    NB: tl.constexpr = BLOCK_K // 32
    tile = tl.program_id(0)
    pid_m = tile // n_k
    pid_k = tile % n_k
    h, used, prev, sizes = _group_sizes(ends_ptr, G, T, G_PAD)
    padded = (sizes + 127) // 128 * 128
    padded_end = tl.cumsum(padded, 0)
    # BLOCK_M divides 128 and every group's padded range is whole 128-row chunks, so all rows of
    # this program lie in one group's range (or in the tail): one group per program, found as
    # the number of groups whose padded end is at or before the first row.
    row0 = pid_m * BLOCK_M
    g = tl.sum((padded_end <= row0).to(tl.int32), axis=0)
    before = h < g
    out_row = row0 + tl.arange(0, BLOCK_M)
    local = out_row - tl.sum(tl.where(before, padded, 0), axis=0)
    size = tl.sum(tl.where(h == g, sizes, 0), axis=0)
    src = tl.sum(tl.where(before, sizes, 0), axis=0) + local                          # input row
    grouped = local < size
    # rows after the last group (the tail) take the rows after the last end, if it is < T (an
    # invalid offset the GPU call cannot check): their data still written, their scale bytes zero
    valid = grouped | ((g >= G) & (src < T))

    sblk = pid_k * NB + tl.arange(0, NB)
    c3 = sblk[None, :, None] * 32 + tl.arange(0, 32)[None, None, :]
    s3 = (src.to(tl.int64) if BIG else src)[:, None, None]
    mask = valid[:, None, None] & (c3 < K)
    x = tl.load(x_ptr + s3 * stride_xm + c3, mask=mask, other=0.0, eviction_policy=EVICT)
    x = _to_f32(x, INTERPRETED)
    amax = _amax_bits(x, 2, INTERPRETED)                                              # (BM, NB)
    inv, sbyte = _scale_and_inverse(amax, EMAX, RCEIL, TIE_UP)
    q8 = _to_fp8(x * inv[:, :, None], E5M2, INTERPRETED)
    tl.store(data_ptr + s3 * K + c3, q8.to(data_ptr.dtype.element_ty, bitcast=True), mask=mask)
    sbyte = tl.where(grouped[:, None], sbyte, 0)
    word, w_offs, g2 = _scale_words(sbyte, out_row[:, None], pid_k * (NB // 4), scale_cols, BLOCK_M, NB)
    w_ptr = scale_ptr.to(tl.pointer_type(tl.uint32), bitcast=True)
    tl.store(w_ptr + w_offs, word, mask=(w_offs < total_words) & (g2 < scale_cols // 4))


@triton.jit
def kgroups_kernel(
    lin_ptr, ends_ptr, out_ptr, N, C, G, row_tiles, size,
    TILES: tl.constexpr, G_PAD: tl.constexpr,
):
    """Output tiles pid * TILES.. (512 bytes each: 128 scale rows x 4 columns in the 128x4 order)
    of the K-groups layout (size bytes) from lin (N, C) uint8, C = T / 32. Group g's tiles start
    at Q_g / 4 * row_tiles (Q_g its first padded column), row tile by row tile, each row tile
    round_up(w_g, 4) / 4 tiles wide; tiles past the last group and bytes outside a group's
    columns or past N are zero."""
    _, used, start_tok, tokens = _group_sizes(ends_ptr, G, C * 32, G_PAD)
    c0 = start_tok // 32
    w = (start_tok + tokens) // 32 - c0                                          # (G_PAD,) scale columns
    wide = (w + 3) // 4                                                           # tiles per row tile
    tile_end = tl.cumsum(wide * row_tiles, 0)
    q = tl.program_id(0) * TILES + tl.arange(0, TILES)                            # (TILES,)
    g = tl.sum((tile_end[None, :] <= q[:, None]).to(tl.int32), axis=1)            # its group (G: the tail)
    pick = tl.arange(0, G_PAD)[None, :] == g[:, None]
    g_wide = tl.sum(tl.where(pick, wide, 0), axis=1)
    g_c0 = tl.sum(tl.where(pick, c0, 0), axis=1)
    g_w = tl.sum(tl.where(pick, w, 0), axis=1)
    local = q - tl.sum(tl.where(pick, tile_end - wide * row_tiles, 0), axis=1)
    rb = local // tl.maximum(g_wide, 1)
    cb = local - rb * g_wide
    p = tl.arange(0, 512)[None, :]                                                # byte of the tile
    row = rb[:, None] * 128 + p // 16 + (p % 16) // 4 * 32
    col = cb[:, None] * 4 + p % 4                                                 # within the group
    valid = (g[:, None] < G) & (row < N) & (col < g_w[:, None])
    v = tl.load(lin_ptr + row.to(tl.int64) * C + g_c0[:, None] + col, mask=valid, other=0)
    offs = q[:, None].to(tl.int64) * 512 + p
    tl.store(out_ptr + offs, v, mask=offs < size)
