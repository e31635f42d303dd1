"""The `mxquant` command: one module per subcommand, each with `add_parser(sub)` and
`run(args) -> exit status`. The library returns data; these modules print it."""

from __future__ import annotations

import argparse

from .._version import __version__
from . import bench, convert, info, verify

SUBCOMMANDS = (info, verify, convert, bench)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mxquant", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mxquant {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)
