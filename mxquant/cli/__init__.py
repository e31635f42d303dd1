"""The `mxquant` command: one module per subcommand, each with `add_parser(sub)` and
`run(args) -> exit status`. The library returns data; these modules print it.

A reader that stops early (`mxquant info --json | head`) ends the command quietly, as other
Unix tools end: no traceback, exit status 141 (128 + SIGPIPE)."""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from . import bench, convert, eval, info, verify

SUBCOMMANDS = (info, verify, convert, eval, bench)

DESCRIPTION = ("MXFP8 quantization for PyTorch: which backends run on this machine (info), each "
               "backend checked byte for byte against the CPU reference (verify), checkpoint conversion "
               "(convert), what a conversion cost in accuracy (eval) and the GPU benchmark (bench).")

EXIT_BROKEN_PIPE = 128 + 13
"""What a shell reports for a process that SIGPIPE ended (`yes | head -1`)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mxquant", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"mxquant {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        return _reader_gone()
    return status


def _reader_gone() -> int:
    """stdout's reader has gone: point stdout at /dev/null so the interpreter's last flush at
    exit cannot raise again, and end with the status SIGPIPE would have given."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
        pass
    return EXIT_BROKEN_PIPE
