"""`mxquant bench`: runs benchmarks/bench_quantize.py from the source checkout this package lives in."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def find_script() -> Path | None:
    here = Path(__file__).resolve().parent.parent
    script = here / "benchmarks" / "bench_quantize.py"
    return script if script.is_file() else None


def run_bench(args: list[str]) -> int:
    script = find_script()
    if script is None:
        print("mxquant bench: benchmarks/bench_quantize.py is not next to this installation; "
              "install mxquant from a source checkout (pip install -e .) to run the benchmark.", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
