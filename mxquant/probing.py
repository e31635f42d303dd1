"""Running a backend's availability probe so that it cannot hurt anyone else's call: its
answer is checked (None, or a non-empty reason string; anything else is that backend's bug and
becomes its reason), an exception becomes the reason, and a probe that does not answer within
selection.probe_timeout() seconds (MXQUANT_PROBE_TIMEOUT) leaves its backend unavailable. The
probe runs on a daemon thread (bounded.py), so a hung one costs the wait, never the process."""

from __future__ import annotations

import reprlib
from typing import Callable, Optional

import torch

from .bounded import run_bounded
from .selection import ENV_PROBE_TIMEOUT


def run_probe(probe: Callable, device: torch.device, timeout: Optional[float]) -> Optional[str]:
    """None if `probe(device)` says the backend can run on `device`, else why not. Never raises;
    waits at most `timeout` seconds (None: no limit)."""
    job = run_bounded(lambda: probe(device), timeout, f"mxquant-probe-{device}")
    if job is None:
        return (f"availability probe did not answer within {timeout:g} s (still running in the background; "
                f"{ENV_PROBE_TIMEOUT} sets the limit)")
    if job.raised is not None:
        return f"availability probe raised {type(job.raised).__name__}: {job.raised}"
    return _reason(job.value)


def _reason(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else "availability probe returned an empty reason string (None means available)"
    try:
        shown = reprlib.repr(value)
    except Exception:  # a repr that raises
        shown = f"<{type(value).__name__} object>"
    return f"probe returned {type(value).__name__} {shown}, expected None or a reason string"
