"""`convert(jobs=N)`: shards converted N at a time on threads (mxquant/checkpoint/shardpool.py).
The oracle is the one-at-a-time conversion of the same source (and, through it, the byte
identity with llm-compressor that tests/test_convert_ct.py holds): every file byte for byte, the
manifest equal but for its timings. An error in one shard stops the others and leaves what a
one-at-a-time failure leaves."""

from __future__ import annotations

import json
import threading

import pytest

from convert_ckpt import listing, llama_like, save_checkpoint, without_manifest

from mxquant.checkpoint import convert, driver, shardpool
from mxquant.checkpoint.stio import CheckpointError


def _ckpt(tmp_path, shards=5, layers=4):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=layers), shards=shards, extra_files={"tokenizer.json": "{}"})
    return src


def _untimed(manifest_bytes: bytes) -> dict:
    m = json.loads(manifest_bytes)
    for rec in m["shards"]:
        rec.pop("seconds")
    return m


@pytest.mark.parametrize("scheme", ["mxfp8", "nvfp4a16"])
@pytest.mark.parametrize("jobs", [2, 3])
def test_shards_at_once_write_what_one_at_a_time_writes(tmp_path, scheme, jobs):
    src = _ckpt(tmp_path)
    one = convert(src, tmp_path / "one", jobs=1, scheme=scheme, chunk_elems=1024)
    many = convert(src, tmp_path / "many", jobs=jobs, scheme=scheme, chunk_elems=1024)
    a, b = listing(tmp_path / "one"), listing(tmp_path / "many")
    assert without_manifest(a) == without_manifest(b)
    assert _untimed(a["mxquant-manifest.json"]) == _untimed(b["mxquant-manifest.json"])
    assert (many.shards_done, many.bytes_converted) == (one.shards_done, one.bytes_converted) == (5, one.bytes_in)


def test_progress_adds_up_and_comes_from_one_thread_at_a_time(tmp_path):
    src = _ckpt(tmp_path)
    inside, overlap = [0], []
    lock = threading.Lock()

    def recorder(seen):
        def progress(n, total=None):
            with lock:
                inside[0] += 1
                overlap.append(inside[0] > 1)
            seen.append((n, total))
            with lock:
                inside[0] -= 1
        return progress

    one, many = [], []
    convert(src, tmp_path / "one", jobs=1, progress=recorder(one), chunk_elems=512)
    r = convert(src, tmp_path / "many", jobs=3, progress=recorder(many), chunk_elems=512)
    assert many[0] == one[0] == (0, r.bytes_in) and not any(overlap)
    assert sorted(n for n, t in many[1:]) == sorted(n for n, t in one[1:])  # the same reports, interleaved


def _failing(monkeypatch, exc, on_call=3):
    real, calls, lock = driver.quantize_tensor, [0], threading.Lock()

    def flaky(*a, **k):
        with lock:
            calls[0] += 1
            mine = calls[0]
        if mine == on_call:
            raise exc("injected fault")
        return real(*a, **k)

    monkeypatch.setattr(driver, "quantize_tensor", flaky)


@pytest.mark.parametrize("exc", [OSError, KeyboardInterrupt])
def test_contract_a_failing_shard_stops_the_others_and_a_fresh_dst_goes(tmp_path, monkeypatch, exc):
    src = _ckpt(tmp_path)
    _failing(monkeypatch, exc)
    before = set(threading.enumerate())
    with pytest.raises(exc, match="injected fault"):
        convert(src, tmp_path / "dst", jobs=3, chunk_elems=512)
    assert not (tmp_path / "dst").exists()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("mxquant-shard")]


def test_contract_ctrl_c_in_the_calling_thread_waits_for_every_shard(tmp_path, monkeypatch):
    # A real SIGINT, delivered to the main thread while it waits on the shards (the case a
    # KeyboardInterrupt raised in a shard's thread does not cover): every shard's thread has
    # ended when convert() raises, and DST, removed, stays removed.
    import os
    import signal
    import time

    src = _ckpt(tmp_path)
    real, calls, running, lock = driver.quantize_tensor, [0], [0], threading.Lock()
    shard, shards_running = driver._convert_shard, [0]

    def counted(*a, **k):  # a shard's whole conversion, its cleanup (writer.abort) included
        with lock:
            shards_running[0] += 1
        try:
            return shard(*a, **k)
        finally:
            with lock:
                shards_running[0] -= 1

    def slow(*a, **k):
        with lock:
            calls[0] += 1
            running[0] += 1
            mine = calls[0]
        try:
            if mine == 4:
                os.kill(os.getpid(), signal.SIGINT)  # handled in the main thread
            time.sleep(0.2)
            return real(*a, **k)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(driver, "quantize_tensor", slow)
    monkeypatch.setattr(driver, "_convert_shard", counted)
    with pytest.raises(KeyboardInterrupt):
        convert(src, tmp_path / "dst", jobs=3, chunk_elems=512)
    assert running[0] == 0 and shards_running[0] == 0  # none still at work (Thread.is_alive can say False)
    time.sleep(0.3)
    assert not (tmp_path / "dst").exists()


def test_contract_resume_after_a_failure_at_once_matches_a_clean_run(tmp_path, monkeypatch):
    src = _ckpt(tmp_path)
    convert(src, tmp_path / "clean", jobs=1)
    _failing(monkeypatch, OSError, on_call=12)
    with pytest.raises(OSError):
        convert(src, tmp_path / "dst", jobs=2, resume=True)
    left = listing(tmp_path / "dst")
    assert not any(n.endswith(".tmp") for n in left) and "config.json" not in left
    monkeypatch.undo()
    r = convert(src, tmp_path / "dst", jobs=2, resume=True)
    assert r.shards_resumed + r.shards_done == 5
    assert without_manifest(listing(tmp_path / "dst")) == without_manifest(listing(tmp_path / "clean"))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_jobs_must_be_a_positive_integer(tmp_path, bad):
    src = _ckpt(tmp_path, shards=2, layers=1)
    with pytest.raises(CheckpointError, match="jobs must be a positive integer"):
        convert(src, tmp_path / "dst", jobs=bad)
    assert not (tmp_path / "dst").exists()


def test_auto_jobs_two_on_a_gpu_host_with_cores_per_rank_else_one():
    assert shardpool.auto_jobs("cuda:0", 16) == 2 and shardpool.auto_jobs("xpu:0", 8) == 2
    assert shardpool.auto_jobs("cuda:0", 4) == 1 and shardpool.auto_jobs("cpu", 64) == 1
    assert shardpool.auto_jobs("cuda:0", 16, ranks_here=2) == 2 and shardpool.auto_jobs("cuda:1", 16, 4) == 1


def test_run_each_keeps_the_order_and_raises_the_first_real_error():
    started = []

    def fn(item, report):
        started.append(item)
        if item == 2:
            raise ValueError("two")
        report(1)
        return item * 10

    assert shardpool.run_each([1, 3, 4], fn, 2, lambda n: None) == [10, 30, 40]
    with pytest.raises(ValueError, match="two"):
        shardpool.run_each([1, 2, 3, 4, 5, 6], fn, 2, lambda n: None)
