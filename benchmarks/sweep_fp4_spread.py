"""FP4 quantize tiles on one CUDA GPU, one process: swizzled programs whose rows lie 32 apart
(backends/_triton_fp4.py's _tile_rows, ops._spread) against the shipped 1-row tiles, NVFP4 tiles
with linear scales, and the global amax pass taken last to first (ops.AMAX_REVERSE) or first to
last before a computed-g NVFP4:

    python3 benchmarks/sweep_fp4_spread.py OUT.json [ROUNDS]

bf16 (and fp16 for NVFP4 swizzled), 8192x8192 and 16384x8192, MXFP4 rceil and NVFP4 with the
tensor's own g given or computed. Every variant's bytes are compared with the shipped config's
(SHIPPED) on the randn input and on one with NaN / Inf rows. Rounds interleave every case beside
a copy of x; times are triton.testing.do_bench medians; % of copy: (2 + 0.5 + scale bytes an
element) over the copy's 4. One JSON line per case; the list written to OUT.json after each
round.
"""
import json
import sys

import torch
from triton.testing import do_bench

from mxquant.backends import _triton_fp4_ops as f4

SHIPPED = {"linear": (1, 8192, 8), "swizzled": (1, 8192, 8)}
SWIZZLED = [(4, 2048, 8, True), (8, 1024, 8, True), (4, 2048, 8, False), (4, 4096, 16, True), (8, 2048, 16, True),
            (4, 1024, 4, True), (16, 512, 8, True)]
"""(BLOCK_M, BLOCK_K, warps, rows 32 apart) tried against SHIPPED with swizzled scales."""
NV_LINEAR = [(2, 4096, 8), (1, 16384, 16), (1, 4096, 4), (4, 2048, 8), (2, 8192, 16)]
"""(BLOCK_M, BLOCK_K, warps) tried against SHIPPED for NVFP4 with linear scales."""


def full(cfg, dtype, layout):
    """The 7-entry config: no register cap, PTX blocks of 8, the shipped eviction policy."""
    spread = cfg[3] if len(cfg) > 3 else False
    return (*cfg[:3], 0, 8, f4._evict(dtype, layout == "swizzled"), spread)


def call(fmt, x, g, layout, cfg):
    if fmt == "mxfp4":
        return f4.mxfp4_quantize(x, "rceil", layout, cfg)
    return f4.nvfp4_quantize(x, g, "compressed-tensors", layout, cfg)


def cases(dtype):
    """(name, format, layout, g given, config, amax reversed)."""
    out = []
    for fmt in ("mxfp4", "nvfp4"):
        if fmt == "mxfp4" and dtype != torch.bfloat16:
            continue
        out.append((f"{fmt} swizzled shipped", fmt, "swizzled", True, SHIPPED["swizzled"], True))
        out += [(f"{fmt} swizzled {c}", fmt, "swizzled", True, c, True) for c in SWIZZLED]
        out.append((f"{fmt} linear shipped", fmt, "linear", True, SHIPPED["linear"], True))
    if dtype == torch.bfloat16:
        out += [(f"nvfp4 linear {c}", "nvfp4", "linear", True, c, True) for c in NV_LINEAR]
        for layout in ("linear", "swizzled"):
            for rev in (False, True):
                out.append((f"nvfp4 {layout} computed reverse={rev}", "nvfp4", layout, False, SHIPPED[layout], rev))
    return out


def main(path, rounds=3):
    res = []
    for m, k in ((8192, 8192), (16384, 8192)):
        for dtype in (torch.bfloat16, torch.float16):
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            special = x.clone()
            special[7, 100] = float("nan")
            special[9, 5000] = float("inf")
            dst = torch.empty_like(x)
            g_own = f4.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone()
            todo = cases(dtype)
            exact = {}
            for name, fmt, layout, given, cfg, rev in todo:  # bytes against the shipped config's
                g = g_own if given else None
                f4.AMAX_REVERSE = rev
                try:
                    ok = []
                    for inp in (x, special):
                        want = [t.clone() for t in call(fmt, inp, g, layout, full(SHIPPED[layout], dtype, layout))]
                        got = call(fmt, inp, g, layout, full(cfg, dtype, layout))
                        ok.append(all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(got, want)))
                    exact[name] = ok
                except Exception as e:  # a variant that does not compile or launch
                    exact[name] = f"{type(e).__name__}: {str(e)[:300]}"
                finally:
                    f4.AMAX_REVERSE = True
            for rnd in range(rounds):
                copy = do_bench(lambda: dst.copy_(x), warmup=5, rep=40) * 1e3
                for name, fmt, layout, given, cfg, rev in todo:
                    r = dict(shape=f"{m}x{k}", dtype=str(dtype), case=name, round=rnd, exact=exact[name],
                             copy_us=round(copy, 2))
                    if isinstance(exact[name], list):
                        g = g_own if given else None
                        f4.AMAX_REVERSE = rev
                        c = full(cfg, dtype, layout)
                        us = do_bench(lambda: call(fmt, x, g, layout, c), warmup=5, rep=40) * 1e3
                        f4.AMAX_REVERSE = True
                        per = 2.5 + (1 / 16 if fmt == "nvfp4" else 1 / 32)
                        r.update(us=round(us, 2), pct=round(100 * copy / us * per / 4, 1))
                    res.append(r)
                    print(json.dumps(r), flush=True)
                json.dump(res, open(path, "w"), indent=1)
    json.dump(res, open(path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
