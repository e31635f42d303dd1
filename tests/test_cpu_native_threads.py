"""cpu-native's worker pool (backends/csrc/mxq_cpu.c, run_parallel): workers kept between
calls, one caller at a time on the pool and any other spawning its own threads, a pool that
grows with the thread count (mxq_pool_workers, exported for these tests), and a forked child
that starts from an empty pool. Every result is compared byte for byte with the reference."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from mxquant import reference

from cpu_auto import loaded_backend
from subproc import forked_child_result

E4M3 = torch.float8_e4m3fn


def _native():
    return loaded_backend("cpu-native")  # skips where the library is not built


def _inputs(n):
    g = torch.Generator().manual_seed(n)
    return [torch.randn(256 + 32 * i, 1024, generator=g).to(torch.bfloat16 if i % 2 else torch.float32)
            for i in range(n)]


def _same_bytes(got, want) -> bool:
    """Two (data, scale) pairs, byte for byte."""
    return all(torch.equal(g.view(torch.uint8), w.view(torch.uint8)) for g, w in zip(got, want))


def _same(be, x):
    return _same_bytes(be.quantize(x, E4M3, "rceil", "linear"), reference.quantize(x, E4M3, "rceil", "linear"))


def _workers() -> int:
    from mxquant.backends import _native_lib

    return _native_lib.load()[0].mxq_pool_workers()


def test_pool_grows_with_the_thread_count():
    """Also: a call returns only after every worker that joined it is done. The scales are
    copied the moment it returns (before anything else could let a late worker finish)."""
    be = _native()
    x = torch.randn(2048, 1024)  # 2M elements: 16 threads' worth (one per 64K elements at least)
    want_d, want_s = reference.quantize(x, E4M3, "rceil", "linear")
    threads = torch.get_num_threads()
    try:
        for n in (2, 8, 3, 1, 16, 2):  # more threads than cores too
            torch.set_num_threads(n)
            for _ in range(20):
                d, s = be.quantize(x, E4M3, "rceil", "linear")
                s_at_return = s.view(torch.uint8).clone()
                assert torch.equal(s_at_return, want_s.view(torch.uint8)), n
                assert torch.equal(d.view(torch.uint8), want_d.view(torch.uint8)), n
            if n == 16:
                assert _workers() == 15  # the caller is the 16th
    finally:
        torch.set_num_threads(threads)
    assert _workers() == 15  # kept, not shrunk


def test_concurrent_callers_get_their_own_bytes():
    """Four Python threads at once (ctypes releases the GIL): one holds the pool, the others
    spawn threads of their own; every result must still be its own input's."""
    be = _native()
    xs = _inputs(4)
    wants = [reference.quantize(x, E4M3, "floor", "swizzled") for x in xs]
    bad = []
    threads = torch.get_num_threads()
    torch.set_num_threads(4)

    def work(i):
        for _ in range(15):
            if not _same_bytes(be.quantize(xs[i], E4M3, "floor", "swizzled"), wants[i]):
                bad.append(i)

    try:
        ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in ts), "a caller hung"
    finally:
        torch.set_num_threads(threads)
    assert not bad, bad


def _child_quantize(x, queue):
    """In a forked child: the reference on one torch thread (torch's own OpenMP pool is not
    usable after fork), then the kernel told to use 4 threads; the pool's size before and
    after."""
    torch.set_num_threads(1)
    want = reference.quantize(x, E4M3, "rceil", "linear")
    from mxquant.backends import cpu_native

    before = _workers()
    torch.get_num_threads = lambda: 4  # what the kernel is asked for; this child only
    same = _same_bytes(cpu_native.quantize(x, E4M3, "rceil", "linear"), want)
    queue.put((before, _workers(), same))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_of_a_parent_with_workers():
    """The parent's pool workers do not exist in a forked child: its pool starts empty (a
    pthread_atfork handler resets it) and grows to the child's own workers; its calls neither
    hang nor write wrong bytes."""
    be = _native()
    x = _inputs(1)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _same(be, x)  # the parent's pool has a worker now
    finally:
        torch.set_num_threads(threads)
    assert _workers() >= 1
    assert forked_child_result(_child_quantize, (x,), "cpu-native") == (0, 3, True)
