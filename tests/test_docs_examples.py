"""The examples of README.md and docs/ run, on the CPU, as a reader would run them.

For each markdown file (tests/doc_blocks.py finds the blocks and the markers that exempt some):
its shell commands run first, in order, each in bash in a fresh folder; then its ```python
blocks run in order in one fresh interpreter, so a block uses the names of the blocks before it.
The file's shell commands go first because they install what its Python examples use (the
example plugin), as a reader does before running them. An unmarked block or command that fails
fails the test; a command marked "fails on purpose" must exit non-zero and print the output the
docs show under it. Blocks and commands marked "not run in CI" are each reported as a skipped
test with the marker's reason (pytest -ra lists them).

What the commands see, in place of a reader's machine:
- `python3`, `python`, `pip` and `mxquant` are this interpreter (wrappers in front of PATH);
- `pip install` goes into a folder of the test's own (on PYTHONPATH), offline, without build
  isolation or dependencies: the environment is never changed;
- the tiny checkpoints of tests/convert_ckpt.py sit at the paths the docs name (`./my-model`,
  `./Llama-3.1-8B`); `train.py` and `serve.py` stand for the reader's program: one
  `mxfp8_quantize` call on the CPU under the environment the command sets;
- docs/examples is copied in, so `pip install ./docs/examples/...` finds it;
- no MXQUANT_* variable of the test run leaks in, and no GPU is visible (CUDA_VISIBLE_DEVICES="").
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mxquant
import pytest
from convert_ckpt import llama_like, save_checkpoint
from doc_blocks import ROOT, Block, MarkerError, doc_files, parse, shows
from subproc import child_env

pytestmark = pytest.mark.usefixtures("cpu_only")  # CI has no GPU; the GPU machine runs them as CI would

MODELS = ("my-model", "Llama-3.1-8B")
"""The checkpoint folders the docs' examples convert."""

PROGRAM = ("import torch, mxquant\n"
           "q = mxquant.mxfp8_quantize(torch.randn(4, 64))\n"
           "print(q.data.shape, q.scale.shape)\n")
"""train.py / serve.py: the reader's program that the docs' commands run."""

DRIVER = """
import json, sys
namespace = {"__name__": "__main__"}
for path, line, text in json.load(open(sys.argv[1])):
    print(f"--- {path}:{line}", flush=True)
    exec(compile("\\n" * line + text, path, "exec"), namespace)
"""
"""Runs the blocks in one namespace; a traceback names the markdown file and its line."""

TIMEOUT = 300

MODEL_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
                "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 200, "tie_word_embeddings": True}
"""config.json of the tiny checkpoints, with llama_like's sizes, so that transformers builds them (mxquant eval)."""

BLOCKS = {path: parse(path) for path in doc_files()}


def _workspace(tmp: Path) -> tuple[dict, Path, Path]:
    """(environment, folder for the shell commands, folder for the Python blocks)."""
    bin_, site, sh, py = (tmp / d for d in ("bin", "site", "sh", "py"))
    for d in (bin_, site, sh, py):
        d.mkdir()
    for name, args in (("python3", ""), ("python", ""), ("pip", " -m pip"), ("mxquant", " -m mxquant")):
        (bin_ / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        (bin_ / name).chmod(0o755)
    shutil.copytree(ROOT / "docs" / "examples", sh / "docs" / "examples",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    for program in ("train.py", "serve.py"):
        (sh / program).write_text(PROGRAM)
    tensors = llama_like()
    for folder in (sh, py):
        for model in MODELS:
            save_checkpoint(folder / model, tensors, config=MODEL_CONFIG)
    env = child_env(site, PATH=f"{bin_}{os.pathsep}{os.environ.get('PATH', '')}", PIP_TARGET=str(site),
                    PIP_NO_INDEX="1", PIP_NO_DEPS="1", PIP_NO_BUILD_ISOLATION="0",  # "0" turns isolation off
                    PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    return env, sh, py


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "...\n" + text[-n:]


def run_doc(blocks: list[Block], tmp: Path) -> list[str]:
    """Run the file's commands, then its Python blocks; what went wrong, one entry per failure."""
    env, sh, py = _workspace(tmp)
    problems = []
    for block in blocks:
        for cmd in block.commands if block.lang == "shell" else ():
            if cmd.not_run:
                continue
            proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd.text], cwd=sh, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT)
            out = proc.stdout + proc.stderr
            where = f"{block.path}:{cmd.line}: `{cmd.text}`"
            if cmd.fails and proc.returncode == 0:
                problems.append(f"{where} should fail ({cmd.fails}) but exited 0:\n{_tail(out)}")
            elif cmd.fails and cmd.shown and not shows(cmd.shown, out):
                problems.append(f"{where} failed, but without the output the docs show ({cmd.shown!r}):\n{_tail(out)}")
            elif not cmd.fails and proc.returncode != 0:
                problems.append(f"{where} exited {proc.returncode}:\n{_tail(out)}")
    code = [(b.path, b.line, b.text) for b in blocks if b.lang == "python" and not b.not_run]
    if code:
        (tmp / "blocks.json").write_text(json.dumps(code))
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(tmp / "blocks.json")], cwd=py, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
        if proc.returncode != 0:
            problems.append(f"the Python blocks of {blocks[0].path} failed (exit {proc.returncode}):\n"
                            f"{_tail(proc.stdout + proc.stderr)}")
    return problems


def _runnable(blocks: list[Block]) -> bool:
    return any(not b.not_run and (b.lang == "python" or any(not c.not_run for c in b.commands)) for b in blocks)


def _not_run() -> list[tuple[str, str]]:
    """(where and what, why) of every block or command the docs mark as not run in CI."""
    out = []
    for blocks in BLOCKS.values():
        for b in blocks:
            if b.lang == "python" and b.not_run:
                out.append((f"{b.path}:{b.line + 1}: {b.text.splitlines()[0].strip()} ...", b.not_run))
            out += [(f"{b.path}:{c.line}: {c.text}", c.not_run) for c in b.commands if c.not_run]
    return out


@pytest.mark.parametrize("path", [p for p, blocks in BLOCKS.items() if _runnable(blocks)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run(path, tmp_path):
    problems = run_doc(BLOCKS[path], tmp_path)
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("what, why", _not_run(), ids=[w.split(": ")[0] for w, _ in _not_run()])
def test_not_run_in_ci(what, why):
    pytest.skip(f"not run in CI ({why}): {what}")


# ---- the runner and the markers themselves ---------------------------------------------------

def test_an_unmarked_failure_fails_and_a_marked_one_is_not_run(tmp_path):
    text = ("```python\nx = 41\n```\n"
            "```bash\necho ok\nfalse   # an unmarked failing command\n```\n"
            "<!-- not run in CI: needs a CUDA GPU -->\n```python\nraise SystemExit(3)\n```\n"
            "```python\nassert x == 42, 'x is ' + str(x)\n```\n")
    problems = run_doc(parse(Path("docs/t.md"), text), tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("docs/t.md:6: `false") and "exited 1" in problems[0]
    assert 'File "docs/t.md", line 13' in problems[1] and "x is 41" in problems[1]


def test_fails_on_purpose_checks_the_shown_output(tmp_path):
    text = ("<!-- fails on purpose (lines 1, 4): a bad value -->\n```bash\n"
            "python3 -c 'raise SystemExit(\"no such\\nthing here\")'\n# no such thing\n# ... here\n"
            "python3 -c 'raise SystemExit(\"here no such thing\")'\n# no such thing\n# ... here\n"
            "true\n```\n"
            "<!-- fails on purpose: it works -->\n```sh\ntrue\n```\n")
    problems = run_doc(parse(Path("docs/t.md"), text), tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("docs/t.md:6:") and "without the output the docs show" in problems[0]
    assert problems[1].startswith("docs/t.md:13: `true` should fail (it works)")


@pytest.mark.parametrize("text, error", [
    ("<!-- not run in CI: gpu -->\n\n```bash\ntrue\n```\n", "not right before a fence"),
    ("<!-- not run in CI gpu -->\n```bash\ntrue\n```\n", "does not parse"),
    ("<!-- not run in CI:  -->\n```bash\ntrue\n```\n", "without a reason"),
    ("<!-- not run in CI (line 2): gpu -->\n```bash\ntrue\n```\n", "not the start of a command"),
    ("<!-- not run in CI (lines 1): gpu -->\n```python\npass\n```\n", "as a whole"),
    ("<!-- not run in CI: gpu -->\n```toml\na = 1\n```\n", "never run"),
    ("text\n<!-- fails on purpose (lines x): y -->\n```bash\ntrue\n```\n", "bad line list"),
])
def test_a_stray_or_malformed_marker_is_an_error(text, error):
    with pytest.raises(MarkerError, match=error):
        parse(Path("docs/t.md"), text)


def test_markers_select_lines_and_continued_commands():
    text = ("<!-- not run in CI (line 2): gpus -->\n```bash\n# a comment\nrun a \\\n  --flag\nrun b\nrun c\n```\n"
            "```console\n$ mxquant info\noutput line\n```\n")
    shell, console = parse(Path("docs/t.md"), text)
    assert [(c.line, c.text, c.not_run) for c in shell.commands] == [
        (4, "run a  --flag", "gpus"), (6, "run b", None), (7, "run c", None)]
    assert [c.text for c in console.commands] == ["mxquant info"]


# ---- claims of the docs that the code decides ------------------------------------------------

COUNTS = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


@pytest.mark.parametrize("doc", ["docs/env.md", "docs/writing-a-backend.md"])
def test_the_builtin_backends_are_listed_whole(doc, registry):
    names = [b.name for b in mxquant.list_backends() if b.origin == "built-in"]
    text = " ".join((ROOT / doc).read_text().split())
    listed = re.search(r"mxquant's (?:(\w+) )?own backends \(([^)]*)\)", text)
    assert listed, f"{doc}: no sentence listing mxquant's own backends"
    assert sorted(re.findall(r"`([\w-]+)`", listed.group(2))) == sorted(names), listed.group(0)
    assert listed.group(1) == COUNTS[len(names)], listed.group(0)


def test_env_md_counts_the_variables_info_shows(registry):
    shown = mxquant.list_backends().env
    text = " ".join((ROOT / "docs/env.md").read_text().split())
    table = set(re.findall(r"^\| \[`(MXQUANT_\w+)`\]", (ROOT / "docs/env.md").read_text(), re.M))
    assert table == set(shown)
    assert f"mxquant reads {COUNTS[len(shown)]} environment variables" in text
    assert f"`mxquant info` shows the value of all {COUNTS[len(shown)]}" in text


def test_backends_md_tables_list_each_declared_scale_mode(registry):
    sections = re.split(r"^## `([\w-]+)`", (ROOT / "docs/backends.md").read_text(), flags=re.M)
    rows = {name: re.findall(r"^\| (?:quantize|scale modes) \|.*$", body, re.M)
            for name, body in zip(sections[1::2], sections[2::2])}
    checked = 0
    for b in mxquant.list_backends():
        if b.origin != "built-in" or not rows.get(b.name):
            continue
        for mode in b.capabilities["scale_modes"]:
            assert any(mode in row for row in rows[b.name]), f"backends.md, {b.name}: {mode} missing"
        checked += 1
    assert checked >= 5, rows  # every built-in section but cpu-eager's ("same as cpu-native") has a table
