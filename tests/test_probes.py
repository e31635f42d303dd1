"""Contract tests of availability probes (mxquant/probing.py) with injected fake backends: a
probe's wrong answer or a hang is that backend's problem, reported as its reason, and never an
exception in, or a stall of, anyone else's call; `mxquant info` still exits 0 and says why."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

import mxquant
import mxquant.cli
from mxquant.selection import DEFAULT_PROBE_TIMEOUT, ENV_PROBE_TIMEOUT, probe_timeout

from cpu_auto import AUTO_CPU
from inline_plugin import Plugin
from mx_oracle import backend_quantize
from mx_oracle import quantize as oracle_quantize

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)


def fake(name, probe, priority=100, install_hint="pip install something-real"):
    """A CPU backend above the built-in cpu whose probe is `probe`; it would quantize exactly."""
    return mxquant.Backend(name, mxquant.Capabilities(devices=frozenset({"cpu"})), probe, backend_quantize,
                           priority=priority, install_hint=install_hint)


def check_automatic_call_falls_back():
    x = torch.randn(3, 64)
    data, scale = mxquant.mxfp8_quantize(x)
    want_d, want_s = oracle_quantize(x, torch.float8_e4m3fn)
    assert torch.equal(data.view(torch.uint8), want_d) and torch.equal(scale.view(torch.uint8), want_s)


@pytest.mark.parametrize("answer, shown", [
    (True, "probe returned bool True, expected None or a reason string"),
    (False, "probe returned bool False, expected None or a reason string"),
    (0, "probe returned int 0, expected None or a reason string"),
    (["no gpu"], "probe returned list ['no gpu'], expected None or a reason string"),
    ("", "availability probe returned an empty reason string"),
    ("  ", "availability probe returned an empty reason string"),
])
def test_contract_probe_wrong_answer_is_its_reason(registry, answer, shown):
    registry.register_plugin(Plugin(fake("odd", lambda device: answer)), "odd-plugin")
    check_automatic_call_falls_back()  # automatic choice passes over it, no TypeError
    with pytest.raises(mxquant.BackendUnavailableError) as info:
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="odd")
    assert shown in info.value.reason and "(install: pip install something-real)" in info.value.reason
    record = mxquant.list_backends().backend("odd")
    assert record.availability[0].available is False and shown in record.availability[0].reason


def test_contract_probe_that_hangs_times_out(registry, monkeypatch):
    monkeypatch.setenv(ENV_PROBE_TIMEOUT, "0.2")
    release = threading.Event()
    registry.register_plugin(Plugin(fake("stuck", lambda device: release.wait(60) and None)), "stuck-plugin")
    try:
        t0 = time.perf_counter()
        check_automatic_call_falls_back()
        assert time.perf_counter() - t0 < 30  # bounded by the timeout, not by the probe
        with pytest.raises(mxquant.BackendUnavailableError) as info:
            mxquant.mxfp8_quantize(torch.randn(2, 32), backend="stuck")
        assert "availability probe did not answer within 0.2 s" in info.value.reason
        assert ENV_PROBE_TIMEOUT in info.value.reason
    finally:
        release.set()


def test_contract_info_reports_a_hanging_probe_and_exits_0(registry, monkeypatch, capsys):
    monkeypatch.setenv(ENV_PROBE_TIMEOUT, "0.2")
    release = threading.Event()
    registry.register_plugin(Plugin(fake("stuck", lambda device: release.wait(60) and None),
                                    fake("truthy", lambda device: True)), "bad-probes")
    try:
        assert mxquant.cli.main(["info", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        reasons = {b["name"]: b["availability"][0]["reason"] for b in report["backends"] if b["name"] in ("stuck", "truthy")}
        assert "did not answer within 0.2 s" in reasons["stuck"]
        assert "probe returned bool True" in reasons["truthy"]
        assert [(r["device"], r["backend"]) for r in report["resolution"]] == [("cpu", AUTO_CPU)]
        assert mxquant.cli.main(["info"]) == 0  # the short form (its lines are cut to 80 columns)
        assert "stuck" in capsys.readouterr().out
        assert mxquant.cli.main(["info", "--full"]) == 0
        assert "did not answer within 0.2 s" in capsys.readouterr().out
    finally:
        release.set()


def test_contract_probe_raising_base_exception_is_its_reason(registry):
    def exits(device):
        raise SystemExit(3)

    registry.register_plugin(Plugin(fake("exits", exits)), "exits-plugin")
    check_automatic_call_falls_back()
    reason = registry.probe(next(e for e in registry.entries() if e.name == "exits"), torch.device("cpu"))
    assert reason.startswith("availability probe raised SystemExit: 3")


def test_contract_spec_that_fails_to_import_is_its_reason(registry):
    spec = mxquant.BackendSpec("ghost", "mxquant_no_such_module_anywhere:backend", ("cpu",), install_hint="pip install ghost")
    registry.register_plugin(Plugin(spec), "ghost-plugin")
    check_automatic_call_falls_back()
    with pytest.raises(mxquant.BackendUnavailableError) as info:
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="ghost")
    assert "cannot import mxquant_no_such_module_anywhere:backend: ModuleNotFoundError" in info.value.reason
    assert "(install: pip install ghost)" in info.value.reason


@pytest.mark.parametrize("value, want", [
    (None, DEFAULT_PROBE_TIMEOUT), ("", DEFAULT_PROBE_TIMEOUT), ("2.5", 2.5), (" 30 ", 30.0),
    ("0", DEFAULT_PROBE_TIMEOUT), ("-1", DEFAULT_PROBE_TIMEOUT), ("soon", DEFAULT_PROBE_TIMEOUT), ("inf", None),
])
def test_probe_timeout_setting(monkeypatch, value, want):
    if value is None:
        monkeypatch.delenv(ENV_PROBE_TIMEOUT, raising=False)
    else:
        monkeypatch.setenv(ENV_PROBE_TIMEOUT, value)
    assert probe_timeout() == want
