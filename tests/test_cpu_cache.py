"""The CPU output cache (backends/_cpu_pool.py): the memory of a freed large output of cpu-native
or cpu-eager is handed out again, never while anything can still reach it, and reused memory
never shows in a result. Results are compared with the reference backend (`cpu`, plain
PyTorch, which allocates its own outputs)."""

from __future__ import annotations

import gc
import pickle
import threading

import pytest
import torch

import mxquant
from mxquant.backends import _cpu_pool as pool
from mxquant.conformance.verify import collect, exit_code
from subproc import forked_child_result

SHAPE = (4096, 8192)  # bf16 in, 32 MiB of e4m3 out: pool.MIN_BYTES


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8).clone()


def _span(t: torch.Tensor) -> tuple[int, int]:
    base = t.untyped_storage().data_ptr()
    return base, base + t.untyped_storage().nbytes()


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    (a0, a1), (b0, b1) = _span(a), _span(b)
    return a0 < b1 and b0 < a1


@pytest.fixture(autouse=True)
def _clean_cache(monkeypatch):
    monkeypatch.delenv("MXQUANT_CPU_CACHE_MB", raising=False)
    gc.collect()
    pool.empty()
    yield
    gc.collect()
    pool.empty()


@pytest.fixture(scope="module")
def x():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)


@pytest.fixture(scope="module")
def want(x):
    return _bytes(mxquant.mxfp8_quantize(x, backend="cpu").data)


@pytest.mark.parametrize("backend", ["cpu-native", "cpu-eager"])
def test_freed_output_memory_is_handed_out_again(backend, x, want):
    q = mxquant.mxfp8_quantize(x, backend=backend)
    first = q.data.data_ptr()
    assert torch.equal(_bytes(q.data), want)
    del q
    assert pool.idle_bytes() >= want.numel()
    q = mxquant.mxfp8_quantize(x, backend=backend)
    assert q.data.data_ptr() == first, "the freed output's memory was not reused"
    assert torch.equal(_bytes(q.data), want)


def test_an_output_in_use_is_never_handed_out(x, want):
    a = mxquant.mxfp8_quantize(x, backend="cpu-native")
    b = mxquant.mxfp8_quantize(-x, backend="cpu-native")
    assert not _overlap(a.data, b.data)
    assert torch.equal(_bytes(a.data), want)


@pytest.mark.parametrize("keep", ["view", "numpy", "storage", "dlpack"])
def test_what_borrows_an_output_keeps_its_memory(keep, x, want):
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    if keep == "view":
        held = q.data[100:300]
    elif keep == "numpy":
        held = q.data.view(torch.uint8).numpy()
    elif keep == "storage":
        held = q.data.untyped_storage()
    else:
        held = torch.from_dlpack(q.data.view(torch.uint8))
    del q
    gc.collect()
    assert pool.idle_bytes() == 0
    other = mxquant.mxfp8_quantize(-x, backend="cpu-native")  # same size: would take a freed block
    if keep == "numpy":
        assert not (other.data.data_ptr() <= held.ctypes.data < other.data.data_ptr() + other.data.numel())
        assert torch.equal(torch.from_numpy(held.copy()).reshape(-1), want.reshape(-1))
    elif keep == "storage":
        assert not (other.data.data_ptr() <= held.data_ptr() < other.data.data_ptr() + other.data.numel())
        assert torch.equal(torch.tensor([], dtype=torch.uint8).set_(held), want.reshape(-1))
    else:
        assert not _overlap(other.data, held)
        want_held = want[100:300] if keep == "view" else want
        assert torch.equal(_bytes(held), want_held)
    del held
    gc.collect()
    assert pool.idle_bytes() == want.numel(), "the block did not come back once its borrower was gone"


def test_reused_memory_never_shows_in_a_result():
    """Every block handed out is poisoned (0xA5) and every output of every call, however small,
    comes from the cache: the conformance kit must still pass byte for byte against the reference
    for cpu-native and cpu-eager (quantize, dequantize, the training and MoE calls, FP4)."""
    saved = pool.MIN_BYTES, pool._poison
    handed = []
    real = pool._take

    def counting_take(size, limit):
        handed.append(size)
        return real(size, limit)

    pool.MIN_BYTES, pool._poison, pool._take = 1, 0xA5, counting_take
    try:
        probe = pool.empty_tensor((64,), torch.uint8)
        assert probe is not None and bool((probe == 0xA5).all()), "blocks are not poisoned"
        del probe
        report = collect(["cpu-native", "cpu-eager"], seed=0)
    finally:
        pool.MIN_BYTES, pool._poison, pool._take = saved[0], saved[1], real
    assert len(handed) > 200, "the conformance calls did not go through the cache"
    statuses = {(r["backend"], r["status"]) for r in report["results"]}
    assert statuses == {("cpu-native", "pass"), ("cpu-eager", "pass")}, [
        r for r in report["results"] if r["status"] != "pass"][:3]
    assert exit_code(report) == 0


def test_the_limit_is_kept(monkeypatch, x):
    monkeypatch.setenv("MXQUANT_CPU_CACHE_MB", "32")  # one 32 MiB block
    a = mxquant.mxfp8_quantize(x, backend="cpu-native")
    b = mxquant.mxfp8_quantize(x, backend="cpu-native")
    del a, b
    assert pool.idle_bytes() == 32 << 20
    monkeypatch.setenv("MXQUANT_CPU_CACHE_MB", "0")  # off: nothing taken or kept, and the kept block released
    assert pool.empty_tensor(SHAPE, torch.uint8) is None
    assert pool.idle_bytes() == 0
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    del q
    assert pool.idle_bytes() == 0
    monkeypatch.delenv("MXQUANT_CPU_CACHE_MB")
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    del q
    assert mxquant.empty_cpu_cache() == 32 << 20 and pool.idle_bytes() == 0


@pytest.mark.parametrize("value", ["-1", "1.5", "lots"])
def test_a_wrong_limit_is_a_clear_error(monkeypatch, value, x):
    monkeypatch.setenv("MXQUANT_CPU_CACHE_MB", value)
    with pytest.raises(ValueError, match="MXQUANT_CPU_CACHE_MB=.*whole number of MiB"):
        mxquant.mxfp8_quantize(x, backend="cpu-native")


def test_small_outputs_do_not_use_the_cache():
    assert pool.empty_tensor((4096, 8191), torch.uint8) is None  # just below MIN_BYTES
    q = mxquant.mxfp8_quantize(torch.randn(2048, 4096), backend="cpu-native")  # 8 MiB: glibc reuses such
    del q
    assert pool.idle_bytes() == 0


def test_threads_holding_many_outputs_never_share_a_block(monkeypatch):
    """Threads take outputs of three sizes from the cache, hold several at once (as tensors,
    views, numpy arrays, some in reference cycles that only the collector frees), tag each with
    its own number at both ends and check the tags when they let go: a block handed out twice
    would overwrite another's tag."""
    monkeypatch.setattr(pool, "MIN_BYTES", 1)
    monkeypatch.setenv("MXQUANT_CPU_CACHE_MB", "24")  # smaller than what is held: evictions too
    gc_threshold = gc.get_threshold()
    gc.set_threshold(5, 2, 2)  # collections (and their finalizers) inside the cache's own calls
    tags, bad, errors = iter(range(1, 1 << 30)), [], []
    lock = threading.Lock()

    class Cycle:
        def __init__(self, t):
            self.t, self.me = t, self

    def work(seed):
        import random

        rnd, held = random.Random(seed), []
        try:
            for _ in range(600):
                t = pool.empty_tensor((rnd.choice([2 << 20, 4 << 20, 6 << 20]) // 8,), torch.int64)
                with lock:
                    tag = next(tags)
                t[0] = t[-1] = tag
                h = t[::2] if rnd.random() < 0.5 else t.view(torch.uint8).numpy()
                held.append((tag, Cycle(h) if rnd.random() < 0.3 else h))
                del t, h
                if len(held) > 5:
                    tag, h = held.pop(rnd.randrange(len(held)))
                    h = h.t if isinstance(h, Cycle) else h
                    h = h if isinstance(h, torch.Tensor) else torch.from_numpy(h).view(torch.int64)
                    if int(h[0]) != tag or (h.numel() % 2 == 0 and h.stride(0) == 1 and int(h[-1]) != tag):
                        bad.append(tag)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gc.set_threshold(*gc_threshold)
    gc.collect()
    assert not errors and not bad, (errors[:2], bad[:5])
    assert pool.idle_bytes() == sum(size for size, _ in pool._idle) <= 24 << 20


def test_outputs_are_not_views(x):
    """As torch.empty's: no hidden base tensor (autograd's view rules, `_base`, `_is_view()`)."""
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    assert not q.data._is_view() and q.data._base is None and q.data.is_contiguous()


def test_older_idle_blocks_make_room_and_a_lower_limit_applies_at_the_next_call(monkeypatch, x):
    monkeypatch.setenv("MXQUANT_CPU_CACHE_MB", "64")
    a, b = mxquant.mxfp8_quantize(x, backend="cpu-native"), mxquant.mxfp8_quantize(x, backend="cpu-native")
    del a, b
    assert pool.idle_bytes() == 64 << 20  # two 32 MiB blocks of one size class
    wide = torch.randn(4096, 12288).to(torch.bfloat16)  # 48 MiB out: another size class
    c = mxquant.mxfp8_quantize(wide, backend="cpu-native")
    del c
    assert sorted(size for size, _ in pool._idle) == [48 << 20]  # both older blocks evicted for it
    c = mxquant.mxfp8_quantize(wide, backend="cpu-native")
    assert pool.idle_bytes() == 0  # and it was handed out again
    del c
    monkeypatch.setenv("MXQUANT_CPU_CACHE_MB", "16")
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    assert pool.idle_bytes() == 0  # the 48 MiB block did not fit the lower limit
    del q
    assert pool.idle_bytes() == 0  # nor does a 32 MiB one


def _child(x, want, queue):
    torch.set_num_threads(1)  # torch's own OpenMP pool does not survive a fork; cpu-native's does
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    reused = q.data.data_ptr() in INHERITED
    queue.put((torch.equal(q.data.view(torch.uint8), want), reused))


INHERITED: set = set()  # addresses of the blocks idle in the parent's cache at the fork


def test_outputs_pickle_and_work_in_a_forked_child(x, want):
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    # as uint8: torch 2.13 cannot unpickle any float8 tensor, cached or not
    assert torch.equal(pickle.loads(pickle.dumps(q.data.view(torch.uint8))), want)
    INHERITED.add(q.data.data_ptr())
    del q
    assert pool.idle_bytes() > 0  # the child inherits a cache with this block in it
    try:
        assert forked_child_result(_child, (x, want), "cpu-native with the output cache") == (True, True)
    finally:
        INHERITED.clear()


def test_an_output_cannot_grow_in_place_as_docs_env_says(x):
    """docs/env.md's one difference from torch.empty's tensors: growing the storage raises."""
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")
    with pytest.raises(RuntimeError, match="not resizable"):
        q.data.resize_(q.data.numel() + 64)
    grown = q.data.clone().resize_(q.data.numel() + 64)  # a clone is torch's own memory
    assert grown.numel() == q.data.numel() + 64
