"""The Gluon column-wise / row+column kernel's configs (backends/_gluon_training.py): the
shipped ones per call and scale layout (GLUON_CONFIGS), the Triton versions the kernel ran with
(GLUON_TRITON), and the check and parsing of a ("gluon", ...) config that tests and sweeps pass
(backends/_triton_training_ops.py launches it). Nothing here imports triton until _gluon()."""

from __future__ import annotations

import functools

GLUON_CONFIGS = {"colwise": (8, 2, 2, 0, "evict_last", "", "packed prefetch"), "colwise swizzled": (8, 2, 1, 0, "evict_last"),
                 "rowcol": (8, 2, 2, 0, "evict_last", "evict_last", "packed prefetch"), "rowcol swizzled": (8, 2, 1)}
"""(rows per thread, warps, 32-row slabs per tile[, register cap, column scale stores' and column
data stores' eviction policies[, flags: "packed", "packed prefetch"]]) of backends/_gluon_training.py's kernel per call and scale layout
on CUDA: 32 * slabs x (8 * rows * warps) tiles. From three sweeps on an H100
(2026-12-05, seventh session; 8192x8192 and 16384x8192 bf16 -> e4m3, rceil; docs/performance.md):
- 8 rows per thread by 2 warps is within 3% of the best of {4, 8, 16, 32} x {1, 2, 4, 8} in 7 of
  8 cases, 5.9% behind in the eighth (row+column swizzled, 16384x8192); 32 rows per thread spills
  and runs at half speed; 4 rows is 4-5% behind column-wise, 12-38% row+column;
- linear scales: 2 slabs per tile (each column's 2 scale bytes in one store) 84-86% of copy
  against 79-80% with 1 (column-wise); row+column 1.65-1.68x the row-wise call against 1.68-1.72x;
- swizzled scales: 1 slab (92-93% of copy column-wise; row+column 1.41-1.46x row-wise, 1.53x
  in one of four runs); 2 slabs is even column-wise and 13% slower for row+column, 4 slabs 4-8%
  and 63-65% slower.
Later sweeps on an H100 (docs/performance.md, by session): linear column scale bytes stored
evict_last (sixteenth: L2 keeps each 32-byte sector until its 16 programs are done; 87.2 / 89.1%
against 84.5 / 86.0%); with linear scales the second slab's load before the first slab's work and
the two bytes gathered in a word, "packed prefetch", where M is a multiple of 64 (twenty-first:
column-wise 87.4-88.8 / 89.7-90.8%, row+column 1.63-1.66x against 1.65-1.68x); swizzled
column-wise scale bytes stored evict_last (twenty-second: ahead in 17 of 18 sweep rounds by 0.5-1.5
points); linear row+column's column data and scale bytes stored evict_last (twenty-third: 1.609-1.617x
/ 1.639-1.651x the row-wise time against 1.628-1.632x / 1.669-1.677x, ahead in every round; the
column data evict_last was 0.5-3.1 points behind column-wise round by round and even with swizzled
row+column).
Tried and not kept: the tile order, evict_first for x or the column data, 4 to 32 slabs a tile
(joined, packed, prefetched or staged in shared memory: 72-87%), register caps (48-68%),
"packed" without prefetch (84-86%), swizzled scales at 2 slabs "packed prefetch" (row+column
1.55-1.58x against 1.43-1.46x at 1 slab), persistent programs (3-12 an SM) whose slabs go through
a ring of 2-8 tiles in shared memory by cp.async (twenty-third session, d8b5c26: column-wise
64.5-83% of copy, row+column 1.64-2.32x; slower at every shape, count and depth). All
byte-identical to the shipped configs."""


GLUON_TRITON = ("3.6",)
"""Triton versions (major.minor) whose Gluon the kernel was compiled and run with. Gluon is
experimental and changes between releases: Triton 3.4's has the module but does not compile this
kernel (a review found, 2026-12-05), 3.3 has none; any other version takes the Triton kernel."""


def gluon_version_ok(version: str) -> bool:
    return ".".join(version.split(".")[:2]) in GLUON_TRITON


@functools.lru_cache(maxsize=None)
def _gluon():
    """backends/_gluon_training.py, or None where this Triton is not one GLUON_TRITON names (then
    the Triton kernel runs: the same bytes)."""
    import triton

    if not gluon_version_ok(triton.__version__):
        return None
    try:
        from . import _gluon_training
    except ImportError:
        return None
    return _gluon_training


def _gluon_shape(config) -> tuple:
    """(rows per thread, warps, slabs, maxnreg) of ("gluon", rows per thread, warps[, slabs[, maxnreg[,
    scale stores' policy[, data stores' policy]]]]): slabs 1 and no register cap (0) unless given."""
    return config[1], config[2], config[3] if len(config) > 3 else 1, config[4] if len(config) > 4 else 0


def _gluon_policies(config) -> tuple:
    """(column scale stores' policy, column data stores' policy) of a ("gluon", ...) config: "" (none)
    unless given."""
    return (*config[5:7], "", "")[:2]


def _gluon_flags(config) -> frozenset:
    """The words of a ("gluon", ...) config's 8th entry: "packed" (column scale bytes gathered in words
    as the slabs go: linear ones where every tile is whole, swizzled ones at 2 or 4 slabs; elsewhere
    bytes joined as without it), "prefetch" (with packed: each slab's load issued before the previous
    slab's work)."""
    return frozenset(config[7].split()) if len(config) > 7 else frozenset()


def _use_gluon(config, device) -> bool:
    """The Gluon kernel: config ("gluon", HALF, warps[, slabs[, maxnreg[, policies[, flags]]]]), or no config
    on CUDA where Gluon is usable; a (BLOCK_M, BLOCK_K, warps) config, CPU tensors (the interpreter)
    and XPU take the Triton kernel."""
    if config is not None and config[0] == "gluon":
        if device.type != "cuda" or _gluon() is None:
            raise ValueError(f"config {config}: the Gluon kernel runs on CUDA with Triton {' or '.join(GLUON_TRITON)}")
        half, warps, slabs, maxnreg = _gluon_shape(config) if len(config) in (3, 4, 5, 6, 7, 8) else (0, 0, 0, 0)
        flags = _gluon_flags(config) if len(config) < 8 or isinstance(config[7], str) else frozenset({"?"})
        if (half not in (4, 8, 16, 32) or warps not in (1, 2, 4, 8, 16) or slabs not in (1, 2, 4, 8)
                or type(maxnreg) is not int or not (maxnreg == 0 or 16 <= maxnreg <= 255)
                or any(p not in ("", "evict_last", "evict_first") for p in config[5:7])
                or not flags <= {"packed", "prefetch"}
                or ("prefetch" in flags and "packed" not in flags)):
            raise ValueError(f"config {config}: ('gluon', rows per thread, warps[, slabs[, maxnreg[, policy[, "
                             "policy[, flags]]]]]) with rows 4, 8, 16 or 32, warps 1 to 16 (a power of two), slabs "
                             "per tile 1, 2, 4 or 8, a register cap 0 (none) or 16 to 255, the column "
                             "scale and data stores' eviction policies '', 'evict_last' or 'evict_first' and "
                             "flags 'packed' or 'packed prefetch'")
        return True
    return config is None and device.type == "cuda" and _gluon() is not None
