"""2-byte NVFP4 quantize (backends/_triton_nvfp4.py) with each group's r and flags (and a
flagged block's D and R) read from the per-scale-byte table (TABLE: nvfp4_table_kernel's, one
more launch; with the quantize kernel as its programmatic dependent or not) or computed per
group, on one CUDA GPU, interleaved round by round:

    python3 benchmarks/sweep_nvfp4_table.py OUT.json [ROUNDS]

bf16 and fp16 randn, linear and swizzled scales, g given at 8M-128M elements: x's own (the call's
computed g, RN_x(RN_x(1 / amax) * 2688), as bench_fp4.py gives it), and at 8192x8192 and
16384x8192 also 2688 / amax in fp32 and 512 (either may flag the common scale bytes, so most
warps take the flagged groups' path: Markstein's quotient). The switches:
_triton_fp4_ops.NV_TABLE_MIN (0: always the table; 2**62: never) and NV_TABLE_PDL, with
NV_TABLE_LAYOUTS held at both layouts;
every variant's bytes are compared with the per-group one's. Times: bench_quantize.bench's
medians of device time (CUDA events, L2 flushed by a 1 GiB write before each call, so the host
keeps ahead), the call through the backend's op (both launches). `pct`: share of copy
bandwidth (2 + 1/2 + 1/16 bytes an element against the copy's 4); `x_group`: the variant's time
over the per-group one in the same round. Seventeenth session, one H100:
docs/perf/h100-nvfp4-table-seventeenth-2026-12-06-C.json (run before NV_TABLE_LAYOUTS existed,
when the table served both layouts); eighteenth session's (with NV_NEAR variants, since removed):
docs/perf/h100-nvfp4-table-eighteenth-2026-12-06-A.json.
"""
import itertools
import json
import sys

import torch
from bench_quantize import bench  # (benchmarks/ on sys.path: device time, 1 GiB L2 flush)
from mxquant.backends import _triton_fp4_ops as ops

SHAPES = ((2048, 4096), (4096, 4096), (8192, 8192), (16384, 8192))
VARIANTS = {"table": (0, False), "table, PDL": (0, True), "per group": (1 << 62, False)}
"""(NV_TABLE_MIN, NV_TABLE_PDL)."""


def call(x, g, layout, variant):
    ops.NV_TABLE_MIN, ops.NV_TABLE_PDL = VARIANTS[variant]
    ops.NV_TABLE_LAYOUTS = frozenset({"linear", "swizzled"})
    return ops.nvfp4_quantize(x, g, "compressed-tensors", layout)


def cases():
    for (m, k), dt, layout in itertools.product(SHAPES, (torch.bfloat16, torch.float16), ("linear", "swizzled")):
        yield m, k, dt, layout, "of x"
    for (m, k), dt, layout, g in itertools.product(SHAPES[2:], (torch.bfloat16, torch.float16), ("linear", "swizzled"),
                                                   ("fp32", "512")):
        yield m, k, dt, layout, g


def main(path, rounds=2):
    keep = ops.NV_TABLE_MIN, ops.NV_TABLE_PDL, ops.NV_TABLE_LAYOUTS
    res, xs = [], {}
    for m, k, dt, layout, gk in cases():
        if (m, k, dt) not in xs:
            torch.manual_seed(0)
            xs[(m, k, dt)] = torch.randn(m, k, device="cuda", dtype=dt)
    try:
        for rnd in range(rounds):
            for m, k, dt, layout, gk in cases():
                x = xs[(m, k, dt)]
                g = {"of x": lambda: ops.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone(),
                     "fp32": lambda: 2688.0 / x.abs().max().float().reshape(1),
                     "512": lambda: torch.tensor([512.0], device="cuda")}[gk]()
                dst = torch.empty_like(x)
                copy = bench(lambda: dst.copy_(x), 40)
                outs, us = {}, {}
                for v in VARIANTS:
                    outs[v] = [t.view(torch.uint8) for t in call(x, g, layout, v)]
                    us[v] = bench(lambda: call(x, g, layout, v), 40)
                same = all(all(torch.equal(a, b) for a, b in zip(outs[v], outs["per group"])) for v in VARIANTS)
                for v in VARIANTS:
                    r = dict(shape=f"{m}x{k}", dtype=str(dt).split(".")[-1], layout=layout, g=gk, variant=v,
                             round=rnd, us=round(us[v], 2), copy_us=round(copy, 2),
                             pct=round(100 * copy / us[v] * (2 + 0.5 + 1 / 16) / 4, 1),
                             x_group=round(us[v] / us["per group"], 3), same_bytes=same)
                    res.append(r)
                    print(json.dumps(r), flush=True)
                with open(path, "w") as f:
                    json.dump(res, f, indent=1)
    finally:
        ops.NV_TABLE_MIN, ops.NV_TABLE_PDL, ops.NV_TABLE_LAYOUTS = keep


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2)
