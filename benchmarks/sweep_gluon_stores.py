"""The Gluon column-wise / row+column kernel's column stores (backends/_gluon_training.py) under
eviction policies, on one CUDA GPU: the column scale bytes (linear scales: single bytes, a 32-byte
sector of them written by 32 programs far apart in launch order, unless kept in L2) with
evict_last, the fp8 column data with evict_first, both, or neither, at 1 and 2 slabs a program:

    python3 benchmarks/sweep_gluon_stores.py OUT.json [ROUNDS]

bf16 -> e4m3, rceil; 8192x8192 and 16384x8192. Every variant's bytes are compared with the shipped
config's. Rounds interleave the cases beside a copy of x and the row-wise call; times are
triton.testing.do_bench medians. `pct`: share of copy bandwidth (column-wise 2 + 1 + 1/32 bytes
an element, row+column 2 + 2 (1 + 1/32), against the copy's 4); `x_row`: over the row-wise time.
"""
import itertools
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_training_ops as ops
from mxquant.backends import triton as tb

E4 = torch.float8_e4m3fn
POLICIES = (("", ""), ("evict_last", ""), ("", "evict_first"), ("evict_last", "evict_first"))
"""(column scale stores, column data stores)."""


def cases():
    out = []
    for op, layout in itertools.product(("colwise", "rowcol"), ("linear", "swizzled")):
        slabs = (1, 2) if layout == "linear" else (1,)
        for s, (cs, cd) in itertools.product(slabs, POLICIES):
            out.append((op, layout, ("gluon", 8, 2, s, 0, cs, cd)))
    return out


def main(path, rounds=3):
    res = []
    for m, k in ((8192, 8192), (16384, 8192)):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16) * torch.exp2(
            torch.randint(-20, 21, (m, 1), device="cuda").float()).to(torch.bfloat16)
        dst = torch.empty_like(x)
        todo = cases()
        exact = {}
        for op, layout, cfg in todo:
            call = ops.quantize_colwise if op == "colwise" else ops.quantize_rowcol
            want = [t.view(torch.uint8).clone() for t in call(x, E4, "rceil", layout)]
            got = call(x, E4, "rceil", layout, cfg)
            exact[(op, layout, cfg)] = all(torch.equal(a.view(torch.uint8), b) for a, b in zip(got, want))
        for rnd in range(rounds):
            copy = do_bench(lambda: dst.copy_(x), warmup=5, rep=40) * 1e3
            row = {lay: do_bench(lambda: tb.quantize(x, E4, "rceil", lay), warmup=5, rep=40) * 1e3
                   for lay in ("linear", "swizzled")}
            for op, layout, cfg in todo:
                call = ops.quantize_colwise if op == "colwise" else ops.quantize_rowcol
                us = do_bench(lambda: call(x, E4, "rceil", layout, cfg), warmup=5, rep=40) * 1e3
                per = 3 + 1 / 32 if op == "colwise" else 2 + 2 * (1 + 1 / 32)
                r = dict(shape=f"{m}x{k}", op=op, layout=layout, cfg=list(cfg), round=rnd,
                         exact=exact[(op, layout, cfg)], us=round(us, 2), copy_us=round(copy, 2),
                         pct=round(100 * copy / us * per / 4, 1), x_row=round(us / row[layout], 3))
                res.append(r)
                print(json.dumps(r), flush=True)
            with open(path, "w") as f:
                json.dump(res, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
