"""FP4 quantize tiles on one CUDA GPU, one process: program shapes (4096-element programs of 4
warps against the 8192 of 8 the H100 shipped until the fifteenth session, BEFORE), swizzled
programs whose rows lie 32 apart (backends/_triton_fp4.py's _tile_rows, ops._spread), the loads'
eviction policy, and NVFP4 with g computed (the amax launch, then the quantize one):

    python3 benchmarks/sweep_fp4_spread.py OUT.json [ROUNDS] [--tall]

8192x8192 and 16384x8192; MXFP4 rceil of bf16, NVFP4 with g given of bf16 and fp16 (inputs
scaled so that _nv_flag flags none of the e4m3 scales under their own g, the common case; bf16
also unscaled where its g flags some, `flagged` gives the share of e4m3 scales), NVFP4 with g
computed (bf16). Every variant's bytes are compared with BEFORE's on the input and on one with
NaN / Inf rows. Rounds interleave every case beside a copy of x; times are triton.testing.do_bench
medians; % of copy: (2 + 0.5 + scale bytes an element) over the copy's 4. One JSON line per
case; the list written to OUT.json after each round.

Fifteenth session, one H100 (docs/perf/h100-fp4-spread-fifteenth-2026-12-06-{A,B}.json): call A
(an earlier form, unscaled input whose bf16 g flagged scales) and call B picked FP4_CONFIGS'
H100 tiles. Tried in call B and dropped: swizzled scale bytes stored one by one instead of packed
4 to a word (NVFP4 1.00-1.20x the time, MXFP4 1.00-1.03x), and the global amax with 4 or 16
tiles a program (1.03-1.04x the computed-g call's time); in call A, the amax launch taking tiles
last to first so that the quantize launch starts on tiles still in L2 (within 2%).
"""
import itertools
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_fp4_ops as f4

sys.path.insert(0, "tests")
from test_nvfp4_reciprocal import E4M3, flagged  # noqa: E402  (the kernel's flag rule, in NumPy)

BEFORE = (1, 8192, 8, False)
LINEAR = [BEFORE, (1, 4096, 4, False), (2, 2048, 4, False), (1, 2048, 2, False)]
SWIZZLED = [BEFORE, (1, 4096, 4, False), (4, 1024, 4, True), (4, 1024, 4, False), (8, 512, 4, True),
            (8, 1024, 8, True)]
"""(BLOCK_M, BLOCK_K, warps, rows 32 apart). Call A (fifteenth session, one H100): 16-warp
programs (1 x 16384, 2 x 8192, 4 x 4096, 8 x 2048) 1.33-2.49x BEFORE's time for NVFP4; 4 x 2048 /
8 and 16 x 512 / 8 slower than BEFORE for MXFP4 (4 x 2048 about even for NVFP4); rows 32 apart or
not at 4 x 2048 / 8 alike."""
EVICT_TOO = {BEFORE, (1, 4096, 4, False), (4, 1024, 4, True)}
"""Swizzled configs also timed with evict_first (the others with ops._evict's policy then)."""
TALL_LINEAR = [(1, 4096, 4, False), (4, 1024, 4, False), (16, 256, 4, False), (32, 128, 4, False)]
TALL_SWIZZLED = [(4, 1024, 4, True), (16, 256, 4, True), (32, 128, 4, True), (64, 64, 4, True), (32, 64, 2, True),
                 (64, 128, 8, True), (128, 64, 4, True)]
"""--tall (sixteenth session): NVFP4 programs of 16-128 rows and 64-256 elements, whose swizzled
scale bytes are 64-512 contiguous bytes (128 rows x 4 groups: one whole 512-byte block of the
128x4 layout), every store a whole 32-byte sector at >= 64 elements a row; both policies."""


def full(cfg, dtype, layout, evict=None):
    """The 7-entry config: no register cap, PTX blocks of 8, evict_last with swizzled scales (the
    policy before the fifteenth session), else ops._evict's."""
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


def tall_cases():
    """--tall's: NVFP4 of bf16 and fp16, g given, every TALL config with both eviction policies."""
    out = []
    for inp, layout in itertools.product(("bf16", "fp16"), ("linear", "swizzled")):
        for cfg, evict in itertools.product(TALL_LINEAR if layout == "linear" else TALL_SWIZZLED,
                                            ("evict_first", "evict_last")):
            out.append((f"nvfp4 {inp} {layout} {cfg} {evict}", "nvfp4", inp, layout, True, cfg, evict))
    return out


def cases(inputs):
    """(name, format, input name, layout, g given, config, evict)."""
    out = []
    for (fmt, inp), layout in itertools.product((("mxfp4", "bf16"), ("nvfp4", "bf16"), ("nvfp4", "fp16")),
                                                ("linear", "swizzled")):
        for cfg in (LINEAR if layout == "linear" else SWIZZLED):
            out.append((f"{fmt} {inp} {layout} {cfg}", fmt, inp, layout, True, cfg, None))
            if layout == "swizzled" and cfg in EVICT_TOO:
                out.append((f"{fmt} {inp} {layout} {cfg} evict_first", fmt, inp, layout, True, cfg, "evict_first"))
    if "bf16 flagged" in inputs:
        for layout, cfg in (("linear", BEFORE), ("linear", (1, 4096, 4, False)), ("swizzled", BEFORE),
                            ("swizzled", (4, 1024, 4, True))):
            out.append((f"nvfp4 bf16-flagged {layout} {cfg}", "nvfp4", "bf16 flagged", layout, True, cfg, None))
    for layout in ("linear", "swizzled"):
        out.append((f"nvfp4 bf16 {layout} computed", "nvfp4", "bf16", layout, False, BEFORE, None))
    return out


def main(path, rounds=3, tall=False):
    res = []
    gen = torch.Generator().manual_seed(0)
    for m, k in ((8192, 8192), (16384, 8192)):
        base = torch.randn(m, k, generator=gen)
        inputs = {"bf16": unflagged(base.to(torch.bfloat16).cuda()), "fp16": unflagged(base.to(torch.float16).cuda())}
        raw = base.to(torch.bfloat16).cuda()
        if not tall and share_flagged(own_g(raw).item(), torch.bfloat16) > 0:
            inputs["bf16 flagged"] = raw
        g = {name: own_g(x) for name, x in inputs.items()}
        flags = {name: share_flagged(g[name].item(), x.dtype) for name, x in inputs.items()}
        special = {}
        for name, x in inputs.items():
            special[name] = x.clone()
            special[name][7, 100] = float("nan")
            special[name][9, 5000] = float("inf")
        dst = torch.empty_like(inputs["bf16"])
        todo = tall_cases() if tall else cases(inputs)
        exact = {}
        for name, fmt, inp, layout, given, cfg, evict in todo:  # bytes against BEFORE's
            gg = g[inp] if given else None
            try:
                ok = []
                for x in (inputs[inp], special[inp]):
                    want = [t.clone() for t in call(fmt, x, gg, layout, full(BEFORE, x.dtype, layout))]
                    got = call(fmt, x, gg, layout, full(cfg, x.dtype, layout, evict))
                    ok.append(all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(got, want)))
                exact[name] = ok
            except Exception as e:  # a variant that does not compile or launch
                exact[name] = f"{type(e).__name__}: {str(e)[:300]}"
        for rnd in range(rounds):
            copy = do_bench(lambda: dst.copy_(inputs["bf16"]), warmup=5, rep=40) * 1e3
            for name, fmt, inp, layout, given, cfg, evict in todo:
                r = dict(shape=f"{m}x{k}", case=name, round=rnd, exact=exact[name], flagged=round(flags[inp], 4),
                         g=g[inp].item(), copy_us=round(copy, 2))
                if isinstance(exact[name], list):
                    x, gg = inputs[inp], g[inp] if given else None
                    c = full(cfg, x.dtype, layout, evict)
                    us = do_bench(lambda: call(fmt, x, gg, layout, c), warmup=5, rep=40) * 1e3
                    per = 2.5 + (1 / 16 if fmt == "nvfp4" else 1 / 32)
                    r.update(us=round(us, 2), pct=round(100 * copy / us * per / 4, 1))
                res.append(r)
                print(json.dumps(r), flush=True)
            json.dump(res, open(path, "w"), indent=1)
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--tall"]
    main(args[0], int(args[1]) if len(args) > 1 else 3, "--tall" in sys.argv)
