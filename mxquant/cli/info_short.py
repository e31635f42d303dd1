"""The short `mxquant info` (the default): a line per backend and device with a short reason,
plugin problems, what the default call resolves to, the environment; plain text within 80
columns. `mxquant info --full` prints everything (cli/info.py)."""

from __future__ import annotations

import re

from ..report import Report

WIDTH = 80


def fit(text: str, width: int) -> str:
    """One line of at most `width` characters (whitespace collapsed, '...' where cut)."""
    text = re.sub(r"\s*\n\s*", " ", str(text)).rstrip()
    return text if len(text) <= width else text[: max(width - 3, 0)].rstrip() + "..."


def short_reason(reason: str) -> str:
    """The reason's first clause: what comes before its first parenthesis or semicolon
    (install hints and details are for --full), unless that leaves almost nothing."""
    text = " ".join(str(reason or "").split())
    head = re.split(r" \(|; ", text, maxsplit=1)[0]
    return head if len(head) >= 8 else text


def short_lines(report: Report, width: int = WIDTH) -> list[str]:
    lines = [fit(f"mxquant {report.mxquant_version}  torch {report.torch_version}  python {report.python}  "
                 f"devices here: {', '.join(report.devices)}", width)]
    rows = []
    for b in report.backends:
        origin = "built-in" if b.origin == "built-in" else f"plugin {b.plugin}"
        prio = "?" if b.priority is None else str(b.priority)
        states = [(a.device, "available" if a.available else f"unavailable: {short_reason(a.reason)}")
                  for a in b.availability]
        if not states:
            states = [("-", f"error: {short_reason(b.error)}" if b.error else "serves no device type")]
        for i, (device, status) in enumerate(states):
            rows.append((b.name if i == 0 else "", origin if i == 0 else "", prio if i == 0 else "", device, status))
    head = ("backend", "origin", "prio", "device", "status")
    cols = [min(max(len(r[i]) for r in [head, *rows]), cap) for i, cap in enumerate((16, 16, 5, 6))]
    for row in [head, *rows]:
        cells = [fit(c, w).ljust(w) if i != 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, cols))]
        line = "  ".join(cells) + "  "
        lines.append(line + fit(row[4], width - len(line)))

    deviating = [f"{b.name} ({len(b.deviations)})" for b in report.backends if b.deviations]
    if deviating:
        lines.append(fit("declare deviations (chosen only when allowed or forced): " + ", ".join(deviating), width))
    problems = report.plugin_problems()
    loaded = [p.name for p in report.plugins if p.status == "loaded"]
    lines.append(fit(f"plugins loaded: {', '.join(loaded) or 'none'}", width))
    for p in problems:
        why = p.skipped if p.status == "skipped" else _last_line(p.error)
        lines.append(fit(f"plugin {p.name}: {p.status}: {why}", width))
    lines.append("the default call (bf16 -> e4m3, rceil, linear) resolves to")
    for r in report.resolution:
        how = f"forced by {r.forced_by}" if r.forced_by else "automatic"
        what = f"{r.backend} ({how})" if r.backend else f"none: {(r.error or '').removeprefix('mxquant: ')}"
        lines.append(fit(f"  on {r.device}: {what}", width))
    unset = [name for name, value in report.env.items() if value is None]
    for name, value in report.env.items():
        if value is not None:
            lines.append(fit(f"env {name}={value}", width))
    if unset:
        lines.append(fit(f"env unset: {', '.join(unset)}", width))
    for err in report.errors:
        lines.append(fit(f"report problem: {err}", width))
    lines.append(fit("mxquant info --full: full reasons, install hints, deviations, plugins", width))
    return lines


def _last_line(text) -> str:
    """The last non-empty line of an error (a traceback ends with the exception itself)."""
    found = [line for line in str(text or "").splitlines() if line.strip()]
    return found[-1].strip() if found else ""
