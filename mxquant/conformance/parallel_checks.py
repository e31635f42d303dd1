"""`mxquant verify --jobs N`: one target's checks spread over N worker processes (spawned, so
each has its own CUDA context), results in the same order and of the same content as one
process gives. A GPU backend's checks spend most of their time compiling kernels on the host,
one at a time in one process; on a fresh GPU machine with many cores the workers compile side
by side. Workers find the backend through the registry as a fresh `mxquant` import does (entry
points, MXQUANT_PLUGINS): a backend registered at run time in the calling process is not there,
and its checks fail with that reason."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from ..formats import describe_dtype
from .compare import FAIL, Result

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
    from .verify import check_call

    device = torch.device(device)
    return check_call(_worker_backend(name, device), device, *combination, seed)


def run_in_workers(name: str, device: torch.device, todo: list, seed: int, jobs: int, progress=None) -> list[Result]:
    """check_call for each combination of `todo` on backend `name` at `device`, in `jobs`
    processes; a check whose worker fails (it raised, or the process died) is a FAIL with the
    reason."""
    results: list = [None] * len(todo)
    with ProcessPoolExecutor(min(jobs, max(len(todo), 1)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_check_in_worker, name, str(device), c, seed): i for i, c in enumerate(todo)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as exc:  # noqa: BLE001 - reported as the check's failure
                op, hp, dt, mode, layout = todo[i]
                results[i] = Result(name, str(device), op, describe_dtype(hp), describe_dtype(dt), mode, layout, FAIL,
                                    f"worker process: {type(exc).__name__}: {exc}")
            if progress is not None:
                progress(name, str(device), done, len(todo))
    return results
