"""`mxquant info` (table and --json) and the error a forced unknown backend gives on the command line."""

import json
import pytest
import re
import shutil
import subprocess
import sys
from pathlib import Path

from cpu_auto import AUTO_CPU
from subproc import child_env

import mxquant.cli

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "env.md"

# The documented keys of `mxquant info --json` (docs/env.md, "mxquant info --json").
TOP_KEYS = {"schema_version", "mxquant_version", "torch_version", "python", "devices", "backends", "plugins",
            "resolution", "env", "errors"}
BACKEND_KEYS = {"name", "origin", "plugin", "distribution", "priority", "devices", "capabilities", "availability",
                "deviations", "install_hint", "description", "error"}
AVAILABILITY_KEYS = {"device", "available", "reason"}
DEVIATION_KEYS = {"code", "summary", "allowed"}
PLUGIN_KEYS = {"name", "distribution", "value", "builtin", "status", "error", "skipped", "backends"}
RESOLUTION_KEYS = {"device", "call", "backend", "forced_by", "error"}
ENV_KEYS = {"MXQUANT_BACKEND", "MXQUANT_ALLOW_DEVIATIONS", "MXQUANT_PLUGINS", "MXQUANT_PROBE_TIMEOUT",
            "MXQUANT_CPU_CACHE_MB"}


def clean_env(**extra):
    """The environment without mxquant's variables, except MXQUANT_PLUGINS=none: no third-party
    plugin installed here takes part (tests/conftest.py)."""
    return child_env(**{"MXQUANT_PLUGINS": "none", **extra})


def info_command():
    script = shutil.which("mxquant")
    return [script] if script else [sys.executable, "-m", "mxquant"]


def test_info_table(registry, capsys):
    assert mxquant.cli.main(["info", "--full"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ cpu\s+│ built-in\s+│ 0\s+│ cpu\s+│ available", out), out
    for name in ("triton", "flashinfer", "xpu"):
        row = re.search(rf"│ {name}\s+│ built-in\s+│ \S+\s+│ (cuda|xpu)\s+│ unavailable: (.+?)│", out)
        assert row and row.group(2).strip(), (name, out)
    assert "MXQUANT_BACKEND=(unset)" in out and "MXQUANT_PLUGINS=none" in out  # set by tests/conftest.py
    assert re.search(rf"│ cpu\s+│ {AUTO_CPU}\s+│ automatic", out)


def test_info_json_subprocess():
    proc = subprocess.run(info_command() + ["info", "--json"], capture_output=True, text=True, env=clean_env(),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) == TOP_KEYS and report["schema_version"] == 1
    assert report["errors"] == [] and "cpu" in report["devices"]
    assert report["env"] == {**dict.fromkeys(ENV_KEYS), "MXQUANT_PLUGINS": "none"}
    backends = {b["name"]: b for b in report["backends"]}
    for b in backends.values():
        assert set(b) == BACKEND_KEYS
        for a in b["availability"]:
            assert set(a) == AVAILABILITY_KEYS
    assert backends["cpu"]["availability"] == [{"device": "cpu", "available": True, "reason": None}]
    assert backends["cpu"]["origin"] == "built-in" and backends["cpu"]["distribution"] == "mxquant"
    for name in ("triton", "flashinfer", "xpu"):
        assert backends[name]["availability"], name
        for a in backends[name]["availability"]:
            assert a["available"] is False and a["reason"], (name, a)
    for p in report["plugins"]:
        assert set(p) == PLUGIN_KEYS
    builtin = next(p for p in report["plugins"] if p["name"] == "builtin")
    assert (builtin["status"], builtin["distribution"]) == ("loaded", "mxquant")
    for r in report["resolution"]:
        assert set(r) == RESOLUTION_KEYS
    cpu = next(r for r in report["resolution"] if r["device"] == "cpu")
    assert (cpu["backend"], cpu["forced_by"], cpu["error"]) == (AUTO_CPU, None, None)


def test_json_keys_are_documented():
    from dataclasses import fields

    from mxquant.report import DeviationRecord

    assert {f.name for f in fields(DeviationRecord)} == DEVIATION_KEYS
    text = DOCS.read_text()
    for key in TOP_KEYS | BACKEND_KEYS | AVAILABILITY_KEYS | DEVIATION_KEYS | PLUGIN_KEYS | RESOLUTION_KEYS:
        assert f"`{key}`" in text, key


def test_info_never_crashes_on_bad_settings(registry, monkeypatch, capsys):
    monkeypatch.setenv("MXQUANT_BACKEND", "nonexistent")
    monkeypatch.setenv("MXQUANT_PLUGINS", "a,-b")  # invalid: mixes allow and deny
    monkeypatch.setenv("MXQUANT_ALLOW_DEVIATIONS", "*")
    monkeypatch.setenv("MXQUANT_CPU_CACHE_MB", "lots")  # invalid: not a whole number of MiB
    assert mxquant.cli.main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cpu = next(r for r in report["resolution"] if r["device"] == "cpu")
    assert cpu["backend"] is None and "unknown backend 'nonexistent'" in cpu["error"]
    assert cpu["forced_by"] == "MXQUANT_BACKEND=nonexistent"
    assert report["env"] == {"MXQUANT_BACKEND": "nonexistent", "MXQUANT_PLUGINS": "a,-b",
                             "MXQUANT_ALLOW_DEVIATIONS": "*", "MXQUANT_PROBE_TIMEOUT": None,
                             "MXQUANT_CPU_CACHE_MB": "lots"}
    assert any("MXQUANT_CPU_CACHE_MB='lots'" in e for e in report["errors"]), report["errors"]
    assert mxquant.cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "unknown backend 'nonexistent'" in out and "MXQUANT_CPU_CACHE_MB='lots'" in out


def test_forced_unknown_backend_fails_with_candidates():
    code = "import mxquant, torch; mxquant.mxfp8_quantize(torch.randn(2, 32))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=clean_env(MXQUANT_BACKEND="nonexistent"))
    assert proc.returncode != 0
    err = proc.stderr
    assert "UnknownBackendError" in err and "unknown backend 'nonexistent'" in err
    assert "forced by MXQUANT_BACKEND=nonexistent" in err and "candidates for this call:" in err
    assert re.search(r"^\s+cpu\s+\[built-in\]\s+ok$", err, re.M), err
    for name in ("triton", "flashinfer", "xpu"):
        assert re.search(rf"^\s+{name}\s+\[built-in\]\s+does not serve device type 'cpu'$", err, re.M), err
