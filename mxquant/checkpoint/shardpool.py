"""Shards converted a few at a time, each on a thread of its own (`convert(jobs=N)`).

One shard's conversion is a pipeline of threads (reader, source sha256, quantization, writer,
output sha256), and the slowest of them sets its pace: on a GPU host, the source's sha256 on one
core (docs/performance.md, eleventh session). Shards are independent files, so N of them at
once run N such pipelines side by side.

The first error stops the rest: shards not yet started are not started, and the running ones
stop at their next progress report (`Stopped`), their half-written files removed as on any error
(writer.abort); the first real error is raised once every shard's thread has finished. A Ctrl-C
in the calling thread does the same (a second one is ignored while the threads finish) and is
re-raised. The calling thread waits on each thread's own `done` event, never in Thread.join
while the thread runs: on CPython 3.10-3.12 a Ctrl-C inside join() marks a running thread as
stopped, and a later join() would return while it still writes.
"""

from __future__ import annotations

import threading


class Stopped(Exception):
    """Raised in a shard's thread at its next progress report, once another shard failed."""


def auto_jobs(device: str, cpus: int | None, ranks_here: int = 1) -> int:
    """Shards at once when the caller does not say: 2 on a GPU (or XPU) host with 8 or more cores
    per rank on it (the host work of two pipelines, about 3 cores), else 1 (on the CPU the
    quantization takes every core already)."""
    return 2 if device != "cpu" and (cpus or 1) // max(1, ranks_here) >= 8 else 1


def run_each(items: list, fn, jobs: int, progress):
    """[fn(item, report) for item in items], `jobs` at a time on threads (in order, in this
    thread, when jobs <= 1 or there is one item). `report(n)` is `progress(n)`, serialized across
    threads, raising Stopped once another item failed. Results are in the order of `items`."""
    if jobs <= 1 or len(items) <= 1:
        return [fn(item, progress) for item in items]
    stop = threading.Event()
    lock = threading.Lock()
    pending = iter(enumerate(items))
    results: list = [None] * len(items)
    errors: list[BaseException] = []

    def report(n: int) -> None:
        if stop.is_set():
            raise Stopped("stopped: another shard failed")
        with lock:
            progress(n)

    def worker(done: threading.Event) -> None:
        try:
            while not stop.is_set():
                with lock:
                    nxt = next(pending, None)
                if nxt is None:
                    return
                i, item = nxt
                try:
                    results[i] = fn(item, report)
                except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                    with lock:
                        errors.append(e)
                    stop.set()
        finally:
            done.set()

    workers = []
    try:
        for k in range(min(jobs, len(items))):
            done = threading.Event()
            t = threading.Thread(target=worker, args=(done,), daemon=True, name=f"mxquant-shard-{k}")
            workers.append((t, done))
            t.start()
        for _, done in workers:
            done.wait()
    except BaseException as interrupt:  # Ctrl-C while starting or waiting: the shards stop at their next report
        while True:
            try:
                stop.set()
                for t, done in workers:
                    while t.ident is not None and not done.is_set():  # (a thread never started sets nothing)
                        done.wait(0.1)
                break
            except BaseException:  # noqa: BLE001 - another Ctrl-C: the threads are stopping already
                continue
        first = _first(errors)
        if first is not None and not isinstance(first, Stopped) and hasattr(interrupt, "add_note"):  # 3.11+
            interrupt.add_note(f"meanwhile a shard failed: {first!r}")
        raise
    for t, _ in workers:
        t.join()  # finished: returns at once
    first = _first(errors)
    if first is not None:
        raise first
    return results


def _first(errors: list):
    """The first error that is not a Stopped (another's consequence), else the first, else None."""
    return next((e for e in errors if not isinstance(e, Stopped)), errors[0] if errors else None)
