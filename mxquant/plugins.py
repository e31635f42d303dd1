"""Plugin discovery: the `mxquant.backends` entry-point group, MXQUANT_PLUGINS, and the one
isolated way a plugin's `register_backends` hook is called.

mxquant's own backends register the same way (entry point `builtin` of the distribution
`mxquant`). Entry points load on first resolution, never at `import mxquant`; a plugin that
fails to import or register becomes a reported problem, never an exception out of the library.
A plugin's import and its hook each run on a thread of their own (bounded.py), waited for at
most MXQUANT_PROBE_TIMEOUT seconds; whatever they raise, SystemExit and KeyboardInterrupt
included, is the plugin's failure (a real Ctrl-C reaches the waiting main thread and stops the
caller as usual). An import that did not finish is not started again in this process: a later
discovery waits for the same one.
"""

from __future__ import annotations

import os
import threading
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Optional

import pluggy

from . import forking
from .bounded import Job, run_bounded
from .hookspecs import ENTRY_POINT_GROUP, PROJECT, HookSpecs
from .selection import ENV_PROBE_TIMEOUT, probe_timeout

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
    keywords = [p for p in items if p.lower() in ("all", "none")]
    if keywords and len(items) > 1:
        raise ValueError(f"{ENV_PLUGINS}={raw!r}: {keywords[0]!r} stands alone; name plugins without it")
    if not items or [p.lower() for p in items] == ["all"]:
        return lambda name: None
    if [p.lower() for p in items] == ["none"]:
        return lambda name: f"{ENV_PLUGINS}=none"
    deny = {p[1:].strip() for p in items if p.startswith("-")}
    allow = {p for p in items if not p.startswith("-")}
    if deny and allow:
        raise ValueError(f"{ENV_PLUGINS}={raw!r} mixes allowed and denied names; use one or the other")

    def decide(name: str) -> Optional[str]:
        if deny:
            return f"denied by {ENV_PLUGINS}={raw}" if name in deny else None
        return None if name in allow else f"not listed in {ENV_PLUGINS}={raw}"

    decide.names = deny | allow  # (discover reports those no installed plugin is called)
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
        records.append(PluginRecord(f"<{ENV_PLUGINS}>", None, ENV_PLUGINS, error=f"{exc}; no third-party plugin loaded"))
    found = []
    for ep in _entry_points(records):
        try:
            dist = ep.dist.name if ep.dist is not None else None
        except Exception:  # unreadable METADATA
            dist = None
        found.append((ep, dist))
    # mxquant's own first: a third-party entry point that takes its name ("builtin") is the one refused
    for ep, dist in sorted(found, key=lambda f: (f[1] != BUILTIN_DISTRIBUTION, f[0].name)):
        rec = PluginRecord(ep.name, dist, ep.value)
        records.append(rec)
        if not rec.builtin:
            rec.skipped = decide(ep.name)
            if rec.skipped:
                continue
        if pm.has_plugin(ep.name):
            rec.error = f"another plugin is already registered under the name {ep.name!r}"
            continue
        job = _load(ep)
        if job is None:
            rec.error = (f"import of {ep.value} did not finish within {_seconds()} (still running in the "
                         f"background; {ENV_PROBE_TIMEOUT} sets the limit)")
        elif job.raised is not None:  # a broken plugin is reported, never raised
            rec.error = f"failed to load {ep.value}: {_describe(job.raised)}"
        else:
            try:
                pm.register(job.value, name=ep.name)
            except Exception as exc:  # not a valid pluggy plugin
                rec.error = f"failed to register {ep.value}: {_describe(exc)}"
                continue
            rec.error = hook_problem(pm, ep.name, job.value, ep.value)
            if rec.error:
                pm.unregister(name=ep.name)
    unknown = sorted(set(getattr(decide, "names", ())) - {ep.name for ep, _ in found})
    for name in unknown:  # a typo there would skip nothing, or load nothing, silently
        records.append(PluginRecord(f"<{name}>", None, ENV_PLUGINS,
                                    error=f"{ENV_PLUGINS} names {name!r}, but no installed plugin is called that"))
    return records


def hook_problem(pm: pluggy.PluginManager, name: str, plugin: object, where: str) -> Optional[str]:
    """Why plugin `name` (just registered in `pm`) can register no backend, if it cannot: it
    implements no register_backends hook (an unmarked function of that name, most often), or
    implements it as a wrapper (pluggy then never runs its body as a hook)."""
    impls = [i for i in pm.hook.register_backends.get_hookimpls() if i.plugin_name == name]
    if not impls:
        plain = callable(getattr(plugin, "register_backends", None))
        return (f"{where} implements no register_backends hook" +
                (": its register_backends function is not marked with @mxquant.hookimpl" if plain else ""))
    if any(i.hookwrapper or getattr(i, "wrapper", False) for i in impls):
        return f"{where}: register_backends is marked as a wrapper; use a plain @mxquant.hookimpl"
    return None


_LOADING: dict[str, Job] = {}
"""Entry-point value -> its import, while it has not finished."""
_LOADING_LOCK = threading.Lock()


def _load(ep) -> Optional[Job]:
    """The finished import of `ep` (.value, or .raised), or None if it did not finish in time."""
    with _LOADING_LOCK:
        job = _LOADING.get(ep.value)
        if job is None or job.lost():
            job = _LOADING[ep.value] = Job(ep.load, f"mxquant-plugin-import-{ep.name}")
    if not job.wait(probe_timeout()):
        return None
    with _LOADING_LOCK:
        if _LOADING.get(ep.value) is job:
            del _LOADING[ep.value]
    return job


def _forget_imports() -> None:
    """In a forked child: the parent's import threads do not exist here."""
    global _LOADING_LOCK
    _LOADING.clear()
    _LOADING_LOCK = threading.Lock()


forking.renew_in_child(_forget_imports)


def _seconds() -> str:
    timeout = probe_timeout()
    return "the time limit" if timeout is None else f"{timeout:g} s"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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


def call_hooks(pm: pluggy.PluginManager, records: list[PluginRecord], make_entry: Callable, add: Callable,
               only: Optional[str] = None) -> None:
    """Run each plugin's register_backends on its own (only plugin `only`, if given), so one
    failing plugin spoils nothing else. The hook runs on a thread of its own, bounded in time:
    its `register(obj)` calls `make_entry(record, obj, pending)` (which checks obj, raising into
    the hook if it is wrong, and reads the registry without taking its lock: the caller holds it)
    and collects the entries; `add(entries)` adds them once the hook has returned. A hook that
    does not return in time adds nothing. Built-in backends register first, so no plugin can take
    a built-in backend's name."""
    by_name = {r.name: r for r in records}
    impls = [i for i in pm.hook.register_backends.get_hookimpls() if only is None or i.plugin_name == only]
    impls.sort(key=lambda i: not (i.plugin_name in by_name and by_name[i.plugin_name].builtin))
    for impl in impls:
        rec = by_name.get(impl.plugin_name)
        if rec is None:
            rec = by_name[impl.plugin_name] = PluginRecord(impl.plugin_name, None, repr(impl.plugin))
            records.append(rec)
        pending: list = []
        waiting = [True]

        def register(obj, rec=rec, pending=pending, waiting=waiting) -> None:
            if not waiting[0]:
                raise RuntimeError(f"plugin {rec.name!r} called register() after mxquant stopped waiting for its "
                                   f"register_backends ({ENV_PROBE_TIMEOUT}); nothing it registers is used")
            pending.append(make_entry(rec, obj, pending))

        job = run_bounded(lambda f=impl.function, r=register: f(register=r), probe_timeout(),
                          f"mxquant-plugin-hook-{impl.plugin_name}")
        waiting[0] = False
        if job is None:
            rec.error = (f"register_backends did not return within {_seconds()} (still running in the background; "
                         f"{ENV_PROBE_TIMEOUT} sets the limit); none of its backends is registered")
            continue
        add(pending)  # what it registered before failing, if it failed, counts (as it always did)
        if job.raised is None and job.value is not None:  # a generator, a coroutine, a list of backends
            close = getattr(job.value, "close", None)
            if callable(close) and hasattr(job.value, "send"):
                close()  # (an unstarted generator or coroutine: nothing of it runs)
            rec.error = (f"register_backends returned a {type(job.value).__name__}: it must call register(backend) "
                         "for each backend and return None (not a list, a generator or a coroutine)")
        if job.raised is not None:
            trace = "".join(traceback.format_exception(type(job.raised), job.raised, job.raised.__traceback__, limit=-3))
            rec.error = f"register_backends raised {_describe(job.raised)}\n{trace}"
