"""`mxquant verify --jobs N` (mxquant/conformance/parallel_checks.py): the checks spread over
worker processes give the results one process gives, in the same order; a backend the workers
cannot find fails its checks with the reason, never passes them; a bad N is refused. The oracle
of the parallel run is the serial engine (check_call in this process)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import mxquant
import mxquant.cli
from mxquant import reference
from mxquant.conformance.compare import FAIL, PASS
from mxquant.conformance.parallel_checks import run_in_workers
from mxquant.conformance.verify import check_call

from inline_plugin import Plugin
from subproc import child_env, plugin_site

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
    results = [r for r in report["results"] if r["op"] is not None and r["status"] != "not-supported"]
    assert rc == 1 and results and all(r["status"] == FAIL for r in results)
    assert all("not registered in a fresh process" in r["reason"] and "without --jobs" in r["reason"]
               for r in results), results[0]["reason"]


@pytest.mark.parametrize("bad", ["0", "-3", "two"])
def test_bad_jobs_is_refused(bad, capsys):
    with pytest.raises(SystemExit) as e:
        mxquant.cli.main(["verify", "--jobs", bad])
    assert e.value.code == 2 and "--jobs takes a whole number >= 1" in capsys.readouterr().err


CRASHY = textwrap.dedent("""
    import os

    import torch

    import mxquant
    from mxquant import reference

    def quantize(x, dtype, mode, layout):
        if x.dtype == torch.float16:
            os._exit(3)  # a crash: the process goes without a Python error
        return reference.quantize(x, dtype, mode, layout)

    @mxquant.hookimpl
    def register_backends(register):
        caps = mxquant.Capabilities(devices=frozenset({"cpu"}), element_dtypes=frozenset({torch.float8_e4m3fn}),
                                    scale_modes=frozenset({"rceil"}), scale_layouts=frozenset({"linear"}),
                                    input_dtypes=frozenset({torch.bfloat16, torch.float16, torch.float32}))
        register(mxquant.Backend("crashy", caps, lambda d: None, quantize, None, priority=-5))
    """)


def test_a_worker_that_dies_fails_only_its_own_check(tmp_path):
    """A plugin installed as pip would (an entry point) whose quantize kills its process on fp16
    input: with --jobs 2 only the fp16 check fails, saying its process died; bf16 and fp32 pass
    (each check left when the pool broke runs again in a process of its own)."""
    site = plugin_site(tmp_path, "mxquant-crashy-plugin", {"crashy": CRASHY})
    env = child_env(site, MXQUANT_PLUGINS="crashy")
    proc = subprocess.run([sys.executable, "-m", "mxquant", "verify", "--json", "--backend", "crashy", "--jobs", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    report = json.loads(proc.stdout)
    status = {r["hp_dtype"]: (r["status"], r["reason"]) for r in report["results"]
              if r["op"] == "quantize" and r["status"] != "not-supported"}
    assert proc.returncode == 1 and set(status) == {"bfloat16", "float16", "float32"}, (proc.stderr[-2000:], status)
    assert status["bfloat16"][0] == status["float32"][0] == PASS, status
    assert status["float16"][0] == FAIL and "died running this check" in status["float16"][1], status


SLOW = textwrap.dedent("""
    import time

    import mxquant
    from mxquant import reference

    def quantize(x, dtype, mode, layout):
        time.sleep(3)
        return reference.quantize(x, dtype, mode, layout)

    @mxquant.hookimpl
    def register_backends(register):
        caps = mxquant.Capabilities(devices=frozenset({"cpu"}))
        register(mxquant.Backend("slow", caps, lambda d: None, quantize, reference.dequantize, priority=-5))
    """)


def test_ctrl_c_stops_the_workers_at_once(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) ends `verify --jobs 2` within
    seconds, not after the 36 quantize checks of 3 s each that are still queued."""
    site = plugin_site(tmp_path, "mxquant-slow-plugin", {"slow": SLOW})
    env = child_env(site, MXQUANT_PLUGINS="slow")
    # SIGINT's default restored first: a process started in the background (as CI or a test runner
    # may start this one) inherits it ignored
    main = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "sys.argv = ['mxquant', 'verify', '--backend', 'slow', '--jobs', '2']; "
            "runpy.run_module('mxquant', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", main],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    time.sleep(8)  # the workers have started and are in their first checks
    assert proc.poll() is None
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and time.monotonic() - t0 < 15, (proc.returncode, time.monotonic() - t0)
