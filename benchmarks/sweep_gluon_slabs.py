"""The Gluon column-wise / row+column kernel (backends/_gluon_training.py) with linear column
scales at more 32-row slabs a tile: each column's scale bytes of a tile are one store, so a
tile of S slabs writes S bytes of each 32-byte sector of scales (2 shipped: 16 stores a sector,
against whole 16-byte pieces with swizzled scales). Variants: 2, 4 and 8 slabs; the bytes joined
in registers (as shipped) or gathered in int32 words as the slabs go ("packed"), with the next
slab's load issued before the current slab's work ("packed prefetch"); register caps; 1, 2
and 4 warps. On one CUDA GPU:

    python3 benchmarks/sweep_gluon_slabs.py OUT.json [ROUNDS]

(SWEEP_COLWISE / SWEEP_ROWCOL: JSON lists of configs to time instead of the lists below;
SWEEP_LAYOUT=swizzled: 128x4 scales instead of linear ones, against that layout's shipped configs.)

bf16 -> e4m3, rceil, linear scales (or SWEEP_LAYOUT's); 8192x8192 and 16384x8192. Every variant's bytes are compared
with the shipped config's. Rounds interleave the cases beside a copy of x and the row-wise call;
times are triton.testing.do_bench medians. `pct`: share of copy bandwidth (column-wise 2 + 1 +
1/32 bytes an element, row+column 2 + 2 (1 + 1/32), against the copy's 4); `x_row`: over the
row-wise time.
"""
import json
import os
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_training_ops as ops
from mxquant.backends import triton as tb

E4 = torch.float8_e4m3fn
EL = "evict_last"
COLWISE = [None,  # the shipped default: ("gluon", 8, 2, 2, 0, "evict_last")
           ("gluon", 8, 2, 2, 0, EL, "", "packed prefetch"),
           ("gluon", 8, 2, 4, 0, EL),
           ("gluon", 8, 2, 4, 0, EL, "", "packed"),
           ("gluon", 8, 2, 4, 0, EL, "", "packed prefetch"),
           ("gluon", 8, 2, 4, 128, EL, "", "packed prefetch"),
           ("gluon", 8, 2, 8, 0, EL),
           ("gluon", 8, 2, 8, 0, EL, "", "packed"),
           ("gluon", 8, 2, 8, 0, EL, "", "packed prefetch"),
           ("gluon", 8, 2, 8, 128, EL, "", "packed prefetch"),
           ("gluon", 8, 2, 8, 168, EL, "", "packed prefetch"),
           ("gluon", 8, 1, 8, 0, EL, "", "packed prefetch"),
           ("gluon", 8, 4, 8, 0, EL, "", "packed prefetch"),
           ("gluon", 8, 4, 4, 0, EL, "", "packed prefetch")]
ROWCOL = [None,  # ("gluon", 8, 2, 2)
          ("gluon", 8, 2, 2, 0, EL),
          ("gluon", 8, 2, 2, 0, EL, "", "packed prefetch"),
          ("gluon", 8, 2, 4, 0, EL, "", "packed"),
          ("gluon", 8, 2, 4, 0, EL, "", "packed prefetch")]


def main(path, rounds=3):
    lay = os.environ.get("SWEEP_LAYOUT", "linear")
    if os.environ.get("SWEEP_COLWISE"):  # a list of configs to time instead (the default first)
        COLWISE[:] = [None, *(tuple(c) for c in json.loads(os.environ["SWEEP_COLWISE"]))]
        ROWCOL[:] = [None, *(tuple(c) for c in json.loads(os.environ.get("SWEEP_ROWCOL", "[]")))]
    res = []
    for m, k in ((8192, 8192), (16384, 8192)):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16) * torch.exp2(
            torch.randint(-20, 21, (m, 1), device="cuda").float()).to(torch.bfloat16)
        dst = torch.empty_like(x)
        todo = [("colwise", c) for c in COLWISE] + [("rowcol", c) for c in ROWCOL]
        exact = {}
        for op, cfg in todo:
            call = ops.quantize_colwise if op == "colwise" else ops.quantize_rowcol
            want = [t.view(torch.uint8).clone() for t in call(x, E4, "rceil", lay)]
            got = call(x, E4, "rceil", lay, cfg)
            exact[(op, cfg)] = all(torch.equal(a.view(torch.uint8), b) for a, b in zip(got, want))
        # the shipped default against the oracle's identity: quantize(x.mT.contiguous())
        want = tb.quantize(x.mT.contiguous(), E4, "rceil", lay)
        got = ops.quantize_colwise(x, E4, "rceil", lay)
        default_exact = all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(got, want))
        for rnd in range(rounds):
            copy = do_bench(lambda: dst.copy_(x), warmup=5, rep=40) * 1e3
            row = do_bench(lambda: tb.quantize(x, E4, "rceil", lay), warmup=5, rep=40) * 1e3
            for op, cfg in todo:
                call = ops.quantize_colwise if op == "colwise" else ops.quantize_rowcol
                us = do_bench(lambda: call(x, E4, "rceil", lay, cfg), warmup=5, rep=40) * 1e3
                per = 3 + 1 / 32 if op == "colwise" else 2 + 2 * (1 + 1 / 32)
                r = dict(shape=f"{m}x{k}", layout=lay, op=op, cfg=list(cfg) if cfg else "default", round=rnd,
                         exact=exact[(op, cfg)], default_exact_vs_rowwise_of_transpose=default_exact,
                         us=round(us, 2), copy_us=round(copy, 2), row_us=round(row, 2),
                         pct=round(100 * copy / us * per / 4, 1), x_row=round(us / row, 3))
                res.append(r)
                print(json.dumps(r), flush=True)
            with open(path, "w") as f:
                json.dump(res, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
