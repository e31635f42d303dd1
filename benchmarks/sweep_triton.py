"""Tuning sweeps of the `triton` backend on one CUDA GPU (the figures behind quantize_config).

    python3 benchmarks/sweep_triton.py --out sweep-out            # configs x eviction policies
    python3 benchmarks/sweep_triton.py --ablate --out sweep-out   # where the swizzled cost is

Sweep: for each shape, layout and block configuration (BLOCK_M, BLOCK_K, warps), the three
load eviction policies ("" = default, evict_last, evict_first), rceil, bf16 -> e4m3, timed
as bench_quantize.bench does (median of CUDA events, L2 flushed), 2 interleaved rounds, the
lower median kept. Every configuration's output is checked against the shipped config's
bytes first (and the shipped config against the reference).

Ablation (--ablate, 8192x8192 and 16384x16384): the swizzled kernel as shipped, the same
kernel with its scale store removed, and with the same packed 32-bit words stored at
row-contiguous offsets (wrong layout, same amount of data), to separate the cost of the
128x4 scatter from the rest. Variants are built by patching the kernel's source text into a
temporary module; their outputs are not checked (two of them are wrong on purpose).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]

import bench_quantize as bq  # noqa: E402
from mxquant import reference  # noqa: E402
from mxquant.backends import triton as tb  # noqa: E402

E4M3 = torch.float8_e4m3fn
CONFIGS = {
    "linear": [(1, 2048, 4), (2, 1024, 4), (4, 512, 4), (1, 4096, 8), (1, 1024, 4)],
    "swizzled": [(4, 512, 4), (1, 2048, 4), (2, 1024, 4), (8, 256, 4), (8, 512, 4), (4, 1024, 8)],
}
SHAPES = [(16, 4096), (2048, 4096), (4096, 7168), (8192, 8192), (16384, 16384)]


def same(a, b):
    return all(torch.equal(p.view(torch.uint8), q.view(torch.uint8)) for p, q in zip(a, b))


def sweep(shapes, rep_ms, rounds=2):
    out = []
    for m, k in shapes:
        x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
        x.view(-1)[:32] = 0
        x.view(-1)[40] = float("nan")
        for layout in ("linear", "swizzled"):
            shipped = tb.quantize(x, E4M3, "rceil", layout)
            ref = reference.quantize(x.cpu(), E4M3, "rceil", layout)
            assert same([t.cpu() for t in shipped], ref), f"shipped config differs from the reference at {m}x{k} {layout}"
            cands = [c + (ev,) for c in CONFIGS[layout] if c[1] <= max(128, tb.next_pow2(k))
                     for ev in ("", "evict_last", "evict_first")]
            for cfg in cands:
                assert same(tb.quantize(x, E4M3, "rceil", layout, config=cfg), shipped), (m, k, layout, cfg)
            times = {cfg: [] for cfg in cands}
            for _ in range(rounds):
                for cfg in cands:
                    times[cfg].append(bq.bench(lambda: tb.quantize(x, E4M3, "rceil", layout, config=cfg), rep_ms))
            default = tb.quantize_config(m, k, layout == "swizzled")
            for cfg in cands:
                row = {"shape": f"{m}x{k}", "layout": layout, "config": list(cfg), "us": min(times[cfg]),
                       "rounds_us": times[cfg], "shipped": cfg == default}
                out.append(row)
                print(json.dumps(row), flush=True)
        del x
        torch.cuda.empty_cache()
    return out


def _variant(name, text, folder):
    path = os.path.join(folder, f"mxq_kernels_{name}.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location(f"mxq_kernels_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ablate(rep_ms, rounds=2):
    src = open(os.path.join(ROOT, "backends", "_triton_kernels.py")).read()
    store = "        tl.store(w_ptr + w_offs, word, mask=(r2 < scale_rows) & (g2 < scale_cols // 4))\n"
    offs = "w_offs = ((r2 // 128) * (scale_cols // 4) + g2) * 128 + (r % 32) * 4 + r // 32"
    if store not in src or offs not in src:
        raise SystemExit("sweep_triton --ablate: the kernel's swizzled store changed; update the patch strings")
    folder = tempfile.mkdtemp()
    variants = {
        "shipped": src,
        "no scale store": src.replace(store, "        pass\n"),
        "row-contiguous words": src.replace(offs, "w_offs = r2 * (scale_cols // 4) + g2"),
    }
    mods = {name: _variant(str(i), text, folder) for i, (name, text) in enumerate(variants.items())}
    original = tb._kernels
    out = []
    try:
        for m, k in [(8192, 8192), (16384, 16384)]:
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            times = {}
            for _ in range(rounds):
                tb._kernels = original
                tb._PLANS.clear()
                times.setdefault("linear (shipped)", []).append(
                    bq.bench(lambda: tb.quantize(x, E4M3, "rceil", "linear"), rep_ms))
                for name, mod in mods.items():
                    tb._kernels = lambda mod=mod: mod
                    tb._PLANS.clear()
                    times.setdefault(f"swizzled, {name}", []).append(
                        bq.bench(lambda: tb.quantize(x, E4M3, "rceil", "swizzled"), rep_ms))
            for name, ts in times.items():
                row = {"shape": f"{m}x{k}", "variant": name, "us": min(ts), "rounds_us": ts}
                out.append(row)
                print(json.dumps(row), flush=True)
            del x
            torch.cuda.empty_cache()
    finally:
        tb._kernels = original
        tb._PLANS.clear()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="sweep-out")
    p.add_argument("--shapes", default=None, help="e.g. 2048x4096,8192x8192")
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--ablate", action="store_true", help="the swizzled-store ablation instead of the sweep")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("sweep_triton: needs a CUDA GPU", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    rows = ablate(a.rep_ms) if a.ablate else sweep(bq.parse_shapes(a.shapes, SHAPES), a.rep_ms)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with open(os.path.join(a.out, "ablation.json" if a.ablate else "sweep.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
