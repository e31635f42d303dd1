"""cpu-native's MXFP4 / NVFP4 calls against torch's bare fp8 cast of the same input (issue 23's CPU
target: FP4 quantize <= 1.0x the time of x.to(torch.float8_e4m3fn), bf16 and fp32, 1 and 2 threads).

    python3 benchmarks/bench_cpu_fp4.py [--threads 1,2] [--rounds 15] [--isa 'x86-64 avx2']
        [--shapes 2048x4096:bfloat16,4096x8192:float32] [--out docs/perf/X.json]

Candidates, interleaved round by round after a 20 ms busy wait each (cpu_paths.timed_rounds), through
the public calls forced to cpu-native (fresh outputs, as users get them): torch's cast (the peer);
mxfp4_quantize rceil and compressed-tensors with linear scales, rceil swizzled; nvfp4_quantize with
the global scale computed (two passes over x) and given; mxfp4_dequantize and nvfp4_dequantize back to
x's dtype. Each reports the median and fastest round, GB/s (bytes read + written), and its time and
CPU time relative to the cast. The load average before and after is recorded: the 2-core
development machine is shared. So is torch's own instruction set for the cast (torch_cpu_capability):
to compare cpu-native's AVX2 variant with what torch runs on an AVX2-only CPU, run with
ATEN_CPU_CAPABILITY=avx2 and --isa 'x86-64 avx2'.
"""

from __future__ import annotations

import argparse
import sys

import torch

import cpu_paths  # benchmarks/ is on sys.path when a script here runs

E4M3 = torch.float8_e4m3fn
NATIVE = "cpu-native"


def cases(m: int, k: int, hp: torch.dtype, rounds: int) -> dict:
    import mxquant

    x = torch.randn(m, k, dtype=hp)
    g = mxquant.nvfp4_quantize(x, backend=NATIVE).global_scale
    mx = mxquant.mxfp4_quantize(x, backend=NATIVE)
    nv = mxquant.nvfp4_quantize(x, g, backend=NATIVE)
    fns = {
        "torch_cast": lambda: x.to(E4M3),
        "mxfp4_rceil": lambda: mxquant.mxfp4_quantize(x, backend=NATIVE),
        "mxfp4_ct": lambda: mxquant.mxfp4_quantize(x, scale_mode="compressed-tensors", backend=NATIVE),
        "mxfp4_rceil_swizzled": lambda: mxquant.mxfp4_quantize(x, scale_layout="swizzled", backend=NATIVE),
        "nvfp4_global_computed": lambda: mxquant.nvfp4_quantize(x, backend=NATIVE),
        "nvfp4_global_given": lambda: mxquant.nvfp4_quantize(x, g, backend=NATIVE),
        "mxfp4_dequantize": lambda: mxquant.mxfp4_dequantize(mx.data, mx.scale, out_dtype=hp, backend=NATIVE),
        "nvfp4_dequantize": lambda: mxquant.nvfp4_dequantize(nv.data, nv.scale, g, out_dtype=hp, backend=NATIVE),
    }
    stats = cpu_paths.timed_rounds(fns, rounds)
    es, n = x.element_size(), m * k
    nbytes = {"torch_cast": n * (es + 1), "nvfp4_global_computed": n * (2 * es + 0.5 + 1 / 16),
              "nvfp4_global_given": n * (es + 0.5 + 1 / 16), "mxfp4_dequantize": n * (0.5 + 1 / 32 + es),
              "nvfp4_dequantize": n * (0.5 + 1 / 16 + es)}
    out = cpu_paths._summary(stats, n * (es + 0.5 + 1 / 32), "torch_cast")  # bytes of the MXFP4 quantize calls
    for name, b in nbytes.items():
        out[name]["GB/s"] = round(b / stats[name]["median_s"] / 1e9, 3)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch.set_num_threads values (default 1,2)")
    cpu_paths.add_common_args(parser, "2048x4096:bfloat16,2048x4096:float32,4096x8192:bfloat16,4096x8192:float32")
    args = parser.parse_args(argv)
    cpu_paths.select_isa(args.isa)
    result = cpu_paths.run_header()
    del result["threads"]  # per section below
    result["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        result[f"threads={threads}"] = {f"{m}x{k}_{str(hp)[6:]}": cases(m, k, hp, args.rounds)
                                        for m, k, hp in cpu_paths.shapes(args.shapes)}
    cpu_paths.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
