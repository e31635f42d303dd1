"""The verify engine: every registered backend against the reference, byte for byte, on the
devices this machine has, over the inputs of inputs.py (training_inputs.py for the training and
MoE calls), for every combination the backend declares. Each combination is pass, deviation
(every differing block explained by a declared deviation, deviation_rules.py), fail (an
undeclared difference, an exception, or a broken shape/dtype/contiguity), unavailable or
not-supported. The comparisons are compare.py's and verify_training.py's; docs/backends.md has
the details.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Optional

import torch

from .._version import __version__
from ..backend import CLAIMABLE_OPS, TRAINING_OPS
from ..formats import (ELEMENT_FORMATS, INPUT_DTYPES, MXFP4_SCALE_MODES, NVFP4_SCALE_MODES, OUTPUT_DTYPES, SCALE_LAYOUTS,
                       SCALE_MODES)
from ..selection import normalize_name
from ..registry import Entry, Registry, get_registry
from ..report import local_device_types
from .compare import (DEVIATION, FAIL, MAX_EXAMPLES, NOT_SUPPORTED, PASS, SCHEMA_VERSION, UNAVAILABLE, Result,  # noqa: F401
                      Target, check_dequantize, check_quantize)
from .deviation_rules import DEVIATION_RULES
from .one_check import check_call, not_supported  # noqa: F401 - check_call: verify's public name too
from .parallel_checks import run_in_workers


# ---- the run --------------------------------------------------------------------------------

def _local_devices() -> list[torch.device]:
    return [torch.device("cpu") if t == "cpu" else torch.device(t, 0) for t in local_device_types()]


def _combinations():
    for hp, dt, mode, layout in itertools.product(INPUT_DTYPES, ELEMENT_FORMATS, SCALE_MODES, SCALE_LAYOUTS):
        yield "quantize", hp, dt, mode, layout
    for dt, layout, out in itertools.product(ELEMENT_FORMATS, SCALE_LAYOUTS, OUTPUT_DTYPES):
        yield "dequantize", out, dt, None, layout
    for op, hp, dt, mode in itertools.product(TRAINING_OPS, INPUT_DTYPES, ELEMENT_FORMATS, SCALE_MODES):
        layouts = SCALE_LAYOUTS if op in ("quantize_colwise", "quantize_rowcol") else (
            ("linear",) if op == "quantize_2d" else ("swizzled",))
        for layout in layouts:
            yield op, hp, dt, mode, layout
    e2m1 = torch.float4_e2m1fn_x2
    for fmt, modes in (("mxfp4", MXFP4_SCALE_MODES), ("nvfp4", NVFP4_SCALE_MODES)):
        for hp, mode, layout in itertools.product(INPUT_DTYPES, modes, SCALE_LAYOUTS):
            yield f"{fmt}_quantize", hp, e2m1, mode, layout
        for out, layout in itertools.product(OUTPUT_DTYPES, SCALE_LAYOUTS):
            yield f"{fmt}_dequantize", out, e2m1, None, layout


def claimed_combinations(backend) -> list:
    """The (op, input / output dtype, element dtype, mode, layout) combinations verify checks on
    `backend`: every one, but none of a call it does not claim at all (no rows: info's
    capabilities say so)."""
    return [c for c in _combinations() if not (c[0] in CLAIMABLE_OPS and c[0] not in backend.capabilities.ops)]


def verify_entry(registry: Registry, entry: Entry, seed: int, progress=None,
                 jobs: int = 1) -> tuple[list[Target], list[Result]]:
    """progress(backend, device, done, total), if given, after each check of an available target
    (the first check of a GPU backend compiles kernels: minutes on a fresh machine). jobs > 1:
    the checks of each target in that many worker processes (parallel_checks.py)."""
    targets, results = [], []
    backend = registry.load(entry)
    served = sorted(backend.capabilities.devices) if backend is not None else list(entry.spec.devices if entry.spec else ())
    local = {d.type: d for d in _local_devices()}
    for device_type in served:
        try:
            device = local.get(device_type) or torch.device(device_type, 0)
            reason = registry.probe(entry, device)
        except Exception as exc:  # e.g. a device type this torch does not know
            device, reason = device_type, f"cannot probe device type {device_type!r}: {type(exc).__name__}: {exc}"
        if reason is None and device_type not in local:
            reason = f"no {device_type} device here"
        declared = [] if backend is None else [
            {"code": d.code, "summary": d.summary,
             "rule": DEVIATION_RULES[d.code][0] if d.code in DEVIATION_RULES else None} for d in backend.deviations]
        targets.append(Target(entry.name, str(device), reason is None, reason, declared))
        if reason is not None:
            results.append(Result(entry.name, str(device), None, None, None, None, None, UNAVAILABLE, reason))
            continue
        todo = claimed_combinations(backend)
        if jobs > 1:  # the combinations it declares it cannot serve are answered here, the rest in workers
            mine = [not_supported(backend, device, c) for c in todo]
            answered = sum(r is not None for r in mine)
            if answered == len(todo) and progress is not None:
                progress(entry.name, str(device), answered, len(todo))
            theirs = iter(run_in_workers(entry.name, device, [c for c, r in zip(todo, mine) if r is None], seed, jobs,
                                         progress, start=answered, total=len(todo)))
            results += [r if r is not None else next(theirs) for r in mine]
            continue
        for done, (op, hp, dt, mode, layout) in enumerate(todo, 1):
            results.append(check_call(backend, device, op, hp, dt, mode, layout, seed))
            if progress is not None:
                progress(entry.name, str(device), done, len(todo))
    return targets, results


REFERENCE_BACKEND = "cpu"
"""The built-in backend that is mxquant/reference.py itself."""


def collect(backends: Optional[list[str]] = None, seed: int = 0, registry: Optional[Registry] = None,
            progress=None, jobs: int = 1) -> dict:
    """Run the checks; returns the JSON-able report (what `mxquant verify --json` prints).
    progress, jobs: as for verify_entry."""
    if jobs > 1 and registry is not None and registry is not get_registry():
        raise ValueError("collect(jobs > 1) runs the checks in fresh processes, which see the global registry "
                         "only (entry points, MXQUANT_PLUGINS): pass jobs=1 with a registry of your own")
    registry = registry or get_registry()
    entries = registry.entries()
    errors = []
    if backends:
        known = {e.name.lower(): e.name for e in entries}  # as forcing a backend does: trimmed, case-folded
        wanted = {normalize_name(name) for name in backends}
        errors = [f"unknown backend {name!r} (known: {', '.join(sorted(known.values()))})" for name in backends
                  if normalize_name(name) not in known]
        entries = [e for e in entries if e.name.lower() in wanted]
    targets, results = [], []
    for entry in entries:
        t, r = verify_entry(registry, entry, seed, progress, jobs)
        targets += t
        results += r
    summary = {s: sum(r.status == s for r in results) for s in (PASS, DEVIATION, FAIL, UNAVAILABLE, NOT_SUPPORTED)}
    ran = {t.backend for t in targets if t.available}
    return {
        "schema_version": SCHEMA_VERSION,
        "mxquant_version": __version__,
        "torch_version": str(torch.__version__),
        "seed": seed,
        "devices": [str(d) for d in _local_devices()],
        "ok": summary[FAIL] == 0 and not errors,
        # True when the built-in cpu backend (the reference itself) was all that could run here:
        # then nothing was compared but the oracle with itself
        "only_reference": ran == {REFERENCE_BACKEND},
        "summary": summary,
        "errors": errors,
        "targets": [asdict(t) for t in targets],
        "results": [asdict(r) for r in results],
    }


def exit_code(report: dict) -> int:
    if report["errors"]:
        return 2
    return 1 if report["summary"][FAIL] else 0
