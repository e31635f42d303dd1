"""One launch of each kernel worth profiling, inside cudaProfilerStart/Stop, for Nsight Compute.

    ncu --profile-from-start off --set full --csv --page details \
        python3 benchmarks/ncu_cases.py [--shape 8192x8192] [--only colwise,mxfp4] > ncu.csv

Every case is warmed up (compiled, autotuned) before the profiled window, so ncu sees exactly one
launch per case, in the order printed to stderr (the kernel names tell them apart too). bf16 input,
e4m3 elements, rceil (NVFP4: compressed-tensors, its one rule, with the global scale given).
"""

from __future__ import annotations

import argparse
import sys

import torch

E4M3 = torch.float8_e4m3fn


def cases(x):
    from mxquant.backends import _triton_fp4_ops as fp4
    from mxquant.backends import _triton_training_ops as tr
    from mxquant.backends import triton as tb

    dst = torch.empty_like(x)
    g = fp4.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone()
    return {
        "copy": lambda: dst.copy_(x),
        "rowwise": lambda: tb.quantize(x, E4M3, "rceil", "linear"),
        "rowwise_swizzled": lambda: tb.quantize(x, E4M3, "rceil", "swizzled"),
        "colwise": lambda: tr.quantize_colwise(x, E4M3, "rceil", "linear"),
        "colwise_swizzled": lambda: tr.quantize_colwise(x, E4M3, "rceil", "swizzled"),
        "rowcol": lambda: tr.quantize_rowcol(x, E4M3, "rceil", "linear"),
        "rowcol_swizzled": lambda: tr.quantize_rowcol(x, E4M3, "rceil", "swizzled"),
        "mxfp4": lambda: fp4.mxfp4_quantize(x, "rceil", "linear"),
        "mxfp4_swizzled": lambda: fp4.mxfp4_quantize(x, "rceil", "swizzled"),
        "nvfp4": lambda: fp4.nvfp4_quantize(x, g, "compressed-tensors", "linear"),
        "nvfp4_swizzled": lambda: fp4.nvfp4_quantize(x, g, "compressed-tensors", "swizzled"),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="8192x8192")
    p.add_argument("--only", default="", help="comma-separated case names (default: all)")
    a = p.parse_args(argv)
    m, k = (int(v) for v in a.shape.split("x"))
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    todo = cases(x)
    if a.only:
        todo = {n: todo[n] for n in a.only.split(",")}
    for fn in todo.values():  # compile and warm up outside the profiled window
        fn(), fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for name, fn in todo.items():
        print(f"case {name}", file=sys.stderr, flush=True)
        fn()
        torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
