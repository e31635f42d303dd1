"""One kernel, a few launches, for Nsight Compute (ncu) to profile (one CUDA GPU).

    ncu --clock-control none -k regex:mxfp8 --launch-skip 2 --launch-count 1 --set full \\
        python3 benchmarks/profile_once.py --op quantize --shape 8192x8192 --config 1,4096,8

--op: quantize (our Triton kernel; --layout, --mode, --config BLOCK_M,BLOCK_K,warps[,evict,persist,stages]),
dequantize (ours, bf16 out), torchao (torch.compile of torchao's to_mx; its kernels are named
triton_*), copy (a device-to-device copy of the bf16 input). Launches 4 times.
"""

from __future__ import annotations

import argparse
import sys

import torch

E4M3 = torch.float8_e4m3fn


def parse_config(text):
    if not text:
        return None
    parts = text.split(",")
    return tuple(int(v) if v.lstrip("-").isdigit() else v for v in parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", default="quantize", choices=["quantize", "dequantize", "torchao", "copy"])
    p.add_argument("--shape", default="8192x8192")
    p.add_argument("--layout", default="linear")
    p.add_argument("--mode", default="rceil")
    p.add_argument("--config", default="")
    a = p.parse_args(argv)
    from mxquant.backends import triton as tb

    m, k = (int(v) for v in a.shape.split("x"))
    x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    cfg = parse_config(a.config)
    if a.op == "quantize":
        fn = lambda: tb.quantize(x, E4M3, a.mode, a.layout, config=cfg)  # noqa: E731
    elif a.op == "dequantize":
        data, scale = tb.quantize(x, E4M3, a.mode, a.layout)
        fn = lambda: tb.dequantize(data, scale, a.layout, torch.bfloat16, config=cfg)  # noqa: E731
    elif a.op == "torchao":
        from bench_quantize import torchao_quantizer  # benchmarks/ is on sys.path when a script here runs

        tao, reason = torchao_quantizer(a.mode, a.layout == "swizzled")
        if tao is None:
            raise SystemExit(f"profile_once: no torchao contender for {a.mode}: {reason}")
        fn = lambda: tao(x)  # noqa: E731
    else:
        dst = torch.empty_like(x)
        fn = lambda: dst.copy_(x)  # noqa: E731
    for _ in range(4):
        fn()
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
