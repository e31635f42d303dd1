"""Where the commands print to: a rich console on stdout that fits the terminal when stdout is
one, and otherwise (a pipe, a file, a CI log) by default never wraps: tables take their natural
width and every row stays on one line, so `mxquant verify | cat` reads like the terminal.
A reader that goes away raises BrokenPipeError for mxquant.cli.main to end quietly."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

UNWRAPPED = 1_000_000
"""The console width when stdout is not a terminal: wide enough that nothing wraps."""


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def stdout_console(unwrapped: bool = True):
    """A console on stdout. Off a terminal: never wrapping (`unwrapped`), or rich's own width
    (80 columns unless COLUMNS says otherwise) for output whose cells are paragraphs."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own would exit 1 here; main() exits like `head`'s writers
            raise BrokenPipeError

    if is_terminal(sys.stdout) or not unwrapped:
        return _Console(file=sys.stdout)
    return _Console(file=sys.stdout, width=UNWRAPPED, soft_wrap=True)


@contextlib.contextmanager
def stdout_for_json_only() -> Iterator[None]:
    """While a --json report is built: whatever else writes to stdout (a plugin's print at
    import, a library's message from C) goes to stderr instead, so that stdout holds the JSON
    alone. Python's sys.stdout and file descriptor 1 both (worker processes inherit the latter)."""
    if sys.stdout is not None:  # (None: Python started with stdout closed)
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1: Python's stream alone
        saved = None
    try:
        if saved is not None:
            os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
