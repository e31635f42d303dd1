"""`mxquant verify` says plainly when only the reference backend (cpu) could run: then nothing
was compared but the oracle with itself. In the table (caption and verdict) and in the JSON
(`only_reference`). Contract tests: an inline backend (a copy of the reference under another
name) stands in for a second backend that runs here."""

import json
import pytest

import torch

import mxquant
import mxquant.cli
from mxquant import reference
from mxquant.cli.verify import print_report

from inline_plugin import Plugin

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)

ONLY = "only the reference backend (cpu) ran here: nothing was compared but the oracle with itself"


def verify(capsys, *argv):
    """(exit status, the JSON report, the table mxquant verify prints for that report)."""
    rc = mxquant.cli.main(["verify", "--json", *argv])
    report = json.loads(capsys.readouterr().out)
    print_report(report)  # what `mxquant verify` without --json prints (one run, not two)
    return rc, report, " ".join(capsys.readouterr().out.split())  # rich wraps lines: compare words


def test_only_the_reference_ran(registry, capsys):
    rc, report, table = verify(capsys, "--backend", "cpu", "--backend", "triton")
    assert rc == 0 and report["only_reference"] is True
    assert [t["backend"] for t in report["targets"] if t["available"]] == ["cpu"]
    assert table.count(ONLY) == 2  # the table's caption and the verdict
    assert "nothing compared" in table and "run on a machine with a GPU" in table


def test_contract_another_backend_ran(registry, capsys):
    caps = mxquant.Capabilities(devices=frozenset({"cpu"}), element_dtypes=frozenset({torch.float8_e4m3fn}),
                                scale_modes=frozenset({"rceil"}), scale_layouts=frozenset({"linear"}),
                                input_dtypes=frozenset({torch.float32}))  # one combination: a quick run
    other = mxquant.Backend("copy", caps, lambda device: None, reference.quantize, None, priority=-5)
    registry.register_plugin(Plugin(other), "plugin-copy")
    rc, report, table = verify(capsys, "--backend", "cpu", "--backend", "copy")
    assert rc == 0 and report["only_reference"] is False
    assert ONLY not in table and "ok: no undeclared difference" in table
    rc, report, table = verify(capsys, "--backend", "copy")
    assert rc == 0 and report["only_reference"] is False and ONLY not in table


def test_nothing_ran(registry, capsys):
    rc, report, table = verify(capsys, "--backend", "triton")
    assert rc == 0 and report["only_reference"] is False
    assert "nothing compared: no backend could run here" in table and ONLY not in table
