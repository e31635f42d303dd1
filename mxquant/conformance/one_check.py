"""One combination of `mxquant verify` on one backend and device: the check for its call
(compare.py, verify_training.py, verify_fp4.py), or NOT_SUPPORTED with the backend's reason.
Shared by the serial engine (verify.py) and the worker processes of --jobs (parallel_checks.py)."""

from __future__ import annotations

from typing import Optional

from ..backend import FP4_OPS, TRAINING_OPS, Call
from ..formats import describe_dtype
from .compare import NOT_SUPPORTED, Result, check_dequantize, check_quantize
from .verify_fp4 import check_fp4
from .verify_training import check_training


def unchecked(name: str, device, combination: tuple, status: str, why: str) -> Result:
    """The record of a combination that was not compared (not supported, or a worker's failure)."""
    op, hp, dt, mode, layout = combination
    return Result(name, str(device), op, describe_dtype(hp), describe_dtype(dt), mode, layout, status, why)


def not_supported(backend, device, combination: tuple) -> Optional[Result]:
    """NOT_SUPPORTED with the backend's reason where it declares it cannot serve `combination`
    (op, hp, dt, mode, layout) on `device`, else None."""
    op, *rest = combination
    why = backend.incapable_reason(Call(op, device, *rest))
    return unchecked(backend.name, device, combination, NOT_SUPPORTED, why) if why else None


def check_call(backend, device, op, hp, dt, mode, layout, seed: int) -> Result:
    """One combination on `backend` at `device`: its check's result, or NOT_SUPPORTED with the
    backend's reason."""
    refused = not_supported(backend, device, (op, hp, dt, mode, layout))
    if refused is not None:
        return refused
    if op == "quantize":
        return check_quantize(backend, device, hp, dt, mode, layout, seed)
    if op in TRAINING_OPS:
        return check_training(backend, device, op, hp, dt, mode, layout, seed)
    if op in FP4_OPS:
        return check_fp4(backend, device, op, hp, mode, layout, seed)
    return check_dequantize(backend, device, hp, dt, layout, seed)
