"""Whether this process is a forked child of one that had imported mxquant.

GNU OpenMP's thread pool does not survive fork: a child whose parent ran torch ops on several
threads hangs in its first parallel region (any torch op; DataLoader workers set one thread for
this reason). Backends that run torch ops on torch's threads (cpu-eager) use one thread in such
a child. The hook is registered when mxquant is imported: backends load lazily, and a backend
module registering its own would miss every fork before its first use."""

from __future__ import annotations

import os

_PID = os.getpid()
_forked = False


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process forked (at any depth) from one that had imported mxquant."""
    return _forked or os.getpid() != _PID
