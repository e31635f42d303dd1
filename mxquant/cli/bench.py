"""`mxquant bench`: runs benchmarks/bench_quantize.py from the source checkout this package
lives in (`pip install -e .`); every argument after `bench` is passed to the script."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run benchmarks/bench_quantize.py (needs a GPU and a source checkout)",
                       add_help=False, prefix_chars="\0")
    p.add_argument("args", nargs="*", help="arguments passed to the benchmark (e.g. --out bench-out)")
    p.set_defaults(run=run)


def find_script() -> Path | None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quantize.py"
    return script if script.is_file() else None


def run(args) -> int:
    script = find_script()
    if script is None:
        print("mxquant bench: benchmarks/bench_quantize.py is not next to this installation; "
              "install mxquant from a source checkout (pip install -e .) to run the benchmark.", file=sys.stderr)
        return 2
    # as `python3 benchmarks/bench_quantize.py` would: its argv, and its folder first on sys.path
    # (the benchmarks import their shared helpers, benchmarks/timing.py)
    argv, path = sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = [str(script), *args.args], [str(script.parent)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.path[:] = argv, path
    return 0
