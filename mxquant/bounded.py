"""Running code mxquant does not own (a backend's availability probe, a plugin's import, its
register_backends hook, a lazy BackendSpec's import) so that it cannot hurt the caller.

The code runs on a daemon thread and is waited for at most `timeout` seconds
(MXQUANT_PROBE_TIMEOUT; None: no limit). Whatever it raises, BaseException included, is
returned, never raised: a SystemExit or KeyboardInterrupt raised there is that code's own (a
real Ctrl-C is delivered to the main thread, which is the one waiting here, so it still
interrupts the caller). Code that does not finish in time keeps running in the background;
its result is dropped.

At interpreter exit such a thread used to abort the process (SIGABRT, "terminate called
without an active exception"): once finalization has begun, CPython ends a daemon thread that
tries to take the GIL back with pthread_exit, whose forced unwinding through a C++ frame of
torch (the thread was inside a torch op) calls std::terminate. So an atexit hook stops them
first: it raises an exception in each thread still running (delivered at its next bytecode,
i.e. between two torch ops) and waits for them, at most EXIT_GRACE seconds and only while a
thread is still using CPU (one blocked in a call that never returns cannot come back to abort
anything, and is not waited for).
"""

from __future__ import annotations

import atexit
import contextvars
import threading
import time
from typing import Callable, Optional

EXIT_GRACE = 3.0
"""Seconds the exit hook waits, at most, for abandoned threads that are still computing."""
BLOCKED_AFTER = 0.5
"""Seconds without CPU use after which the exit hook takes a thread for blocked and stops waiting."""

_RUNNING: set = set()  # threads of jobs not finished yet
_HOOKED = False
_GUARD = threading.Lock()


class Abandoned(BaseException):
    """Raised inside a job's thread at interpreter exit, to stop it before finalization."""


class Job:
    """`fn()` started on a daemon thread named `name`, in a copy of the caller's context."""

    def __init__(self, fn: Callable, name: str):
        self.finished = threading.Event()
        self.raised: Optional[BaseException] = None
        self.value = None
        self._fn, self._context = fn, contextvars.copy_context()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        with _GUARD:
            _hook_exit()
            _RUNNING.add(self.thread)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.value = self._context.run(self._fn)
        except BaseException as exc:  # noqa: BLE001 - whatever it is, it is that code's failure
            self.raised = exc
        finally:
            self.finished.set()
            with _GUARD:
                _RUNNING.discard(self.thread)

    def wait(self, timeout: Optional[float]) -> bool:
        """Whether the job finished within `timeout` seconds (None: waits for it)."""
        return self.finished.wait(timeout)

    def lost(self) -> bool:
        """Unfinished and no longer running (its thread did not survive a fork)."""
        return not self.finished.is_set() and not self.thread.is_alive()


def run_bounded(fn: Callable, timeout: Optional[float], name: str) -> Optional[Job]:
    """The finished Job of `fn()` (see .raised / .value), or None if it did not finish within
    `timeout` seconds (it goes on in the background)."""
    job = Job(fn, name)
    return job if job.wait(timeout) else None


def _hook_exit() -> None:
    global _HOOKED
    if not _HOOKED:
        atexit.register(_stop_at_exit)
        _HOOKED = True


def _stop_at_exit() -> None:
    with _GUARD:
        threads = [t for t in _RUNNING if t.is_alive()]
    if not threads:
        return
    import ctypes

    for t in threads:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident), ctypes.py_object(Abandoned))
    start = time.monotonic()
    deadline = start + EXIT_GRACE
    used = {t: _cpu_seconds(t) for t in threads}
    progress = dict.fromkeys(threads, start)  # when each thread was last seen using CPU
    while threads and time.monotonic() < deadline:
        for t in threads:
            t.join(0.05 / len(threads))
        now, clock = {t: _cpu_seconds(t) for t in threads if t.is_alive()}, time.monotonic()
        for t, s in now.items():
            if s is not None and used[t] is not None and s > used[t]:
                progress[t] = clock
        # keep waiting for the threads still computing; one that used no CPU for BLOCKED_AFTER
        # seconds is blocked (a sleep, a read) and is left alone, as is every thread where CPU
        # time is unknown (a computing thread on a loaded machine may get no CPU for a while)
        threads = [t for t, s in now.items() if s is not None and used[t] is not None
                   and clock - progress[t] < BLOCKED_AFTER]
        used = now


def _cpu_seconds(thread: threading.Thread) -> Optional[float]:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError, TypeError):  # not POSIX, or the thread is gone
        return None
