"""The platform report as data: every known backend, where it came from, whether it can run
here and why not, plugin problems, what the default call resolves to on each local device,
and the environment in effect. `mxquant.list_backends()` returns it; `mxquant info` prints it
(mxquant/cli/info.py; the JSON keys are listed in docs/env.md). Nothing here raises because a
backend or plugin is broken: each failure becomes a reason or an error field."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import torch

from . import plugins
from ._version import __version__
from .backend import Call
from .registry import Entry, Registry, get_registry
from .selection import ENV_ALLOW, deviation_allowed, environment, selection
SCHEMA_VERSION = 1
"""Bumped when a key of the JSON output is removed or changes meaning (adding keys does not)."""

DEFAULT_CALL = dict(op="quantize", hp_dtype=torch.bfloat16, element_dtype=torch.float8_e4m3fn,
                    scale_mode="rceil", scale_layout="linear")
"""The call `resolution` reports: mxfp8_quantize(bf16 x) with every default (e4m3, rceil, linear)."""


@dataclass
class Availability:
    device: str
    """Device type ("cpu", "cuda", "xpu", ...); the probe ran on torch.device(type, 0) (or "cpu")."""
    available: bool
    reason: Optional[str] = None
    """Why not, when not available (the probe's answer, or the import error)."""


@dataclass
class DeviationRecord:
    code: str
    summary: str
    allowed: bool
    """Whether the current MXQUANT_ALLOW_DEVIATIONS / allow_deviations() allow it."""


@dataclass
class BackendRecord:
    name: str
    origin: str
    """"built-in" or "plugin"."""
    plugin: str
    """Name of the plugin (entry point) that registered it; "builtin" for mxquant's own."""
    distribution: Optional[str]
    """Python distribution the plugin comes from ("mxquant" for built-ins; None in-process)."""
    priority: Optional[int]
    """Higher wins in automatic choice; None when the backend could not be imported."""
    devices: list[str]
    capabilities: Optional[dict]
    """Capabilities.describe(); None when the backend could not be imported."""
    availability: list[Availability]
    deviations: list[DeviationRecord]
    install_hint: str = ""
    description: str = ""
    error: Optional[str] = None
    """Why the backend could not be imported or described (its probe reasons say so too)."""


@dataclass
class PluginInfo:
    name: str
    """Entry-point name: what MXQUANT_PLUGINS names."""
    distribution: Optional[str]
    value: str
    """What the entry point points at (module)."""
    builtin: bool
    status: str
    """"loaded", "error" or "skipped"."""
    error: Optional[str] = None
    skipped: Optional[str] = None
    backends: list[str] = field(default_factory=list)


@dataclass
class Resolution:
    device: str
    call: str
    backend: Optional[str]
    """The backend the default call resolves to on this device; None when none can."""
    forced_by: Optional[str] = None
    """"the backend= argument", "mxquant.use_backend()", "MXQUANT_BACKEND=..."; None if automatic."""
    error: Optional[str] = None


@dataclass
class Report:
    """What `mxquant info` prints. Iterating it yields the BackendRecords."""

    mxquant_version: str
    torch_version: str
    python: str
    devices: list[str]
    """Device types present here: "cpu", plus "cuda" / "xpu" when torch sees one."""
    backends: list[BackendRecord]
    plugins: list[PluginInfo]
    resolution: list[Resolution]
    env: dict
    """MXQUANT_BACKEND, MXQUANT_ALLOW_DEVIATIONS, MXQUANT_PLUGINS -> value, or None when unset."""
    errors: list[str] = field(default_factory=list)
    """Problems of the report itself (it still printed what it could)."""
    schema_version: int = SCHEMA_VERSION

    def __iter__(self) -> Iterator[BackendRecord]:
        return iter(self.backends)

    def __len__(self) -> int:
        return len(self.backends)

    def backend(self, name: str) -> BackendRecord:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)

    def plugin_problems(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.status != "loaded"]

    def to_dict(self) -> dict:
        return asdict(self)


# ---- collection -----------------------------------------------------------------------------

def local_device_types() -> list[str]:
    found = ["cpu"]
    for kind in ("cuda", "xpu"):
        try:
            module = getattr(torch, kind, None)
            if module is not None and module.is_available():
                found.append(kind)
        except Exception:
            pass
    return found


def _probe_device(device_type: str) -> torch.device:
    return torch.device("cpu") if device_type == "cpu" else torch.device(device_type, 0)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _backend_record(registry: Registry, entry: Entry, allowed: frozenset) -> BackendRecord:
    rec = entry.plugin
    spec = entry.spec
    record = BackendRecord(
        name=entry.name,
        origin="built-in" if rec.builtin else "plugin",
        plugin=rec.name,
        distribution=rec.distribution,
        priority=None,
        devices=list(spec.devices) if spec is not None else [],
        capabilities=None,
        availability=[],
        deviations=[],
        install_hint=spec.install_hint if spec is not None else "",
    )
    try:
        backend = registry.load(entry)
        if backend is None:
            record.error = entry.load_error
        else:
            record.priority = int(backend.priority)
            record.devices = sorted(backend.capabilities.devices)
            record.capabilities = backend.capabilities.describe()
            record.description = str(backend.description or "")
            record.install_hint = str(backend.install_hint or record.install_hint)
            record.deviations = [
                DeviationRecord(str(d.code), str(d.summary), deviation_allowed(backend.name, d.code, allowed))
                for d in backend.deviations]
    except Exception as exc:  # a malformed Backend object
        record.error = f"cannot describe backend {entry.name!r}: {_error_text(exc)}"
    for device_type in record.devices:
        try:
            reason = registry.probe(entry, _probe_device(device_type))
        except Exception as exc:  # e.g. a device type torch does not know
            reason = f"cannot probe device type {device_type!r}: {_error_text(exc)}"
        record.availability.append(Availability(device_type, reason is None, reason))
    return record


def _plugin_info(rec: plugins.PluginRecord, entries: list[Entry]) -> PluginInfo:
    status = "skipped" if rec.skipped else "error" if rec.error else "loaded"
    return PluginInfo(rec.name, rec.distribution, rec.value, rec.builtin, status, rec.error, rec.skipped,
                      [e.name for e in entries if e.plugin is rec])


def _resolution(registry: Registry, device_type: str) -> Resolution:
    device = _probe_device(device_type)
    call = Call(DEFAULT_CALL["op"], device, DEFAULT_CALL["hp_dtype"], DEFAULT_CALL["element_dtype"],
                DEFAULT_CALL["scale_mode"], DEFAULT_CALL["scale_layout"])
    res = Resolution(device_type, call.describe(), None)
    try:
        forced, forced_by, allowed = selection()
        res.forced_by = forced_by or None
        res.backend = registry.resolve(call, forced, forced_by, allowed).name
    except Exception as exc:
        res.error = str(exc).splitlines()[0] if str(exc) else _error_text(exc)
    return res


def list_backends(registry: Optional[Registry] = None) -> Report:
    """The platform report (see `Report`); `for b in mxquant.list_backends()` yields BackendRecords."""
    registry = registry or get_registry()
    errors: list[str] = []
    env = {**environment(), plugins.ENV_PLUGINS: plugins.plugins_setting()}
    try:
        allowed = selection()[2]
    except Exception as exc:
        allowed, _ = frozenset(), errors.append(f"reading {ENV_ALLOW}: {_error_text(exc)}")
    try:  # the CPU output cache's size: a wrong value fails the CPU backends' large calls
        from .backends._cpu_pool import cache_limit

        cache_limit()
    except Exception as exc:
        errors.append(_error_text(exc))
    try:
        entries = registry.entries()
        records = registry.plugin_records()
    except Exception as exc:
        entries, records = [], []
        errors.append(f"plugin discovery failed: {_error_text(exc)}")
    backends = []
    for entry in entries:
        try:
            backends.append(_backend_record(registry, entry, allowed))
        except Exception as exc:
            errors.append(f"backend {entry.name!r}: {_error_text(exc)}")
    devices = local_device_types()
    return Report(
        mxquant_version=__version__,
        torch_version=str(torch.__version__),
        python=sys.version.split()[0],
        devices=devices,
        backends=backends,
        plugins=[_plugin_info(r, entries) for r in records],
        resolution=[_resolution(registry, d) for d in devices],
        env=env,
        errors=errors,
    )
