"""`mxquant verify --jobs N` (mxquant/conformance/parallel_checks.py): the checks spread over
worker processes give the results one process gives, in the same order; a backend the workers
cannot find fails its checks with the reason, never passes them; a bad N is refused. The oracle
of the parallel run is the serial engine (check_call in this process)."""

import json

import pytest
import torch

import mxquant
import mxquant.cli
from mxquant import reference
from mxquant.conformance.compare import FAIL, PASS
from mxquant.conformance.parallel_checks import run_in_workers
from mxquant.conformance.verify import check_call

from inline_plugin import Plugin

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
TODO = [("quantize", torch.bfloat16, E4M3, "floor", "swizzled"),
        ("dequantize", torch.float32, E5M2, None, "linear"),
        ("quantize_colwise", torch.float16, E5M2, "rceil", "linear")]


def test_workers_give_the_serial_results_in_order(registry):
    entry = next(e for e in registry.entries() if e.name == "cpu-native")
    backend, cpu = registry.load(entry), torch.device("cpu")
    serial = [check_call(backend, cpu, *c, 0) for c in TODO]
    assert [r.status for r in serial] == [PASS] * len(TODO)
    assert run_in_workers("cpu-native", cpu, TODO, 0, jobs=2) == serial


def test_a_backend_registered_at_run_time_fails_in_workers_with_the_reason(registry, capsys):
    backend = mxquant.Backend("runtime-only", mxquant.Capabilities(devices=frozenset({"cpu"})), lambda device: None,
                              reference.quantize, reference.dequantize, priority=-5)
    registry.register_plugin(Plugin(backend), "plugin-of-runtime-only")
    rc = mxquant.cli.main(["verify", "--json", "--backend", "runtime-only", "--jobs", "2"])
    report = json.loads(capsys.readouterr().out)
    results = [r for r in report["results"] if r["op"] is not None]
    assert rc == 1 and results and all(r["status"] == FAIL for r in results)
    assert all("not registered in a fresh process" in r["reason"] and "without --jobs" in r["reason"]
               for r in results), results[0]["reason"]


@pytest.mark.parametrize("bad", ["0", "-3", "two"])
def test_bad_jobs_is_refused(bad, capsys):
    with pytest.raises(SystemExit) as e:
        mxquant.cli.main(["verify", "--jobs", bad])
    assert e.value.code == 2 and "--jobs takes a whole number >= 1" in capsys.readouterr().err
