"""The `mxquant` command: `info` (what is available here and why not), `verify` (every
available backend against the reference), `bench` (benchmarks/bench_quantize.py), `convert` (mxquant/checkpoint/cli.py)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mxquant", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="backends, their availability and reasons, and the device resolution")
    info.add_argument("--json", action="store_true",
                      help="machine-readable output; its keys are listed in docs/env.md (mxquant info --json)")

    verify = sub.add_parser("verify", help="compare every available backend with the CPU reference")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.add_argument("--backend", action="append", help="only this backend (repeatable)")
    verify.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser("bench", help="run benchmarks/bench_quantize.py (needs a GPU and a source checkout)")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")

    from .checkpoint import cli as convert_cli  # light: imports nothing heavy until run

    convert_cli.add_parser(sub)

    args = parser.parse_args(argv)
    if args.command == "convert":
        return convert_cli.run(args)
    if args.command == "info":
        from .report import run_info

        return run_info(as_json=args.json)
    if args.command == "verify":
        from .verify import run_verify

        return run_verify(as_json=args.json, backends=args.backend, seed=args.seed)
    from .bench import run_bench

    return run_bench(args.args)


if __name__ == "__main__":
    sys.exit(main())
