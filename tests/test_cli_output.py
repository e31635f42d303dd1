"""What a person reads from the `mxquant` command, run as a real process (issue 19, "Output a
person reads"): whole help texts, piped `verify` output with a row a line, `info` reasons shown
whole, the instruction set cpu-native picked, and a reader that stops early (`| head`) ending
the command quietly."""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mxquant
import mxquant.cli
from mxquant.backends import _native_lib
from mxquant.selection import ENV_BACKEND

from subproc import child_env

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)

ROOT = Path(__file__).resolve().parent.parent
MXQUANT = [sys.executable, "-m", "mxquant"]


def _env(**extra) -> dict:
    env = child_env(**{"MXQUANT_PLUGINS": "none", "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "80", **extra})
    env.pop("FORCE_COLOR", None)
    return env


def _run(args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(MXQUANT + args, capture_output=True, text=True, env=_env(**extra), timeout=300)


def _words(text: str) -> str:
    return " ".join(text.split())


def test_mxquant_help_is_whole_sentences():
    out = _run(["--help"]).stdout
    description = out.split("\n\n")[1]  # between the usage and the positional arguments
    assert description.rstrip().endswith("."), out
    assert "(info)" in description and "(verify)" in description and "(convert)" in description, out


def test_every_option_of_every_subcommand_has_help():
    parser = mxquant.cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {action.option_strings or action.dest}" for name, sub in subparsers.choices.items()
               for action in sub._actions if not action.help]
    assert missing == []


@pytest.mark.parametrize("script", ["bench_cpu.py", "cpu_threads.py"])
def test_benchmark_help_shows_the_whole_description(script):
    path = ROOT / "benchmarks" / script
    first_paragraph = ast.get_docstring(ast.parse(path.read_text())).split("\n\n")[0]
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, env=_env(),
                          cwd=path.parent, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _words(first_paragraph) in _words(done.stdout), done.stdout
    assert all(action.split(None, 1)[1:] for action in re.findall(r"^  (--\S+ \S+  +.*)$", done.stdout, re.M))


@pytest.mark.parametrize("args", [["info"], ["info", "--json"], ["info", "--full"],
                                  ["verify", "--backend", "cpu", "--json"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(args):
    """As with `mxquant info --json | head`, deterministically: the pipe's reading end is closed
    before the command writes. No traceback, exit 141 as for a process SIGPIPE ended."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(MXQUANT + args, stdout=write, stderr=subprocess.PIPE, text=True, env=_env(),
                              timeout=300)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, ""), done.stderr


def test_piped_verify_keeps_a_row_a_line_and_says_which_backends_it_left_out():
    """`mxquant verify --backend cpu | cat` at 80 columns: each result a line of its own (the
    rich table wrapped every row over 8 lines, 398 lines in all), and the note that only the
    reference was checked said once, naming the backends --backend left out."""
    report = json.loads(_run(["verify", "--backend", "cpu", "--json"]).stdout)
    done = _run(["verify", "--backend", "cpu"])
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    results = [r for r in report["results"] if r["status"] != "not supported"]
    assert len(rows) == len(results) == 48 + 126 + 36, done.stdout  # + the training / MoE calls (K-groups: 18) and FP4 calls the reference claims
    for row, r in zip(rows, results):
        cells = [c.strip() for c in row.strip("│").split("│")]
        fp4 = {f"{f}_{op}": text for f in ("mxfp4", "nvfp4")
               for op, text in (("quantize", "{hp} {mode} {layout}"), ("dequantize", "->{hp} {layout}"))}
        call = (f"{r['op']} " + {"dequantize": "{el}->{hp} {layout}", **fp4}.get(r["op"], "{hp}->{el} {mode} {layout}")
                ).format(hp=_short(r["hp_dtype"]), el=_short(r["element_dtype"]), mode=r["scale_mode"],
                         layout=r["scale_layout"])
        assert cells[2:4] == [call, r["status"]], row
    assert len(done.stdout.splitlines()) < 60 + 126 + 36
    left_out = [b["name"] for b in json.loads(_run(["info", "--json"]).stdout)["backends"]
                if b["name"] != "cpu" and any(a["available"] for a in b["availability"])]
    assert "cpu-eager" in left_out
    note = f"available here but not selected with --backend: {', '.join(left_out)}"
    assert done.stdout.count(note) == 1 and "only the reference backend" in done.stdout, done.stdout
    assert "ran here" not in done.stdout


def _short(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "e4m3",
            "float8_e5m2": "e5m2", "e2m1": "e2m1"}[dtype]


def test_info_shows_reasons_whole(registry, monkeypatch):
    """A forced backend that cannot run: its reason used to end in `cannot ru...`."""
    monkeypatch.setenv(ENV_BACKEND, "triton")
    error = mxquant.list_backends().resolution[0].error.removeprefix("mxquant: ")
    assert len(error) > 80
    for columns in ("80", "120"):
        done = _run(["info"], MXQUANT_BACKEND="triton", COLUMNS=columns)
        assert done.returncode == 0, done.stderr
        assert f"on cpu: none: {error}" in _words(done.stdout), done.stdout
        assert "..." not in done.stdout and max(map(len, done.stdout.splitlines())) <= 80


def test_info_shows_the_instruction_set_cpu_native_picked():
    lib, reason = _native_lib.load()
    if lib is None:
        pytest.skip(f"cpu-native not built: {reason}")
    isa = lib.mxq_isa().decode()
    for args in (["info"], ["info", "--full"]):
        done = _run(args)
        assert done.returncode == 0, done.stderr
        assert isa in _words(done.stdout), done.stdout
