"""Shapes of the Gluon column-wise / row+column kernel (backends/_gluon_training.py) against the
Triton kernel (backends/_triton_training.py) at its shipped tiles, the row-wise call and a copy of
x, on one CUDA GPU. Every Gluon output is compared byte for byte with the Triton kernel's (two
independent kernels; the tests compare both with the oracle); times from
triton.testing.do_bench:

    python3 benchmarks/sweep_gluon.py OUT.json

bf16 -> e4m3, rceil, linear and swizzled, 8192x8192 and 16384x8192; Gluon configs ("gluon", rows per
thread, warps, slabs per tile) as backends/_triton_training_ops.py reads them. One JSON line per case on
stdout, the list in OUT.json. `pct` is the share of copy bandwidth (bytes moved per element:
column-wise 2 + 1 + 1/32, row+column 2 + 2 (1 + 1/32), against the copy's 4); `x_row` is the time
over the row-wise call's.
"""
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_training_ops as ops
from mxquant.backends import triton as tb

E4 = torch.float8_e4m3fn
# (rows per thread, warps, 32-row slabs per tile). Earlier sweeps on an H100 (docs/performance.md,
# 2026-12-05, seventh session): rows x warps over {4, 8, 16, 32} x {1, 2, 4, 8} (32 rows per
# thread spills and runs at half speed, 4 rows 4-38% behind; 8 or 16 rows with 1-4 warps within
# 1.4-17% of each other); the tile order and x's eviction policy (no gain: dropped)
SHAPES = ((8, 2, 1), (8, 2, 2), (8, 2, 4), (8, 4, 4), (8, 1, 4), (16, 1, 2), (16, 2, 2), (4, 4, 4))
res = []


def rec(**r):
    res.append(r)
    print(json.dumps(r), flush=True)


def bench(f):
    return do_bench(f, warmup=10, rep=50) * 1e3


def as_bytes(outs):
    return [o.view(torch.uint8).clone() for o in outs]


for (M, K) in ((8192, 8192), (16384, 8192)):
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16) * torch.exp2(
        torch.randint(-20, 21, (M, 1), device="cuda").float()).to(torch.bfloat16)
    shape = f"{M}x{K}"
    copy_us = bench(lambda: x.clone())
    rec(shape=shape, what="copy", us=copy_us)
    for layout in ("linear", "swizzled"):
        row_us = bench(lambda: tb.quantize(x, E4, "rceil", layout))
        rec(shape=shape, what="rowwise", layout=layout, us=row_us, pct=100 * copy_us / row_us * (3 + 1 / 32) / 4)
        for op, nbytes in (("colwise", 3 + 1 / 32), ("rowcol", 2 + 2 * (1 + 1 / 32))):
            call = ops.quantize_colwise if op == "colwise" else ops.quantize_rowcol
            tl_cfg = ops._block_config(op, None, layout == "swizzled", op == "rowcol")
            want = as_bytes(call(x, E4, "rceil", layout, tl_cfg))
            us = bench(lambda: call(x, E4, "rceil", layout, tl_cfg))
            rec(shape=shape, what=op, layout=layout, kernel="triton", cfg=list(tl_cfg), us=us,
                pct=100 * copy_us / us * nbytes / 4, x_row=us / row_us)
            for shape_cfg in SHAPES:
                cfg = ("gluon", *shape_cfg)
                try:
                    ok = all(torch.equal(a, b) for a, b in zip(as_bytes(call(x, E4, "rceil", layout, cfg)), want))
                    us = bench(lambda: call(x, E4, "rceil", layout, cfg))
                    rec(shape=shape, what=op, layout=layout, kernel="gluon", cfg=list(cfg[1:]), us=us,
                        pct=100 * copy_us / us * nbytes / 4, x_row=us / row_us, exact=ok)
                except Exception as e:  # noqa: BLE001 (a shape that does not compile is a result too)
                    rec(shape=shape, what=op, layout=layout, kernel="gluon", cfg=list(cfg[1:]), err=str(e)[:300])
    json.dump(res, open(sys.argv[1], "w"), indent=1)
json.dump(res, open(sys.argv[1], "w"), indent=1)
