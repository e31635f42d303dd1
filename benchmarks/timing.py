"""What the benchmarks share: host time per call, and the CPU's name. Imports no mxquant, so
a script measuring an older mxquant installed elsewhere (host_overhead.py) can use it too."""

from __future__ import annotations

import platform
import statistics
import time

import torch


def per_call_us(fn, calls: int = 2000, repeats: int = 15, warmup: int = 1) -> float:
    """Median over `repeats` loops of `calls` calls of `fn`'s host time per call, in µs. Where
    a CUDA device is present each loop starts and ends synchronised, so no queued work of one
    loop is billed to the next."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
