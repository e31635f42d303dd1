"""What the caller asked for: the `backend=` argument, `use_backend()`, `allow_deviations()`
and the environment variables MXQUANT_BACKEND / MXQUANT_ALLOW_DEVIATIONS (read here and
nowhere else, at every call, so a change takes effect at once; docs/env.md), plus
MXQUANT_PROBE_TIMEOUT (how long a backend's availability probe may take, read when one runs).

Order: backend= first, then use_backend(), then MXQUANT_BACKEND; the three mean the same, and a
forced backend is strict for every op it implements (registry.resolve).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from typing import Iterator, Optional

ENV_BACKEND = "MXQUANT_BACKEND"
ENV_ALLOW = "MXQUANT_ALLOW_DEVIATIONS"
ENV_PROBE_TIMEOUT = "MXQUANT_PROBE_TIMEOUT"
ENV_CPU_CACHE = "MXQUANT_CPU_CACHE_MB"  # read by backends/_cpu_pool.py, at each large CPU output
DEFAULT_PROBE_TIMEOUT = 10.0

_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("mxquant_forced", default=None)
_allowed: contextvars.ContextVar[frozenset] = contextvars.ContextVar("mxquant_allowed", default=frozenset())


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force backend `name` for mxquant calls in this block (strict: no fallback). None or a blank
    name changes nothing, as for `backend=`: an enclosing use_backend() or MXQUANT_BACKEND holds."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"use_backend() takes a backend name (str) or None, got {type(name).__name__}")
    token = _forced.set(name if normalize_name(name) else _forced.get())
    try:
        yield
    finally:
        _forced.reset(token)


@contextlib.contextmanager
def allow_deviations(*items: str) -> Iterator[None]:
    """Let automatic selection pick backends with declared deviations, in this block.

    Each item is a backend name (all its deviations), "backend:code" (one deviation) or "*"."""
    token = _allowed.set(_allowed.get() | frozenset(items))
    try:
        yield
    finally:
        _allowed.reset(token)


if os.name == "posix" and isinstance(getattr(os.environ, "_data", None), dict):
    # os.environ keeps a bytes-keyed mapping in _data; reading it skips the str encoding and
    # decoding of os.environ.get, most of the cost of honouring the variables on every call.
    _ENV_DATA = os.environ._data
    _ENV_KEYS = (os.fsencode(ENV_BACKEND), os.fsencode(ENV_ALLOW))

    def overrides() -> tuple:
        """Everything that can change which backend serves a call, as one hashable tuple (the
        registry's cache key includes it). Costs two context-var and two dict reads."""
        return _forced.get(), _allowed.get(), _ENV_DATA.get(_ENV_KEYS[0]), _ENV_DATA.get(_ENV_KEYS[1])
else:  # pragma: no cover - Windows
    def overrides() -> tuple:
        return _forced.get(), _allowed.get(), os.environ.get(ENV_BACKEND), os.environ.get(ENV_ALLOW)


def normalize_name(name: Optional[str]) -> Optional[str]:
    """Backend names as users type them: surrounding blanks dropped, case folded; "" is none."""
    if name is None:
        return None
    name = name.strip().lower()
    return name or None


def allowance_items() -> list[tuple[str, str]]:
    """(item, where it was given) for each item of MXQUANT_ALLOW_DEVIATIONS (comma-separated) and
    of allow_deviations(), trimmed (around the colon too) and case-folded, as backend names are."""
    env = os.environ.get(ENV_ALLOW) or ""
    items = [(p, f"{ENV_ALLOW}={env.strip()}") for p in env.split(",")]
    items += [(p, "mxquant.allow_deviations()") for p in _allowed.get()]
    return [(":".join(part.strip() for part in p.lower().split(":", 1)), where) for p, where in items if p.strip()]


def allowed_deviations() -> frozenset:
    """The items of allowance_items(); deviation_allowed folds the other side. The registry
    refuses an item that names no registered backend or deviation (registry.check_allowance)."""
    return frozenset(item for item, _ in allowance_items())


def selection(backend: Optional[str] = None) -> tuple[Optional[str], str, frozenset]:
    """(forced name, what forced it, allowed deviations) under the current overrides."""
    allowed = allowed_deviations()
    if normalize_name(backend):  # a blank name is none given, as "" is: it never bypasses the others
        return normalize_name(backend), "the backend= argument", allowed
    if _forced.get():
        return normalize_name(_forced.get()), "mxquant.use_backend()", allowed
    env = os.environ.get(ENV_BACKEND)
    if normalize_name(env):
        return normalize_name(env), f"{ENV_BACKEND}={env.strip()}", allowed
    return None, "", allowed


def deviation_allowed(backend_name: str, code: str, allowed: frozenset) -> bool:
    name = backend_name.lower()
    return bool({"*", name, f"{name}:{code.lower()}"} & allowed)


def deviations_allowed(backend, allowed: frozenset) -> bool:
    """Whether every deviation `backend` declares is allowed."""
    return all(deviation_allowed(backend.name, d.code, allowed) for d in backend.deviations)


def probe_timeout() -> Optional[float]:
    """Seconds an availability probe may take before its backend counts as unavailable:
    MXQUANT_PROBE_TIMEOUT (a positive number; "inf": no limit, returned as None), else 10."""
    raw = (os.environ.get(ENV_PROBE_TIMEOUT) or "").strip()
    try:
        value = float(raw)
    except ValueError:  # unset, empty or not a number
        return DEFAULT_PROBE_TIMEOUT
    if value == math.inf:
        return None
    return value if value > 0 else DEFAULT_PROBE_TIMEOUT


def environment() -> dict:
    """The variables read here, as set (None when unset), for reports."""
    return {name: os.environ.get(name) for name in (ENV_BACKEND, ENV_ALLOW, ENV_PROBE_TIMEOUT, ENV_CPU_CACHE)}
