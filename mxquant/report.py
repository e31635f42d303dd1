"""The platform report: every known backend, where it came from, whether it can run here and
why not, plugin problems, which backend the default call resolves to on each local device,
and the environment variables in effect. `mxquant.list_backends()` returns it as dataclasses;
`mxquant info` prints it (a table, or JSON with `--json`; the keys are listed in docs/env.md).

Nothing here may raise because a backend or a plugin is broken: every failure becomes a
reason or an error field of the record it concerns.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import torch

from . import plugins
from .backend import Call
from .registry import ENV_ALLOW, ENV_BACKEND, Entry, Registry, get_registry, selection

ENV_PLUGINS = "MXQUANT_PLUGINS"
ENV_VARS = (ENV_BACKEND, ENV_ALLOW, ENV_PLUGINS)
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

    @property
    def available_on(self) -> list[str]:
        return [a.device for a in self.availability if a.available]


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
                DeviationRecord(str(d.code), str(d.summary), _deviation_allowed(backend.name, d.code, allowed))
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


def _deviation_allowed(backend_name: str, code: str, allowed: frozenset) -> bool:
    return bool({"*", backend_name, f"{backend_name}:{code}"} & allowed)


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
    from . import __version__

    registry = registry or get_registry()
    errors: list[str] = []
    env = {name: os.environ.get(name) for name in ENV_VARS}
    try:
        allowed = selection()[2]
    except Exception as exc:
        allowed, _ = frozenset(), errors.append(f"reading {ENV_ALLOW}: {_error_text(exc)}")
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


# ---- `mxquant info` -------------------------------------------------------------------------

def run_info(as_json: bool = False) -> int:
    """Print the report: a rich table, or JSON (stable keys, see docs/env.md). Returns 0."""
    report = list_backends()
    if as_json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _print_tables(report)
    return 0


def _print_tables(report: Report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=sys.stdout)
    console.print(f"[bold]mxquant {report.mxquant_version}[/bold]  torch {escape(report.torch_version)}  "
                  f"python {report.python}  devices here: {', '.join(report.devices)}")

    any_deviations = any(b.deviations for b in report.backends)
    table = Table(title="Backends (higher priority wins; reasons include how to install)", title_justify="left")
    for col in ("backend", "origin", "prio", "device", "status") + (("deviations",) if any_deviations else ()):
        table.add_column(col, overflow="fold")
    for b in report.backends:
        origin = "built-in" if b.origin == "built-in" else f"plugin {b.plugin}" + (
            f" ({b.distribution})" if b.distribution else "")
        head = [escape(b.name), escape(origin), "?" if b.priority is None else str(b.priority)]
        rows = [[a.device, "[green]available[/green]" if a.available
                 else f"[red]unavailable[/red]: {escape(a.reason or '')}"] for a in b.availability]
        if not rows:
            rows = [["-", f"[red]error[/red]: {escape(b.error)}" if b.error else "serves no device type"]]
        deviations = "\n".join(f"{escape(d.code)}{' (allowed)' if d.allowed else ''}: {escape(d.summary)}"
                               for d in b.deviations) or "none"
        for i, row in enumerate(rows):
            cells = (head if i == 0 else ["", "", ""]) + row
            if any_deviations:
                cells.append(deviations if i == 0 else "")
            table.add_row(*cells, end_section=i == len(rows) - 1)
    console.print(table)

    table = Table(title="Plugins (entry-point group mxquant.backends)", title_justify="left")
    for col in ("plugin", "distribution", "entry point", "status", "backends"):
        table.add_column(col, overflow="fold")
    for p in report.plugins:
        status = {"loaded": "[green]loaded[/green]",
                  "skipped": f"[yellow]skipped[/yellow] — {escape(p.skipped or '')}",
                  "error": f"[red]error[/red] — {escape((p.error or '').strip())}"}[p.status]
        table.add_row(escape(p.name), escape(p.distribution or "(in-process)"), escape(p.value), status,
                      escape(", ".join(p.backends)))
    console.print(table)

    table = Table(title="Default call (bf16 -> e4m3, rceil, linear) resolves to", title_justify="left")
    for col in ("device", "backend", "how"):
        table.add_column(col, overflow="fold")
    for r in report.resolution:
        if r.backend:
            table.add_row(r.device, f"[green]{escape(r.backend)}[/green]", escape(r.forced_by or "automatic"))
        else:
            table.add_row(r.device, "[red]none[/red]", escape(r.error or ""))
    console.print(table)

    console.print("[bold]Environment[/bold]")
    for name, value in report.env.items():
        console.print(f"  {name}=" + (escape(value) if value is not None else "(unset)"))
    for err in report.errors:
        console.print(f"[red]report problem:[/red] {escape(err)}")
