"""`mxquant verify` says plainly when only the reference backend (cpu) could run: then nothing
was compared but the oracle with itself. In the verdict and in the JSON
(`only_reference`), once; and where `--backend` left out backends that can run here, it names
them instead. Contract tests: an inline backend (a copy of the reference under another
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


def test_only_the_reference_ran(registry, capsys, monkeypatch):
    """Nothing but the reference can run here (the other CPU backends hidden): said once."""
    probe = registry.probe
    monkeypatch.setattr(registry, "probe", lambda entry, device: "hidden by the test"
                        if entry.name in ("cpu-native", "cpu-eager") else probe(entry, device))
    rc, report, table = verify(capsys, "--backend", "cpu", "--backend", "triton", "--backend", "cpu-eager")
    assert rc == 0 and report["only_reference"] is True
    assert [t["backend"] for t in report["targets"] if t["available"]] == ["cpu"]
    assert table.count(ONLY) == 1  # in the verdict only (it was the caption's too)
    assert "nothing compared" in table and "run on a machine with a GPU" in table


def test_only_the_reference_selected_names_the_backends_left_out(registry, capsys):
    """`--backend cpu` where cpu-eager (and cpu-native, when built) can run: not "only the
    reference ran here", but which available backends --backend left out."""
    rc, report, table = verify(capsys, "--backend", "cpu")
    assert rc == 0 and report["only_reference"] is True
    left_out = [b.name for b in mxquant.list_backends() if b.name != "cpu" and any(a.available for a in b.availability)]
    assert "cpu-eager" in left_out
    assert ONLY not in table and "ran here" not in table
    assert table.count("only the reference backend (cpu) was checked, and it is the oracle itself; available here "
                       f"but not selected with --backend: {', '.join(left_out)}") == 1, table


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
