"""Launch side of the `triton` backend's training and MoE calls (backend.TRAINING_OPS): shapes,
grids and launch plans for backends/_triton_training.py's kernels (imported on the first call;
nothing here imports triton). Same plan cache and launch path as the row-wise call
(backends/_triton_launch.py); outputs are allocated here, never cleared (the kernels write every
byte, padding included); no host synchronisation (grouped offsets stay on the device).

`config` (tests, sweeps): (BLOCK_M, BLOCK_K, warps) for colwise / rowcol / 2d / token groups,
("gluon", HALF, warps[, slabs[, maxnreg[, scale stores' policy[, data stores' policy[, flags]]]]]]) for
colwise / rowcol's Gluon kernel on CUDA (backends/_gluon_training.py; the configs and their check:
backends/_gluon_configs.py),
a row-wise `Config` for 3-D experts; None picks GLUON_CONFIGS for colwise / rowcol on CUDA under
the Triton the Gluon kernel ran with (GLUON_TRITON), TRAINING_CONFIGS otherwise. Under Triton's interpreter
(TRITON_INTERPRET=1) the same functions run on CPU tensors (tests/test_triton_training.py).
"""

from __future__ import annotations

import functools
import math

import torch

from mxquant import layouts
from mxquant.formats import BLOCK, ELEMENT_FORMATS
from mxquant.layouts import round_up

from . import _triton_launch as _launch
from ._common import as_rows, device_guard
from ._gluon_configs import (GLUON_CONFIGS, GLUON_TRITON, _gluon, _gluon_flags, _gluon_policies,  # noqa: F401
                             _gluon_shape, _use_gluon, gluon_version_ok)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _rowwise():
    """backends/triton.py (the row-wise call, configs, card): imported on use, as it imports this."""
    from . import triton

    return triton

TRAINING_CONFIGS = {"colwise": (64, 128, 4), "colwise swizzled": (128, 64, 4), "rowcol": (64, 64, 8),
                    "rowcol swizzled": (128, 128, 8), "2d": (64, 128, 8)}
"""(BLOCK_M, BLOCK_K, warps) per call (and layout, where it differs). Column-wise and row+column
from a sweep on an H100 (2026-12-05, 8192x8192 bf16 -> e4m3, rceil, linear; docs/performance.md,
2026-12-05 (sixth session), the tile-shape sweep; on CUDA the Gluon kernel, GLUON_CONFIGS
(backends/_gluon_configs.py), now runs those two calls unless a config is given; these shapes run under the interpreter, on XPU
and when given, and matched the Gluon kernel byte for byte in the seventh session's sweeps): column-wise
64x128 with 4 warps 105.9 us (the first choice, 128x64 with 8 warps, 216.9 us), row+column 64x64
with 8 warps 185.6 us (128x128 with 16 warps 299.0 us); column-wise with 8 warps took 1.3-2x the
time of 4 at 7 of the 10 tile shapes. The swizzled ones are the best measured shapes the 128-row
(and 128-column) word packing allows: swizzled column scales pack 4 blocks along M into a word
(BLOCK_M % 128 == 0), swizzled row scales 4 along K (BLOCK_K % 128 == 0); measured linear:
128x64/4 116.5 us, 128x128/8 290.3 us. The swept shapes spill a few registers (ptxas: 64x128/4
44 bytes, 128x128/8 80), and were the fastest all the same. 32x32 (2d) is a first choice, not
swept; 94.7-100.8% of copy on the H100. Experts take the row-wise swizzled config of the card
(triton.quantize_config), token groups TOKENS_CONFIGS below or that one."""

TOKENS_CONFIGS = {"default": (32, 256, 4)}
"""(BLOCK_M, BLOCK_K, warps) of tokens_kernel per CUDA card class (BLOCK_K cut to the padded scale
columns' width for small K); other classes, XPU and the interpreter take the row-wise swizzled
call's tiles. The H100 sweep of 2026-12-05 (eighth session, benchmarks/
sweep_fp4_tokens.py, 32 groups, bf16): the row-wise tiles (4 x 512, 4 warps there) gave 0.89x
/ 0.94x the ungrouped call's speed at 8192x8192 / 16384x8192, 32 x 256 with 4 warps 0.94x /
0.97x (the best of 12 shapes at 8192x8192, within 0.2% of the best at 16384x8192): each program's
group lookup (scans over the group ends, ~22 barriers) is paid per 8192 elements, not 2048."""

_E8M0 = torch.float8_e8m0fnu


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_training

    return _triton_training


def _modes(dtype, scale_mode) -> dict:
    return dict(EMAX=ELEMENT_FORMATS[dtype].emax, RCEIL=scale_mode == "rceil",
                TIE_UP=scale_mode == "compressed-tensors", E5M2=dtype == torch.float8_e5m2)


def _block_config(op: str, config, swizzled: bool, row: bool) -> tuple[int, int, int]:
    bm, bk, warps = config or TRAINING_CONFIGS.get(f"{op} swizzled" if swizzled else op, TRAINING_CONFIGS[op])
    for what, v in (("BLOCK_M", bm), ("BLOCK_K", bk)):
        if v < 32 or v & (v - 1):
            raise ValueError(f"{op} config: {what} must be a power of two >= 32, got {v}")
    if swizzled and (bm % 128 or (row and bk % 128)):
        raise ValueError(f"{op} config: swizzled scales pack 4 blocks per word: BLOCK_M{' and BLOCK_K' if row else ''} "
                         f"must be multiples of 128, got {bm} x {bk}")
    return bm, bk, warps


def _guarded(fn):
    """Run fn with x's device current (launches go to the current device's stream)."""
    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        guard = device_guard(x.device)
        if guard is None:
            return fn(x, *args, **kwargs)
        with guard:
            return fn(x, *args, **kwargs)
    return wrapper


def quantize_colwise(x, dtype, scale_mode, scale_layout, config=None):
    """(data (..., K, M), scale): quantize(x.mT.contiguous()) from x in one pass."""
    if config is None and x.shape[-2] > 1 and x.stride(-2) == 1 and x.stride(-1) != 1:
        return _rowwise().quantize(x.mT, dtype, scale_mode, scale_layout)  # x.mT has unit-stride rows: the row-wise kernel, no copy
    return _rowcol(x, dtype, scale_mode, scale_layout, config, row=False)


def quantize_rowcol(x, dtype, scale_mode, scale_layout, config=None):
    """(row data, row scale, column data, column scale) from one read of x."""
    return _rowcol(x, dtype, scale_mode, scale_layout, config, row=True)


@_guarded
def _rowcol(x, dtype, scale_mode, scale_layout, config, row):
    device = x.device
    *lead, m, k = x.shape
    n = math.prod(lead)
    t = (*lead, k, m)
    swizzled = scale_layout == "swizzled"
    cd = torch.empty(t, dtype=dtype, device=device)
    cs = torch.empty(layouts.scale_shape(t, scale_layout), dtype=torch.uint8, device=device)
    rd, rs = cd, cs  # unused by the kernel without ROW
    if row:
        rd = torch.empty(x.shape, dtype=dtype, device=device)
        rs = torch.empty(layouts.scale_shape(tuple(x.shape), scale_layout), dtype=torch.uint8, device=device)
    if x.numel():  # otherwise every scale is empty too
        x3 = x.reshape(n, m, k)  # a view where the leading dimensions merge, else a copy
        strides = x3.stride()
        op = "rowcol" if row else "colwise"
        key = (op, n, m, k, strides, x.dtype, dtype, scale_mode, swizzled, x3.data_ptr() % 16 == 0, device, config)

        def make():
            gluon = _use_gluon(config, device)
            if gluon:
                given = config or ("gluon", *GLUON_CONFIGS[f"{op} swizzled" if swizzled else op])
                half, warps, slabs, maxnreg = _gluon_shape(given)
                bm, bk = BLOCK * slabs, 8 * half * warps
            else:
                bm, bk, warps = _block_config(op, config, swizzled, row)
            cs_cols = round_up(m // BLOCK, 4) if swizzled else m // BLOCK
            rs_cols = round_up(k // BLOCK, 4) if swizzled else k // BLOCK
            # the last matrix's tiles reach the swizzled layouts' padding rows; every tile row
            # its padding block columns (zero blocks: masked loads)
            m_last = round_up(n * m, 128) - (n - 1) * m if swizzled and row else m
            k_last = round_up(n * k, 128) - (n - 1) * k if swizzled else k
            n_m = cdiv(max(m_last, cs_cols * BLOCK), bm)
            n_k = cdiv(max(k_last, rs_cols * BLOCK if row else k), bk)
            extent = sum((size - 1) * st for size, st in zip((n, n_m * bm, n_k * bk), strides))
            big = max(extent, n * n_m * bm * n_k * bk, cs.numel(), rs.numel()) >= 2**31  # scale offsets too
            ints = (m, k, *strides, n, m_last, k_last, rs_cols, cs_cols, n_m, n_k)
            if gluon:
                load, store = _gluon().layouts(half, warps)
                cs_evict, cd_evict = _gluon_policies(given)
                flags = _gluon_flags(given)
                # packed words: linear scales of whole tiles, swizzled ones of 2 or 4 slabs (a column's bytes
                # adjacent and aligned in the 128x4 layout); elsewhere the bytes joined (the same bytes)
                packed = "packed" in flags and slabs > 1 and (slabs <= 4 if swizzled else m % bm == 0)
                constexprs = dict(**_modes(dtype, scale_mode), ROW=row, SWIZZLED=swizzled, HALF=half, NW=warps,
                                  SLABS=slabs, LOAD=load, STORE=store, BIG=big, CS_EVICT=cs_evict, CD_EVICT=cd_evict,
                                  PACKED=packed, PREFETCH=packed and "prefetch" in flags)
                return _launch.Plan(_gluon().rowcol_kernel, n * n_m * n_k, ints, constexprs, warps,
                                    {"maxnreg": maxnreg} if maxnreg else None)  # (sweeps: a ptxas register cap)
            constexprs = dict(**_modes(dtype, scale_mode), ROW=row, SWIZZLED=swizzled, BLOCK_M=bm, BLOCK_K=bk,
                              EVICT="evict_last", BIG=big, INTERPRETED=device.type == "cpu")
            return _launch.Plan(_kernels().rowcol_kernel, n * n_m * n_k, ints, constexprs, warps)

        _launch.plan(key, make).launch_n(device, x3, rd, rs, cd, cs)
    col = (cd, cs.view(_E8M0))
    return (rd, rs.view(_E8M0), *col) if row else col


@_guarded
def quantize_2d(x, dtype, scale_mode, config=None):
    """(data of x's shape, scale (..., M/32, K/32)): one scale per 32x32 tile."""
    device = x.device
    *lead, m, k = x.shape
    data = torch.empty(x.shape, dtype=dtype, device=device)
    scale = torch.empty((*lead, m // BLOCK, k // BLOCK), dtype=torch.uint8, device=device)
    if x.numel():
        x2 = as_rows(x)
        rows, stride = x2.shape[0], x2.stride(0)
        key = ("2d", rows, k, stride, x.dtype, dtype, scale_mode, x2.data_ptr() % 16 == 0, device, config)

        def make():
            bm, bk, warps = _block_config("2d", config, False, True)
            n_m, n_k = cdiv(rows, bm), cdiv(k, bk)
            constexprs = dict(**_modes(dtype, scale_mode), BLOCK_M=bm, BLOCK_K=bk, EVICT="evict_last",
                              BIG=n_m * bm * max(stride, k) >= 2**31, INTERPRETED=device.type == "cpu")
            return _launch.Plan(_kernels().tiles_kernel, n_m * n_k, (rows, k, stride, n_k), constexprs, warps)

        _launch.plan(key, make).launch_n(device, x2, data, scale)
    return data, scale.view(_E8M0)


def quantize_grouped(x, group_ends, dtype, scale_mode, config=None):
    """(row-wise data, grouped swizzled scale): 3-D experts (group_ends None) or token groups."""
    if group_ends is None:
        return _experts(x, dtype, scale_mode, config)
    return _tokens(x, group_ends, dtype, scale_mode, config)


@_guarded
def _experts(x, dtype, scale_mode, config):
    device = x.device
    e, n, k = x.shape
    data = torch.empty(x.shape, dtype=dtype, device=device)
    scale = torch.empty(layouts.expert_scale_shape(tuple(x.shape)), dtype=torch.uint8, device=device)
    if scale.numel():
        x3 = x if x.stride(-1) == 1 else x.contiguous()
        srows, scols = layouts.swizzled_scale_shape(n, k)
        key = ("experts", e, n, k, x3.stride(), x.dtype, dtype, scale_mode, x3.data_ptr() % 16 == 0, device, config)

        def make():
            rw = _rowwise()
            cfg = config or rw.quantize_config(n, k, True, rw.card(device)[0])
            row = rw._quantize_plan(n, k, x3.stride(1), dtype, scale_mode, True, srows, scols, cfg, device)
            n_tiles = row.ints[-1]
            assert row.grid == n_tiles, "experts: one tile per program (no persistent grid)"
            # (expert offsets are int64 in the kernel; BIG as the row-wise plan has it for one expert)
            return _launch.Plan(_kernels().experts_kernel, e * n_tiles, (*row.ints, x3.stride(0)), row.constexprs,
                                row.num_warps)

        _launch.plan(key, make).launch_n(device, x3, data, scale)
    return data, scale.view(_E8M0)


@_guarded
def _tokens(x, group_ends, dtype, scale_mode, config):
    device = x.device
    t, k = x.shape
    g = group_ends.shape[0]
    data = torch.empty(x.shape, dtype=dtype, device=device)
    (size,) = layouts.grouped_scale_shape(t, k, g)
    if t == 0 or size == 0:  # no rows: every group is empty, every byte zero (no offset read)
        return data, torch.zeros(size, dtype=torch.uint8, device=device).view(_E8M0)
    scale = torch.empty(size, dtype=torch.uint8, device=device)
    x2 = as_rows(x)
    ends = group_ends.contiguous()  # the kernel reads G consecutive int32 (a view's copy runs on the device)
    stride = x2.stride(0)
    pcol = round_up(k // BLOCK, 4)
    key = ("tokens", t, k, g, stride, x.dtype, dtype, scale_mode, x2.data_ptr() % 16 == 0, ends.data_ptr() % 16 == 0,
           device, config)  # (Triton specializes on each pointer's 16-byte alignment)

    def make():
        rw = _rowwise()
        cls = rw.card(device)[0]
        tiles = TOKENS_CONFIGS.get(cls) if device.type == "cuda" else None
        if tiles is not None:  # no wider than the padded scale columns need (BLOCK_K >= 128 either way)
            tiles = (tiles[0], max(128, min(tiles[1], rw.next_pow2(pcol * BLOCK))), tiles[2])
        bm, bk, warps = config or tiles or rw.quantize_config(t, k, True, cls)[:3]
        if bm & (bm - 1) or bm > 128 or bk < 128 or bk & (bk - 1):
            raise ValueError(f"token groups config: BLOCK_M a power of two <= 128 (a program's rows in one group), "
                             f"BLOCK_K one >= 128 (4 blocks a word), got {bm} x {bk}")
        n_m, n_k = cdiv(round_up(t + 128 * g, 128), bm), cdiv(pcol * BLOCK, bk)
        constexprs = dict(**_modes(dtype, scale_mode), BLOCK_M=bm, BLOCK_K=bk, G_PAD=max(2, rw.next_pow2(g)),
                          EVICT="evict_last", BIG=t * max(stride, k) >= 2**31, INTERPRETED=device.type == "cpu")
        ints = (t, k, stride, g, pcol, size // 4, n_k)
        return _launch.Plan(_kernels().tokens_kernel, n_m * n_k, ints, constexprs, warps)

    _launch.plan(key, make).launch_n(device, x2, ends, data, scale)
    return data, scale.view(_E8M0)


KGROUP_TILES = 4
"""512-byte output tiles per program of kgroups_kernel (a first choice, not swept: the scales are
1/32 of the data's bytes; on an H100 the whole K-groups call ran at 0.92-0.97x the column-wise
call's throughput, docs/performance.md, sixth session)."""


def quantize_grouped_colwise(x, group_ends, dtype, scale_mode, config=None):
    """K-groups, x (T, N): (data (N, T), scale 1-D): the column-wise call with linear scales,
    then kgroups_kernel places each token group's scale columns in their own 128x4 layout (no
    host synchronisation: the offsets stay on the device)."""
    data, linear = quantize_colwise(x, dtype, scale_mode, "linear", config)
    return data, _kgroups(linear, group_ends, x.shape[0])


@_guarded
def _kgroups(linear, group_ends, t):
    device = linear.device
    n, c = linear.shape
    g = group_ends.shape[0]
    (size,) = layouts.kgroup_scale_shape(t, n, g)
    scale = torch.empty(size, dtype=torch.uint8, device=device)
    if size:
        ends = group_ends.contiguous()
        key = ("kgroups", n, c, g, ends.data_ptr() % 16 == 0, device, KGROUP_TILES)

        def make():
            grid = cdiv(cdiv(size, 512), KGROUP_TILES)
            constexprs = dict(TILES=KGROUP_TILES, G_PAD=max(2, _rowwise().next_pow2(g)))
            ints = (n, c, g, round_up(n, 128) // 128, size)
            return _launch.Plan(_kernels().kgroups_kernel, grid, ints, constexprs, 4)

        _launch.plan(key, make).launch_n(device, linear.view(torch.uint8), ends, scale)
    return scale.view(_E8M0)
