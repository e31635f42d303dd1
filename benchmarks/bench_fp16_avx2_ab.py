"""fp16 on cpu-native's AVX2 variant, two (or more) builds side by side: the FP8 128x128-block quantize
with its error sums (mxq_fp8block_quantize, `mxquant convert --scheme fp8-block`) and the MXFP8
convert's error sums (mxq_error_sums), interleaved round by round (cpu_paths.timed_rounds), each build
loaded from a private copy (bench_native_ab.load_copy) with its variant forced (--isa).

    python3 benchmarks/bench_fp16_avx2_ab.py OLD.so NEW.so [--isa 'x86-64 avx2'] [--threads 1]
        [--rounds 11] [--shape 4096x4096] [--bf16] [--out X.json]

--bf16 adds each build's bf16 fp8-block call on the same values, for scale. Prints JSON: median and
fastest wall ms of each call per build.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

import cpu_paths  # benchmarks/ is on sys.path when a script here runs
from bench_native_ab import _HP_CODE, _i64, _int, _ptr, load_copy, select_isa

import mxquant


def calls(lib, x: torch.Tensor, threads: int, with_bf16: bool) -> dict:
    lib.mxq_fp8block_quantize.argtypes = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _int]
    lib.mxq_error_sums.argtypes = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr, _int, _ptr, _ptr, _int]
    r, k = x.shape
    nb = -(-r // 128) * (k // 128)
    q = mxquant.mxfp8_quantize(x, torch.float8_e4m3fn, scale_mode="compressed-tensors", scale_layout="linear")
    qd, qs = q.data.view(torch.uint8), q.scale.view(torch.uint8)
    out = torch.empty(2, dtype=torch.float64)

    def fp8block(t, sums=True):
        def call():
            data, scale = torch.empty(r, k, dtype=torch.uint8), torch.empty(nb, dtype=t.dtype)
            esum = torch.empty(2 * nb, dtype=torch.float64) if sums else None
            rc = lib.mxq_fp8block_quantize(t.data_ptr(), _HP_CODE[t.dtype], r, k, k, data.data_ptr(), scale.data_ptr(),
                                           None if esum is None else esum.data_ptr(), out.data_ptr(), threads)
            assert rc == 0, rc
        return call

    def error_sums():
        esum = torch.empty(2 * r, dtype=torch.float64)
        rc = lib.mxq_error_sums(x.data_ptr(), _HP_CODE[x.dtype], r, k, k, qd.data_ptr(), qs.data_ptr(), 0,
                                esum.data_ptr(), out.data_ptr(), threads)
        assert rc == 0, rc

    fns = {"fp8-block fp16 + sums": fp8block(x), "fp8-block fp16 only": fp8block(x, False),
           "mxfp8 error sums fp16": error_sums}
    if with_bf16:
        fns["fp8-block bf16 + sums"] = fp8block(x.to(torch.bfloat16))
        fns["fp8-block bf16 only"] = fp8block(x.to(torch.bfloat16), False)
    return fns


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("libs", nargs="+", help="library files (.so) to compare")
    parser.add_argument("--isa", default="x86-64 avx2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--shape", default="4096x4096")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    m, k = map(int, args.shape.split("x"))
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    result = {**cpu_paths.run_header(), "shape": args.shape, "isa": args.isa, "threads": args.threads, "libs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fns = {}
        for i, path in enumerate(args.libs):
            lib = load_copy(path, tmp, f"lib{i}")
            select_isa(lib, args.isa)
            for name, fn in calls(lib, x, args.threads, args.bf16).items():
                fns[f"{i}:{name}"] = fn
        stats = cpu_paths.timed_rounds(fns, args.rounds)
    for i, path in enumerate(args.libs):
        result["libs"][f"{i}: {path}"] = {
            n.split(":", 1)[1]: {"ms": round(s["median_s"] * 1e3, 2), "min_ms": round(s["min_s"] * 1e3, 2)}
            for n, s in stats.items() if n.startswith(f"{i}:")}
    cpu_paths.emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
