"""`mxquant bench`: every argument after `bench` reaches benchmarks/bench_quantize.py, options
included (`mxquant bench --out bench-out`). The benchmark itself needs a GPU, so these check
what arrives: the argv the script sees (runpy.run_path replaced by a recorder), and the
script's own argparse answering --help and rejecting a bad option value."""

import os
import runpy
import sys

import pytest

import mxquant.cli
from mxquant.cli import bench


@pytest.fixture
def recorded(monkeypatch):
    """runpy.run_path replaced: records (path, sys.argv as the script would see it)."""
    calls = []
    monkeypatch.setattr(runpy, "run_path", lambda path, run_name=None: calls.append((path, list(sys.argv))))
    return calls


@pytest.mark.parametrize("argv", [
    ["--out", "bench-out"],
    ["--out=bench-out", "--modes", "rceil", "--shapes", "16x4096"],
    ["-h"],
    ["--version"],  # the script's, not mxquant's own --version
    [],
])
def test_arguments_after_bench_reach_the_script(recorded, argv):
    before = list(sys.argv)
    assert mxquant.cli.main(["bench", *argv]) == 0
    (path, seen), = recorded
    assert path.endswith(os.path.join("benchmarks", "bench_quantize.py"))
    assert seen == [path, *argv]
    assert sys.argv == before  # restored after the run


@pytest.fixture
def script_env(monkeypatch):
    # the script sets TORCHINDUCTOR_COMPILE_THREADS with os.environ.setdefault: keep it local
    monkeypatch.setattr(os, "environ", dict(os.environ))


def test_the_script_parses_them(script_env, capsys):
    if bench.find_script() is None:
        pytest.skip("not a source checkout")
    assert mxquant.cli.main(["bench", "--help"]) == 0  # the script's argparse exits 0 after its help
    out = capsys.readouterr().out
    assert "usage: bench_quantize.py" in out and "--out OUT" in out
    assert mxquant.cli.main(["bench", "--out", "x", "--rep-ms", "many"]) == 2
    assert "argument --rep-ms: invalid int value: 'many'" in capsys.readouterr().err


def test_without_a_source_checkout_it_says_so(monkeypatch, capsys):
    monkeypatch.setattr(bench, "find_script", lambda: None)
    assert mxquant.cli.main(["bench", "--out", "x"]) == 2
    assert "install mxquant from a source checkout" in capsys.readouterr().err
