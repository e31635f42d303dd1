"""Running a backend's availability probe so that it cannot hurt anyone else's call: its
answer is checked (None, or a non-empty reason string; anything else is that backend's bug and
becomes its reason), an exception becomes the reason, and a probe that does not answer within
selection.probe_timeout() seconds (MXQUANT_PROBE_TIMEOUT) leaves its backend unavailable. The
probe runs in a daemon thread, so a hung one costs the wait, never the process."""

from __future__ import annotations

import reprlib
import threading
from typing import Callable, Optional

import torch

from .selection import ENV_PROBE_TIMEOUT


def run_probe(probe: Callable, device: torch.device, timeout: Optional[float]) -> Optional[str]:
    """None if `probe(device)` says the backend can run on `device`, else why not. Never raises;
    waits at most `timeout` seconds (None: no limit)."""
    answer: list = []

    def target() -> None:
        try:
            answer.append((True, probe(device)))
        except BaseException as exc:  # noqa: BLE001 - whatever it is, it is the probe's failure
            answer.append((False, exc))

    thread = threading.Thread(target=target, name=f"mxquant-probe-{device}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        return (f"availability probe did not answer within {timeout:g} s (still running in the background; "
                f"{ENV_PROBE_TIMEOUT} sets the limit)")
    returned, value = answer[0]
    if not returned:
        return f"availability probe raised {type(value).__name__}: {value}"
    return _reason(value)


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
