"""NVFP4 quantize of bf16 / fp16 input: backends/_triton_nvfp4.py's kernel (y = x * RN(g / s) per
group, Markstein's quotient in flagged groups) against backends/_triton_fp4.py's (an IEEE division
per element; not in ops.NV_DIVISION_FREE), one CUDA GPU, one process:

    python3 benchmarks/sweep_nvfp4_division_free.py OUT.json

8192x8192 and 16384x8192, bf16 and fp16, linear and swizzled scales, g given (the tensor's own)
and computed (an amax pass first). The new kernel at the configs of GIVEN and COMPUTED; the old
one at its shipped config. Each variant's bytes (data, scales, g) are compared with the old kernel's on the randn
input, on a tensor with NaN / Inf rows and on a g = 1 input whose quotients sit on the
rounding midpoints (`exact`); the latter (every element divided: the worst case) and the randn
input with g = 512 (every group flagged, as compressed-tensors' g of such data can be; few
elements near a midpoint; `g512_exact`) are timed too at the shipped config. Times:
triton.testing.do_bench medians beside a copy of x in the same process; % of copy: (2 + 0.5 +
1/16 bytes a element) over the copy's 4. One JSON line per case; the list written to OUT.json
after each shape.
"""
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_fp4_ops as f4

res = []
SHIPPED, BOTH = f4.NV_DIVISION_FREE, frozenset({torch.bfloat16, torch.float16})
SHIPPED_CFG = (1, 8192, 8, 0, 8)
GIVEN = {torch.bfloat16: [SHIPPED_CFG, (1, 8192, 8, 0, 8, "evict_first"), (1, 8192, 8, 0, 8, "")],
         torch.float16: [SHIPPED_CFG]}
COMPUTED = [SHIPPED_CFG]
"""(BLOCK_M, BLOCK_K, warps, register cap (0: none), elements per PTX block[, load eviction policy])
of the new kernel, the shipped one first. Tried and not kept: caps of 64 and 80, 16 warps, blocks
of 4 (call A, thirteenth session); 64 and 128 elements a thread ((1, 8192, 4), (2, 8192, 8),
(4, 8192, 16), (4, 8192, 8): 1.05-1.5x the time of 32 a thread; call F, fourteenth session, with
a PTX block over both halves of a group, itself dropped: 1.14x the time linear)."""
MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


def rec(**r):
    res.append(r)
    print(json.dumps(r), flush=True)


def midpoint_input(m, k, dtype, gen):
    """Groups of 16 led by 6 * s (s a power of two, so with g = 1 d = s) and 15 elements m * s:
    with g = 1 every quotient is a rounding midpoint and every group is flagged."""
    s = 2.0 ** torch.randint(-6, 6, (m, k // 16, 1), generator=gen).float()
    v = MIDPOINTS[torch.randint(0, 7, (m, k // 16, 16), generator=gen)] * s
    v = torch.where(torch.rand(v.shape, generator=gen) < 0.5, -v, v)
    v[..., 0] = 6 * s[..., 0]
    return v.reshape(m, k).to(dtype).cuda()


def run(x, g, layout, config, old):
    f4.NV_DIVISION_FREE = frozenset() if old else BOTH  # (the launch plan's key names the kernel)
    try:
        return [t.clone() for t in f4.nvfp4_quantize(x, g, "compressed-tensors", layout, config)]
    finally:
        f4.NV_DIVISION_FREE = SHIPPED


def same(a, b):
    return all(torch.equal(u.view(torch.uint8), v.view(torch.uint8)) for u, v in zip(a, b))


def main(path):
    gen = torch.Generator().manual_seed(0)
    for m, k in ((8192, 8192), (16384, 8192)):
        for dtype in (torch.bfloat16, torch.float16):
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            special = x.clone()
            special[7, 100] = float("nan")
            special[9, 5000] = float("inf")
            mid = midpoint_input(m, k, dtype, gen)
            one = torch.ones(1, device="cuda")
            g512 = torch.full((1,), 512.0, device="cuda")
            dst = torch.empty_like(x)
            copy_us = do_bench(lambda: dst.copy_(x), warmup=5, rep=40) * 1e3
            rec(shape=f"{m}x{k}", dtype=str(dtype), what="copy", us=round(copy_us, 2))
            g_own = f4.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone()
            for layout in ("linear", "swizzled"):
                for given in (True, False):
                    g = g_own if given else None
                    want = [run(x, g, layout, None, True), run(special, g, layout, None, True),
                            run(mid, one, layout, None, True), run(x, g512, layout, None, True)]
                    shapes = GIVEN[dtype] if given else COMPUTED
                    variants = [("old", None)] + [("new", v) for v in shapes]
                    for name, cfg in variants:
                        old = name == "old"
                        r = dict(shape=f"{m}x{k}", dtype=str(dtype), layout=layout, given=given, kernel=name, cfg=cfg)
                        try:
                            got = [run(x, g, layout, cfg, old), run(special, g, layout, cfg, old),
                                   run(mid, one, layout, cfg, old)]
                            r["exact"] = [same(a, b) for a, b in zip(got, want)]
                            f4.NV_DIVISION_FREE = frozenset() if old else BOTH
                            us = do_bench(lambda: f4.nvfp4_quantize(x, g, "compressed-tensors", layout, cfg),
                                          warmup=5, rep=40) * 1e3
                            r.update(us=round(us, 2), pct=round(100 * copy_us / us * (2.5 + 1 / 16) / 4, 1))
                            if given and (name == "old" or cfg == SHIPPED_CFG):
                                # every element on a midpoint (every one divided); every group flagged
                                # (g = 512: d = s / 512 on the grid), few elements near a midpoint
                                us = do_bench(lambda: f4.nvfp4_quantize(mid, one, "compressed-tensors", layout, cfg),
                                              warmup=5, rep=40) * 1e3
                                us512 = do_bench(lambda: f4.nvfp4_quantize(x, g512, "compressed-tensors", layout, cfg),
                                                 warmup=5, rep=40) * 1e3
                                r.update(midpoint_us=round(us, 2), g512_us=round(us512, 2))
                                r["g512_exact"] = same(run(x, g512, layout, cfg, old), want[3])
                        except Exception as e:  # a variant that does not compile or launch
                            r["err"] = f"{type(e).__name__}: {str(e)[:300]}"
                        finally:
                            f4.NV_DIVISION_FREE = SHIPPED
                        rec(**r)
            json.dump(res, open(path, "w"), indent=1)
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
