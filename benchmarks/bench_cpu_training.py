"""cpu-native's training and MoE calls against its row-wise call (issue 21's CPU targets:
column-wise <= 1.3x and row+column <= 1.6x the row-wise time, 4096x8192 bf16, 2 threads).

    python3 benchmarks/bench_cpu_training.py [--threads 2] [--rounds 15] [--isa 'x86-64 avx2'] [--out docs/perf/X.json]

Candidates, interleaved round by round after a 20 ms busy wait each (cpu_paths.timed_rounds),
fresh outputs as the public API allocates them, e4m3, rceil, linear scales (swizzled too for the
column-wise call): the row-wise call; column-wise; row+column; 32x32 tiles; grouped (token
groups: 8 ragged groups; experts: 8 x 512 x K); and, as peers, what a caller without a
column-wise call would do, the row-wise call on x.mT.contiguous() (transpose included), and
torch's x.mT.contiguous() alone and its plain fp8 cast; and the column-wise call in each of its
walks (`col_bands_walk`, `col_column_walk`; `col` is this CPU's default, the header's
native_col_walk). Each reports the median and fastest
round, GB/s (bytes read + written) and its time and CPU time relative to the row-wise call.
The load average before and after is recorded: the 2-core development machine is shared.
"""

from __future__ import annotations

import argparse
import sys

import torch

import cpu_paths  # benchmarks/ is on sys.path when a script here runs

E4M3 = torch.float8_e4m3fn


def cases(m: int, k: int, hp: torch.dtype, rounds: int) -> dict:
    from mxquant.backends import _native_lib
    from mxquant.backends import cpu_native as nat

    x = torch.randn(m, k, dtype=hp)
    ends = torch.tensor([m * f // 64 for f in (3, 9, 16, 16, 30, 41, 55, 64)], dtype=torch.int32)  # one empty group
    experts = x.view(m // 512, 512, k)
    fns = {
        "row": lambda: nat.quantize(x, E4M3, "rceil", "linear"),
        "col": lambda: nat.quantize_colwise(x, E4M3, "rceil", "linear"),
        "col_swizzled": lambda: nat.quantize_colwise(x, E4M3, "rceil", "swizzled"),
        "rowcol": lambda: nat.quantize_rowcol(x, E4M3, "rceil", "linear"),
        "tiles_32x32": lambda: nat.quantize_2d(x, E4M3, "rceil"),
        "grouped_tokens_8": lambda: nat.quantize_grouped(x, ends, E4M3, "rceil"),
        "grouped_experts_8": lambda: nat.quantize_grouped(experts, None, E4M3, "rceil"),
        "row_of_transpose_copy": lambda: nat.quantize(x.mT.contiguous(), E4M3, "rceil", "linear"),
        "torch_transpose_copy": lambda: x.mT.contiguous(),
        "torch_cast": lambda: x.to(E4M3),
    }
    lib = _native_lib.load()[0]

    def walk(name):  # the column-wise call in one walk (the same bytes; `col` takes this CPU's default)
        def call():
            with _native_lib.forced_col_order(lib, name):
                return nat.quantize_colwise(x, E4M3, "rceil", "linear")
        return call

    if lib is not None:
        fns.update({f"col_{name}_walk": walk(name) for name in _native_lib.COL_ORDERS})
    stats = cpu_paths.timed_rounds(fns, rounds)
    one = m * k * (x.element_size() + 1 + 1 / 32)  # read x, write data and scales
    nbytes = {"rowcol": one + m * k * (1 + 1 / 32), "torch_transpose_copy": 2 * m * k * x.element_size(),
              "torch_cast": m * k * (x.element_size() + 1)}
    row = stats["row"]
    out = {}
    for name, s in stats.items():
        out[name] = {"ms": round(s["median_s"] * 1e3, 2), "min_ms": round(s["min_s"] * 1e3, 2),
                     "GB/s": round(nbytes.get(name, one) / s["median_s"] / 1e9, 2), "rounds": s["n"],
                     "time_vs_row": round(s["median_s"] / row["median_s"], 3),
                     "min_vs_row_min": round(s["min_s"] / row["min_s"], 3),
                     "cpu_ms": round(s["cpu_median_s"] * 1e3, 2),
                     "cpu_vs_row": round(s["cpu_median_s"] / row["cpu_median_s"], 3)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds per candidate (default 15)")
    parser.add_argument("--isa", help="cpu-native's instruction-set variant, e.g. 'x86-64 avx2' (default: the CPU's best)")
    parser.add_argument("--shapes", default="4096x8192:bfloat16,2048x4096:float32",
                        help="comma-separated MxK:dtype (default 4096x8192:bfloat16,2048x4096:float32)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu_paths.select_isa(args.isa)
    result = {**cpu_paths.run_header(), "e4m3_rceil": {}}
    for spec in args.shapes.split(","):
        dims, hp = spec.split(":")
        m, k = map(int, dims.split("x"))
        result["e4m3_rceil"][f"{m}x{k}_{hp}"] = cases(m, k, getattr(torch, hp), args.rounds)
    cpu_paths.emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
