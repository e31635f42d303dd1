"""Reused memory for the large outputs of the CPU backends (cpu-native, cpu-eager).

Why: glibc's malloc serves a request of 32 MiB or more (its largest mmap threshold) with new
pages from the OS every time and hands them back when freed, and the kernel zero-fills each new
page on first touch. On the 2-core development machine a 4096x8192 bf16 row-wise quantize (a
32 MiB output) took 3.7-4.0 ms into memory written before and 6-10 ms into new pages;
row+column 5.4 against 11-17 ms (docs/performance.md). A caller that quantizes in a loop frees
its outputs and asks again for the same sizes, so the memory of a freed output is kept and
handed out again. Below 32 MiB glibc already reuses freed memory (its threshold rises to the
size of a freed mapping): measured there, new and cached memory ran the same, the cache's
bookkeeping (~5 µs) a little slower, so smaller outputs do not come from here.

How:
- Only outputs of MIN_BYTES (32 MiB) or more come from here. A request is rounded up to whole
  2 MiB pages; memory of that size class freed earlier is reused, else a new block is allocated
  (2 MiB-aligned, advised for transparent huge pages).
- The caller gets an ordinary tensor (not a view) over the block's storage, which holds a ctypes
  array at the block's address (`torch.frombuffer`). The tensor, every view of it and anything
  that borrows its memory (`.numpy()`, DLPack, the storage) hold that array; when the last of
  them goes, the array's finalizer returns the block. A block is never handed out while
  anything can still reach it: that is the buffer protocol's reference, not a reference count
  we read.
- Idle blocks are kept up to MXQUANT_CPU_CACHE_MB (default 256 MiB; 0: nothing is kept, every
  output is fresh as before), least recently freed evicted first, whatever their size, so a
  phase of other sizes does not pin the cache; a lowered limit applies at the next call.
  `empty()` (public as `mxquant.empty_cpu_cache()`) drops every idle block.
- Reused memory holds an earlier output's bytes: every kernel writes all of its output (the
  tests run the kernels on poisoned blocks: tests/test_cpu_cache.py).

Finalizers may run in any thread, and inside another call's critical section when a garbage
collection runs there; the lock is re-entrant and nothing under it allocates Python containers.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import threading
import weakref

import torch

from mxquant.selection import ENV_CPU_CACHE

DEFAULT_CACHE_MB = 256
MIN_BYTES = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: from here malloc maps new pages
HUGE_PAGE = 2 << 20  # a huge page: the size class and the alignment of a block

_lock = threading.RLock()
_idle: list = []  # (size class, block) of idle blocks, least recently freed first; block: (backing tensor, address)
_idle_bytes = 0
_poison = None  # tests: a byte value written over every block handed out (None: never)
_MADV_HUGEPAGE = 14  # Linux's value on every architecture


def cache_limit() -> int:
    """Bytes of idle blocks kept: MXQUANT_CPU_CACHE_MB (a non-negative integer number of MiB),
    else DEFAULT_CACHE_MB. Read at each call, like the other variables (docs/env.md)."""
    raw = os.environ.get(ENV_CPU_CACHE)
    if raw is None or not raw.strip():
        return DEFAULT_CACHE_MB << 20
    return _parse(raw)


@functools.lru_cache(maxsize=8)
def _parse(raw: str) -> int:
    try:
        mb = int(raw.strip())
    except ValueError:
        mb = -1
    if mb < 0:
        raise ValueError(f"{ENV_CPU_CACHE}={raw!r}: expected a whole number of MiB, 0 or more "
                         f"(0 turns the CPU output cache off; unset means {DEFAULT_CACHE_MB})")
    return mb << 20


def empty_tensor(shape: tuple, dtype: torch.dtype):
    """A contiguous CPU tensor of `shape` and `dtype` over cached memory, or None where the
    request is below MIN_BYTES or the cache is off (the caller allocates as usual)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return None
    limit = cache_limit()
    if limit == 0:
        _trim(0)
        return None
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    block = _take(size, limit)
    if block is None:
        block = _new_block(size)
    if _poison is not None:
        ctypes.memset(block[1], _poison, size)
    arr = _array_type(nbytes).from_address(block[1])
    weakref.finalize(arr, _give_back, (size, block)).atexit = False
    storage = torch.frombuffer(arr, dtype=torch.uint8).untyped_storage()
    return torch.empty((0,), dtype=dtype, device="cpu").set_(storage, 0, shape, contiguous_strides(shape))


def empty() -> int:
    """Drop every idle block (their memory goes back to the allocator); returns the bytes dropped."""
    return _trim(0)


def idle_bytes() -> int:
    """Bytes of idle blocks kept now (for tests and `mxquant info`)."""
    return _idle_bytes


def _take(size: int, limit: int):
    """The most recently freed idle block of `size`, or None; first trims the idle blocks to `limit`."""
    global _idle_bytes
    _trim(limit)
    with _lock:
        for i in range(len(_idle) - 1, -1, -1):
            if _idle[i][0] == size:
                block = _idle.pop(i)[1]
                _idle_bytes -= size
                return block
    return None


def _give_back(entry) -> None:
    """The finalizer of a handed-out array: keep its (size, block) entry, evicting the least
    recently freed idle blocks to stay within the limit; nothing kept where the block alone is
    over it."""
    global _idle_bytes
    try:
        limit = cache_limit()
    except ValueError:  # the variable was set wrong since: keep nothing
        limit = 0
    if entry[0] > limit:
        return
    _trim(limit - entry[0])
    with _lock:
        _idle.append(entry)
        _idle_bytes += entry[0]


def _trim(limit: int) -> int:
    """Evict the least recently freed idle blocks until at most `limit` bytes stay; returns the
    bytes evicted. The evicted blocks are freed after the lock is released."""
    global _idle_bytes
    evicted = []  # allocated before the lock (see the module's last paragraph)
    with _lock:
        while _idle and _idle_bytes > limit:
            evicted.append(_idle.pop(0))
            _idle_bytes -= evicted[-1][0]
    n = sum(size for size, _ in evicted)
    del evicted  # outside the lock: freeing the blocks may run other finalizers
    return n


@functools.lru_cache(maxsize=4096)
def contiguous_strides(shape: tuple) -> tuple:
    """Row-major strides of `shape` (a size-0 or size-1 dimension counted as 1), cached: the
    CPU backends' outputs repeat their shapes."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _new_block(size: int):
    """(backing tensor, address): `size` bytes at a 2 MiB-aligned address, advised for huge pages."""
    backing = torch.empty(size + HUGE_PAGE, dtype=torch.uint8, device="cpu")  # not a default device's
    p = backing.data_ptr()
    addr = p + (-p) % HUGE_PAGE
    advise(addr, size)
    return backing, addr


@functools.lru_cache(maxsize=256)
def _array_type(nbytes: int):
    return ctypes.c_char * nbytes


@functools.lru_cache(maxsize=1)
def _madvise():
    try:
        import sys

        if not sys.platform.startswith("linux"):
            return None
        fn = ctypes.CDLL(None).madvise
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
        return fn
    except Exception:
        return None


def advise(addr: int, nbytes: int) -> None:
    """Transparent huge pages for the whole 2 MiB pages within [addr, addr + nbytes) (a hint:
    ignored where THP is off or not Linux; any failure is ignored)."""
    fn = _madvise()
    a, e = (addr + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1), (addr + nbytes) & ~(HUGE_PAGE - 1)
    if fn is not None and e > a:
        fn(a, e - a, _MADV_HUGEPAGE)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
