"""FP8 128x128-block quantization on the CPU: cpu-native's C kernel (one pass: quantization and the
manifest's error sums) against the torch path it replaced in `mxquant convert --scheme fp8-block`.

    python3 benchmarks/bench_fp8block.py --kernel --rounds 9          # one weight, 1 and 2 threads
    python3 benchmarks/bench_fp8block.py --src CKPT --rounds 12       # whole conversions, in this process

--kernel: interleaved (cpu_paths.timed_rounds) on bf16 weights of 4096x4096 and 11008x4096:
fp8block.quantize (torch), cpu_native.fp8block_quantize without and with the sums, the converter's
torch chunk before (quantize_chunk + error_sums: fp8block.dequantize and fp32 dots) and, for scale,
MXFP8's chunk (C quantize + C error sums). --src: `mxquant.checkpoint.convert` of CKPT per arm,
interleaved round by round after a warm-up of each: mxfp8, fp8-block on the C path, and fp8-block
with quantizers.native_calls patched to None (the torch path: the code before the C kernel);
wall seconds and CPU seconds (all threads) of each. Prints JSON."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_paths import run_header, timed_rounds  # noqa: E402


def kernel(rounds: int) -> list:
    from mxquant.backends import cpu_native
    from mxquant.checkpoint import fp8block, quantizers
    from mxquant.checkpoint.schemes import SCHEMES

    qf, qm = quantizers.Quant(SCHEMES["fp8-block"]), quantizers.Quant(SCHEMES["mxfp8"])
    runs = []
    for shape in ((4096, 4096), (11008, 4096)):
        x = torch.randn(*shape).to(torch.bfloat16)

        def old_chunk():
            d, s = quantizers.quantize_chunk(qf, x, "compressed-tensors", None)
            quantizers.error_sums(qf, x, d, s, None)

        def mx_chunk():
            d, s = quantizers.quantize_chunk(qm, x, "compressed-tensors", None)
            quantizers.error_sums(qm, x, d, s, None, cpu_native.error_sums)

        for threads in (1, 2):
            torch.set_num_threads(threads)
            r = timed_rounds({"fp8block.quantize (torch)": lambda: fp8block.quantize(x),
                              "C quantize only": lambda: cpu_native.fp8block_quantize(x, sums=False),
                              "torch chunk before: quantize + error sums": old_chunk,
                              "C quantize + error sums": lambda: cpu_native.fp8block_quantize(x),
                              "mxfp8 chunk: C quantize + C error sums": mx_chunk}, rounds)
            runs.append({"shape": list(shape), "threads": threads, "results": r})
    return runs


def conversions(src: str, rounds: int) -> dict:
    from mxquant.checkpoint import convert, tensors
    from mxquant.checkpoint.quantizers import native_calls

    arms = {"mxfp8": ("mxfp8", native_calls), "fp8-block (C)": ("fp8-block", native_calls),
            "fp8-block (torch, before)": ("fp8-block", lambda quant: None)}
    work = tempfile.mkdtemp(prefix="bench_fp8block_")

    def one(scheme, calls):
        tensors.native_calls = calls
        d = os.path.join(work, "out")
        c0, t0 = time.process_time(), time.perf_counter()
        convert(src, d, device="cpu", scheme=scheme)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        shutil.rmtree(d)
        return wall, cpu

    try:
        for scheme, calls in arms.values():
            one(scheme, calls)  # warm-up
        res = {n: {"wall_s": [], "cpu_s": []} for n in arms}
        loads = []
        for _ in range(rounds):
            loads.append(os.getloadavg()[0])
            for name, (scheme, calls) in arms.items():
                wall, cpu = one(scheme, calls)
                res[name]["wall_s"].append(wall)
                res[name]["cpu_s"].append(cpu)
    finally:
        tensors.native_calls = native_calls
        shutil.rmtree(work, ignore_errors=True)
    return {"load_1min": loads, "arms": {n: {**v, "wall_median": statistics.median(v["wall_s"]),
                                             "cpu_median": statistics.median(v["cpu_s"]), "cpu_min": min(v["cpu_s"])}
                                         for n, v in res.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", action="store_true", help="the kernel alone on one weight")
    ap.add_argument("--src", help="a checkpoint folder: whole conversions")
    ap.add_argument("--rounds", type=int, default=9)
    a = ap.parse_args()
    if not a.kernel and not a.src:
        ap.error("--kernel or --src")
    out = run_header()
    if a.kernel:
        out["kernel"] = kernel(a.rounds)
    if a.src:
        out["conversions"] = conversions(a.src, a.rounds)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
