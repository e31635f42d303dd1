"""CPU figures: the reference backend's throughput and the public API's per-call overhead.

    python3 benchmarks/bench_cpu.py            # prints JSON; about half a minute

(1) Throughput of the `cpu` (reference) backend on a 2048x4096 bf16 tensor, e4m3, both scale
    modes: median wall time of repeated calls, GB/s with bytes = 2 read + 1 write + 1/32 scale
    per element.
(2) Per-call overhead of the public `mxquant.mxfp8_quantize` over a direct call of the backend
    it resolves to (here `cpu`), on a 1x32 float32 input: loops of 500 calls of each,
    alternating, 101 rounds; the overhead is the median of the per-round differences (µs),
    with its interquartile range, and each side's fastest round (the least disturbed by other
    work on the machine). Both sides do the reference's work on one block; what differs is
    dispatch (cached resolution, argument checks on the first call of a signature only).
(3) The same with a do-nothing backend registered as an inline plugin and forced with
    backend=: the dispatch path alone, which (2) measures under the noise of the reference's
    own ~0.2 ms of small tensor ops.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mxquant  # noqa: E402
from mxquant.backend import Call  # noqa: E402
from mxquant.registry import get_registry  # noqa: E402

E4M3 = torch.float8_e4m3fn


def per_call_us(fn, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def paired(public, direct, calls, rounds):
    """Time `public` and `direct` in alternating loops of `calls` calls, `rounds` times (so
    drift hits both alike): their median per-call µs, the median of the per-round differences
    with its interquartile range, and each side's fastest round."""
    for _ in range(200):
        public()
        direct()
    pub, dir_ = [], []
    for _ in range(rounds):
        pub.append(per_call_us(public, calls))
        dir_.append(per_call_us(direct, calls))
    diffs = [a - b for a, b in zip(pub, dir_)]
    q = statistics.quantiles(diffs, n=4)
    r = lambda v: round(v, 3)  # noqa: E731
    return {"public_us": r(statistics.median(pub)), "direct_us": r(statistics.median(dir_)),
            "overhead_us": r(statistics.median(diffs)), "overhead_iqr_us": [r(q[0]), r(q[2])],
            "min_public_us": r(min(pub)), "min_direct_us": r(min(dir_))}


def throughput(m=2048, k=4096, repeats=15):
    x = torch.randn(m, k, dtype=torch.bfloat16)
    reg = get_registry()
    out = {}
    for mode in ("rceil", "floor"):
        be = reg.lookup("quantize", x.device, x.dtype, E4M3, mode, "linear", "cpu")
        fn = lambda: be(x, E4M3, mode, "linear")  # noqa: E731
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        out[mode] = {"ms": round(t * 1e3, 2), "GB/s": round(m * k * (3 + 1 / 32) / t / 1e9, 3)}
    return out


def overhead(calls=500, rounds=101):
    x = torch.randn(1, 32)
    reg = get_registry()
    backend = reg.resolved_name(Call("quantize", x.device, x.dtype, E4M3, "rceil", "linear"))
    direct = reg.lookup("quantize", x.device, x.dtype, E4M3, "rceil", "linear", backend)
    return {"backend": backend, **paired(lambda: mxquant.mxfp8_quantize(x), lambda: direct(x, E4M3, "rceil", "linear"),
                                         calls, rounds)}


class _NoopPlugin:
    """A plugin with one backend that does no work: returns preallocated outputs."""

    def __init__(self, data, scale):
        self.backend = mxquant.Backend(
            name="noop-bench", capabilities=mxquant.Capabilities(devices=frozenset({"cpu"})),
            probe=lambda device: None, quantize=lambda x, dtype, mode, layout: (data, scale), priority=-1)

    @mxquant.hookimpl
    def register_backends(self, register):
        register(self.backend)


def dispatch_only(calls=2000, rounds=51, x=None):
    """The same comparison with a backend that does nothing (forced by backend=): the dispatch
    path alone, without the reference's ~0.1-0.2 ms of small tensor ops around it."""
    x = torch.randn(1, 32) if x is None else x
    data, scale = mxquant.mxfp8_quantize(x)
    reg = get_registry()
    plugin = _NoopPlugin(data, scale)
    reg.register_plugin(plugin, "noop-bench")
    try:
        direct = reg.lookup("quantize", x.device, x.dtype, E4M3, "rceil", "linear", "noop-bench")
        return paired(lambda: mxquant.mxfp8_quantize(x, backend="noop-bench"),
                      lambda: direct(x, E4M3, "rceil", "linear"), calls, rounds)
    finally:
        reg.unregister_plugin("noop-bench")


def main():
    result = {
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "reference_2048x4096_bf16": throughput(),
        "api_overhead_1x32_fp32": overhead(),
        "dispatch_only_1x32_fp32": dispatch_only(),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
