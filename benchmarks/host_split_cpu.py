"""Host time of one MXFP8 call on the CPU split into its layers (host_split.py is the CUDA one).

    python3 benchmarks/host_split_cpu.py [--shape 16x4096] [--calls 300] [--rounds 15]

Prints JSON: median µs per call on the calling thread's CPU time (time.thread_time, so time
spent descheduled on a shared machine is not billed; one torch thread), the layers measured in
alternation round by round, outermost first:
  public              mxquant.mxfp8_quantize(x) / mxfp8_dequantize(data, scale) (automatic: cpu-native)
  run_*               ops.run_quantize / run_dequantize: checks, registry, backend, to_public
  backend             the resolved backend function: its allocations, its glue, the C kernel
  kernel              the C kernel into preallocated outputs (cpu-native internals)
  allocations         the quantize outputs' two torch.empty_strided calls
  custom op           torch.ops.mxquant.quantize(...): the dispatcher path the eager call skips
                      (what torch.compile, fake tensors and inputs that require grad take)
  cast                x.to(torch.float8_e4m3fn), for scale
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

E4M3 = torch.float8_e4m3fn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="16x4096")
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args()
    import mxquant
    from mxquant import ops
    from mxquant.backends import _cpu_shared, cpu_native
    from mxquant.registry import get_registry

    torch.set_num_threads(1)
    m, k = map(int, a.shape.split("x"))
    x = torch.randn(m, k, dtype=torch.bfloat16)
    reg = get_registry()
    q = reg.lookup("quantize", x.device, x.dtype, E4M3, "rceil", "linear", None)
    dq = reg.lookup("dequantize", x.device, torch.bfloat16, E4M3, None, "linear", None)
    data, scale = mxquant.mxfp8_quantize(x)
    out = torch.empty_like(x)
    layers = {
        "quantize public": lambda: mxquant.mxfp8_quantize(x),
        "quantize run_quantize": lambda: ops.run_quantize(x, E4M3, "rceil", "linear", None),
        "quantize backend": lambda: q(x, E4M3, "rceil", "linear"),
        "quantize kernel": lambda: cpu_native._quantize(x, data, scale, E4M3, "rceil", "linear"),
        "quantize allocations": lambda: _cpu_shared.new_outputs(x.shape, E4M3, (m, k // 32)),
        "quantize custom op": lambda: torch.ops.mxquant.quantize(x, E4M3, "rceil", "linear", None),
        "dequantize public": lambda: mxquant.mxfp8_dequantize(data, scale),
        "dequantize run_dequantize": lambda: ops.run_dequantize(data, scale, "linear", torch.bfloat16, None),
        "dequantize backend": lambda: dq(data, scale, "linear", torch.bfloat16),
        "dequantize kernel": lambda: cpu_native._dequantize(data, scale, "linear", out),
        "cast": lambda: x.to(E4M3),
    }
    samples = {name: [] for name in layers}
    for fn in layers.values():
        for _ in range(20):
            fn()
    for _ in range(a.rounds):
        for name, fn in layers.items():
            t0 = time.thread_time_ns()
            for _ in range(a.calls):
                fn()
            samples[name].append((time.thread_time_ns() - t0) / a.calls / 1e3)
    result = {"shape": [m, k], "clock": "thread", "mxquant": mxquant.__file__}
    result.update({name: round(statistics.median(v), 2) for name, v in samples.items()})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
