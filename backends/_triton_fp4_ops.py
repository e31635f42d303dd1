"""Launch side of the `triton` backend's MXFP4 / NVFP4 calls (backend.FP4_OPS): shapes, grids and
launch plans for backends/_triton_fp4.py's kernels (imported on the first call; nothing here
imports triton). Same plan cache and launch path as the other calls (backends/_triton_launch.py);
outputs are allocated here and never cleared (the kernels write every byte, swizzled padding
included). NVFP4 without a global scale is two launches: the finite amax (an integer atomic max
into a zeroed int32), then the quantize kernel, which derives g from it on the device (no host
synchronisation).

`config` (tests, sweeps): (BLOCK_M, BLOCK_K, warps[, maxnreg[, pack[, evict[, spread]]]]), powers
of two, BLOCK_K >= the group (32 / 16; 4 groups for the swizzled layout, whose scale words pack
4), maxnreg the quantize kernel's register cap on CUDA (0: none), pack the elements of one PTX
block of the NVFP4 kernel for 2-byte input (1-8, default 8), evict the loads' eviction policy,
spread whether a swizzled program's rows lie 32 apart (_spread); None picks FP4_CONFIGS by card
class and kind of call (_tile_plan) and NVFP4_MAXNREG. Under Triton's interpreter
(TRITON_INTERPRET=1) the same functions run on CPU tensors (tests/test_triton_fp4.py)."""

from __future__ import annotations

import functools

import torch

from mxquant import layouts
from mxquant.formats import MXFP4_BLOCK, NVFP4_BLOCK

from . import _triton_launch as _launch
from ._common import as_rows
from ._triton_training_ops import _guarded, cdiv

FP4_CONFIGS = {"default": {"quantize": (8192, 8), "quantize mxfp4 swizzled": (4096, 4, 4),
                            "quantize nvfp4-bf16 linear": (4096, 4), "quantize nvfp4-fp16 linear": (4096, 4),
                            "quantize nvfp4-bf16 swizzled": (4096, 4, 4, True, "evict_first"),
                            "quantize nvfp4-fp16 swizzled": (4096, 4, 4, False, "evict_last"),
                            "quantize nvfp4-bf16 swizzled table": (4096, 4),
                            "quantize nvfp4-fp16 swizzled table": (4096, 4),
                            "dequantize": (4096, 4)},
               "fast-hbm": {"quantize": (8192, 8), "dequantize": (8192, 8)}}
"""(elements per program, warps[, rows[, spread[, evict]]]) per card class (triton.card) and
direction: "quantize", or "quantize <kind> <layout>" where one is listed for the call
(_direction: kind mxfp4, or nvfp4-bf16 / nvfp4-fp16 for 2-byte NVFP4 on
backends/_triton_nvfp4.py's kernel; fp32 NVFP4 takes "quantize"). A program takes whole rows of
up to that many elements, or a row-chunk of them; with rows, row chunks of elements / rows, that
many rows to a program; spread: whether a swizzled program's rows lie 32 apart (default
_spread's), evict: the loads' policy (default _evict's).

The H100's ("default") entries, one H100, fifteenth session (benchmarks/sweep_fp4_spread.py,
call B, 8192x8192 / 16384x8192, medians of 3 interleaved rounds, % of copy; every variant's
bytes equal): MXFP4 swizzled 4 rows 32 apart x 1024 / 4 warps 91.9 / 96.6% against 89.3 / 94.3%
at 1 x 8192 / 8 and 90.3 / 94.8% with the 4 rows consecutive (MXFP4 linear stays at 1 x 8192 /
8: 93.9 / 96.6%, the 4096-element shapes 90.6-95.4%); 2-byte NVFP4 with g given, linear 1 x
4096 / 4: bf16 88.9 / 90.5%, fp16 89.7 / 92.1% against 87.6 / 90.3% and 89.2 / 91.2%; swizzled
4 x 1024 / 4: bf16 with rows 32 apart and evict_first 84.9 / 86.4% (consecutive rows, evict_last:
82.2 / 86.2%; 1 x 8192 / 8: 81.4 / 84.7%), fp16 with consecutive rows and evict_last 87.7 /
91.9% (rows 32 apart, evict_first: 87.3 / 88.8%; 1 x 8192 / 8: 82.6 / 87.1%); consecutive rows
with evict_first were not timed. Programs of 16 warps took NVFP4 1.33-2.49x the time (call A).
Since the eighteenth session swizzled calls of >= NV_TABLE_MIN elements read the table, and on
that path (nineteenth session, call A, same sweep, medians of 2 rounds, inputs whose g flags no
scale byte) 1 x 4096 / 4 with evict_last ("... swizzled table") was the fastest swizzled tile:
bf16 88.0 / 94.4% against 86.9 / 89.4% at 4 x 1024 rows 32 apart evict_first, fp16 88.0 /
94.3% against 88.0 / 93.6% at 4 x 1024 consecutive evict_last.
The H200 ("fast-hbm") keeps 1 x 8192 / 8 everywhere (no FP4 figure from an H200).

Before (2026-12-05, 8192x8192 bf16, benchmarks/sweep_training.py): 13 shapes from 1 x 1024 to
32 x 256 elements with 4 or 8 warps; 1 x 8192 with 8 warps was the fastest for MXFP4 (74.8 us,
the others 80.6-94.0) and NVFP4 (99.0 us, the others 104.3-115.7, at a fixed g that made every
nibble 0: indicative only), so the "default" class (the H100) took 8192 elements and 8 warps as
the H200 did. Dequantize is not swept."""

NVFP4_MAXNREG = {"default": 64}
"""Register cap (ptxas maxnreg) of backends/_triton_fp4.py's NVFP4 quantize kernel for bf16 input
on CUDA, per card class (others: none); since 2026-12-06 (thirteenth session) bf16 goes to
backends/_triton_nvfp4.py's kernel, uncapped (benchmarks/sweep_nvfp4_division_free.py on an
H100: the cap of 64 spilled and took 1.22-1.25x the time linear, 80 and none alike), so this
applies only with bf16 not in NV_DIVISION_FREE. The H100 (eighth session, 2026-12-05): at the
shipped 1 x 8192 tile, 8 warps, bf16 with linear scales, the cap of 64 took the kernel from
67 registers to 64 (4 bytes of spill) and 8% off its time in one sweep (benchmarks/sweep_fp4_tokens.py at 29166d3: 101.3 /
194.1 us against 110.1 / 210.6 at 8192x8192 / 16384x8192), and bench_fp4.py, a call later,
timed 101.3 / 194.0 us: what the sixth session measured (101.2 / 194.1) before the packed-byte
store of 545c525 cost those 8%. bf16 with swizzled scales compiles to 64 registers either way,
so the cap changes nothing there. Not capped: fp32 (86-110 registers; 64 would spill 64-72
bytes, never timed) and fp16 input (not timed), MXFP4 (the cap cost it 0-4%), other card classes
(not measured). The same sweep timed each element's division done as FMA corrections from one
reciprocal per group instead of div.rn.f32: exact, but 1.10-1.90x the division's time at the
same tile and cap (107 registers with the division's fallback branch, 165 with the FMA path
alone), so it was not kept (docs/performance.md, eighth session)."""

NV_DIVISION_FREE = frozenset({torch.bfloat16, torch.float16})
"""Input dtypes whose NVFP4 goes to backends/_triton_nvfp4.py's kernel (a reciprocal per group;
in flagged groups Markstein's quotient, three FMA-pipe instructions an element); the others to
backends/_triton_fp4.py's, one IEEE division per element (fp32 always). One H100, fourteenth
session (benchmarks/sweep_nvfp4_division_free.py, 8192x8192 / 16384x8192, given g): bf16 71.5 /
131.9 us against the division kernel's 92.4 / 174.3, fp16 70.5 / 129.4 against 97.7 / 187.5;
with every group flagged (g = 512, or g = 1 on midpoint quotients) 80.3-81.9 / 151.7-155.7 us,
still below the division kernel (before Markstein's quotient the flagged groups divided, 1.24-1.42x
the division kernel's time, and fp16, whose compressed-tensors g is 1.0 below amax ~0.041,
stayed on the division kernel). Tests and benchmarks/sweep_nvfp4_division_free.py set it to time
or check either kernel."""

_X_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def _evict(x_dtype, swizzled: bool) -> str:
    """The quantize kernels' load eviction policy where neither the launch config (6th entry) nor
    FP4_CONFIGS' entry names one: x is read once, so with linear scales 2-byte input is loaded
    evict_first; with swizzled scales, and fp32 (not timed), evict_last. One H100, fourteenth
    session (call G, bf16, 8192x8192 / 16384x8192, medians of 3 interleaved rounds, 1 x 8192
    tiles): linear, evict_first against evict_last, MXFP4 rceil 63.2 / 118.4 us against 64.8 /
    120.1, compressed-tensors 65.6 / 122.9 against 65.9 / 123.4, NVFP4 given g 67.5 / 129.5
    against 71.4 / 132.4; swizzled, evict_first was slower for MXFP4 (68.5 / 128.7 against 67.0 /
    122.2; fifteenth session, call B, at its 4 x 1024 tiles 64.0 / 122.4 against 64.3 / 118.5)
    and no policy ("") within 1%."""
    return "evict_first" if not swizzled and x_dtype != torch.float32 else "evict_last"


def _spread(swizzled: bool, bm: int, config, default: bool = True) -> bool:
    """Rows 32 apart in a swizzled program (backends/_triton_fp4.py's _tile_rows): a config's 7th
    entry, else wherever BLOCK_M is a multiple of 4 dividing 128 (a 1-row program has nothing to
    spread) unless FP4_CONFIGS' entry says not (`default` False)."""
    can = swizzled and bm % 4 == 0 and 128 % bm == 0
    if config is not None and len(config) > 6:
        if config[6] and not can:
            raise ValueError("fp4 config: rows 32 apart need swizzled scales and BLOCK_M a multiple of 4 dividing 128, "
                             f"got {bm}")
        return bool(config[6])
    return can and default


NV_TABLE_MIN = 1 << 26
"""2-byte NVFP4 calls of at least this many elements, with scales in NV_TABLE_LAYOUTS, read each
group's r and flags (and the flagged groups' Markstein operands D and R) from a table per
scale byte (backends/_triton_nvfp4.py's nvfp4_table_kernel: one more launch and a 2 KB
allocation), not computed per group (nor D and R per flagged block): sm_90 SASS 16.5
instructions an element against 21.0 unflagged, 18.5 against 28.0 on the flagged path
(benchmarks/sass_mix.py). One H100, benchmarks/sweep_nvfp4_table.py (device time, the quantize
kernel as the table kernel's programmatic dependent), eighteenth session: at 64M-128M elements
0.98-1.00x the per-group time linear and 1.00-1.01x swizzled where few warps take the flagged
path, 0.88-0.93x linear and 0.92-0.97x swizzled where most do (g = 512, an fp32 g, fp16 data
whose own g flags common scale bytes); at 8M elements 1.07-1.10x (the launch), at 16M
0.97-1.03x."""
NV_TABLE_LAYOUTS = frozenset({"linear", "swizzled"})
NV_TABLE_ENTRIES = 256  # two per e4m3 byte of a nonnegative scale
NV_TABLE_PDL = True
"""The quantize kernel launched as the table kernel's programmatic dependent (Hopper and later:
it starts while the table kernel runs and waits for it, griddepcontrol.wait, before reading the
table): 1-2% off the table's time in the sweep above."""


def _pdl_ok(device) -> bool:
    """Programmatic dependent launch (griddepcontrol) for the table path: CUDA of compute
    capability 9.0 and up (the PTX needs sm_90; the backend runs from 8.9), and a Triton with
    its grid dependency control (3.4 and later)."""
    return (device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)
            and _nv_kernels().HAS_GDC)


def _division_free(x_dtype, device) -> bool:
    """NVFP4 of this input on backends/_triton_nvfp4.py's kernel: its dtype in NV_DIVISION_FREE,
    on CUDA (its flagged groups' block is inline PTX) or under the interpreter (which runs the
    kernel's PTX-free path); never on XPU (Intel's Triton takes no PTX)."""
    return x_dtype in NV_DIVISION_FREE and device.type in ("cuda", "cpu")


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_fp4

    return _triton_fp4


@functools.lru_cache(maxsize=None)
def _nv_kernels():
    from . import _triton_nvfp4

    return _triton_nvfp4


def _card(device):
    from .triton import card  # imported on use: triton.py imports this module

    return card(device)[0]


def _direction(nv: bool, free: bool, swizzled: bool, x_dtype, table: bool = False) -> str:
    """FP4_CONFIGS' quantize entry of a call (the plain "quantize" where a card lists none); free:
    2-byte NVFP4 on backends/_triton_nvfp4.py's kernel, listed per input dtype; table: that
    kernel reading nvfp4_table_kernel's table (" table" appended; _entry drops it where a card
    lists no such entry)."""
    kind = f"nvfp4-{'bf16' if x_dtype == torch.bfloat16 else 'fp16'}" if free else "nvfp4" if nv else "mxfp4"
    return f"quantize {kind} {'swizzled' if swizzled else 'linear'}{' table' if table else ''}"


def _entry(direction: str, device, card: str | None = None) -> tuple:
    """FP4_CONFIGS' entry for direction on this card class (without a " table" suffix where it
    lists none with it; "quantize" where it lists not that quantize direction; every class lists
    "quantize" and "dequantize")."""
    configs = FP4_CONFIGS.get(card or _card(device), FP4_CONFIGS["default"])
    return configs.get(direction) or configs.get(direction.removesuffix(" table")) or configs["quantize"]


def _config(rows: int, k: int, group: int, swizzled: bool, direction: str, device, config,
            card: str | None = None) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_K, warps): rows of up to `elems` elements per program (shorter rows stack),
    or with FP4_CONFIGS' rows row chunks of elems / rows; direction: a FP4_CONFIGS key, "quantize"
    where the card lists not that one; card: the card class (default: the device's)."""
    least = 4 * group if swizzled else group
    if config is not None:
        bm, bk, warps = config[:3]
        if bm < 1 or bm & (bm - 1) or bk < least or bk & (bk - 1):
            raise ValueError(f"fp4 config: BLOCK_M a power of two, BLOCK_K a power of two >= {least}, got {bm} x {bk}")
        return bm, bk, warps
    elems, warps, *rest = _entry(direction, device, card)
    bk = min(elems // (rest[0] if rest else 1), max(least, _next_pow2(k)))
    bm = max(1, min(_next_pow2(rows), elems // bk))
    return bm, bk, max(1, min(warps, bm * bk // 512))


def _tile_plan(nv: bool, free: bool, swizzled: bool, x_dtype, rows: int, k: int, device, config,
               card: str | None = None, table: bool = False) -> tuple[int, int, int, bool, str]:
    """(BLOCK_M, BLOCK_K, warps, rows 32 apart, eviction policy) of a quantize launch over `rows`
    rows (swizzled: padded) of k elements: from the config, else FP4_CONFIGS' entry for the call
    (table: 2-byte NVFP4 reading the table), _spread's and _evict's defaults where it names none."""
    direction = _direction(nv, free, swizzled, x_dtype, table)
    bm, bk, warps = _config(rows, k, NVFP4_BLOCK if nv else MXFP4_BLOCK, swizzled, direction, device, config, card)
    extra = _entry(direction, device, card)[3:] if config is None else ()  # (spread[, evict]) listed for the call
    if config is not None and len(config) > 5:
        evict = config[5]
    else:
        evict = extra[1] if len(extra) > 1 else _evict(x_dtype, swizzled)
    return bm, bk, warps, _spread(swizzled, bm, config, extra[0] if extra else True), evict


def _maxnreg(nv: bool, config, x_dtype, card: str):
    """The quantize kernel's register cap on CUDA: a config's 4th entry (0: none;
    benchmarks/sweep_fp4_tokens.py varies it), else NVFP4_MAXNREG's for bf16 NVFP4 input on
    backends/_triton_fp4.py's kernel (bf16 not in NV_DIVISION_FREE)."""
    if config is not None and len(config) > 3:
        return config[3] or None
    capped = nv and x_dtype == torch.bfloat16 and torch.bfloat16 not in NV_DIVISION_FREE
    return NVFP4_MAXNREG.get(card) if capped else None


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def mxfp4_quantize(x, scale_mode, scale_layout, config=None):
    data, scale, _ = _quantize(x, False, None, scale_mode, scale_layout, config)
    return data, scale.view(torch.float8_e8m0fnu)


def nvfp4_quantize(x, global_scale, scale_mode, scale_layout, config=None):
    data, scale, g = _quantize(x, True, global_scale, scale_mode, scale_layout, config)
    return data, scale.view(torch.float8_e4m3fn), g


@_guarded
def _quantize(x, nv, global_scale, scale_mode, scale_layout, config):
    device = x.device
    group = NVFP4_BLOCK if nv else MXFP4_BLOCK
    k = x.shape[-1]
    swizzled = scale_layout == "swizzled"
    sshape = layouts.scale_shape(tuple(x.shape), scale_layout, group)
    data = torch.empty((*x.shape[:-1], k // 2), dtype=torch.uint8, device=device)
    scale = torch.empty(sshape, dtype=torch.uint8, device=device)
    g_out = torch.empty(1, dtype=torch.float32, device=device) if nv else data
    given = global_scale is not None
    if not x.numel():  # no element: no scale byte to write, g = 1.0 (no finite amax) or the one given
        if nv:
            if given:
                g_out.copy_(global_scale.reshape(1))
            else:
                g_out.fill_(1.0)
        scale.zero_()  # (swizzled: rows of a (0, K) input pad to none, so this is empty too)
        return data, scale, g_out
    x2 = as_rows(x)
    m, stride = x2.shape[0], x2.stride(0)
    srows, scols = sshape if swizzled else (m, k // group)
    free = nv and _division_free(x.dtype, device)  # backends/_triton_nvfp4.py's kernel
    table = free and m * k >= NV_TABLE_MIN and scale_layout in NV_TABLE_LAYOUTS
    pdl = table and NV_TABLE_PDL and _pdl_ok(device)
    key = ("fp4q", nv, given, m, k, stride, x.dtype, free, table, pdl, scale_mode, swizzled,
           x2.data_ptr() % 16 == 0, given and global_scale.data_ptr() % 16 == 0, device, config)

    def make():
        bm, bk, warps, spread, evict = _tile_plan(nv, free, swizzled, x.dtype, srows, k, device, config, table=table)
        maxnreg = _maxnreg(nv, config, x.dtype, _card(device)) if device.type == "cuda" else None  # (a CUDA option)
        n_m, n_k = cdiv(srows, bm), cdiv(scols * group, bk)
        constexprs = dict(GIVEN=given, X_KIND=_X_KIND[x.dtype], SWIZZLED=swizzled, BLOCK_M=bm, BLOCK_K=bk,
                          MASK=n_m * bm != m or n_k * bk != k,
                          EVICT=evict,
                          BIG=n_m * bm * max(stride, k) + n_k * bk >= 2**31, INTERPRETED=device.type == "cpu",
                          NK_SHIFT=n_k.bit_length() - 1 if n_k & (n_k - 1) == 0 else -1,
                          SPREAD=spread)
        if free:
            kernel = _nv_kernels().nvfp4_quantize_kernel
            per_thread = bm * bk // 2 // (32 * warps)  # elements of a half-group tile a thread holds
            pack = config[4] if config is not None and len(config) > 4 else 8
            constexprs.update(PACK=max(1, min(pack, per_thread)), TABLE=table, PDL=pdl)
        else:
            kernel = _kernels().fp4_quantize_kernel
            constexprs.update(NV=nv, RCEIL=scale_mode == "rceil", TIE_UP=scale_mode == "compressed-tensors")
        options = {**({"maxnreg": maxnreg} if maxnreg else {}), **({"launch_pdl": True} if pdl else {})}
        return _launch.Plan(kernel, n_m * n_k, (m, k, stride, srows, scols, n_k), constexprs, warps, options)

    p = _launch.plan(key, make)
    if nv and not given:
        g_in = torch.zeros(1, dtype=torch.int32, device=device)
        _amax_plan(m, k, stride, x2, device, config).launch_n(device, x2, g_in)
    else:
        g_in = global_scale.reshape(1) if given else data
    if table:  # (the table kernel is a normal launch: it waits for the last reader of a reused t)
        t = torch.empty(NV_TABLE_ENTRIES, dtype=torch.int64, device=device)
        _table_plan(given, x.dtype, given and global_scale.data_ptr() % 16 == 0, pdl, device).launch_n(
            device, g_in, t)
        p.launch_n(device, x2, data, scale, g_in, g_out, t)
    elif free:
        p.launch_n(device, x2, data, scale, g_in, g_out, g_out)  # (TABLE off: the table pointer unused)
    else:
        p.launch_n(device, x2, data, scale, g_in, g_out)
    return data, scale, g_out


def _table_plan(given, x_dtype, g_aligned, pdl, device):
    """backends/_triton_nvfp4.py's nvfp4_table_kernel: one program (g's 16-byte alignment in the
    key: Triton specializes on it)."""
    key = ("nvfp4table", given, x_dtype, g_aligned, pdl, device)

    def make():
        return _launch.Plan(_nv_kernels().nvfp4_table_kernel, 1, (),
                            dict(GIVEN=given, X_KIND=_X_KIND[x_dtype], PDL=pdl), 4)

    return _launch.plan(key, make)


def _amax_plan(m, k, stride, x2, device, config):
    key = ("fp4amax", m, k, stride, x2.dtype, x2.data_ptr() % 16 == 0, device, config)

    def make():
        bm, bk, warps = _config(m, k, NVFP4_BLOCK, False, "quantize", device, config)
        n_m, n_k = cdiv(m, bm), cdiv(k, bk)
        constexprs = dict(BLOCK_M=bm, BLOCK_K=bk, BIG=n_m * bm * max(stride, k) + n_k * bk >= 2**31,
                          INTERPRETED=device.type == "cpu")
        return _launch.Plan(_kernels().amax_kernel, n_m * n_k, (m, k, stride, n_k), constexprs, warps)

    return _launch.plan(key, make)


def mxfp4_dequantize(data, scale, scale_layout, out_dtype, config=None):
    return _dequantize(data, scale, None, scale_layout, out_dtype, config)


def nvfp4_dequantize(data, scale, global_scale, scale_layout, out_dtype, config=None):
    return _dequantize(data, scale, global_scale, scale_layout, out_dtype, config)


@_guarded
def _dequantize(data, scale, global_scale, scale_layout, out_dtype, config):
    device = data.device
    nv = global_scale is not None
    group = NVFP4_BLOCK if nv else MXFP4_BLOCK
    k = 2 * data.shape[-1]
    out = torch.empty((*data.shape[:-1], k), dtype=out_dtype, device=device)
    if not out.numel():
        return out
    d2 = as_rows(data.view(torch.uint8))
    m, stride = d2.shape[0], d2.stride(0)
    swizzled = scale_layout == "swizzled"
    scols = layouts.swizzled_scale_shape(m, k, group)[1] if swizzled else k // group
    sbytes = scale.contiguous().view(torch.uint8)
    g = global_scale.reshape(1) if nv else sbytes
    key = ("fp4dq", nv, m, k, stride, out_dtype, swizzled, d2.data_ptr() % 16 == 0, sbytes.data_ptr() % 16 == 0,
           g.data_ptr() % 16 == 0, device, config)

    def make():
        bm, bk, warps = _config(m, k, group, False, "dequantize", device, config)
        n_m, n_k = cdiv(m, bm), cdiv(k, bk)
        constexprs = dict(NV=nv, SWIZZLED=swizzled, BLOCK_M=bm, BLOCK_K=bk, EVICT="evict_first",
                          BIG=n_m * bm * max(stride, k) + n_k * bk >= 2**31, INTERPRETED=device.type == "cpu")
        return _launch.Plan(_kernels().fp4_dequantize_kernel, n_m * n_k, (m, k, stride, scols, n_k), constexprs, warps)

    _launch.plan(key, make).launch_n(device, d2, sbytes, g, out)
    return out
