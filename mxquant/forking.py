"""Whether this process is a forked child of one that had imported mxquant.

GNU OpenMP's thread pool does not survive fork: a child whose parent ran torch ops on several
threads hangs in its first parallel region (any torch op; DataLoader workers set one thread for
this reason). Backends that run torch ops on torch's threads (cpu-eager) use one thread in such
a child. The pid is taken when mxquant is imported: backends load lazily, and a backend module
taking its own would miss every fork before its first use."""

from __future__ import annotations

import os

_PID = os.getpid()


def in_forked_child() -> bool:
    """True in a process forked (at any depth) from one that had imported mxquant."""
    return os.getpid() != _PID
