"""The backend registry: which backends exist, which can run here, and which serves a call.

Resolution: a backend forced by name (selection.py: `backend=`, `use_backend()`,
MXQUANT_BACKEND, all three alike) is strict for every op it implements, and its error names every
candidate's status; an op it does not implement at all (the dequantize of a quantize-only
backend) is resolved as if nothing were forced. Otherwise the
highest-priority backend that serves the device, probes available, declares the call in its
capabilities and honours the contract (or whose declared deviations the caller allowed).
Resolved callables are cached per call signature and overrides, so a repeated call costs one
key and one dict lookup (ops.py). Discovery and resolution are serialised by one lock; the
cache is read without it. A forked child gets a new lock (one held by another thread of the
parent at fork would stay held forever there). Third-party code (a plugin's import and hook, a
BackendSpec's import, a probe) runs bounded in time and contained (bounded.py).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch

from . import forking, plugins
from .backend import CLAIMABLE_OPS, Backend, BackendSpec, Call, Capabilities, Deviation, check_name
from .errors import BackendIncapableError, BackendUnavailableError, NoBackendError, UnknownBackendError
from .bounded import run_bounded
from .probing import run_probe
from .selection import ENV_ALLOW, ENV_PROBE_TIMEOUT, allowance_items, deviations_allowed, probe_timeout, selection

_UNPROBED = object()


class Refusal(NamedTuple):
    """Why a backend cannot serve a call: `kind` is "device" (does not serve the device type),
    "unavailable" (its probe or import failed here) or "incapable" (outside its capabilities)."""

    kind: str
    text: str


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
    check_name("backend name", obj.name)
    if not isinstance(obj.capabilities, Capabilities):
        raise TypeError(f"backend {obj.name!r}: capabilities must be an mxquant.Capabilities, "
                        f"got {type(obj.capabilities).__name__}")
    for attr in ("description", "install_hint"):
        if not isinstance(getattr(obj, attr), str):
            raise TypeError(f"backend {obj.name!r}: {attr} must be a str, got {type(getattr(obj, attr)).__name__}")
    if not callable(obj.probe):
        raise TypeError(f"backend {obj.name!r}: probe must be callable")
    if not isinstance(obj.priority, int):
        raise TypeError(f"backend {obj.name!r}: priority must be an int, got {obj.priority!r}")
    if not isinstance(obj.deviations, (tuple, list)) or not all(isinstance(d, Deviation) for d in obj.deviations):
        raise TypeError(f"backend {obj.name!r}: deviations must be a tuple of mxquant.Deviation, "
                        f"got {obj.deviations!r:.200}")
    for op in ("quantize", "dequantize"):
        if getattr(obj, op) is not None and not callable(getattr(obj, op)):
            raise TypeError(f"backend {obj.name!r}: {op} must be callable or None")
    for op in obj.capabilities.ops:
        if op not in CLAIMABLE_OPS:
            raise TypeError(f"backend {obj.name!r}: capabilities.ops names {op!r}; known: {', '.join(CLAIMABLE_OPS)}")
        if not callable(getattr(obj, op)):
            raise TypeError(f"backend {obj.name!r}: capabilities.ops claims {op} but {op} is not given")
    return obj


class Registry:
    def __init__(self, *, entry_points: bool = True):
        self._use_entry_points = entry_points
        self._pm = plugins.new_plugin_manager()
        self._plugins: list[plugins.PluginRecord] = []
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._lock = threading.RLock()
        self.cache: dict = {}
        """Call key (ops.py) -> the resolved backend's callable (and ops.py's prepared calls,
        remember_derived). Read without the lock."""
        self.prepared = False
        """Whether the cache may hold prepared calls (ops.py looks for one only then)."""
        forking.renew_in_child(self._renew_lock)

    def _renew_lock(self) -> None:
        self._lock = threading.RLock()

    # ---- discovery -------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            try:
                if self._use_entry_points:
                    self._plugins = plugins.discover(self._pm)
                plugins.call_hooks(self._pm, self._plugins, self._entry_for, self._add)
            except BaseException:  # a real Ctrl-C while waiting for a plugin: the next call starts over
                self._pm, self._plugins, self._entries = plugins.new_plugin_manager(), [], {}
                raise
            self._loaded = True  # only now: a concurrent first call waits on the lock above

    def _entry_for(self, rec: plugins.PluginRecord, obj, pending: list) -> Entry:
        """The Entry for what a plugin's hook registers (plugins.call_hooks); raises into the hook
        if it is wrong. Runs on the hook's thread while the caller holds the lock: reads only."""
        if isinstance(obj, Backend):
            entry = Entry(obj.name, rec, backend=check_backend(obj))
        elif isinstance(obj, BackendSpec):
            entry = Entry(obj.name, rec, spec=obj)
        else:
            raise TypeError(f"register() takes an mxquant.Backend or mxquant.BackendSpec, got {type(obj).__name__}")
        key = entry.name.lower()  # names are forced case-insensitively: "CPU" would never be reachable
        taken = next((e for e in (*self._entries.values(), *pending) if e.name.lower() == key), None)
        if taken is not None:
            same = "" if taken.name == entry.name else f" (as {taken.name!r}: names are case-insensitive)"
            raise ValueError(f"backend name {entry.name!r} is already registered by {taken.origin}{same}")
        return entry

    def _add(self, entries: list[Entry]) -> None:
        with self._lock:
            for entry in entries:
                self._entries.setdefault(entry.name, entry)
            self.cache.clear()

    def register_plugin(self, plugin: object, name: str) -> None:
        """Register an in-process plugin object (anything with a `register_backends` hookimpl)."""
        with self._lock:
            self._ensure_loaded()
            self._pm.register(plugin, name=name)  # (raises for a taken name: then no record either)
            rec = plugins.PluginRecord(name, None, repr(plugin))
            self._plugins.append(rec)
            rec.error = plugins.hook_problem(self._pm, name, plugin, repr(plugin))
            if rec.error is None:
                plugins.call_hooks(self._pm, self._plugins, self._entry_for, self._add, only=name)
            self.cache.clear()

    def unregister_plugin(self, name: str) -> None:
        with self._lock:
            self._pm.unregister(name=name)
            self._plugins = [r for r in self._plugins if r.name != name]
            self._entries = {k: e for k, e in self._entries.items() if e.plugin.name != name}
            self.cache.clear()

    def reset_cache(self) -> None:
        """Forget resolved callables and probe results (not the registered backends)."""
        with self._lock:
            self.cache.clear()
            self.prepared = False
            for e in self._entries.values():
                e.probes.clear()

    def entries(self) -> list[Entry]:
        self._ensure_loaded()
        return list(self._entries.values())

    def plugin_records(self) -> list[plugins.PluginRecord]:
        self._ensure_loaded()
        return list(self._plugins)

    # ---- loading and probing -----------------------------------------------------------------
    def load(self, entry: Entry) -> Optional[Backend]:
        if entry.backend is None and entry.load_error is None and entry.spec is not None:
            with self._lock:
                if entry.backend is None and entry.load_error is None:
                    entry.backend, entry.load_error = _import_spec(entry.spec)
        return entry.backend

    def probe(self, entry: Entry, device: torch.device) -> Optional[str]:
        """None if `entry` can run on `device`, else the reason. Never raises; bounded in time
        (probing.py); cached."""
        reason = entry.probes.get(device, _UNPROBED)  # one read: reset_cache may clear it meanwhile
        if reason is not _UNPROBED:
            return reason
        with self._lock:
            reason = entry.probes.get(device, _UNPROBED)
            if reason is _UNPROBED:
                reason = entry.probes[device] = self._probe(entry, device)
            return reason

    def _probe(self, entry: Entry, device: torch.device) -> Optional[str]:
        backend = self.load(entry)
        if backend is None:
            return entry.load_error
        reason = run_probe(backend.probe, device, probe_timeout())
        if reason and backend.install_hint:
            reason = f"{reason} (install: {backend.install_hint})"
        return reason

    def status(self, entry: Entry, call: Call) -> Optional[Refusal]:
        """None if `entry` can serve `call` here, else why not."""
        if not entry.serves(call.device.type):
            return Refusal("device", f"does not serve device type '{call.device.type}'")
        reason = self.probe(entry, call.device)
        if reason:
            return Refusal("unavailable", f"unavailable: {reason}")
        why = self.load(entry).incapable_reason(call)
        return Refusal("incapable", why) if why else None

    # ---- resolution ----------------------------------------------------------------------------
    def resolve(self, call: Call, forced: Optional[str] = None, forced_by: str = "", allowed: frozenset = frozenset()):
        """The backend that serves `call` (uncached; `lookup` is the cached path)."""
        entries = self.entries()
        self.check_allowance()
        if forced:
            entry = self._entries.get(forced) or next((e for e in entries if e.name.lower() == forced), None)
            if entry is None:
                raise UnknownBackendError(forced, forced_by, call, self._candidates(call, allowed),
                                          self.unloaded_plugins())
            if not self._lacks_op(entry, call):
                refusal = self.status(entry, call)
                if refusal:
                    err = BackendIncapableError if refusal.kind == "incapable" else BackendUnavailableError
                    raise err(entry.name, forced_by, call, refusal.text, self._candidates(call, allowed))
                return entry.backend
            # a quantize-only backend forced (by any means alike): its dequantize is chosen automatically
        for entry in self._by_priority(call):
            if self.status(entry, call) is None and deviations_allowed(entry.backend, allowed):
                return entry.backend
        raise NoBackendError(call, self._candidates(call, allowed))

    def check_allowance(self) -> None:
        """ValueError if MXQUANT_ALLOW_DEVIATIONS or allow_deviations() names a backend that is
        not registered, or a deviation its backend does not declare: a typo there would
        otherwise allow nothing, silently. (A backend that cannot be imported here declares
        nothing known: any code of it passes. While a plugin failed or was skipped, a name found
        nowhere may be its backend's: it allows nothing, with a RuntimeWarning (once) naming those
        plugins, and every call, forced or not, still runs.)"""
        for item, where in allowance_items():
            if item == "*":
                continue
            name, colon, code = item.partition(":")
            entry = next((e for e in self._entries.values() if e.name.lower() == name), None)
            unloaded = self.unloaded_plugins() if entry is None else []
            if unloaded:  # perhaps a backend of a plugin that failed or was skipped: it allows nothing here
                _warn_once(f"mxquant: {where}: {name!r} names no registered backend; it allows nothing. Not "
                           f"loaded, so their backends are unknown: {'; '.join(unloaded)}")
                continue
            if entry is None:
                known = ", ".join(sorted(self._entries))
                raise ValueError(f"mxquant: {where}: {name!r} names no registered backend (known: {known}; "
                                 f"or '*' for all)")
            backend = self.load(entry) if colon else None
            codes = [d.code.lower() for d in backend.deviations] if backend is not None else [code]
            if code not in codes:
                raise ValueError(f"mxquant: {where}: backend {entry.name!r} declares no deviation {code!r} "
                                 f"(it declares: {', '.join(codes) or 'none'})")

    def unloaded_plugins(self) -> list[str]:
        """'name: why' of each plugin that failed to load or register, or that MXQUANT_PLUGINS
        skipped: a backend name found nowhere may be one of theirs."""
        whys = [(r.name, (r.error or r.skipped).strip()) for r in self._plugins
                if (r.error or r.skipped) and r.value != plugins.ENV_PLUGINS]  # (not the setting's own records)
        return [f"{name}: {why.partition(NEWLINE)[0][:200]}" for name, why in whys]

    def _lacks_op(self, entry: Entry, call: Call) -> bool:
        """Whether `entry` serves the device but implements no MXFP8 dequantize (a quantize-only
        backend: its dequantize is None, and dequantizing is exact arithmetic). Forcing it then
        does not apply to that op. A forced backend without `quantize`, or that does not claim a
        call of CLAIMABLE_OPS, is refused instead (strict)."""
        if call.op != "dequantize":
            return False
        backend = self.load(entry) if entry.serves(call.device.type) else None
        return backend is not None and backend.dequantize is None

    def lookup(self, *key) -> Callable:
        """The callable serving the call (op, device, hp_dtype, element_dtype, scale_mode,
        scale_layout, backend, *selection.overrides()); resolves and caches it on a miss."""
        fn = self.cache.get(key)
        if fn is None:
            with self._lock:  # so a plugin (un)registered meanwhile cannot leave a stale entry
                fn = self.cache.get(key)
                if fn is None:
                    op, device, hp, element, mode, layout, backend = key[:7]
                    chosen = self.resolve(Call(op, device, hp, element, mode, layout), *selection(backend))
                    fn = getattr(chosen, op)
                    self.cache[key] = fn
        return fn

    def remember_derived(self, key, value, base_key, base) -> None:
        """cache[key] = value, something derived from `base`, the callable cached at base_key,
        unless a plugin (un)registered meanwhile changed that (the lock, as in lookup). Past 8192
        entries the cache is emptied first (derived keys are per input shape)."""
        with self._lock:
            if self.cache.get(base_key) is base:
                if len(self.cache) > 8192:
                    self.cache.clear()
                    self.cache[base_key] = base
                self.cache[key] = value
                self.prepared = True

    def resolved_name(self, call: Call) -> str:
        """Name of the backend that serves `call` under the current overrides (uncached)."""
        return self.resolve(call, *selection()).name

    def _by_priority(self, call: Call) -> list[Entry]:
        def priority(entry: Entry) -> int:
            backend = self.load(entry) if entry.serves(call.device.type) else None
            return backend.priority if backend is not None else -(2**31)

        return sorted(self.entries(), key=lambda e: (-priority(e), e.name))

    def _candidates(self, call: Call, allowed: frozenset) -> list[tuple[str, str, str]]:
        rows = []
        for entry in self._by_priority(call):
            refusal = self.status(entry, call)
            status = refusal.text if refusal else "ok"
            if refusal is None and not deviations_allowed(entry.backend, allowed):
                codes = ", ".join(d.code for d in entry.backend.deviations)
                status = f"declares deviations ({codes}); not chosen automatically unless allowed via {ENV_ALLOW}"
            rows.append((entry.name, entry.origin, status))
        return rows


NEWLINE = "\n"
_WARNED: set = set()


def _warn_once(message: str) -> None:
    """A RuntimeWarning pointing at the first frame outside mxquant, once per message (counted
    once it was shown: under -W error each call raises)."""
    if message in _WARNED:
        return
    import os
    import sys
    import warnings

    here, level, frame = os.path.dirname(__file__), 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(here):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, RuntimeWarning, stacklevel=level)
    _WARNED.add(message)


def _import_spec(spec: BackendSpec) -> tuple[Optional[Backend], Optional[str]]:
    """(backend, None) or (None, why not) for a lazy BackendSpec; its import is bounded in time
    and whatever it raises is contained, as a plugin's (bounded.py)."""
    hint = f" (install: {spec.install_hint})" if spec.install_hint else ""
    timeout = probe_timeout()
    job = run_bounded(lambda: _backend_at(spec), timeout, f"mxquant-import-{spec.name}")
    if job is None:
        return None, (f"import of {spec.target} did not finish within {timeout:g} s (still running in "
                      f"the background; {ENV_PROBE_TIMEOUT} sets the limit){hint}")
    if job.raised is not None:
        return None, f"cannot import {spec.target}: {type(job.raised).__name__}: {job.raised}{hint}"
    return job.value, None


def _backend_at(spec: BackendSpec) -> Backend:
    module, _, attr = spec.target.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    obj = obj() if callable(obj) and not isinstance(obj, Backend) else obj
    if not isinstance(obj, Backend):
        raise TypeError(f"{spec.target} is a {type(obj).__name__}, not an mxquant.Backend")
    check_backend(obj)
    if obj.name != spec.name:  # selection, deviation allowances and `mxquant info` go by the spec's name
        raise TypeError(f"{spec.target} is backend {obj.name!r}, but its BackendSpec registered {spec.name!r}")
    if set(obj.capabilities.devices) != set(spec.devices):  # which calls it serves must not change on import
        raise TypeError(f"{spec.target} serves {sorted(obj.capabilities.devices)}, but its BackendSpec says "
                        f"{sorted(spec.devices)}")
    return obj


_REGISTRY = Registry()


def get_registry() -> Registry:
    return _REGISTRY


def set_registry(registry: Registry) -> Registry:
    """Install `registry` as the global one (tests); returns the previous one."""
    global _REGISTRY
    previous, _REGISTRY = _REGISTRY, registry
    return previous
