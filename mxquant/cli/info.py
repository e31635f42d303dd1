"""`mxquant info`: what is available here and why not: short by default (cli/info_short.py),
tables with everything under --full, JSON with --json (its keys are listed in docs/env.md).
The data comes from mxquant.list_backends()."""

from __future__ import annotations

import json
import sys

from ..report import Report, list_backends
from .info_short import short_lines
from .render import stdout_console, stdout_for_json_only


def add_parser(sub) -> None:
    what = "backends, their availability and reasons, and the device resolution"
    p = sub.add_parser("info", help=what, description=what)
    p.add_argument("--json", action="store_true",
                   help="machine-readable output; its keys are listed in docs/env.md")
    p.add_argument("--full", "-v", "--verbose", action="store_true",
                   help="everything: full reasons with install hints, deviations, plugin details")
    p.set_defaults(run=run)


def run(args) -> int:
    """Print the report; returns 0 (a broken backend or plugin is a line of the report)."""
    if args.json:
        with stdout_for_json_only():
            report = list_backends()
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.full:
        _print_tables(list_backends())
    else:
        print("\n".join(short_lines(list_backends())))
    return 0


def _print_tables(report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console(unwrapped=False)  # cells of whole paragraphs: wrapped in their column
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
    table = Table(title="What each backend is", title_justify="left")
    for col in ("backend", "description"):
        table.add_column(col, overflow="fold")
    for b in report.backends:  # cpu-native's description names the instruction set it picked
        table.add_row(escape(b.name), escape(b.description or "-"))
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
