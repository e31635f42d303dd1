"""Tuning sweeps of the `triton` backend on one CUDA GPU (the figures behind quantize_config).

    python3 benchmarks/sweep_triton.py --out sweep-out            # configs x eviction policies
    python3 benchmarks/sweep_triton.py --ablate --out sweep-out   # where the swizzled cost is
    python3 benchmarks/sweep_triton.py --dequantize --out sweep-out  # the dequantize kernel

Sweep: for each shape, layout and configuration of this card class (backends/triton.py: card;
BLOCK_M, BLOCK_K, warps, and where named the eviction policy, persistent programs per SM and
pipelining stages), else the load eviction policies of --evicts, rceil, bf16 -> e4m3, timed
as bench_quantize.bench does (median of CUDA events, L2 flushed), 2 interleaved rounds, the
lower median kept. Every configuration's output is checked against the shipped config's
bytes first (and the shipped config against the reference).

Ablation (--ablate, four shapes from 2048x4096 up): the swizzled kernel as shipped, the same
kernel with its scale store removed, with the same packed 32-bit words stored at
row-contiguous offsets (wrong layout, same amount of data), and two exact alternatives to
the packing (byte stores; bytes reshaped to groups of 4), at several configurations (some with
Config.spread: a program's rows 32 apart, so that their scale words are adjacent), to
separate the cost of the 128x4 scatter from the rest. Variants are built by patching the
kernel's source text into a temporary module; the exact ones are checked against the
shipped kernel's bytes first (two others are wrong on purpose).
Writes sweep.json (and prints one line per measurement).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile

import torch

import bench_quantize as bq  # benchmarks/ is on sys.path when a script here runs
from mxquant import reference
from mxquant.backends import triton as tb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

E4M3 = torch.float8_e4m3fn
# (BLOCK_M, BLOCK_K, warps[, evict, programs per SM of a persistent grid, pipelining stages])
CONFIGS = {
    "default": {  # the H100 sweep of 2026-11-25
        "linear": [(1, 2048, 4), (2, 1024, 4), (4, 512, 4), (1, 4096, 8), (1, 1024, 4)],
        "swizzled": [(4, 512, 4), (1, 2048, 4), (2, 1024, 4), (8, 256, 4), (8, 512, 4), (4, 1024, 8)],
    },
    "fast-hbm": {  # H200: more bytes in flight per SM (bigger programs, persistent grids)
        "linear": [(1, 2048, 4), (1, 4096, 4), (1, 4096, 8), (1, 8192, 4), (1, 8192, 8), (2, 4096, 8),
                   (1, 8192, 8, ""), (1, 16384, 16), (1, 4096, 4, "evict_last", 8, 2)],
        "swizzled": [(4, 512, 4), (4, 1024, 4), (4, 1024, 8), (4, 2048, 4), (4, 2048, 8), (2, 2048, 4),
                     (8, 1024, 8), (32, 128, 4), (128, 128, 8), (4, 1024, 4, "evict_last", 0, 1, True),
                     (8, 512, 4, "evict_last", 0, 1, True)],
        "dequantize": [(1, 2048, 4, ""), (1, 4096, 4, ""), (1, 8192, 4, ""), (1, 8192, 8, ""), (1, 16384, 8, ""),
                       (2, 4096, 4, ""), (1, 4096, 4, "", 8, 3), (1, 8192, 8, "evict_last")],
    },
}
CONFIGS["default"]["dequantize"] = CONFIGS["fast-hbm"]["dequantize"]
EVICTS = ("", "evict_last", "evict_first")
SHAPES = [(16, 4096), (2048, 4096), (4096, 7168), (8192, 8192), (16384, 16384)]


def same(a, b):
    return all(torch.equal(p.view(torch.uint8), q.view(torch.uint8)) for p, q in zip(a, b))


def _candidates(card, layout, k, evicts):
    out = []
    for c in CONFIGS[card][layout]:
        if c[1] > max(128, tb.next_pow2(k)):
            continue
        if len(c) > 3:
            out.append(tb.Config(*c))
        else:
            out += [tb.Config(*c, ev) for ev in evicts]
    return out


def sweep(shapes, rep_ms, card, evicts, layouts=("linear", "swizzled"), rounds=2):
    out = []
    for m, k in shapes:
        x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
        x.view(-1)[:32] = 0
        x.view(-1)[40] = float("nan")
        for layout in layouts:
            shipped = tb.quantize(x, E4M3, "rceil", layout)
            if m * k <= 1 << 25:  # the reference on the CPU is slow; the tests and bench check the rest
                ref = reference.quantize(x.cpu(), E4M3, "rceil", layout)
                assert same([t.cpu() for t in shipped], ref), f"shipped config differs from the reference at {m}x{k}"
            cands = _candidates(card, layout, k, evicts)
            for cfg in cands:
                assert same(tb.quantize(x, E4M3, "rceil", layout, config=cfg), shipped), (m, k, layout, cfg)
            out += _time(cands, lambda cfg: (lambda: tb.quantize(x, E4M3, "rceil", layout, config=cfg)), rep_ms,
                         rounds, {"shape": f"{m}x{k}", "layout": layout},
                         tuple(tb.quantize_config(m, k, layout == "swizzled", tb.card(x.device)[0])))
        del x, shipped
        torch.cuda.empty_cache()
    return out


def sweep_dequantize(shapes, rep_ms, card, rounds=2):
    """The dequantize kernel's configurations, bf16 out, linear and swizzled scales; every
    configuration's output checked against the shipped one (itself checked in the tests)."""
    out = []
    for m, k in shapes:
        x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
        for layout in ("linear", "swizzled"):
            data, scale = tb.quantize(x, E4M3, "rceil", layout)
            shipped = tb.dequantize(data, scale, layout, torch.bfloat16)
            cands = _candidates(card, "dequantize", k, ("",))
            for cfg in cands:
                got = tb.dequantize(data, scale, layout, torch.bfloat16, config=cfg)
                assert torch.equal(got.view(torch.int16), shipped.view(torch.int16)), (m, k, layout, cfg)
            out += _time(cands, lambda cfg: (lambda: tb.dequantize(data, scale, layout, torch.bfloat16, config=cfg)),
                         rep_ms, rounds, {"shape": f"{m}x{k}", "layout": layout, "op": "dequantize"},
                         tuple(tb.dequantize_config(m, k, tb.card(x.device)[0])))
            del data, scale, shipped
        del x
        torch.cuda.empty_cache()
    return out


def _time(cands, make, rep_ms, rounds, base, default):
    times = bq.interleaved({cfg: make(cfg) for cfg in cands}, rep_ms, rounds)
    rows = []
    for cfg in cands:
        row = {**base, "config": list(cfg), "us": min(times[cfg]), "rounds_us": times[cfg],
               "shipped": tuple(cfg) == default}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _variant(name, text, folder):
    path = os.path.join(folder, f"mxq_kernels_{name}.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location(f"mxq_kernels_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PACKED_FIRST = "        NG: tl.constexpr = NB // 4\n"
PACKED_STORE = "        tl.store(w_ptr + w_offs, word, mask=(r2 < scale_rows) & (g2 < scale_cols // 4))\n"
"""First and last line of the shipped kernel's packed swizzled store (the block the variants replace)."""
BYTES = """        b2 = sblk[None, :]
        r = r2 % 128
        b_offs = ((r2 // 128) * (scale_cols // 4) + b2 // 4) * 512 + (r % 32) * 16 + (r // 32) * 4 + b2 % 4
        tl.store(scale_ptr + b_offs, sbyte, mask=(r2 < scale_rows) & (b2 < scale_cols))
"""
BYTES_3D = """        NG: tl.constexpr = NB // 4
        q3 = tl.reshape(sbyte, (BLOCK_M, NG, 4))
        g3 = (pid_k * NG + tl.arange(0, NG))[None, :, None]
        rr = rows[:, None, None]
        o3 = ((rr // 128) * (scale_cols // 4) + g3) * 512 + (rr % 32) * 16 + ((rr % 128) // 32) * 4 \\
            + tl.arange(0, 4)[None, None, :]
        tl.store(scale_ptr + o3, q3, mask=(rr < scale_rows) & (g3 < scale_cols // 4))
"""


def ablate(rep_ms, rounds=2, configs=((4, 1024, 4), (8, 512, 4), (8, 1024, 8), (4, 1024, 4, "evict_last", 0, 1, True),
                                      (8, 512, 4, "evict_last", 0, 1, True), (8, 1024, 8, "evict_last", 0, 1, True))):
    """Where the swizzled cost is: the kernel as shipped; without its scale store; its packed
    words at row-contiguous offsets (wrong layout, same data); and two exact alternatives to
    the cross-thread packing: one byte store per scale byte at its 128x4 offset, and the same
    bytes reshaped (BM, NB/4, 4) so that 4 adjacent bytes can go out as one store. Each at the
    shipped configuration and at `configs`; the exact variants are checked byte for byte."""
    src = open(os.path.join(ROOT, "backends", "_triton_kernels.py")).read()
    offs = "w_offs = ((r2 // 128) * (scale_cols // 4) + g2) * 128 + (r % 32) * 4 + r // 32"
    if PACKED_FIRST not in src or PACKED_STORE not in src or offs not in src:
        raise SystemExit("sweep_triton --ablate: the kernel's swizzled store changed; update the patch strings")
    store = PACKED_STORE
    PACKED = src[src.index(PACKED_FIRST):src.index(PACKED_STORE) + len(PACKED_STORE)]
    folder = tempfile.mkdtemp()
    variants = {  # name: (kernel source, exact?)
        "shipped": (src, True),
        "no scale store": (src.replace(store, "        pass\n"), False),
        "row-contiguous words": (src.replace(offs, "w_offs = r2 * (scale_cols // 4) + g2"), False),
        "byte stores": (src.replace(PACKED, BYTES), True),
        "byte stores, 3-D": (src.replace(PACKED, BYTES_3D), True),
    }
    mods = {name: (_variant(str(i), text, folder), exact) for i, (name, (text, exact)) in enumerate(variants.items())}
    original = tb._kernels
    out = []
    try:
        for m, k in [(2048, 4096), (4096, 7168), (8192, 8192), (16384, 16384)]:
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            x.view(-1)[40] = float("nan")
            tb._kernels = original
            tb.clear_plans()
            want = tb.quantize(x, E4M3, "rceil", "swizzled")
            times = {}
            cfgs = [None, *[tb.Config(*c) for c in configs]]
            for name, (mod, exact) in mods.items():
                tb._kernels = lambda mod=mod: mod
                tb.clear_plans()
                for cfg in cfgs:
                    if exact and not same(tb.quantize(x, E4M3, "rceil", "swizzled", config=cfg), want):
                        raise SystemExit(f"sweep_triton --ablate: {name} {cfg} is not exact at {m}x{k}")
            for _ in range(rounds):
                tb._kernels = original
                tb.clear_plans()
                times.setdefault(("linear (shipped)", None), []).append(
                    bq.bench(lambda: tb.quantize(x, E4M3, "rceil", "linear"), rep_ms))
                for name, (mod, _) in mods.items():
                    tb._kernels = lambda mod=mod: mod
                    tb.clear_plans()
                    for cfg in cfgs:
                        times.setdefault((name, cfg), []).append(
                            bq.bench(lambda: tb.quantize(x, E4M3, "rceil", "swizzled", config=cfg), rep_ms))
            for (name, cfg), ts in times.items():
                row = {"shape": f"{m}x{k}", "variant": name, "config": list(cfg) if cfg else "shipped",
                       "us": min(ts), "rounds_us": ts}
                out.append(row)
                print(json.dumps(row), flush=True)
            del x, want
            torch.cuda.empty_cache()
    finally:
        tb._kernels = original
        tb.clear_plans()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="sweep-out")
    p.add_argument("--shapes", default=None, help="e.g. 2048x4096,8192x8192")
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--ablate", action="store_true", help="the swizzled-store ablation instead of the sweep")
    p.add_argument("--dequantize", action="store_true", help="sweep the dequantize kernel instead")
    p.add_argument("--card", default=None, help="config list: default or fast-hbm (default: this GPU's class)")
    p.add_argument("--layouts", default="linear,swizzled")
    p.add_argument("--evicts", default=",".join(EVICTS), help="eviction policies for configs that name none")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("sweep_triton: needs a CUDA GPU", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    card = a.card or tb.card(torch.device("cuda", torch.cuda.current_device()))[0]
    shapes = bq.parse_shapes(a.shapes, SHAPES)
    if a.ablate:
        rows, name = ablate(a.rep_ms), "ablation.json"
    elif a.dequantize:
        rows, name = sweep_dequantize(shapes, a.rep_ms, card), "sweep-dequantize.json"
    else:
        rows, name = sweep(shapes, a.rep_ms, card, tuple(a.evicts.split(",")), tuple(a.layouts.split(","))), "sweep.json"
    meta = {"device": torch.cuda.get_device_name(), "sms": torch.cuda.get_device_properties(0).multi_processor_count,
            "card class": card, "torch": torch.__version__}
    with open(os.path.join(a.out, name), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
