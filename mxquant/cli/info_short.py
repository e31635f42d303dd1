"""The short `mxquant info` (the default): a line per backend and device with a short reason,
plugin problems, the calls beyond mxfp8 quantize / dequantize each backend claims, what the default call resolves to (and how that backend runs: cpu-native's
instruction set), the environment; plain text within 80 columns, long text wrapped, never cut. `mxquant info --full` prints everything (cli/info.py)."""

from __future__ import annotations

import re
import textwrap

from ..report import Report

WIDTH = 80


def wrap(text, width: int, indent: str = "") -> list[str]:
    """The whole text (line breaks joined) in lines of at most `width` characters, lines after
    the first indented by `indent`; a word longer than a line is split, never cut off."""
    text = re.sub(r"\s*\n\s*", " ", str(text or "")).rstrip()
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def short_reason(reason: str) -> str:
    """The reason's first clause: what comes before its first parenthesis or semicolon
    (install hints and details are for --full), unless that leaves almost nothing."""
    text = " ".join(str(reason or "").split())
    head = re.split(r" \(|; ", text, maxsplit=1)[0]
    return head if len(head) >= 8 else text


def _table(rows: list[tuple[str, ...]], caps: tuple[int, ...], width: int) -> list[str]:
    """Rows of cells in columns (the last takes what is left of `width`); a cell longer than its
    column wraps inside it, so every cell is shown whole."""
    cols = [min(max(len(r[i]) for r in rows), cap) for i, cap in enumerate(caps)]
    rest = max(width - sum(cols) - 2 * len(cols), 20)
    lines = []
    for row in rows:
        cells = [wrap(c, w) for c, w in zip(row, cols)] + [wrap(row[-1], rest)]
        for i in range(max(map(len, cells))):
            parts = [(cell[i] if i < len(cell) else "") for cell in cells]
            lines.append("  ".join(p.rjust(w) if j == 2 else p.ljust(w)
                                   for j, (p, w) in enumerate(zip(parts, cols))) + "  " + parts[-1])
    return [line.rstrip() for line in lines]


def short_lines(report: Report, width: int = WIDTH) -> list[str]:
    lines = wrap(f"mxquant {report.mxquant_version}  torch {report.torch_version}  python {report.python}  "
                 f"devices here: {', '.join(report.devices)}", width, "  ")
    rows = [("backend", "origin", "prio", "device", "status")]
    for b in report.backends:
        origin = "built-in" if b.origin == "built-in" else f"plugin {b.plugin}"
        prio = "?" if b.priority is None else str(b.priority)
        states = [(a.device, "available" if a.available else f"unavailable: {short_reason(a.reason)}")
                  for a in b.availability]
        if not states:
            states = [("-", f"error: {short_reason(b.error)}" if b.error else "serves no device type")]
        for i, (device, status) in enumerate(states):
            rows.append((b.name if i == 0 else "", origin if i == 0 else "", prio if i == 0 else "", device, status))
    lines += _table(rows, (16, 16, 5, 6), width)
    lines += calls_lines(report, width)
    deviating = [f"{b.name} ({len(b.deviations)})" for b in report.backends if b.deviations]
    if deviating:
        lines += wrap("declare deviations (chosen only when allowed or forced): " + ", ".join(deviating), width, "  ")
    loaded = [p.name + ("" if p.backends else " (registered no backend)") for p in report.plugins
              if p.status == "loaded"]
    lines += wrap(f"plugins loaded: {', '.join(loaded) or 'none'}", width, "  ")
    for p in report.plugin_problems():
        why = p.skipped if p.status == "skipped" else _last_line(p.error)
        lines += wrap(f"plugin {p.name}: {p.status}: {why}", width, "  ")
    lines.append("the default call (bf16 -> e4m3, rceil, linear) resolves to")
    described = {b.name: b.description for b in report.backends}
    for r in report.resolution:
        how = f"forced by {r.forced_by}" if r.forced_by else "automatic"
        what = f"{r.backend} ({how})" if r.backend else f"none: {(r.error or '').removeprefix('mxquant: ')}"
        if r.backend and described.get(r.backend):  # what it is: cpu-native's instruction set, say
            what += f": {described[r.backend]}"
        lines += wrap(f"  on {r.device}: {what}", width, "    ")
    unset = [name for name, value in report.env.items() if value is None]
    for name, value in report.env.items():
        if value is not None:
            lines += wrap(f"env {name}={value}", width, "  ")
    if unset:
        lines += wrap(f"env unset: {', '.join(unset)}", width, "  ")
    for err in report.errors:
        lines += wrap(f"report problem: {err}", width, "  ")
    lines += wrap("mxquant info --full: full reasons, install hints, deviations, plugins", width)
    return lines


CALL_NAMES = {  # backend.CLAIMABLE_OPS -> what the public call is (docs/semantics.md)
    "quantize_colwise": "column-wise", "quantize_rowcol": "row+column", "quantize_2d": "32x32",
    "quantize_grouped": "grouped", "quantize_grouped_colwise": "K-groups",
    "mxfp4_quantize": "mxfp4", "mxfp4_dequantize": "mxfp4 dequant",
    "nvfp4_quantize": "nvfp4", "nvfp4_dequantize": "nvfp4 dequant",
}


def calls_lines(report: Report, width: int) -> list[str]:
    """Which calls beyond mxfp8 quantize / dequantize each backend claims (capabilities.ops),
    backends with the same set on one line; none for a backend that could not be described."""
    groups: dict[tuple, list[str]] = {}
    for b in report.backends:
        if b.capabilities is not None:
            claimed = b.capabilities.get("ops") or ()
            ops = tuple(CALL_NAMES[op] for op in CALL_NAMES if op in claimed)
            ops += tuple(sorted(op for op in claimed if op not in CALL_NAMES))  # a newer op: its own name
            groups.setdefault(ops, []).append(b.name)
    if not groups:
        return []
    lines = ["calls beyond mxfp8 quantize / dequantize:"]
    for ops, names in groups.items():
        lines += wrap(f"  {', '.join(names)}: {', '.join(ops) or 'none'}", width, "    ")
    return lines


def _last_line(text) -> str:
    """The last non-empty line of an error (a traceback ends with the exception itself)."""
    found = [line for line in str(text or "").splitlines() if line.strip()]
    return found[-1].strip() if found else ""
