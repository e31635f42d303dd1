"""Host time per public call at 16x4096 bf16: what the call path costs on the CPU side.

    python3 benchmarks/host_overhead.py [--device cuda] [--shape 16x4096] [--calls 3000] [--rounds 15]
                                        [--clock thread] [--more]

Prints one JSON line: median µs per call (of `rounds` loops of `calls` calls; the GPU is not
synchronised inside a loop, so a CUDA figure is the host's launch-side time) for
  public    mxquant.mxfp8_quantize(x) with automatic selection
  forced    the same with backend= the backend automatic selection picked
  dispatch  the public call with a do-nothing backend forced (the call path alone)
  dequantize  mxquant.mxfp8_dequantize(data, scale) of public's result
  cast      x.to(torch.float8_e4m3fn), the floor any quantizer call is compared with
and with --more, where the tree has them: colwise (axis=-2) and rowcol on x with M rounded up
to 32 rows, mxfp4 / nvfp4 quantize. --clock thread times the calling thread's CPU time
(time.thread_time) instead of the wall clock: on a machine shared with other work, time spent
descheduled is not billed to the call (the CPU backends run one thread here).
It uses only the public API, so the same script measures an older mxquant installed elsewhere
(docs/performance.md compares the trees before and after a change on one machine, one run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import mxquant
from timing import per_call_us  # benchmarks/ is on sys.path when a script here runs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--shape", default="16x4096")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall")
    p.add_argument("--more", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    m, k = map(int, a.shape.split("x"))
    x = torch.randn(m, k, dtype=torch.bfloat16, device=a.device)
    x32 = torch.randn(-(-m // 32) * 32, k, dtype=torch.bfloat16, device=a.device)
    timer = per_call_us if a.clock == "wall" else thread_us
    picked = mxquant.get_registry().resolved_name(
        mxquant.backend.Call("quantize", x.device, x.dtype, torch.float8_e4m3fn, "rceil", "linear"))
    data, scale = mxquant.mxfp8_quantize(x)

    class NothingPlugin:
        @mxquant.hookimpl
        def register_backends(self, register):
            register(mxquant.Backend("nothing", mxquant.Capabilities(devices=frozenset({x.device.type})),
                                     lambda device: None, lambda *args: (data, scale), priority=-100))

    mxquant.get_registry().register_plugin(NothingPlugin(), "nothing-plugin")
    out = {"mxquant": mxquant.__version__, "file": mxquant.__file__, "device": str(x.device), "picked": picked,
           "shape": [m, k], "clock": a.clock}
    calls = [("public", lambda: mxquant.mxfp8_quantize(x)),
             ("forced", lambda: mxquant.mxfp8_quantize(x, backend=picked)),
             ("dispatch", lambda: mxquant.mxfp8_quantize(x, backend="nothing")),
             ("dequantize", lambda: mxquant.mxfp8_dequantize(data, scale)),
             ("cast", lambda: x.to(torch.float8_e4m3fn))]
    if a.more:
        calls += [("colwise", lambda: mxquant.mxfp8_quantize(x32, axis=-2)),
                  ("rowcol", lambda: mxquant.mxfp8_quantize_rowcol(x32))] if hasattr(mxquant, "mxfp8_quantize_rowcol") else []
        calls += [("mxfp4", lambda: mxquant.mxfp4_quantize(x)),
                  ("nvfp4", lambda: mxquant.nvfp4_quantize(x))] if hasattr(mxquant, "mxfp4_quantize") else []
    for name, fn in calls:
        n = a.calls if name in ("dispatch", "cast") or x.is_cuda else max(50, a.calls // 30)
        out[name] = round(timer(fn, n, a.rounds, warmup=200), 2)
    print(json.dumps(out))


def thread_us(fn, calls: int, repeats: int, warmup: int = 1) -> float:
    """per_call_us on the calling thread's CPU time (CPU calls only)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        for _ in range(calls):
            fn()
        samples.append((time.thread_time_ns() - t0) / calls / 1e3)
    return statistics.median(samples)


if __name__ == "__main__":
    main()
