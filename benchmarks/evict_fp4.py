"""The loads' eviction policy of the FP4 quantize kernels (backends/_triton_fp4_ops.py's _evict),
on one CUDA GPU, one process: MXFP4 rceil / compressed-tensors and NVFP4 (g given), bf16,
8192x8192 and 16384x8192, linear and swizzled scales, at the shipped tile (1 x 8192, 8 warps),
with evict_last, evict_first and no policy, interleaved over 3 rounds beside a copy of x.

    python3 benchmarks/evict_fp4.py OUT.json

Times: triton.testing.do_bench medians; % of copy: (2 + 0.5 + scale bytes a element) over the
copy's 4. One JSON line per case; the list written to OUT.json at the end. Run in call G of the
fourteenth session (docs/perf/h100-fp4-evict-fourteenth-2026-12-06-G.json).
"""
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_fp4_ops as f4


def main(path):
    res = []
    for m, k in ((8192, 8192), (16384, 8192)):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        dst = torch.empty_like(x)
        g = f4.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone()
        cases = [(f, mode, lay) for f, modes in (("mxfp4", ("rceil", "compressed-tensors")), ("nvfp4", ("given",)))
                 for mode in modes for lay in ("linear", "swizzled")]
        for rnd in range(3):
            copy = do_bench(lambda: dst.copy_(x), warmup=5, rep=40) * 1e3
            for f, mode, lay in cases:
                for ev in ("evict_last", "evict_first", ""):
                    cfg = (1, 8192, 8, 0, 8, ev)
                    if f == "mxfp4":
                        us = do_bench(lambda: f4.mxfp4_quantize(x, mode, lay, cfg), warmup=5, rep=40) * 1e3
                    else:
                        us = do_bench(lambda: f4.nvfp4_quantize(x, g, "compressed-tensors", lay, cfg), warmup=5,
                                      rep=40) * 1e3
                    per = 2.5 + (1 / 16 if f == "nvfp4" else 1 / 32)
                    r = dict(shape=f"{m}x{k}", case=f"{f} {mode} {lay}", evict=ev, round=rnd, us=round(us, 2),
                             copy_us=round(copy, 2), pct=round(100 * copy / us * per / 4, 1))
                    res.append(r)
                    print(json.dumps(r), flush=True)
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
