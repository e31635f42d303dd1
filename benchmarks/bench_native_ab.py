"""Two (or more) builds of cpu-native's library side by side in one run: the row-wise, column-wise
and row+column calls of each, interleaved round by round (cpu_paths.timed_rounds: a 20 ms busy
wait before each call), so that load from other work on a shared machine hits every build alike.

    python3 benchmarks/bench_native_ab.py OLD.so NEW.so[@ORDER] [--threads 2] [--rounds 15] [--shape 4096x8192]
        [--dtype bfloat16|float32|float16] [--isa 'x86-64 avx2'] [--reuse] [--out X.json]

Each library file is loaded through ctypes from a private copy (two builds of one file name would
otherwise be one library); the calls are the C entry points that backends/cpu_native.py calls, on
the --dtype input (bf16 unless given), e4m3, rceil, linear scales, with fresh outputs
(torch.empty in every call, as the public API allocates them) or, with --reuse, outputs
allocated once. A library named PATH@ORDER walks column-wise units as mxq_set_col_order(ORDER) sets
(1 column order, 0 bands two at a time; one library file may be named twice, with two orders).
Reports each build's median and fastest wall time, CPU time, and the time
relative to that build's row-wise call.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import tempfile

import torch

import cpu_paths  # benchmarks/ is on sys.path when a script here runs

_i64, _int, _ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p


def load_copy(path: str, tmpdir: str, tag: str) -> ctypes.CDLL:
    copy = os.path.join(tmpdir, f"{tag}_{os.path.basename(path)}")
    shutil.copy(path, copy)
    lib = ctypes.CDLL(copy)
    x_args = [_ptr, _int, _i64, _i64, _i64, _i64, _i64]
    lib.mxq_quantize.argtypes = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr, _int, _int, _int, _int]
    lib.mxq_quantize_colwise.argtypes = [*x_args, _ptr, _ptr, _int, _int, _int, _int]
    lib.mxq_quantize_rowcol.argtypes = [*x_args, _ptr, _ptr, _ptr, _ptr, _int, _int, _int, _int]
    return lib


_HP_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # backends/cpu_native.py's codes


def select_isa(lib, name: str) -> None:
    """The variant `name` of this library copy (mxq_isa_name / mxq_select_isa, the test hook)."""
    i, ok = 0, _int()
    lib.mxq_isa_name.restype = ctypes.c_char_p
    while (n := lib.mxq_isa_name(i, ctypes.byref(ok))) is not None:
        if n.decode() == name:
            if lib.mxq_select_isa(i) != 0:
                raise SystemExit(f"this CPU cannot run the {name!r} variant")
            return
        i += 1
    raise SystemExit(f"unknown variant {name!r}")


def calls(lib, x: torch.Tensor, threads: int, reuse: bool) -> dict:
    m, k = x.shape
    hp = _HP_CODE[x.dtype]
    def fresh():  # row data, row scales, column data, column scales: four buffers (row+column writes all four)
        return [torch.empty(n, dtype=torch.uint8) for n in (m * k, m * k // 32) * 2]

    kept = fresh()  # (until 2026-12-07 the row and column buffers were one pair, so --reuse row+column wrote both into it)

    def out():
        return kept if reuse else fresh()

    def check(rc):
        assert rc == 0, rc

    def row():
        o = out()
        check(lib.mxq_quantize(x.data_ptr(), hp, m, k, k, o[0].data_ptr(), o[1].data_ptr(), 0, 0, 0, threads))

    def col():
        o = out()
        check(lib.mxq_quantize_colwise(x.data_ptr(), hp, 1, m, k, m * k, k, o[2].data_ptr(), o[3].data_ptr(), 0, 0, 0,
                                       threads))

    def rowcol():
        o = out()
        check(lib.mxq_quantize_rowcol(x.data_ptr(), hp, 1, m, k, m * k, k, *(t.data_ptr() for t in o), 0, 0, 0, threads))

    return {"row": row, "col": col, "rowcol": rowcol}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("libs", nargs="+", help="library files (.so) to compare, each PATH or PATH@ORDER")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shape", default="4096x8192", help="MxK of the input (default 4096x8192)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--isa", help="instruction-set variant of every library, e.g. 'x86-64 avx2' (default: the CPU's best)")
    parser.add_argument("--reuse", action="store_true", help="outputs allocated once (default: fresh per call)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    m, k = map(int, args.shape.split("x"))
    x = torch.randn(m, k, dtype=getattr(torch, args.dtype))
    result = {**cpu_paths.run_header(), "outputs": "reused" if args.reuse else "fresh", "shape": args.shape, "dtype": args.dtype,
              "isa": args.isa or "best", "libs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fns = {}
        for i, path in enumerate(args.libs):
            file, at, order = path.rpartition("@")
            file = file if at else path
            if at and order not in ("0", "1"):
                raise SystemExit(f"{path!r}: the column order after @ is 0 or 1")
            lib = load_copy(file, tmp, f"lib{i}")
            if at:
                if not hasattr(lib, "mxq_set_col_order"):
                    raise SystemExit(f"{path!r}: the library has no mxq_set_col_order (built before it)")
                lib.mxq_set_col_order(int(order))
                if lib.mxq_col_order() != int(order):
                    raise SystemExit(f"{path!r}: the library did not take column order {order}")
            if args.isa:
                select_isa(lib, args.isa)
            for name, fn in calls(lib, x, args.threads, args.reuse).items():
                fns[f"{i}:{name}"] = fn
        stats = cpu_paths.timed_rounds(fns, args.rounds)
    for i, path in enumerate(args.libs):
        row = stats[f"{i}:row"]
        result["libs"][f"{i}: {path}"] = {
            name: {"ms": round(s["median_s"] * 1e3, 2), "min_ms": round(s["min_s"] * 1e3, 2),
                   "cpu_ms": round(s["cpu_median_s"] * 1e3, 2), "time_vs_row": round(s["median_s"] / row["median_s"], 3),
                   "min_vs_row_min": round(s["min_s"] / row["min_s"], 3),
                   "cpu_vs_row": round(s["cpu_median_s"] / row["cpu_median_s"], 3)}
            for name, s in ((n.split(":", 1)[1], v) for n, v in stats.items() if n.startswith(f"{i}:"))}
    cpu_paths.emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
