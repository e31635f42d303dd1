"""Tile sweep of two triton-backend kernels short of their targets (one CUDA GPU): the FP4
quantize kernel (MXFP4 rceil, NVFP4 with a given global scale; linear and swizzled scales) and
the token-groups kernel (issue 21's grouped call against the same-size ungrouped swizzled one).

    python3 benchmarks/sweep_fp4_tokens.py OUT.json

8192x8192 and 16384x8192 bf16. Every configuration's output is compared byte for byte with the
shipped configuration's (`exact`); times are triton.testing.do_bench medians beside a copy of x
in the same process. % of copy: the call's bytes (FP4: 2 + 0.5 + scale bytes per element;
token groups: 2 + 1 + 1/32) over the copy's 4. Prints one JSON line per case, writes the list.
"""
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_fp4_ops as f4
from mxquant.backends import _triton_training_ops as ops
from mxquant.backends import triton as tb

E4 = torch.float8_e4m3fn
# (BLOCK_M, BLOCK_K, warps[, maxnreg]): the eighth session's first sweep (12 tiles and the default)
# found 1 x 8192 x 8 best for MXFP4; its second (this script at 29166d3, whose configs had a 5th
# entry for an FMA quotient since dropped) varied the register cap (0: none) at the leading tiles
FP4_TILES = [None] + [(1, 8192, w, r) for w in (8, 16) for r in (0, 64, 80, 96, 128)] + [
    (1, 4096, 4, r) for r in (0, 64, 96)]
TOKEN_TILES = [None, (8, 512, 4), (32, 256, 4), (64, 256, 8), (128, 256, 8), (16, 256, 4), (64, 128, 4), (32, 512, 4)]
res = []


def rec(**r):
    res.append(r)
    print(json.dumps(r), flush=True)


def same(a, b):
    return all(torch.equal(u.view(torch.uint8), v.view(torch.uint8)) for u, v in zip(a, b))


def bench(name, shape, fn, want, nbytes, copy_us, cfg):
    try:
        ok = same(fn(), want)
        us = do_bench(fn, warmup=5, rep=40) * 1e3
        rec(shape=shape, what=name, cfg=cfg, us=round(us, 2), pct=round(100 * copy_us / us * nbytes / 4, 1), exact=ok)
    except Exception as e:  # a tile the kernel refuses or cannot compile
        rec(shape=shape, what=name, cfg=cfg, err=str(e)[:200])


def main(path):
    for m, k in ((8192, 8192), (16384, 8192)):
        shape = f"{m}x{k}"
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        dst = torch.empty_like(x)
        copy_us = do_bench(lambda: dst.copy_(x), warmup=5, rep=40) * 1e3
        rec(shape=shape, what="copy", us=round(copy_us, 2))
        # the tensor's own global scale (as llm-compressor derives it): a fixed small one (1e-3, as in
        # sweep_training.py and this script at 29166d3) gives every group scale byte 0x20 and
        # every nibble 0 with randn input, a degenerate case to time
        g = f4.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone()
        for layout in ("linear", "swizzled"):
            mx = lambda c: f4.mxfp4_quantize(x, "rceil", layout, c)
            nv = lambda c: f4.nvfp4_quantize(x, g, "compressed-tensors", layout, c)[:2]
            wm, wn = [t.clone() for t in mx(None)], [t.clone() for t in nv(None)]
            for cfg in FP4_TILES:
                bench(f"mxfp4 {layout}", shape, lambda: mx(cfg), wm, 2.5 + 1 / 32, copy_us, cfg)
                bench(f"nvfp4 given {layout}", shape, lambda: nv(cfg), wn, 2.5 + 1 / 16, copy_us, cfg)
        cuts = torch.sort(torch.randint(0, m + 1, (31,), generator=torch.Generator().manual_seed(0))).values
        ends = torch.cat([cuts, torch.tensor([m])]).to(torch.int32).cuda()
        ungrouped = do_bench(lambda: tb.quantize(x, E4, "rceil", "swizzled"), warmup=5, rep=40) * 1e3
        rec(shape=shape, what="rowwise swizzled (ungrouped)", us=round(ungrouped, 2))
        want = [t.clone() for t in ops.quantize_grouped(x, ends, E4, "rceil")]
        for cfg in TOKEN_TILES:
            bench("tokens (32 groups)", shape, lambda: ops.quantize_grouped(x, ends, E4, "rceil", cfg), want,
                  3 + 1 / 32, copy_us, cfg)
            if "us" in res[-1]:
                res[-1]["vs_ungrouped"] = round(ungrouped / res[-1]["us"], 3)
        json.dump(res, open(path, "w"), indent=1)
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
