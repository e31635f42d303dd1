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
    import os
    import time

    import mxquant
    from mxquant import reference

    def quantize(x, dtype, mode, layout):
        with open(os.path.join(os.path.dirname(__file__), f"worker-{os.getpid()}.pid"), "w"):
            pass
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
    # the workers have started and are in their first checks: each writes its pid file first (a
    # fixed 8 s wait was too short on a loaded 2-core CI machine running two test processes)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("worker-*.pid")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    assert proc.poll() is None
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and time.monotonic() - t0 < 15, (proc.returncode, time.monotonic() - t0)
    workers = [int(p.stem.split("-")[1]) for p in tmp_path.glob("worker-*.pid")]
    assert workers  # the checks had started in worker processes
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "a worker outlived the interrupted run"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


LIMITED = textwrap.dedent("""
    import torch

    import mxquant
    from mxquant import reference

    @mxquant.hookimpl
    def register_backends(register):
        caps = mxquant.Capabilities(devices=frozenset({"cpu"}), scale_modes=frozenset({"floor"}),
                                    input_dtypes=frozenset({torch.bfloat16}))
        register(mxquant.Backend("limited", caps, lambda d: None, reference.quantize, reference.dequantize,
                                 priority=-5))
    """)

COMPARE = """
import json
from mxquant.conformance import collect

seen = {1: [], 2: []}
reports = {j: collect(["limited"], jobs=j, progress=lambda *a, j=j: seen[j].append(a[2:])) for j in (1, 2)}
print(json.dumps({"same": reports[1]["results"] == reports[2]["results"],
                  "statuses": sorted({r["status"] for r in reports[1]["results"]}),
                  "totals": [sorted({t for _, t in seen[j]}) for j in (1, 2)],
                  "last": [max(seen[j]) for j in (1, 2)]}))
"""


def test_jobs_give_the_serial_report_with_not_supported_checks_among_them(tmp_path):
    """collect(jobs=2) against collect(jobs=1) for a plugin (an entry point) that serves bf16 and
    floor only: the same results in the same order, the not-supported ones (answered in the
    calling process) among them, and progress counting to the same total."""
    site = plugin_site(tmp_path, "mxquant-limited-plugin", {"limited": LIMITED})
    proc = subprocess.run([sys.executable, "-c", COMPARE], capture_output=True, text=True,
                          env=child_env(site, MXQUANT_PLUGINS="limited"), timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["same"] and out["statuses"] == ["not-supported", "pass"], (out, proc.stderr[-2000:])
    assert out["totals"][0] == out["totals"][1] and out["last"][0] == out["last"][1], out
