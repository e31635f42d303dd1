"""Shared fixtures and the device markers, enforced here: a test marked `cuda` (or `xpu`)
is skipped, with the reason, where torch sees no such device, so CI (CPU only) skips them
cleanly and the GPU machine runs them (`python3 -m pytest -m cuda tests/`).

The suite sees no third-party plugin installed in the environment: MXQUANT_PLUGINS=none is set
here, before any test module imports (some call mxquant at import), and subprocesses inherit
it. Those started with subproc.child_env (no MXQUANT_* variable) name the plugins they load, or
compare with what the installed plugins give; tests/test_plugin_isolation.py runs the affected
tests with hostile plugins and with a correct priority-5 plugin installed."""

import os
import tempfile

# Before torch loads its OpenMP runtime (and so in every process the suite starts): threads that
# wait at a barrier sleep instead of spinning. README's command runs two test processes on CI's
# two cores, beside the interpreter's side runs and the tests' own subprocesses; GNU OpenMP's
# spinning threads took cores from the others (`mxquant verify --backend cpu` beside two busy
# processes on a 2-core EPYC, 2026-12-07: 30.8 s by default, 19.5 s passive, 17.4 s on one
# thread). Thread counts are unchanged: the multi-threaded paths are still what runs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from mxquant.plugins import ENV_PLUGINS  # noqa: E402
from mxquant.registry import Registry, set_registry  # noqa: E402
from mxquant.selection import ENV_ALLOW, ENV_BACKEND  # noqa: E402

os.environ[ENV_PLUGINS] = "none"

if os.environ.get("TRITON_INTERPRET") == "1":  # tests/test_triton_interpreter.py's side runs
    import interpreter_shim

    interpreter_shim.install()

_DEVICES = {
    "cuda": lambda: torch.cuda.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def pytest_configure(config):
    # torch.compile's on-disk cache is keyed on the graph, not on our ops' fake implementations:
    # graphs compiled against an older mxquant (say, another scale shape) would be reused and
    # fail their shape asserts. The suite compiles into a cache of its own, fresh each run.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="mxquant-inductor-"))


SLOW_FIRST = ("test_triton_interpreter.py", "test_cpu_native_build.py", "test_docs_examples.py", "test_cli_output.py",
              "test_vllm_load.py", "test_plugin_isolation.py", "test_plugins.py", "test_verify_jobs.py",
              "test_plugin_hostile.py", "test_cli_verify_reference.py")
"""The modules that take longest (the interpreter's side-environment runs most: 6-7 minutes of
one 2-core CI machine), run first, in this order; the rest keep pytest's order. CI runs the
suite in two processes, a file to a process (pytest-xdist --dist loadfile; with
--no-loadscope-reorder it hands files out in this order, without it most tests first, which put
the interpreter's module last): a long module started last leaves the other process idle."""


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: a module's own order kept)


def pytest_runtest_setup(item):
    for name, present in _DEVICES.items():
        if item.get_closest_marker(name) is not None and not present():
            pytest.skip(f"no {name.upper()} device")


@pytest.fixture
def registry(monkeypatch):
    """A fresh global registry (entry points discovered anew: the built-in ones only, as
    MXQUANT_PLUGINS=none) with the selection variables unset, no warning of the registry's shown
    yet, and a wide terminal for rich; the previous registry comes back after."""
    for var in (ENV_BACKEND, ENV_ALLOW):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(ENV_PLUGINS, "none")
    monkeypatch.setenv("COLUMNS", "200")
    from mxquant import registry as registry_module

    monkeypatch.setattr(registry_module, "_WARNED", set())  # (its warnings shown once per process)
    reg = Registry()
    previous = set_registry(reg)
    try:
        yield reg
    finally:
        set_registry(previous)


@pytest.fixture
def cpu_only(monkeypatch):
    """The test describes a machine without a GPU, as CI is: torch sees none, in this process
    and in the subprocesses it starts (CUDA_VISIBLE_DEVICES=""). Tests of what `mxquant info`,
    `verify` or automatic selection report here use it, so they hold on the GPU machine too."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
