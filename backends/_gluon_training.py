"""Gluon (Triton's explicit-layout dialect) column-wise / row+column kernel of the `triton`
backend, for CUDA: the same contract and bytes as backends/_triton_training.py's rowcol_kernel,
with the register layout written down instead of left to Triton's layout passes.

Why: for rowcol_kernel Triton keeps x's load layout (each thread 8 consecutive elements of a row)
and reduces each 32-row slab across lanes and warps, then moves the transposed fp8 tile through
shared memory to store it along M. Here each thread owns HALF (4, 8, 16 or 32; 8 shipped)
consecutive rows x 8 consecutive columns of a 32-row slab, and the slab's other rows are
neighbouring lanes':
- the load is HALF vector loads of 8 elements (one per row);
- a column's amax is in-thread maxima and log2(32 / HALF) lane shuffles;
- the transposed store is, per column, HALF consecutive bytes of the output row (one vector
  store): the same registers, renumbered (`convert_layout(..., assert_trivial=True)`: no data
  moves), no shared memory, no barrier;
- with ROW, a row's 32-element block is 8 in-thread elements and 4 lanes (two shuffles).

A program is SLABS (1, 2 or 4) consecutive 32-row slabs (BLOCK_M = 32 * SLABS), one after the
other, by BLOCK_K = 8 * HALF * NW columns of one matrix of x (L, M, K). The grid and its padding
tiles are rowcol_kernel's (backends/_triton_training_ops.py plans both): tiles past M or K load
nothing and write zero scale bytes into the swizzled layouts' padding. Column scale bytes are
stored at their linear or 128x4-layout offsets (mxquant/layouts.py), each column's SLABS bytes
(adjacent in both layouts) in one store; row scale bytes one by one. The per-element arithmetic
is the shared pieces of backends/_triton_kernels.py (_scale_and_inverse, _to_fp8); only the
NaN-propagating amax is restated here, because a Gluon reduction needs a Gluon combine function.

Gluon compiles for GPUs only (Triton's interpreter does not run it), and changes between Triton
releases: backends/_triton_training_ops.py uses it only with the Triton it was run with
(GLUON_TRITON). The interpreter tests run rowcol_kernel; this kernel is checked against the
oracle by the CUDA tests (tests/test_triton_training.py, which run both kernels on a GPU: on an
H100 on 2026-12-05 at 1, 2 and 4 slabs, the shipped shapes included, with fp32, bf16 and fp16
input) and
compiled for sm_90 here by tests/test_triton_compile.py.
"""

import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ._triton_kernels import _scale_and_inverse, _to_fp8


def layouts(half: int, num_warps: int):
    """(load layout, store layout) of the (32, BLOCK_K = 8 * half * num_warps) tile, each thread
    `half` consecutive rows (of 32; the slab's other rows are 32 / half - 1 neighbouring lanes')
    by 8 consecutive columns: the same thread owns the same elements in both layouts; registers
    run along K in the first (x's rows are contiguous) and along M in the second (the
    transposed output's rows are)."""
    log2 = lambda n: n.bit_length() - 1
    load = gl.BlockedLayout([half, 8], [32 // half, half], [1, num_warps], [1, 0])
    reg = [[1 << i, 0] for i in range(log2(half))] + [[0, 1 << i] for i in range(3)]
    lane = [[0, 8 << i] for i in range(log2(half))] + [[half << i, 0] for i in range(log2(32 // half))]
    warp = [[0, (8 * half) << i] for i in range(log2(num_warps))]
    store = gl.DistributedLinearLayout(reg, lane, warp, [], [32, 8 * half * num_warps])
    return load, store


@gluon.jit
def _max_nan(a, b):
    return gl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@gluon.jit
def _amax_bits(x, axis: gl.constexpr):
    """The fp32 bits (int32) of the NaN-propagating max |x| along axis (as _triton_kernels)."""
    return gl.reduce(gl.abs(x), axis, _max_nan).to(gl.int32, bitcast=True)


@gluon.jit
def _store_scale(ptr, sbyte, rows, cols, n_cols, row_limit, SWIZZLED: gl.constexpr, BIG: gl.constexpr,
                 EVICT: gl.constexpr):
    """Scale bytes at (rows, cols) (broadcast shapes) of a scale matrix of n_cols columns
    (padded ones, swizzled), linear or at their 128x4-layout byte offsets (64-bit with BIG: a
    swizzled scale of a 32-row input is a quarter of its element count); rows from row_limit on
    and columns from n_cols on are not stored."""
    if BIG:
        rows = rows.to(gl.int64)
    offs = _scale_offsets(rows, cols, n_cols, SWIZZLED)
    gl.store(ptr + offs, sbyte, mask=(rows < row_limit) & (cols < n_cols), eviction_policy=EVICT)


@gluon.jit
def _scale_offsets(rows, cols, n_cols, SWIZZLED: gl.constexpr):
    """Byte offsets of scale (rows, cols) in a scale matrix of n_cols columns: linear, or in the
    128x4 layout (mxquant/layouts.py)."""
    if SWIZZLED:
        r = rows % 128
        return ((rows // 128) * (n_cols // 4) + cols // 4) * 512 + (r % 32) * 16 + (r // 32) * 4 + cols % 4
    else:
        return rows * n_cols + cols


@gluon.jit
def _load_slab(x_ptr, slab, l, k, M, K, stride_l, stride_m, stride_k, LOAD: gl.constexpr, BIG: gl.constexpr):
    """32-row slab `slab` of matrix l by the tile's columns k (LOAD's slice), as x's dtype (zero
    past M and K)."""
    m = slab * 32 + gl.arange(0, 32, layout=gl.SliceLayout(1, LOAD))
    if BIG:
        lw, mw, kw = l.to(gl.int64), m.to(gl.int64), k.to(gl.int64)
    else:
        lw, mw, kw = l, m, k
    return gl.load(x_ptr + lw * stride_l + mw[:, None] * stride_m + kw[None, :] * stride_k,
                   mask=(m[:, None] < M) & (k[None, :] < K), other=0.0, eviction_policy="evict_last")


@gluon.jit
def _slab(xin, rd_ptr, rs_ptr, cd_ptr, slab, l, k, ks, M, K, m_last, rs_cols, pid_k, last,
          EMAX: gl.constexpr, RCEIL: gl.constexpr, TIE_UP: gl.constexpr, E5M2: gl.constexpr, ROW: gl.constexpr,
          SWIZZLED: gl.constexpr, BLOCK_K: gl.constexpr, LOAD: gl.constexpr, STORE: gl.constexpr, BIG: gl.constexpr,
          CD_EVICT: gl.constexpr):
    """32-row slab `slab` of matrix l by the tile's columns k (LOAD's slice; ks: STORE's), loaded
    (xin: _load_slab's): column-wise data stored, row-wise data and scales too with ROW; returns
    the column scale bytes (BLOCK_K,), which the caller stores."""
    m = slab * 32 + gl.arange(0, 32, layout=gl.SliceLayout(1, LOAD))
    if BIG:
        lw, mw, kw = l.to(gl.int64), m.to(gl.int64), k.to(gl.int64)
    else:
        lw, mw, kw = l, m, k
    inside = (m[:, None] < M) & (k[None, :] < K)
    x = xin.to(gl.float32)

    # column-wise: the slab's 32 rows of each column (HALF in-thread, the rest in 32 / HALF lanes)
    amax = _amax_bits(x, 0)                                                        # (BK,)
    inv, sbyte = _scale_and_inverse(amax, EMAX, RCEIL, TIE_UP)
    q = _to_fp8(x * inv[None, :], E5M2, False).to(cd_ptr.dtype.element_ty, bitcast=True)
    qt = gl.convert_layout(q, STORE, assert_trivial=True)                          # registers along M
    ms = slab * 32 + gl.arange(0, 32, layout=gl.SliceLayout(1, STORE))
    if BIG:
        crow = lw * K + ks.to(gl.int64)
    else:
        crow = l * K + ks
    gl.store(cd_ptr + crow[None, :] * M + ms[:, None], qt, mask=(ks[None, :] < K) & (ms[:, None] < M),
             eviction_policy=CD_EVICT)

    if ROW:  # row-wise from the same registers: each row's 32-column blocks (8 in-thread, 4 lanes)
        NBK: gl.constexpr = BLOCK_K // 32
        xr = gl.reshape(x, [32, NBK, 32])
        ramax = _amax_bits(xr, 2)                                                  # (32, NBK)
        rinv, rbyte = _scale_and_inverse(ramax, EMAX, RCEIL, TIE_UP)
        rq = gl.reshape(_to_fp8(xr * rinv[:, :, None], E5M2, False), [32, BLOCK_K])
        rq = gl.convert_layout(rq, LOAD, assert_trivial=True)
        gl.store(rd_ptr + (lw * M + mw)[:, None] * K + kw[None, :], rq.to(rd_ptr.dtype.element_ty, bitcast=True),
                 mask=inside)
        rlimit = l * M + gl.where(last, m_last, M)
        rr = l * M + slab * 32 + gl.arange(0, 32, layout=gl.SliceLayout(1, gl.SliceLayout(2, xr.type.layout)))
        rc = pid_k * NBK + gl.arange(0, NBK, layout=gl.SliceLayout(0, gl.SliceLayout(2, xr.type.layout)))
        _store_scale(rs_ptr, rbyte, rr[:, None], rc[None, :], rs_cols, rlimit, SWIZZLED, BIG, "")
    return sbyte


@gluon.jit
def _unpacked(x_ptr, rd_ptr, rs_ptr, cd_ptr, s0, l, k, ks, M, K, stride_l, stride_m, stride_k, m_last, rs_cols, pid_k,
              last, EMAX: gl.constexpr, RCEIL: gl.constexpr, TIE_UP: gl.constexpr, E5M2: gl.constexpr,
              ROW: gl.constexpr, SWIZZLED: gl.constexpr, BLOCK_K: gl.constexpr, LOAD: gl.constexpr,
              STORE: gl.constexpr, BIG: gl.constexpr, CD_EVICT: gl.constexpr, SLABS: gl.constexpr,
              STEP: gl.constexpr):
    """Slabs s0, s0 + STEP, ..., SLABS of them; their column scale bytes joined in registers:
    (BLOCK_K,) for one slab, else (BLOCK_K, 2, ..., 2) whose flattened index j is slab s0 + j * STEP
    (the even-numbered slabs, then the odd ones, each joined the same way: the order a reshape to
    (BLOCK_K, SLABS) keeps in registers, so that a column's bytes are one store)."""
    if SLABS == 1:
        return _slab(_load_slab(x_ptr, s0, l, k, M, K, stride_l, stride_m, stride_k, LOAD, BIG), rd_ptr, rs_ptr,
                     cd_ptr, s0, l, k, ks, M, K, m_last, rs_cols, pid_k, last, EMAX, RCEIL, TIE_UP, E5M2, ROW,
                     SWIZZLED, BLOCK_K, LOAD, STORE, BIG, CD_EVICT)
    else:
        even = _unpacked(x_ptr, rd_ptr, rs_ptr, cd_ptr, s0, l, k, ks, M, K, stride_l, stride_m, stride_k, m_last,
                         rs_cols, pid_k, last, EMAX, RCEIL, TIE_UP, E5M2, ROW, SWIZZLED, BLOCK_K, LOAD, STORE, BIG,
                         CD_EVICT, SLABS // 2, 2 * STEP)
        odd = _unpacked(x_ptr, rd_ptr, rs_ptr, cd_ptr, s0 + STEP, l, k, ks, M, K, stride_l, stride_m, stride_k, m_last,
                        rs_cols, pid_k, last, EMAX, RCEIL, TIE_UP, E5M2, ROW, SWIZZLED, BLOCK_K, LOAD, STORE, BIG,
                        CD_EVICT, SLABS // 2, 2 * STEP)
        return gl.join(even, odd)


@gluon.jit
def _packed_store(cs_ptr, acc, row0, s0, cs_cols, climit, SLABS: gl.constexpr, BLOCK_K: gl.constexpr,
                  SWIZZLED: gl.constexpr, BIG: gl.constexpr, EVICT: gl.constexpr):
    """Column scales of a tile's slabs s0.. (a multiple of SLABS): each column's SLABS bytes (acc:
    int32 words, byte j of word w slab s0 + 4 w + j; (BLOCK_K,) for up to 4 slabs, (BLOCK_K, 2) for 8)
    in one store of SLABS bytes at rows row0.., linear (whole tiles: cs_cols a multiple of SLABS) or
    at the 128x4 layout's offsets (SLABS 2 or 4: a column's bytes adjacent and aligned there, as
    cs_cols is a multiple of 4; a tile from column cs_cols on, a padding tile past M, stores none)."""
    if SLABS == 8:
        rows = row0 + gl.arange(0, BLOCK_K, layout=gl.SliceLayout(1, acc.type.layout))
        if BIG:
            rows = rows.to(gl.int64)
        w = gl.arange(0, 2, layout=gl.SliceLayout(0, acc.type.layout))
        gl.store(cs_ptr.to(gl.pointer_type(gl.int32), bitcast=True) + rows[:, None] * (cs_cols // 4) + s0 // 4
                 + w[None, :], acc, mask=rows[:, None] < climit, eviction_policy=EVICT)
    else:
        rows = row0 + gl.arange(0, BLOCK_K, layout=acc.type.layout)
        if BIG:
            rows = rows.to(gl.int64)
        offs = _scale_offsets(rows, s0, cs_cols, SWIZZLED)
        mask = rows < climit
        if SWIZZLED:  # (linear: whole tiles, s0 < cs_cols always)
            mask = mask & (s0 < cs_cols)
        if SLABS == 2:
            gl.store(cs_ptr.to(gl.pointer_type(gl.int16), bitcast=True) + offs // 2, acc.to(gl.int16), mask=mask,
                     eviction_policy=EVICT)
        else:
            gl.store(cs_ptr.to(gl.pointer_type(gl.int32), bitcast=True) + offs // 4, acc, mask=mask,
                     eviction_policy=EVICT)


@gluon.jit
def rowcol_kernel(
    x_ptr, rd_ptr, rs_ptr, cd_ptr, cs_ptr,
    M, K, stride_l, stride_m, stride_k, L, m_last, k_last, rs_cols, cs_cols, n_m, n_k,
    EMAX: gl.constexpr, RCEIL: gl.constexpr, TIE_UP: gl.constexpr, E5M2: gl.constexpr,
    ROW: gl.constexpr, SWIZZLED: gl.constexpr, HALF: gl.constexpr, NW: gl.constexpr, SLABS: gl.constexpr,
    LOAD: gl.constexpr, STORE: gl.constexpr, BIG: gl.constexpr,
    CS_EVICT: gl.constexpr, CD_EVICT: gl.constexpr, PACKED: gl.constexpr = False, PREFETCH: gl.constexpr = False,
):
    """Tile (l, pid_m, pid_k) of x (L, M, K), as backends/_triton_training.py's rowcol_kernel
    with BLOCK_M = 32 * SLABS and BLOCK_K = 8 * HALF * NW (LOAD, STORE: layouts(HALF, NW)): its
    SLABS (1, 2, 4 or 8) slabs one after the other, then each column's SLABS scale
    bytes, which are adjacent in both scale layouts, in one store. CS_EVICT / CD_EVICT: the
    eviction policies of the column scale and column data stores ("" for none; GLUON_CONFIGS
    picks them). PACKED (linear scales with M a multiple of BLOCK_M, every tile whole; or swizzled
    with 2 or 4 slabs): the scale bytes gathered in int32 words as the slabs go; PREFETCH (with
    PACKED): each slab's load issued before the previous slab's work."""
    BLOCK_K: gl.constexpr = 8 * HALF * NW
    tile = gl.program_id(0)
    l = tile // (n_m * n_k)
    pid_m = (tile // n_k) % n_m
    pid_k = tile % n_k
    last = l == L - 1
    k = pid_k * BLOCK_K + gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, LOAD))
    ks = pid_k * BLOCK_K + gl.arange(0, BLOCK_K, layout=gl.SliceLayout(0, STORE))
    s0 = pid_m * SLABS
    if PACKED:
        gl.static_assert(SLABS > 1 and not (SWIZZLED and SLABS == 8))
        xa = _load_slab(x_ptr, s0, l, k, M, K, stride_l, stride_m, stride_k, LOAD, BIG)
        lo = gl.zeros([BLOCK_K], gl.int32, layout=gl.SliceLayout(0, LOAD))
        if SLABS == 8:
            hi = gl.zeros([BLOCK_K], gl.int32, layout=gl.SliceLayout(0, LOAD))
        for j in gl.static_range(SLABS):
            xn = xa
            if PREFETCH:
                if j + 1 < SLABS:
                    xn = _load_slab(x_ptr, s0 + j + 1, l, k, M, K, stride_l, stride_m, stride_k, LOAD, BIG)
            b = _slab(xa, rd_ptr, rs_ptr, cd_ptr, s0 + j, l, k, ks, M, K, m_last, rs_cols, pid_k, last,
                      EMAX, RCEIL, TIE_UP, E5M2, ROW, SWIZZLED, BLOCK_K, LOAD, STORE, BIG, CD_EVICT).to(gl.int32)
            if j < 4:
                lo = lo | (b << (8 * j))
            else:
                hi = hi | (b << (8 * (j - 4)))
            if j + 1 < SLABS:
                if PREFETCH:
                    xa = xn
                else:
                    xa = _load_slab(x_ptr, s0 + j + 1, l, k, M, K, stride_l, stride_m, stride_k, LOAD, BIG)
        climit = l * K + gl.where(last, k_last, K)
        if SLABS == 8:
            lo = gl.join(lo, hi)
        _packed_store(cs_ptr, lo, l * K + pid_k * BLOCK_K, s0, cs_cols, climit, SLABS, BLOCK_K, SWIZZLED, BIG, CS_EVICT)
    else:
        b = _unpacked(x_ptr, rd_ptr, rs_ptr, cd_ptr, s0, l, k, ks, M, K, stride_l, stride_m, stride_k, m_last, rs_cols,
                      pid_k, last, EMAX, RCEIL, TIE_UP, E5M2, ROW, SWIZZLED, BLOCK_K, LOAD, STORE, BIG, CD_EVICT, SLABS, 1)
        if SLABS > 2:
            b = gl.reshape(b, [BLOCK_K, SLABS])  # [:, j] = slab s0 + j
        climit = l * K + gl.where(last, k_last, K)
        if SLABS == 1:
            _store_scale(cs_ptr, b, l * K + k, s0, cs_cols, climit, SWIZZLED, BIG, CS_EVICT)
        else:
            rows = l * K + pid_k * BLOCK_K + gl.arange(0, BLOCK_K, layout=gl.SliceLayout(1, b.type.layout))
            cols = s0 + gl.arange(0, SLABS, layout=gl.SliceLayout(0, b.type.layout))
            _store_scale(cs_ptr, b, rows[:, None], cols[None, :], cs_cols, climit, SWIZZLED, BIG, CS_EVICT)
