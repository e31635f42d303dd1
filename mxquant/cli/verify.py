"""`mxquant verify`: every available backend against the CPU reference on this machine (the
engine is mxquant/conformance/); a rich table (unwrapped, a row a line, when stdout is not a
terminal: cli/render.py), or the JSON report with --json. Exit status:
0 when nothing differs undeclared, 1 when something does, 2 for an unknown --backend name."""

from __future__ import annotations

import json
import sys

from .render import stdout_console, stdout_for_json_only


def add_parser(sub) -> None:
    what = "compare every available backend with the CPU reference, byte for byte"
    p = sub.add_parser("verify", help=what, description=what + "; exit 1 on an undeclared difference")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--backend", action="append", help="only this backend (repeatable)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random test data (default 0): the same seed gives the same inputs")
    p.add_argument("--jobs", "-j", type=_jobs, default=1, metavar="N",
                   help="run each backend's checks in N worker processes (default 1); a GPU backend's first "
                        "run compiles its kernels, minutes in one process, which N workers share")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..conformance import collect, exit_code  # loaded by this command only, not by every `mxquant ...`

    if args.json:
        with stdout_for_json_only():
            report = collect(args.backend, args.seed, progress=None, jobs=args.jobs)
    else:
        report = collect(args.backend, args.seed, progress=Progress(sys.stderr), jobs=args.jobs)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report)
    return exit_code(report)


def _jobs(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number >= 1, not {text!r}")
    return n


class Progress:
    """Where the checks stand, on stderr while they run (the report waits for the last one, and a
    GPU backend's first run compiles its kernels, minutes on a fresh machine): on a terminal one
    line rewritten in place; elsewhere (a log) a line per 10% and the last."""

    def __init__(self, stream):
        import time

        self._stream, self._clock = stream, time.monotonic
        self._tty = stream.isatty()
        self._start = self._clock()
        self._target = None

    def __call__(self, backend: str, device: str, done: int, total: int) -> None:
        if (backend, device) != self._target:
            self._target, self._start = (backend, device), self._clock()
        line = f"verify {backend} on {device}: {done}/{total} checks, {self._clock() - self._start:.0f} s"
        if self._tty:
            self._stream.write("\r" + line + ("\n" if done == total else ""))
        elif done == total or done * 10 // total != (done - 1) * 10 // total:
            self._stream.write(line + "\n")
        self._stream.flush()


ONLY_REFERENCE = ("only the reference backend (cpu) ran here: nothing was compared but the oracle with itself; "
                  "run on a machine with a GPU (or the device another backend serves) to check the others")



def only_reference_note(report: dict) -> str:
    """Why only the reference ran: nothing else can run here, or the others were left out with
    --backend (then it names them)."""
    from ..report import list_backends

    checked = {t["backend"] for t in report["targets"]}
    left_out = [b.name for b in list_backends() if b.name not in checked and any(a.available for a in b.availability)]
    if not left_out:
        return ONLY_REFERENCE
    return (f"only the reference backend (cpu) was checked, and it is the oracle itself; "
            f"available here but not selected with --backend: {', '.join(left_out)} "
            f"(mxquant verify --backend {left_out[0]}, or no --backend for all)")


_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2"}


def _describe_call(r: dict) -> str:
    hp, el = _SHORT.get(r["hp_dtype"], r["hp_dtype"]), _SHORT.get(r["element_dtype"], r["element_dtype"])
    if r["op"].endswith("fp4_dequantize"):
        return f"{r['op']} ->{hp} {r['scale_layout']}"
    if r["op"].endswith("fp4_quantize"):
        return f"{r['op']} {hp} {r['scale_mode']} {r['scale_layout']}"
    if r["op"] != "dequantize":  # quantize and the training / MoE calls (quantize_colwise, ...)
        return f"{r['op']} {hp}->{el} {r['scale_mode']} {r['scale_layout']}"
    return f"dequantize {el}->{hp} {r['scale_layout']}"


def print_report(report: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..conformance import DEVIATION, FAIL, NOT_SUPPORTED, PASS, UNAVAILABLE

    _STYLE = {PASS: "[green]pass[/green]", DEVIATION: "[yellow]DEVIATION[/yellow]", FAIL: "[bold red]FAIL[/bold red]",
              UNAVAILABLE: "[dim]unavailable[/dim]", NOT_SUPPORTED: "[dim]not supported[/dim]"}
    console = stdout_console()
    s = report["summary"]
    console.print(f"[bold]mxquant verify[/bold] {report['mxquant_version']}  torch {escape(report['torch_version'])}  "
                  f"seed {report['seed']}  devices here: {', '.join(report['devices'])}")
    by_target: dict = {}
    for r in report["results"]:
        by_target.setdefault((r["backend"], r["device"]), []).append(r)
    table = Table(title="Available backends against the CPU reference, byte for byte", title_justify="left")
    for col in ("backend", "device", "call", "status", "detail"):
        table.add_column(col, overflow="fold", no_wrap=col in ("backend", "device", "status"))
    not_run = []
    for (name, device), rows in by_target.items():
        if rows[0]["op"] is None:
            not_run.append((name, device, rows[0]["reason"] or ""))
            continue
        skipped = [r for r in rows if r["status"] == NOT_SUPPORTED]
        for i, r in enumerate(r for r in rows if r["status"] != NOT_SUPPORTED):
            detail = r["reason"] or f"{r['cases']} inputs, {r['blocks']} blocks"
            if r["status"] == FAIL and r["examples"]:
                ex = r["examples"][0]
                where = ex.get("name") or f"block {ex['block']}"
                detail += f" (e.g. {ex['case']} {where}: " + json.dumps(
                    {k: v for k, v in ex.items() if k in ("scale", "elements")}) + ")"
            table.add_row(escape(name) if i == 0 else "", device if i == 0 else "", _describe_call(r),
                          _STYLE[r["status"]], escape(detail))
        if skipped:
            table.add_row("", "", f"{len(skipped)} other combinations", _STYLE[NOT_SUPPORTED],
                          "outside its declared capabilities")
        if table.rows:
            table.rows[-1].end_section = True
    if table.rows:
        console.print(table)
    for name, device, reason in not_run:
        console.print(f"[dim]not run:[/dim] [bold]{escape(name)}[/bold] on {device}: {escape(reason)}")
    for t in report["targets"]:
        if t["available"] and t["deviations"]:
            console.print(f"[bold]{escape(t['backend'])}[/bold] on {t['device']} declares:")
            for d in t["deviations"]:
                rule = d["rule"] or "no rule in mxquant verify: its differences are reported unattributed"
                console.print(f"  {escape(d['code'])}: {escape(d['summary'])} [dim](explains {escape(rule)})[/dim]")
    for err in report["errors"]:
        console.print(f"[red]error:[/red] {escape(err)}")
    verdict = ("[bold red]FAIL[/bold red]: undeclared differences from the reference" if s[FAIL]
               else "[red]error[/red]" if report["errors"]
               else f"[yellow]nothing compared[/yellow] (no undeclared difference): {escape(only_reference_note(report))}"
               if report["only_reference"]
               else "[yellow]nothing compared[/yellow]: no backend could run here" if not s[PASS] + s[DEVIATION]
               else "[green]ok[/green]: no undeclared difference")
    console.print(f"{verdict}  (pass {s[PASS]}, deviation {s[DEVIATION]}, fail {s[FAIL]}, "
                  f"unavailable {s[UNAVAILABLE]}, not supported {s[NOT_SUPPORTED]})")
