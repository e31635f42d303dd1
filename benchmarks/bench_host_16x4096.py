"""Host time of one public call at 16x4096 bf16 on CPU (the shape of the host-overhead bar in
docs/performance.md), and what mxquant's own call path adds to it.

    python3 benchmarks/bench_host_16x4096.py       # prints JSON; about a minute

(1) `mxquant.mxfp8_quantize(x, backend="cpu")` against a direct call of the `cpu` backend's
    quantize: median per-call µs of each over alternating loops, and the median difference.
(2) The same with a do-nothing backend (returns preallocated outputs of the right shapes)
    forced with backend=: the dispatch path alone (lookup, argument and output checks).
(3) The cost of the output checks alone (mxquant/outputs.py): the do-nothing backend's public
    call with the checks, against the same call with `ops.check_outputs` and `ops.versions`
    replaced by pass-throughs.
Loops and rounds: bench_cpu.paired. The machine's noise shows in the interquartile ranges.
"""

from __future__ import annotations

import json
import platform
import sys

import torch

import mxquant
from bench_cpu import E4M3, _NoopPlugin, dispatch_only, paired  # benchmarks/ is on sys.path when run
from mxquant.registry import get_registry
from timing import cpu_model

SHAPE = (16, 4096)


def public_vs_cpu(calls=20, rounds=31):
    x = torch.randn(SHAPE, dtype=torch.bfloat16)
    direct = get_registry().lookup("quantize", x.device, x.dtype, E4M3, "rceil", "linear", "cpu")
    return paired(lambda: mxquant.mxfp8_quantize(x, backend="cpu"), lambda: direct(x, E4M3, "rceil", "linear"),
                  calls, rounds)


def output_checks(calls=2000, rounds=51):
    from mxquant import ops

    if not hasattr(ops, "check_outputs"):
        return None  # a tree without output checks
    x = torch.randn(SHAPE, dtype=torch.bfloat16)
    data, scale = mxquant.mxfp8_quantize(x, backend="cpu")
    reg = get_registry()
    reg.register_plugin(_NoopPlugin(data, scale), "noop-bench")
    check, versions = ops.check_outputs, ops.versions

    def unchecked():
        ops.check_outputs, ops.versions = (lambda fn, out, *a: out), (lambda *a: None)
        try:
            mxquant.mxfp8_quantize(x, backend="noop-bench")
        finally:
            ops.check_outputs, ops.versions = check, versions

    def checked():  # the same two assignments, so that only the checks differ
        ops.check_outputs, ops.versions = check, versions
        try:
            mxquant.mxfp8_quantize(x, backend="noop-bench")
        finally:
            ops.check_outputs, ops.versions = check, versions

    try:
        return paired(checked, unchecked, calls, rounds)
    finally:
        reg.unregister_plugin("noop-bench")


def main():
    result = {"torch": torch.__version__, "python": platform.python_version(),
              "cpu": cpu_model(), "threads": torch.get_num_threads(),
              "shape": list(SHAPE), "cpu_backend_bf16": public_vs_cpu(), "noop_backend_bf16": dispatch_only(x=torch.randn(SHAPE, dtype=torch.bfloat16)),
              "output_checks_bf16": output_checks()}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
