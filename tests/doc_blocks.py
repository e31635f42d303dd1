"""The runnable examples of README.md and docs/: every fenced ```python block and every
command of a ```bash / ```sh / ```shell / ```console block, with the markers that exempt some.

A marker is an HTML comment on the line(s) right before the opening fence (several may stack):

    <!-- not run in CI: needs a CUDA GPU -->                whole block not run
    <!-- not run in CI (lines 2-3): needs GPUs -->          those lines of the block not run
    <!-- fails on purpose (line 3): an unknown backend -->  that command must exit non-zero

Line numbers count the block's own lines, 1 being the line after the fence; a command spread
over several lines (a trailing backslash) is named by its first line. Python blocks take only
whole-block markers. A comment that mentions "in CI" or "on purpose" but does not parse, or does
not sit right before a fence, is an error: markers cannot drift away from what they exempt."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL_LANGS = {"bash", "sh", "shell", "console"}

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*(not run in CI|fails on purpose)\s*(?:\(lines?\s+([^)]*)\))?\s*:\s*(.*?)\s*-->\s*$")
_MARKER_WORDS = re.compile(r"<!--.*(in CI|on purpose)")


class MarkerError(ValueError):
    pass


@dataclass
class Command:
    line: int
    """Line in the markdown file."""
    text: str
    not_run: str | None = None
    """Why it is not run, or None."""
    fails: str | None = None
    """Why it must exit non-zero, or None."""
    shown: str | None = None
    """The `# ` comment lines right after it, joined: the output the docs show for it, where
    `...` stands for lines left out."""


@dataclass
class Block:
    path: str
    """Relative to the repository root."""
    line: int
    """Line of the opening fence in the file."""
    lang: str
    """"python" or "shell"."""
    text: str
    not_run: str | None = None
    """Why the whole block is not run, or None."""
    commands: list[Command] = field(default_factory=list)
    """For shell blocks: the commands, in order."""


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _line_set(spec: str, where: str) -> set[int]:
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise MarkerError(f"{where}: bad line list {spec!r}")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _shell_commands(body: list[str], first: int, console: bool) -> list[tuple[int, int, str]]:
    """(index in block (1-based), line in file, command) of each command; comments and output
    are not commands, a trailing backslash continues a command."""
    out, i = [], 0
    while i < len(body):
        raw = body[i]
        start = i
        text = raw.strip()
        if console:
            if not text.startswith("$ "):
                i += 1
                continue
            text = text[2:]
        if not text or text.startswith("#"):
            i += 1
            continue
        while text.endswith("\\") and i + 1 < len(body):
            i += 1
            text = text[:-1] + " " + body[i].strip()
        out.append((start + 1, first + start, text))
        i += 1
    return out


def _shown_output(body: list[str], index: int) -> str | None:
    """The `# ` comment lines right after the command at `index` (1-based), joined."""
    shown = []
    for line in body[index:]:
        if not line.strip().startswith("# "):
            break
        shown.append(line.strip()[2:])
    return " ".join(shown) or None


def shows(shown: str, output: str) -> bool:
    """Whether `output` holds what the docs show: each part between `...`s, in order, with
    runs of white space (line breaks included) counted as one space."""
    flat, at = " ".join(output.split()), 0
    for part in shown.split("..."):
        part = " ".join(part.split())
        found = flat.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return True


def parse(path: Path, text: str | None = None) -> list[Block]:
    """The blocks of the markdown file `path` (or of `text`, named `path`)."""
    rel = str(path.relative_to(ROOT)) if path.is_absolute() else str(path)
    lines = (path.read_text() if text is None else text).splitlines()
    blocks, pending, i = [], [], 0
    while i < len(lines):
        where = f"{rel}:{i + 1}"
        marker = _MARKER.match(lines[i])
        if marker:
            pending.append((marker, where))
            i += 1
            continue
        if _MARKER_WORDS.search(lines[i]):
            raise MarkerError(f"{where}: a marker that does not parse: {lines[i].strip()}")
        fence = _FENCE.match(lines[i])
        if not fence:
            if pending:
                raise MarkerError(f"{pending[0][1]}: a marker not right before a fence")
            i += 1
            continue
        indent, ticks, lang = fence.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(ticks):
            end += 1
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end]]
        lang = lang.lower()
        if lang in ("python", "py") or lang in SHELL_LANGS:
            blocks.append(_block(rel, i + 1, lang, body, pending))
        elif pending:
            raise MarkerError(f"{pending[0][1]}: a marker before a {lang or 'plain'} block, which is never run")
        pending = []
        i = end + 1
    if pending:
        raise MarkerError(f"{pending[0][1]}: a marker not right before a fence")
    return blocks


def _block(rel: str, fence_line: int, lang: str, body: list[str], markers) -> Block:
    shell = lang in SHELL_LANGS
    block = Block(rel, fence_line, "shell" if shell else "python", "\n".join(body) + "\n")
    per_line: dict[int, tuple[str, str, str]] = {}
    fails_all = None
    for marker, where in markers:
        kind, spec, reason = marker.groups()
        if not reason:
            raise MarkerError(f"{where}: a marker without a reason")
        if spec is None:
            if kind == "not run in CI":
                block.not_run = reason
                continue
            if not shell:
                raise MarkerError(f"{where}: 'fails on purpose' is for shell commands")
            fails_all = reason
            continue
        if not shell:
            raise MarkerError(f"{where}: a Python block is run or not as a whole (no line list)")
        for n in _line_set(spec, where):
            per_line[n] = (kind, reason, where)
    if shell:
        commands = _shell_commands(body, fence_line + 1, lang == "console")
        starts = {index for index, _, _ in commands}
        for n, (_, _, where) in per_line.items():
            if n not in starts:
                raise MarkerError(f"{where}: line {n} of the block is not the start of a command")
        for index, line, text in commands:
            kind, reason, _ = per_line.get(index, (None, None, None))
            block.commands.append(Command(
                line, text,
                not_run=block.not_run or (reason if kind == "not run in CI" else None),
                fails=fails_all or (reason if kind == "fails on purpose" else None),
                shown=_shown_output(body, index)))
    return block


def all_blocks() -> list[Block]:
    return [b for path in doc_files() for b in parse(path)]
