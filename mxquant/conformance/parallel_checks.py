"""`mxquant verify --jobs N`: one target's checks spread over N worker processes (spawned, so
each has its own CUDA context), results in the same order and of the same content as one
process gives. A GPU backend's checks spend most of their time compiling kernels on the host,
one at a time in one process; on a fresh GPU machine with many cores the workers compile side
by side. Workers find the backend through the registry as a fresh `mxquant` import does (entry
points, MXQUANT_PLUGINS): a backend registered at run time in the calling process is not there,
and its checks fail with that reason."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import torch

from .compare import FAIL, Result
from .one_check import check_call, unchecked

_BACKENDS: dict = {}
"""In a worker: (backend name, device) -> the loaded and probed backend."""


def _worker_backend(name: str, device: torch.device):
    key = (name, str(device))
    if key not in _BACKENDS:
        from ..registry import get_registry

        registry = get_registry()
        entry = next((e for e in registry.entries() if e.name == name), None)
        if entry is None:
            raise LookupError(f"backend {name!r} is not registered in a fresh process (registered at run time "
                              f"in the calling one?): run verify without --jobs")
        reason = registry.probe(entry, device)
        if reason is not None:
            raise RuntimeError(f"backend {name!r} is unavailable on {device} in a worker process: {reason}")
        _BACKENDS[key] = registry.load(entry)
    return _BACKENDS[key]


def _check_in_worker(name: str, device: str, combination: tuple, seed: int) -> Result:
    device = torch.device(device)
    return check_call(_worker_backend(name, device), device, *combination, seed)


def _fail(name: str, device, combination: tuple, why: str) -> Result:
    return unchecked(name, device, combination, FAIL, why)


def _pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))


def _stop(pool: ProcessPoolExecutor) -> None:
    """No further check starts, and the running ones are ended (an interrupt, a crash)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # (shutdown forgets them)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in workers:
        p.terminate()


def _outcome(name: str, device, combination: tuple, future) -> Result:
    """A finished future's check result, or its failure (BrokenProcessPool passes through)."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        return _fail(name, device, combination, f"worker process: {type(exc).__name__}: {exc}")


def _alone(name: str, device, combination: tuple, seed: int) -> Result:
    """One check in a process of its own: its result, or a FAIL saying the process died."""
    pool = _pool(1)
    try:
        return _outcome(name, device, combination, pool.submit(_check_in_worker, name, str(device), combination, seed))
    except BrokenProcessPool:
        return _fail(name, device, combination, "worker process died running this check (exit without a Python "
                                                "error: a crash in the backend?)")
    except BaseException:
        _stop(pool)
        raise
    finally:
        pool.shutdown(wait=True)


def run_in_workers(name: str, device: torch.device, todo: list, seed: int, jobs: int, progress=None,
                   start: int = 0, total: int | None = None) -> list[Result]:
    """check_call for each combination of `todo` on backend `name` at `device`, in `jobs`
    processes (progress: as verify_entry's, counting on from `start` of `total` checks). A check
    whose worker raised is a FAIL with the reason. A worker that dies (a crash in a kernel, say)
    takes its pool down: then every check not yet done runs again in a process of its own, `jobs`
    at a time, so that only the one that kills its process is failed, with that said. An
    interrupt (Ctrl-C) stops the workers at once."""
    if not todo:
        return []
    results: list = [None] * len(todo)
    total = len(todo) + start if total is None else total
    done = start

    def finish(i: int, result: Result) -> None:
        nonlocal done
        results[i], done = result, done + 1
        if progress is not None:
            progress(name, str(device), done, total)

    pool = _pool(min(jobs, len(todo)))
    try:
        futures = {pool.submit(_check_in_worker, name, str(device), c, seed): i for i, c in enumerate(todo)}
        for future in as_completed(futures):
            try:
                result = _outcome(name, device, todo[futures[future]], future)
            except BrokenProcessPool:
                break
            finish(futures[future], result)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True, cancel_futures=True)
    left = [i for i, r in enumerate(results) if r is None]
    if left:  # after a worker died: each check left in a process of its own, `jobs` at a time
        with ThreadPoolExecutor(min(jobs, len(left))) as threads:
            for i, result in zip(left, threads.map(lambda i: _alone(name, device, todo[i], seed), left)):
                finish(i, result)
    return results
