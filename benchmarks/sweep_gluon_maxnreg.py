"""The Gluon column-wise / row+column kernel under ptxas register caps (maxnreg), one CUDA GPU:
its low occupancy (117 registers column-wise linear, 150 / 214 row+column: 25%, 18.75%, 12.5% of
an H100's warps; Nsight Compute, twelfth session) against the spills a cap costs.

    python3 benchmarks/sweep_gluon_maxnreg.py OUT.json

8192x8192 and 16384x8192 bf16 -> e4m3, rceil. Per call and layout: the shipped GLUON_CONFIGS shape
uncapped and at each cap (0: none), each output compared byte for byte with the uncapped one's;
the row-wise call and a device copy as the ceilings. Times: triton.testing.do_bench medians, three
rounds interleaved, the lowest kept; % of copy: (2 + 1 + 1/32 bytes an element, twice the output
for row+column) over the copy's 4.
"""
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_training_ops as ops
from mxquant.backends import triton as tb

E4M3 = torch.float8_e4m3fn
CAPS = {"colwise": (0, 128, 96, 80), "colwise swizzled": (0, 96, 80), "rowcol": (0, 168, 128),
        "rowcol swizzled": (0, 128, 112, 96)}


def main(out: str) -> int:
    res = []
    for m, k in ((8192, 8192), (16384, 8192)):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        dst = torch.empty_like(x)
        cases = {"copy": (lambda: dst.copy_(x), 4.0), "rowwise": (lambda: tb.quantize(x, E4M3, "rceil", "linear"), 3 + 1 / 32),
                 "rowwise swizzled": (lambda: tb.quantize(x, E4M3, "rceil", "swizzled"), 3 + 1 / 32)}
        for name, caps in CAPS.items():
            op, layout = name.split()[0], "swizzled" if name.endswith("swizzled") else "linear"
            fn = ops.quantize_rowcol if op == "rowcol" else ops.quantize_colwise
            shipped = ops.GLUON_CONFIGS[name]
            want = None
            for cap in caps:
                cfg = ("gluon", *ops._gluon_shape(("gluon", *shipped))[:3], cap, *shipped[4:])  # (policies kept)
                call = (lambda f=fn, c=cfg, lay=layout: f(x, E4M3, "rceil", lay, c))
                got = [t.view(torch.uint8) for t in call()]
                if want is None:
                    want = got
                same = all(torch.equal(a, b) for a, b in zip(got, want))
                cases[f"{name} cap {cap}"] = (call, (2 + 2 + 2 / 32) if op == "rowcol" else 3 + 1 / 32)
                res.append(dict(shape=f"{m}x{k}", case=f"{name} cap {cap}", config=list(cfg), exact_vs_uncapped=same))
        times = {n: [] for n in cases}
        for _ in range(3):
            for n, (f, _b) in cases.items():
                times[n].append(do_bench(f, warmup=10, rep=40))
        copy_bw = 4 * x.numel() / min(times["copy"])
        for n, (f, b) in cases.items():
            t = min(times[n])
            row = dict(shape=f"{m}x{k}", case=n, us=round(t * 1e3, 2), pct_of_copy=round(100 * b * x.numel() / t / copy_bw, 1),
                       vs_rowwise=round(t / min(times["rowwise swizzled" if "swizzled" in n else "rowwise"]), 3))
            res.append(row)
            print(json.dumps(row), flush=True)
        with open(out, "w") as fh:
            json.dump({"gpu": torch.cuda.get_device_name(), "rows": res}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
