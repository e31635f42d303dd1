"""The backend registry: which backends exist, which can run here, and which one serves a call.

Resolution order for a call: the `backend=` argument, then `mxquant.use_backend(name)`, then
the MXQUANT_BACKEND environment variable (read at resolution time), then automatic choice by
priority among available backends that are capable of the call and honour the contract (or
whose declared deviations the caller allowed). A forced backend is strict: if it cannot run
the call, the error names it, its reason and every other candidate's status.

Resolved callables are cached per call signature, so after the first call the hot path is a
dict lookup; `Registry.reset_cache()` clears it (tests do).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

from . import plugins
from .backend import Backend, BackendSpec, Call, Capabilities
from .errors import BackendError, BackendIncapableError, BackendUnavailableError, NoBackendError, UnknownBackendError

ENV_BACKEND = "MXQUANT_BACKEND"
ENV_ALLOW = "MXQUANT_ALLOW_DEVIATIONS"

_forced: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("mxquant_forced", default=None)
_allowed: contextvars.ContextVar[frozenset] = contextvars.ContextVar("mxquant_allowed", default=frozenset())


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force backend `name` for mxquant calls in this block (strict: no fallback)."""
    token = _forced.set(name)
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


def _parse_allowed(env: Optional[str], scoped: frozenset) -> frozenset:
    items = {p.strip() for p in (env or "").split(",") if p.strip()}
    return frozenset(items) | scoped


def deviations_allowed(backend: Backend, allowed: frozenset) -> bool:
    if "*" in allowed or backend.name in allowed:
        return True
    return all(f"{backend.name}:{d.code}" in allowed for d in backend.deviations)


@dataclass
class Entry:
    name: str
    plugin: plugins.PluginRecord
    spec: Optional[BackendSpec] = None
    backend: Optional[Backend] = None
    load_error: Optional[str] = None
    probes: dict = field(default_factory=dict)  # device -> reason or None

    @property
    def origin(self) -> str:
        if self.plugin.builtin:
            return "built-in"
        return f"plugin {self.plugin.name}" + (f" ({self.plugin.distribution})" if self.plugin.distribution else "")

    def serves(self, device_type: str) -> bool:
        if self.backend is not None:
            return device_type in self.backend.capabilities.devices
        return self.spec is not None and device_type in self.spec.devices


def check_backend(obj: Backend) -> Backend:
    """Reject a malformed Backend at registration/load, so it cannot break other backends' calls."""
    if not (isinstance(obj.name, str) and obj.name):
        raise TypeError(f"backend name must be a non-empty str, got {obj.name!r}")
    if not isinstance(obj.capabilities, Capabilities):
        raise TypeError(f"backend {obj.name!r}: capabilities must be an mxquant.Capabilities, "
                        f"got {type(obj.capabilities).__name__}")
    if not callable(obj.probe):
        raise TypeError(f"backend {obj.name!r}: probe must be callable")
    if not isinstance(obj.priority, int):
        raise TypeError(f"backend {obj.name!r}: priority must be an int, got {obj.priority!r}")
    return obj


class Registry:
    def __init__(self, *, entry_points: bool = True):
        self._use_entry_points = entry_points
        self._pm = plugins.new_plugin_manager()
        self._plugins: list[plugins.PluginRecord] = []
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._cache: dict = {}

    # ---- discovery -------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._use_entry_points:
            self._plugins = plugins.discover(self._pm)
            if not any(r.builtin for r in self._plugins):
                # Running from a source tree with no installed metadata: register our own anyway.
                self._register_module("builtin", "mxquant.backends", plugins.BUILTIN_DISTRIBUTION)
        plugins.call_register_hooks(self._pm, self._plugins, self._register_for)

    def _register_module(self, name: str, module: str, dist: Optional[str]) -> None:
        rec = plugins.PluginRecord(name, dist, module)
        self._plugins.append(rec)
        try:
            self._pm.register(importlib.import_module(module), name=name)
        except Exception as exc:
            rec.error = f"failed to load {module}: {type(exc).__name__}: {exc}"

    def _register_for(self, rec: plugins.PluginRecord) -> Callable:
        def register(obj) -> None:
            if isinstance(obj, Backend):
                entry = Entry(obj.name, rec, backend=check_backend(obj))
            elif isinstance(obj, BackendSpec):
                entry = Entry(obj.name, rec, spec=obj)
            else:
                raise TypeError(f"register() takes an mxquant.Backend or mxquant.BackendSpec, got {type(obj).__name__}")
            if entry.name in self._entries:
                raise ValueError(f"backend name {entry.name!r} is already registered by {self._entries[entry.name].origin}")
            self._entries[entry.name] = entry
            self._cache.clear()

        return register

    def register_plugin(self, plugin: object, name: str) -> None:
        """Register an in-process plugin object (anything with a `register_backends` hookimpl)."""
        self._ensure_loaded()
        rec = plugins.PluginRecord(name, None, repr(plugin))
        self._plugins.append(rec)
        self._pm.register(plugin, name=name)
        hook = self._pm.subset_hook_caller("register_backends", remove_plugins=[
            p for p in self._pm.get_plugins() if p is not plugin])
        try:
            hook(register=self._register_for(rec))
        except Exception as exc:
            rec.error = f"register_backends raised {type(exc).__name__}: {exc}"
        self._cache.clear()

    def unregister_plugin(self, name: str) -> None:
        self._pm.unregister(name=name)
        self._plugins = [r for r in self._plugins if r.name != name]
        self._entries = {k: e for k, e in self._entries.items() if e.plugin.name != name}
        self._cache.clear()

    def reset_cache(self) -> None:
        """Forget resolved callables and probe results (not the registered backends)."""
        self._cache.clear()
        for e in self._entries.values():
            e.probes.clear()

    # ---- loading and probing ------------------------------------------------------------
    def entries(self) -> list[Entry]:
        self._ensure_loaded()
        return list(self._entries.values())

    def plugin_records(self) -> list[plugins.PluginRecord]:
        self._ensure_loaded()
        return list(self._plugins)

    def load(self, entry: Entry) -> Optional[Backend]:
        if entry.backend is None and entry.load_error is None and entry.spec is not None:
            module, _, attr = entry.spec.target.partition(":")
            try:
                obj = getattr(importlib.import_module(module), attr)
                obj = obj() if callable(obj) and not isinstance(obj, Backend) else obj
                if not isinstance(obj, Backend):
                    raise TypeError(f"{entry.spec.target} is a {type(obj).__name__}, not an mxquant.Backend")
                entry.backend = check_backend(obj)
            except Exception as exc:
                entry.load_error = f"cannot import {entry.spec.target}: {type(exc).__name__}: {exc}"
                if entry.spec.install_hint:
                    entry.load_error += f" (install: {entry.spec.install_hint})"
        return entry.backend

    def probe(self, entry: Entry, device: torch.device) -> Optional[str]:
        """None if `entry` can run on `device`, else the reason. Never raises; cached."""
        if device in entry.probes:
            return entry.probes[device]
        backend = self.load(entry)
        if backend is None:
            reason = entry.load_error
        else:
            try:
                reason = backend.probe(device)
            except Exception as exc:
                reason = f"availability probe raised {type(exc).__name__}: {exc}"
            if reason and backend.install_hint:
                reason += f" (install: {backend.install_hint})"
        entry.probes[device] = reason
        return reason

    def status(self, entry: Entry, call: Call) -> Optional[str]:
        """None if `entry` can serve `call` here, else why not."""
        if not entry.serves(call.device.type):
            return f"does not serve device type '{call.device.type}'"
        reason = self.probe(entry, call.device)
        if reason:
            return f"unavailable: {reason}"
        return self.load(entry).incapable_reason(call)

    # ---- resolution -----------------------------------------------------------------------
    def resolve(self, call: Call, forced: Optional[str] = None, forced_by: str = "", allowed: frozenset = frozenset()):
        """The backend that serves `call` (uncached; see `lookup` for the cached path)."""
        entries = self.entries()
        if forced:
            entry = self._entries.get(forced)
            if entry is None:
                raise UnknownBackendError(forced, forced_by, call, self._candidates(call, allowed))
            reason = self.status(entry, call)
            if reason:
                err = BackendUnavailableError if reason.startswith(("unavailable", "does not serve")) else BackendIncapableError
                raise err(forced, forced_by, call, reason, self._candidates(call, allowed))
            return entry.backend
        for entry in sorted(entries, key=lambda e: (-self._priority(e, call), e.name)):
            if self.status(entry, call) is None and deviations_allowed(entry.backend, allowed):
                return entry.backend
        raise NoBackendError(call, self._candidates(call, allowed))

    def _priority(self, entry: Entry, call: Call) -> int:
        if not entry.serves(call.device.type):
            return -(2**31)
        backend = self.load(entry)
        return backend.priority if backend is not None else -(2**31)

    def _candidates(self, call: Call, allowed: frozenset) -> list[tuple[str, str, str]]:
        rows = []
        for entry in sorted(self.entries(), key=lambda e: (-self._priority(e, call), e.name)):
            status = self.status(entry, call)
            if status is None and not deviations_allowed(entry.backend, allowed):
                codes = ", ".join(d.code for d in entry.backend.deviations)
                status = f"declares deviations ({codes}); not chosen automatically unless allowed via {ENV_ALLOW}"
            rows.append((entry.name, entry.origin, status or "ok"))
        return rows

    def cached(self, op: str, device, hp_dtype, element_dtype, scale_mode, scale_layout, backend):
        """The hot path: the cached callable for this call signature under the current
        overrides, or None (never resolves). Costs one dict lookup and the override reads."""
        return self._cache.get((op, device, hp_dtype, element_dtype, scale_mode, scale_layout, backend,
                                _forced.get(), _allowed.get(), *_env_overrides()))

    def lookup(self, op: str, device: torch.device, hp_dtype, element_dtype, scale_mode, scale_layout, backend):
        """Cached resolution: returns the backend's callable, resolving on a cache miss."""
        key = (op, device, hp_dtype, element_dtype, scale_mode, scale_layout, backend,
               _forced.get(), _allowed.get(), *_env_overrides())
        fn = self._cache.get(key)
        if fn is None:
            call = Call(op, device, hp_dtype, element_dtype, scale_mode, scale_layout)
            chosen = self.resolve(call, *selection(backend))
            fn = chosen.quantize if op == "quantize" else chosen.dequantize
            self._cache[key] = fn
        return fn

    def resolved_name(self, call: Call) -> str:
        """Name of the backend that serves `call` under the current overrides (uncached)."""
        return self.resolve(call, *selection()).name


if os.name == "posix" and isinstance(getattr(os.environ, "_data", None), dict):
    # os.environ keeps its bytes-keyed mapping in _data; reading it skips the str encoding and
    # decoding of os.environ.get, which is most of the hot path's cost of honouring the two
    # variables on every call (they are read at resolution time, and the cache is keyed on them).
    _ENV_DATA = os.environ._data
    _ENV_KEYS = (os.fsencode(ENV_BACKEND), os.fsencode(ENV_ALLOW))

    def _env_overrides() -> tuple:
        return _ENV_DATA.get(_ENV_KEYS[0]), _ENV_DATA.get(_ENV_KEYS[1])
else:  # pragma: no cover - Windows
    def _env_overrides() -> tuple:
        return os.environ.get(ENV_BACKEND), os.environ.get(ENV_ALLOW)


def selection(backend: Optional[str] = None) -> tuple[Optional[str], str, frozenset]:
    """(forced name, what forced it, allowed deviations) under the current overrides."""
    allowed = _parse_allowed(os.environ.get(ENV_ALLOW), _allowed.get())
    env_forced = os.environ.get(ENV_BACKEND) or None
    if backend:
        return backend, "the backend= argument", allowed
    if _forced.get():
        return _forced.get(), "mxquant.use_backend()", allowed
    if env_forced:
        return env_forced, f"{ENV_BACKEND}={env_forced}", allowed
    return None, "", allowed


_REGISTRY = Registry()


def get_registry() -> Registry:
    return _REGISTRY


def set_registry(registry: Registry) -> Registry:
    """Install `registry` as the global one (tests); returns the previous one."""
    global _REGISTRY
    previous, _REGISTRY = _REGISTRY, registry
    return previous


