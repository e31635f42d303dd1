"""The test suite and `mxquant info` survive third-party plugins installed in the environment.

A throwaway distribution is written into a temporary site folder: one entry point hangs at
import, one raises, one registers a CPU backend of top priority that returns garbage (and, in
the last test, a correct one of priority 5 that wins automatic choice). A
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
from subproc import child_env, plugin_site

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
    return plugin_site(tmp_path_factory.mktemp("hostile-site"), "mxquant-hostile-plugins", HOSTILE)


def run(args, *sites, timeout, **env):
    full = child_env(*sites, **env)
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


FIVE = textwrap.dedent("""
    import mxquant
    from mxquant import reference

    @mxquant.hookimpl
    def register_backends(register):
        register(mxquant.Backend("five", mxquant.Capabilities(devices=frozenset({"cpu"}),
                                 scale_modes=frozenset({"rceil", "floor", "compressed-tensors"})),
                                 lambda device: None, reference.quantize, reference.dequantize, priority=5))
    """)


def test_suite_holds_with_a_high_priority_plugin_installed(tmp_path):
    """A correct plugin of priority 5 installed here wins automatic choice in every process that
    loads it: the tests that compare automatic choice with the built-ins' (their subprocesses
    load what is installed, or denied only their own plugins) gave 4 failures with one before.
    It is installed into a user site (PYTHONUSERBASE), which every child interpreter sees, even
    one whose PYTHONPATH is its own; where user sites are off (a venv), through PYTHONPATH."""
    base = tmp_path / "userbase"
    user_site = subprocess.run([sys.executable, "-c", "import site; print(site.ENABLE_USER_SITE and site.getusersitepackages())"],
                               capture_output=True, text=True, env=child_env(PYTHONUSERBASE=str(base))).stdout.strip()
    if user_site != "False":
        Path(user_site).mkdir(parents=True)
        plugin_site(user_site, "mxquant-priority-five", {"five": FIVE})
        sites, env = (), {"PYTHONUSERBASE": str(base)}
    else:
        sites, env = (plugin_site(tmp_path, "mxquant-priority-five", {"five": FIVE}),), {}
    check = run(["-c", "import mxquant, torch; mxquant.mxfp8_quantize(torch.randn(2, 32));"
                 "print(mxquant.list_backends().resolution[0].backend)"], *sites, timeout=120, **env)
    assert check.stdout.split() == ["five"], check.stderr  # it is seen, and it wins
    proc = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_plugins.py::test_plugins_env",
                "tests/test_cpu_native_build.py::test_fallback_to_eager_without_native_library"], *sites, timeout=600,
               **env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "7 passed" in proc.stdout
