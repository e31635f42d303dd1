"""Two or more builds of cpu-native's library compared byte for byte: each build's column-wise
output (data and scales, linear and swizzled, in each of its walks where it has two) against the
first build's, on random, tiny (1e-38), wide (2^-40..2^40) and NaN / Inf / zero bf16 inputs,
e4m3 and e5m2, every scale mode.
For experiment builds (compile-time switches) before a timing A/B (bench_native_ab.py); the
tests compare the shipped build with the oracle.

    python3 benchmarks/compare_native_libs.py BASE.so OTHER.so [...] [--isa 'x86-64 avx2']
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile

import torch

from mxquant.layouts import scale_shape

from bench_native_ab import load_copy, select_isa  # benchmarks/ is on sys.path when a script here runs


def inputs(m: int, k: int) -> dict:
    torch.manual_seed(1)
    special = torch.randn(m, k)
    idx = torch.randint(0, m * k, (3000,))
    special.view(-1)[idx[:1000]] = float("nan")
    special.view(-1)[idx[1000:2000]] = float("inf")
    special.view(-1)[idx[2000:]] = 0.0
    wide = torch.randn(m, k) * torch.exp2(torch.randint(-40, 40, (m, k)).float())
    return {"randn": torch.randn(m, k), "tiny": torch.randn(m, k) * 1e-38, "wide": wide, "special": special}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("libs", nargs="+", help="library files (.so); the first is the reference")
    parser.add_argument("--isa", help="instruction-set variant of every library (default: the CPU's best)")
    parser.add_argument("--shape", default="512x4096")
    args = parser.parse_args(argv)
    m, k = (int(v) for v in args.shape.split("x"))
    tmp = tempfile.TemporaryDirectory()  # the copies stay mapped after it is removed
    libs = [load_copy(p, tmp.name, f"l{i}") for i, p in enumerate(args.libs)]
    if args.isa:
        for lib in libs:
            select_isa(lib, args.isa)
    differ = 0
    walks = (0, 1) if all(hasattr(lib, "mxq_set_col_order") for lib in libs) else (None,)  # ABI 9 on
    xs = {name: xf.to(torch.bfloat16).contiguous() for name, xf in inputs(m, k).items()}
    for walk, name, elem, mode, swizzled in itertools.product(walks, xs, (0, 1), (0, 1, 2), (0, 1)):
        x, outs = xs[name], []
        for lib in libs:
            if walk is not None:
                lib.mxq_set_col_order(walk)
            data = torch.zeros(m * k, dtype=torch.uint8)  # (K, M), the column-wise result
            scale = torch.zeros(math.prod(scale_shape((k, m), "swizzled" if swizzled else "linear")), dtype=torch.uint8)
            rc = lib.mxq_quantize_colwise(x.data_ptr(), 1, 1, m, k, m * k, k, data.data_ptr(), scale.data_ptr(), elem,
                                          mode, swizzled, 2)
            assert rc == 0, rc
            outs.append((data, scale))
        for path, (data, scale) in zip(args.libs[1:], outs[1:]):
            if not (torch.equal(data, outs[0][0]) and torch.equal(scale, outs[0][1])):
                differ += 1
                print(f"DIFFER {path}: walk {walk} {name} elem {elem} mode {mode} swizzled {swizzled}: "
                      f"{int((data != outs[0][0]).sum())} data bytes, {int((scale != outs[0][1]).sum())} scale bytes")
    print(f"compare_native_libs: {len(libs)} builds, {args.shape}, "
          + ("every output equal to the first build's" if not differ else f"{differ} outputs differ"))
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
