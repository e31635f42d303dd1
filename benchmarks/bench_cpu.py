"""CPU figures: the CPU quantize paths against torch's own fp8 cast, and the public API's
per-call overhead.

    python3 benchmarks/bench_cpu.py [--threads 2] [--isa 'x86-64 avx2'] [--out docs/perf/cpu-DATE.json]   # minutes

(1) "paths" (benchmarks/cpu_paths.py): cpu-native, cpu-eager, the reference (`cpu`) and
    `x.to(torch.float8_e4m3fn)`, at 2048x4096 bf16, 4096x8192 bf16 and 2048x4096 fp32 (e4m3,
    rceil, linear), with fresh outputs and with reused ones (quantize_into); dequantize
    2048x4096 e4m3 to bf16 and fp32; "peak_memory": the peak RSS one call adds, in a subprocess.
(2) Per-call overhead of the public `mxquant.mxfp8_quantize` over a direct call of the backend
    it resolves to, on a 1x32 float32 input: loops of 500 calls of each,
    alternating, 101 rounds; the overhead is the median of the per-round differences (µs),
    with its interquartile range, and each side's fastest round (the least disturbed by other
    work on the machine). Both sides do the backend's work on one block; what differs is
    dispatch (cached resolution, argument checks on the first call of a signature only).
(3) The same with a do-nothing backend registered as an inline plugin and forced with
    backend=: the dispatch path alone, without any backend's work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import cpu_paths  # benchmarks/ is on sys.path when a script here runs
import mxquant
from mxquant.backend import Call
from mxquant.registry import get_registry

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--rounds", type=int, default=9, help="timing rounds per candidate (default 9)")
    parser.add_argument("--isa", help="cpu-native's instruction-set variant, e.g. 'x86-64 avx2' (default: the CPU's best)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu_paths.select_isa(args.isa)
    result = {
        **cpu_paths.run_header(),
        "paths": cpu_paths.run_all(args.rounds),
        "api_overhead_1x32_fp32": overhead(),
        "dispatch_only_1x32_fp32": dispatch_only(),
    }
    cpu_paths.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
