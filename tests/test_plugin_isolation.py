"""The test suite and `mxquant info` survive third-party plugins installed in the environment.

A throwaway distribution is written into a temporary site folder: one entry point hangs at
import, one raises, one registers a CPU backend of top priority that returns garbage. A
subprocess sees it through PYTHONPATH, as it would see a distribution in site-packages, with
MXQUANT_PLUGINS unset as a user would have it. tests/conftest.py sets MXQUANT_PLUGINS=none for
the session, so pytest (collection included: some test modules call mxquant at import) never
imports them; `mxquant info` with MXQUANT_PLUGINS=none lists them as skipped and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cpu_auto import AUTO_CPU  # tests/ is on sys.path
from subproc import child_env

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)

ROOT = Path(__file__).resolve().parent.parent

HOSTILE = {
    "hangs": 'import sys, time\nprint("HOSTILE PLUGIN IMPORTED", file=sys.stderr, flush=True)\ntime.sleep(3600)\n',
    "raises": 'raise RuntimeError("hostile plugin fails at import")\n',
    "garbage": textwrap.dedent("""
        import torch, mxquant

        def quantize(x, dtype, mode, layout):
            return torch.zeros(1), torch.zeros(1)

        @mxquant.hookimpl
        def register_backends(register):
            register(mxquant.Backend("garbage", mxquant.Capabilities(devices=frozenset({"cpu"})),
                                     lambda device: None, quantize, priority=1000))
        """),
}


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("hostile-site")
    for name, source in HOSTILE.items():
        (site / f"mxquant_hostile_{name}.py").write_text(source)
    info = site / "mxquant_hostile_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mxquant-hostile-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mxquant.backends]\n" + "".join(f"{n} = mxquant_hostile_{n}\n" for n in HOSTILE))
    return site


def run(args, site, timeout, **env):
    full = child_env(site, **env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, timeout=timeout,
                          cwd=ROOT)


def test_suite_ignores_hostile_plugins(hostile_site):
    # Collection of a module that calls mxquant at import, registry tests that count plugins and
    # priorities, and a test that starts an `mxquant info` subprocess of its own.
    proc = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_api.py::test_quantize_does_not_mutate_its_input",
                "tests/test_registry.py::test_plugin_whose_register_raises_is_reported",
                "tests/test_registry.py::test_priority_order", "tests/test_cli_info.py::test_info_json_subprocess"],
               hostile_site, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 passed" in proc.stdout
    assert "HOSTILE PLUGIN IMPORTED" not in proc.stderr


@pytest.mark.parametrize("setting", ["none", "-hangs"])
def test_info_survives_hostile_plugins(hostile_site, setting):
    # "-hangs" loads the other two: the distribution is visible to discovery, as one installed
    # in site-packages would be.
    proc = run(["-m", "mxquant", "info", "--json"], hostile_site, timeout=120, MXQUANT_PLUGINS=setting)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    plugins = {p["name"]: p for p in report["plugins"]}
    assert plugins["hangs"]["status"] == "skipped"
    if setting == "none":
        assert plugins["raises"]["status"] == plugins["garbage"]["status"] == "skipped"
        assert [(r["device"], r["backend"]) for r in report["resolution"]] == [("cpu", AUTO_CPU)]
    else:
        assert plugins["raises"]["status"] == "error" and "hostile plugin fails at import" in plugins["raises"]["error"]
        assert plugins["garbage"]["status"] == "loaded"
    assert "HOSTILE PLUGIN IMPORTED" not in proc.stderr
