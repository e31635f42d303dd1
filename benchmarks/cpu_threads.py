"""cpu-native, cpu-eager and torch's own cast at 1..N intra-op threads: how each scales on a
many-core host. One shape (default 2048x4096 bf16 -> e4m3, rceil, linear), fresh outputs,
interleaved rounds, each call after cpu_paths.settle().

    python3 benchmarks/cpu_threads.py [--shape 2048x4096] [--dtype bfloat16] [--rounds 7] [--isa NAME] [--out F.json]

Per thread count: median wall ms of each path, and the median CPU ms of the process per call
(all threads; it does not grow while a call waits for a busy machine's cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

import cpu_paths  # benchmarks/ is on sys.path when a script here runs
from mxquant.backends import cpu_eager
from timing import cpu_model

E4M3 = torch.float8_e4m3fn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="2048x4096", help="input shape MxK (default 2048x4096)")
    p.add_argument("--dtype", default="bfloat16", help="input dtype: float32, bfloat16 or float16 (default bfloat16)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per thread count (default 7)")
    p.add_argument("--isa", help="cpu-native's instruction-set variant, e.g. 'x86-64 avx2' (default: the CPU's best)")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    cpu_paths.select_isa(a.isa)
    m, k = (int(v) for v in a.shape.split("x"))
    x = torch.randn(m, k).to(getattr(torch, a.dtype))
    native = cpu_paths._native()
    counts = sorted({1, 2, 4, 8, os.cpu_count() or 1} & set(range(1, (os.cpu_count() or 1) + 1)))
    fns = {"torch_cast": lambda: x.to(E4M3), "eager": lambda: cpu_eager.quantize(x, E4M3, "rceil", "linear")}
    if native is not None:
        fns["native"] = lambda: native.quantize(x, E4M3, "rceil", "linear")
    res, cpu_ms, load = {}, {}, [os.getloadavg()]
    for n in counts:
        torch.set_num_threads(n)
        stats = cpu_paths.timed_rounds(fns, a.rounds)
        res[n] = {name: round(s["median_s"] * 1e3, 3) for name, s in stats.items()}
        cpu_ms[n] = {name: round(s["cpu_median_s"] * 1e3, 3) for name, s in stats.items()}
        load.append(os.getloadavg())
        print(n, res[n], "cpu", cpu_ms[n], flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(["python3", *sys.argv]),
           "cpu": cpu_model(), "torch": torch.__version__, "shape": a.shape, "dtype": a.dtype,
           "native_isa": cpu_paths.native_isa(), "loadavg": load, "median_ms_by_threads": res,
           "cpu_median_ms_by_threads": cpu_ms}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
