"""`empty_cpu_cache()`: the public handle on the CPU output cache of backends/_cpu_pool.py (the
memory of freed large outputs of cpu-native and cpu-eager, kept for the next call; its size is
MXQUANT_CPU_CACHE_MB, docs/env.md)."""

from __future__ import annotations


def empty_cpu_cache() -> int:
    """Release the memory the CPU output cache keeps for reuse (as `torch.cuda.empty_cache()`
    does for CUDA's); outputs still in use are untouched. Returns the bytes released."""
    from .backends import _cpu_pool

    return _cpu_pool.empty()
