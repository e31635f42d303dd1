"""FP4 quantize tiles on one CUDA GPU, one process: program shapes (4096-element programs of 4
warps against the shipped 8192 of 8), swizzled programs whose rows lie 32 apart
(backends/_triton_fp4.py's _tile_rows, ops._spread), the swizzled scale bytes stored as packed
words or one by one (ops.SWIZZLED_WORDS), the loads' eviction policy, and the global amax launch
with several tiles a program (ops.AMAX_TILES):

    python3 benchmarks/sweep_fp4_spread.py OUT.json [ROUNDS]

8192x8192 and 16384x8192; MXFP4 rceil of bf16, NVFP4 with g given of bf16 and fp16 (inputs
scaled so that _nv_flag flags none of the e4m3 scales under their own g, the common case; bf16
also unscaled where its g flags some, `flagged` gives the share of e4m3 scales), NVFP4 with g
computed (bf16). Every variant's bytes are compared with the shipped config's on the input and
on one with NaN / Inf rows. Rounds interleave every case beside a copy of x; times are
triton.testing.do_bench medians; % of copy: (2 + 0.5 + scale bytes an element) over the copy's 4.
One JSON line per case; the list written to OUT.json after each round. Call A of the fifteenth
session ran an earlier form of it (docs/perf/h100-fp4-spread-fifteenth-2026-12-06-A.json).
"""
import itertools
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_fp4_ops as f4

sys.path.insert(0, "tests")
from test_nvfp4_reciprocal import E4M3, flagged  # noqa: E402  (the kernel's flag rule, in NumPy)

SHIPPED = (1, 8192, 8, False)
LINEAR = [SHIPPED, (1, 4096, 4, False), (2, 2048, 4, False), (1, 2048, 2, False)]
SWIZZLED = [SHIPPED, (1, 4096, 4, False), (4, 1024, 4, True), (4, 1024, 4, False), (8, 512, 4, True),
            (8, 1024, 8, True)]
"""(BLOCK_M, BLOCK_K, warps, rows 32 apart). Call A (fifteenth session, one H100): 16-warp
programs (1 x 16384, 2 x 8192, 4 x 4096, 8 x 2048) 1.3-2.3x the shipped time for NVFP4; 4 x 2048 /
8 and 16 x 512 / 8 slower than the shipped tile; rows 32 apart or not at 4 x 2048 / 8 alike."""
WORDS_TOO = {SHIPPED, (1, 4096, 4, False), (4, 1024, 4, True)}
"""Swizzled configs also timed with the scale bytes stored one by one, and with evict_first."""


def full(cfg, dtype, layout, evict=None):
    """The 7-entry config: no register cap, PTX blocks of 8, the shipped eviction policy."""
    return (*cfg[:3], 0, 8, evict or f4._evict(dtype, layout == "swizzled"), cfg[3])


def call(fmt, x, g, layout, cfg):
    if fmt == "mxfp4":
        return f4.mxfp4_quantize(x, "rceil", layout, cfg)
    return f4.nvfp4_quantize(x, g, "compressed-tensors", layout, cfg)


def share_flagged(g: float, dtype) -> float:
    return float(flagged(E4M3[E4M3 > 0], g, "bf16" if dtype == torch.bfloat16 else "fp16").mean())


def own_g(x):
    return f4.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone()


def unflagged(x):
    """x scaled by the first c = 1 + j / 64 whose own g flags no e4m3 scale."""
    for j in range(64):
        y = (x.float() * (1 + j / 64)).to(x.dtype)
        if share_flagged(own_g(y).item(), x.dtype) == 0:
            return y
    raise RuntimeError("no unflagged scaling found")


def cases(inputs):
    """(name, format, input name, layout, g given, config, words, evict, amax tiles)."""
    out = []
    for (fmt, inp), layout in itertools.product((("mxfp4", "bf16"), ("nvfp4", "bf16"), ("nvfp4", "fp16")),
                                                ("linear", "swizzled")):
        for cfg in (LINEAR if layout == "linear" else SWIZZLED):
            out.append((f"{fmt} {inp} {layout} {cfg}", fmt, inp, layout, True, cfg, True, None, 1))
            if layout == "swizzled" and cfg in WORDS_TOO:
                out.append((f"{fmt} {inp} {layout} {cfg} bytes", fmt, inp, layout, True, cfg, False, None, 1))
                out.append((f"{fmt} {inp} {layout} {cfg} evict_first", fmt, inp, layout, True, cfg, True, "evict_first",
                            1))
    if "bf16 flagged" in inputs:
        for layout, cfg in (("linear", SHIPPED), ("linear", (1, 4096, 4, False)), ("swizzled", SHIPPED),
                            ("swizzled", (4, 1024, 4, True))):
            out.append((f"nvfp4 bf16-flagged {layout} {cfg}", "nvfp4", "bf16 flagged", layout, True, cfg, True, None, 1))
    for layout, tiles in (("linear", 1), ("linear", 4), ("linear", 16), ("swizzled", 1), ("swizzled", 4)):
        out.append((f"nvfp4 bf16 {layout} computed amax_tiles={tiles}", "nvfp4", "bf16", layout, False, SHIPPED, True,
                    None, tiles))
    return out


def main(path, rounds=3):
    res = []
    gen = torch.Generator().manual_seed(0)
    for m, k in ((8192, 8192), (16384, 8192)):
        base = torch.randn(m, k, generator=gen)
        inputs = {"bf16": unflagged(base.to(torch.bfloat16).cuda()), "fp16": unflagged(base.to(torch.float16).cuda())}
        raw = base.to(torch.bfloat16).cuda()
        if share_flagged(own_g(raw).item(), torch.bfloat16) > 0:
            inputs["bf16 flagged"] = raw
        g = {name: own_g(x) for name, x in inputs.items()}
        flags = {name: share_flagged(g[name].item(), x.dtype) for name, x in inputs.items()}
        special = {}
        for name, x in inputs.items():
            special[name] = x.clone()
            special[name][7, 100] = float("nan")
            special[name][9, 5000] = float("inf")
        dst = torch.empty_like(inputs["bf16"])
        todo = cases(inputs)
        exact = {}
        for name, fmt, inp, layout, given, cfg, words, evict, tiles in todo:  # bytes against the shipped config's
            gg = g[inp] if given else None
            try:
                ok = []
                for x in (inputs[inp], special[inp]):
                    want = [t.clone() for t in call(fmt, x, gg, layout, full(SHIPPED, x.dtype, layout))]
                    f4.SWIZZLED_WORDS, f4.AMAX_TILES = words, tiles
                    got = call(fmt, x, gg, layout, full(cfg, x.dtype, layout, evict))
                    ok.append(all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(got, want)))
                exact[name] = ok
            except Exception as e:  # a variant that does not compile or launch
                exact[name] = f"{type(e).__name__}: {str(e)[:300]}"
            finally:
                f4.SWIZZLED_WORDS, f4.AMAX_TILES = True, 1
        for rnd in range(rounds):
            copy = do_bench(lambda: dst.copy_(inputs["bf16"]), warmup=5, rep=40) * 1e3
            for name, fmt, inp, layout, given, cfg, words, evict, tiles in todo:
                r = dict(shape=f"{m}x{k}", case=name, round=rnd, exact=exact[name], flagged=round(flags[inp], 4),
                         g=g[inp].item(), copy_us=round(copy, 2))
                if isinstance(exact[name], list):
                    x, gg = inputs[inp], g[inp] if given else None
                    c = full(cfg, x.dtype, layout, evict)
                    f4.SWIZZLED_WORDS, f4.AMAX_TILES = words, tiles
                    us = do_bench(lambda: call(fmt, x, gg, layout, c), warmup=5, rep=40) * 1e3
                    f4.SWIZZLED_WORDS, f4.AMAX_TILES = True, 1
                    per = 2.5 + (1 / 16 if fmt == "nvfp4" else 1 / 32)
                    r.update(us=round(us, 2), pct=round(100 * copy / us * per / 4, 1))
                res.append(r)
                print(json.dumps(r), flush=True)
            json.dump(res, open(path, "w"), indent=1)
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
