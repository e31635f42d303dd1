"""Forks: whether this process is a forked child of one that had imported mxquant, and what
mxquant state is renewed in such a child.

GNU OpenMP's thread pool does not survive fork: a child whose parent ran torch ops on several
threads hangs in its first parallel region (any torch op; DataLoader workers set one thread for
this reason). Backends that run torch ops on torch's threads (cpu-eager) use one thread in such
a child. The pid is taken when mxquant is imported: backends load lazily, and a backend module
taking its own would miss every fork before its first use.

Likewise a lock held by another thread of the parent at fork stays held forever in the child,
where that thread does not exist: `renew_in_child(callback)` runs callback in every forked child
(the registry gives itself new locks; plugins.py forgets imports running on the parent's threads).
"""

from __future__ import annotations

import os
import weakref
from typing import Callable

_PID = os.getpid()
_RENEW: list = []  # weak references to callbacks


def in_forked_child() -> bool:
    """True in a process forked (at any depth) from one that had imported mxquant."""
    return os.getpid() != _PID


def renew_in_child(callback: Callable[[], None]) -> None:
    """Call `callback()` in the child after each fork. A bound method is held weakly (its object
    may be collected; then it is dropped), a function strongly."""
    ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda: callback)
    _RENEW[:] = [r for r in _RENEW if r() is not None] + [ref]  # (registries of tests come and go)


def _after_fork_in_child() -> None:
    alive = []
    for ref in _RENEW:
        callback = ref()
        if callback is not None:
            callback()
            alive.append(ref)
    _RENEW[:] = alive


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
