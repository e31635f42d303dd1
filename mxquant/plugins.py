"""Plugin discovery: the `mxquant.backends` entry-point group, MXQUANT_PLUGINS, and the one
isolated way a plugin's `register_backends` hook is called.

mxquant's own backends register the same way (entry point `builtin` of the distribution
`mxquant`). Entry points load on first resolution, never at `import mxquant`; a plugin that
fails to import or register becomes a reported problem, never an exception out of the library.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Optional

import pluggy

from .hookspecs import ENTRY_POINT_GROUP, PROJECT, HookSpecs

ENV_PLUGINS = "MXQUANT_PLUGINS"
BUILTIN_DISTRIBUTION = "mxquant"


@dataclass
class PluginRecord:
    name: str  # entry-point name (or the name given to register_plugin)
    distribution: Optional[str]  # None for plugins registered in-process
    value: str  # what the entry point points at
    error: Optional[str] = None  # why it failed to load or register, if it did
    skipped: Optional[str] = None  # why MXQUANT_PLUGINS kept it from loading, if it did

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


def plugins_setting() -> Optional[str]:
    """MXQUANT_PLUGINS as set (None when unset)."""
    return os.environ.get(ENV_PLUGINS)


def plugin_filter(value: Optional[str] = None) -> Callable[[str], Optional[str]]:
    """Parse MXQUANT_PLUGINS into a predicate name -> None (load) or a reason (skip).

    unset / "all": load every plugin;  "none": load none;  "a,b": load only a and b;
    "-a,-b": load all but a and b. Built-in backends are not plugins here: they always load.
    """
    raw = (plugins_setting() or "") if value is None else value
    items = [p.strip() for p in raw.split(",") if p.strip()]
    if not items or items == ["all"]:
        return lambda name: None
    if items == ["none"]:
        return lambda name: f"{ENV_PLUGINS}=none"
    deny = {p[1:] for p in items if p.startswith("-")}
    allow = {p for p in items if not p.startswith("-")}
    if deny and allow:
        raise ValueError(f"{ENV_PLUGINS}={raw!r} mixes allowed and denied names; use one or the other")

    def decide(name: str) -> Optional[str]:
        if deny:
            return f"denied by {ENV_PLUGINS}={raw}" if name in deny else None
        return None if name in allow else f"not listed in {ENV_PLUGINS}={raw}"

    return decide


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(HookSpecs)
    return pm


def discover(pm: pluggy.PluginManager) -> list[PluginRecord]:
    """Load every entry point of the group into `pm` (those MXQUANT_PLUGINS lets through);
    return a record for each."""
    records: list[PluginRecord] = []
    try:
        decide = plugin_filter()
    except ValueError as exc:
        decide = lambda name, msg=str(exc): msg  # noqa: E731  (bad setting: load no third-party plugin)
    for ep in sorted(_entry_points(records), key=lambda e: e.name):
        try:
            dist = ep.dist.name if ep.dist is not None else None
        except Exception:  # unreadable METADATA
            dist = None
        rec = PluginRecord(ep.name, dist, ep.value)
        records.append(rec)
        if not rec.builtin:
            rec.skipped = decide(ep.name)
            if rec.skipped:
                continue
        if pm.has_plugin(ep.name):
            rec.error = f"another plugin is already registered under the name {ep.name!r}"
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin is reported, never raised
            rec.error = f"failed to load {ep.value}: {type(exc).__name__}: {exc}"
    return records


def _entry_points(records: list[PluginRecord]) -> list:
    """The group's entry points. One distribution with an unparsable entry_points.txt makes
    `metadata.entry_points()` raise for everyone; then read them distribution by distribution
    and report the unreadable one instead."""
    try:
        return list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:
        pass
    found, seen = [], set()
    for dist in metadata.distributions():
        try:
            name = dist.name
        except Exception:
            name = None
        key = (name or "").lower().replace("-", "_").replace(".", "_")
        if key and key in seen:  # the first distribution of a name on sys.path wins, as in entry_points()
            continue
        seen.add(key)
        try:
            found.extend(dist.entry_points.select(group=ENTRY_POINT_GROUP))
        except Exception as exc:
            records.append(PluginRecord(f"<{name or dist}>", name, "entry_points.txt",
                                        error=f"unreadable entry-point metadata: {type(exc).__name__}: {exc}"))
    return found


def call_hooks(pm: pluggy.PluginManager, records: list[PluginRecord], register_for: Callable,
               only: Optional[str] = None) -> None:
    """Run each plugin's register_backends on its own (only plugin `only`, if given), so one
    failing plugin spoils nothing else; `register_for(record)` gives the callback to hand it.
    Built-in backends register first, so no plugin can take a built-in backend's name."""
    by_name = {r.name: r for r in records}
    impls = [i for i in pm.hook.register_backends.get_hookimpls() if only is None or i.plugin_name == only]
    impls.sort(key=lambda i: not (i.plugin_name in by_name and by_name[i.plugin_name].builtin))
    for impl in impls:
        rec = by_name.get(impl.plugin_name)
        if rec is None:
            rec = by_name[impl.plugin_name] = PluginRecord(impl.plugin_name, None, repr(impl.plugin))
            records.append(rec)
        try:
            impl.function(register=register_for(rec))
        except Exception as exc:
            rec.error = f"register_backends raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
