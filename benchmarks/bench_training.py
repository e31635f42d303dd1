"""The training and MoE calls on one CUDA GPU, side by side with the peers, in one process and run
(issue 21's speed targets; docs/performance.md says what has been run).

    python3 benchmarks/bench_training.py --out bench-out [--shapes 8192x8192 16384x8192] [--rounds 2]

bf16 input, e4m3 elements, rceil. Times: medians over CUDA events, L2 flushed before each call
(bench_quantize.bench), contenders interleaved round by round, the lowest round kept.
Contenders per shape (M x K):
- ceilings: a device-to-device copy (2 + 2 bytes per element), the row-wise triton call;
- column-wise (`triton colwise`, linear and swizzled), row+column in one pass (`triton rowcol`,
  linear and swizzled), 32x32 tiles (`triton 2d`): our backend called directly;
- peers where torchao imports: `triton_to_mxfp8_dim0` / `triton_to_mxfp8_dim1` (torchao's Triton
  kernels; skipped with the reason where they do not run on this card: below SM100, where
  bench_torchao_hopper.py runs them past torchao's gate), and torch.compile of
  torchao's `to_mx` on the transpose (x.t().contiguous() inside the compiled function);
- grouped: token groups (G groups of random sizes over the M rows) against the same-size
  ungrouped swizzled call and against torchao's dim0 kernel + `triton_mx_block_rearrange_2d_M_groups`;
  K-groups (the same ends rounded down to multiples of 32) against the column-wise call and
  torchao's dim1 kernel + `triton_mx_block_rearrange_2d_K_groups`;
  3-D experts (M/8 rows each) against the ungrouped swizzled call and torchao's per-expert
  rearrange (`triton_mx_block_rearrange_per_group_3d`).
Bytes moved per element: 2 read + 1 written + 1/32 scale (one output), 2 + 2 + 2/32 (row+column),
2 + 1 + 1/1024 (tiles). `exact`: the output against mxquant.reference_training on the CPU, at the
first shape only (the CPU reference is slow), with one zero and one NaN block in the input.
Writes bench_training.json (card, rows) to --out and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

from bench_quantize import card_meta, interleaved, probe_input  # noqa: E402  (benchmarks/ on sys.path)

E4M3 = torch.float8_e4m3fn
SHAPES = [(4096, 4096), (8192, 8192), (16384, 8192)]
GROUPS = 32


def _torchao():
    """torchao's Triton kernels and to_mx, or the reason they are missing."""
    try:
        from torchao.prototype.moe_training.kernels.mxfp8 import quant as ao_quant
        from torchao.prototype.mx_formats import kernels as ao_kernels
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
        from torchao.prototype.mx_formats.mx_tensor import to_mx
    except Exception as exc:  # pragma: no cover - depends on the machine
        return None, f"torchao not importable: {type(exc).__name__}: {exc}"
    return (ao_quant, ao_kernels, ScaleCalculationMode, to_mx), None


def _ends(m, groups, device):
    g = torch.Generator().manual_seed(0)
    cuts = torch.sort(torch.randint(0, m + 1, (groups - 1,), generator=g)).values
    return torch.cat([cuts, torch.tensor([m])]).to(torch.int32).to(device)


def groups_of(x):
    """The grouped calls' inputs for x (M, K): token group ends (GROUPS random sizes), K-group ends
    (the same rounded down to multiples of 32), and x as 8 experts (8, M/8, K)."""
    m, k = x.shape
    ends = _ends(m, GROUPS, x.device)
    return ends, torch.cat([(ends[:-1] // 32) * 32, ends[-1:]]), x.view(8, m // 8, k)


def contenders(x, notes):
    """{name: (callable, bytes, reference callable on the CPU or None)}."""
    from mxquant import reference, reference_training as rt
    from mxquant.backends import _triton_training_ops as ops
    from mxquant.backends import triton as tb

    n = x.numel()
    one, two = n * (3 + 1 / 32), n * (2 + 2 + 2 / 32)
    m, k = x.shape
    ends, kends, experts = groups_of(x)
    copy_dst = torch.empty_like(x)
    out = {
        "copy (ceiling)": (lambda: copy_dst.copy_(x), 4 * n, None),
        "triton rowwise": (lambda: tb.quantize(x, E4M3, "rceil", "linear"), one,
                           lambda c: reference.quantize(c, E4M3, "rceil", "linear")),
        "triton rowwise swizzled": (lambda: tb.quantize(x, E4M3, "rceil", "swizzled"), one, None),
        "triton 2d": (lambda: ops.quantize_2d(x, E4M3, "rceil"), n * (3 + 1 / 1024),
                      lambda c: rt.quantize_2d(c, E4M3, "rceil")),
        "triton grouped tokens": (lambda: ops.quantize_grouped(x, ends, E4M3, "rceil"), one,
                                  lambda c: rt.quantize_grouped(c, ends.cpu(), E4M3, "rceil")),
        "triton grouped experts": (lambda: ops.quantize_grouped(experts, None, E4M3, "rceil"), one,
                                   lambda c: rt.quantize_grouped(c.view(8, m // 8, k), None, E4M3, "rceil")),
        "triton grouped colwise (K-groups)": (lambda: ops.quantize_grouped_colwise(x, kends, E4M3, "rceil"), one,
                                              lambda c: rt.quantize_grouped_colwise(c, kends.cpu(), E4M3, "rceil")),
    }
    for layout in ("linear", "swizzled"):
        sfx = "" if layout == "linear" else " swizzled"
        out["triton colwise" + sfx] = (lambda lay=layout: ops.quantize_colwise(x, E4M3, "rceil", lay), one,
                                       lambda c, lay=layout: rt.quantize_colwise(c, E4M3, "rceil", lay))
        out["triton rowcol" + sfx] = (lambda lay=layout: ops.quantize_rowcol(x, E4M3, "rceil", lay), two,
                                      lambda c, lay=layout: rt.quantize_rowcol(c, E4M3, "rceil", lay))
    ao, why = _torchao()
    if ao is None:
        notes.append(why)
        return out
    ao_quant, ao_kernels, mode, to_mx = ao
    compiled = torch.compile(lambda t: to_mx(t.t().contiguous(), E4M3, 32, mode.RCEIL, False), fullgraph=True)
    peers = {
        "torchao triton_to_mxfp8_dim0": (lambda: ao_kernels.triton_to_mxfp8_dim0(x, 32, "rceil"), one),
        "torchao triton_to_mxfp8_dim1": (lambda: ao_kernels.triton_to_mxfp8_dim1(x, 32, "rceil"), one),
        "compile(torchao to_mx) on x.t()": (lambda: compiled(x), one),
        "torchao dim0 + rearrange_2d_M_groups": (
            lambda: ao_quant.triton_mx_block_rearrange_2d_M_groups(
                ao_kernels.triton_to_mxfp8_dim0(x, 32, "rceil")[1].view(torch.uint8), ends), one),
        "torchao dim1 + rearrange_2d_K_groups": (
            lambda: ao_quant.triton_mx_block_rearrange_2d_K_groups(
                ao_kernels.triton_to_mxfp8_dim1(x, 32, "rceil")[1].view(torch.uint8), kends // 32), one),
        "torchao dim0 + rearrange_per_group_3d": (
            lambda: ao_quant.triton_mx_block_rearrange_per_group_3d(
                ao_kernels.triton_to_mxfp8_dim0(x, 32, "rceil")[1].view(torch.uint8).view(8, m // 8, k // 32)), one),
    }
    out.update(runnable(peers, notes))
    return out


def runnable(peers: dict, notes: list) -> dict:
    """{name: (callable, bytes, None)} of the peers ({name: (callable, bytes)}) that run once on this
    card; each that raises (e.g. a kernel built for SM100 only) becomes a note instead."""
    out = {}
    for name, (fn, nbytes) in peers.items():
        try:
            fn()
            torch.cuda.synchronize()
        except Exception as exc:
            notes.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            continue
        out[name] = (fn, nbytes, None)
    return out


def exact(fn, ref, x) -> str:
    """Our outputs on probe_input(x) against the CPU reference's bytes."""
    px = probe_input(x)
    x.copy_(px)
    got = fn()
    want = ref(px.cpu())
    for g, w in zip(got, want):
        if not torch.equal(g.cpu().view(torch.uint8).reshape(-1), w.view(torch.uint8).reshape(-1)):
            return "no"
    return "yes"


def run(shapes, rounds, rep_ms, make=None, dtype=torch.bfloat16):
    """Rows for each shape: every contender of make(x, notes) ({name: (callable, bytes, CPU
    reference or None)}, one named "copy (ceiling)"; default: this file's contenders) timed
    interleaved, with GB/s, % of the copy's bandwidth and, at the first shape, exactness."""
    make = make or contenders
    rows, notes = [], []
    for i, (m, k) in enumerate(shapes):
        torch._dynamo.reset()
        x = torch.randn(m, k, dtype=dtype, device="cuda")
        fns = make(x, notes)
        checks = {name: exact(fn, ref, x) if ref is not None and i == 0 else "-" for name, (fn, _, ref) in fns.items()}
        times = interleaved({name: fn for name, (fn, _, _) in fns.items()}, rep_ms, rounds)
        copy_us = min(times["copy (ceiling)"])
        for name, (_, nbytes, _) in fns.items():
            us = min(times[name])
            rows.append({"shape": f"{m}x{k}", "elements": m * k, "contender": name, "us": us,
                         "rounds_us": times[name], "bytes": nbytes, "GB/s": nbytes / (us * 1e-6) / 1e9,
                         "% copy BW": 100 * (nbytes / us) / (4 * m * k / copy_us), "exact": checks[name]})
        del x, fns
        torch.cuda.empty_cache()
    return rows, sorted(set(notes))


def main(argv=None, name="bench_training", make=None, shapes=SHAPES, doc=__doc__, meta_extra=None):
    """The command line of this benchmark, and of bench_fp4.py (its own name, contenders, shapes)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--shapes", nargs="*", default=[f"{m}x{k}" for m, k in shapes])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rep-ms", type=float, default=100)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"], help="x's dtype (randn)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"{name}: needs a CUDA GPU", file=sys.stderr)
        return 2
    rows, notes = run([tuple(int(v) for v in s.split("x")) for s in args.shapes], args.rounds, args.rep_ms, make,
                      getattr(torch, args.dtype))
    os.makedirs(args.out, exist_ok=True)
    meta = {**card_meta(), "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "command": " ".join(sys.argv), "dtype": args.dtype, **(meta_extra or {}), "notes": notes}
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    for r in rows:
        print(f"{r['shape']:>11} {r['contender']:<40} {r['us']:9.1f} us {r['GB/s']:7.0f} GB/s "
              f"{r['% copy BW']:5.1f}% copy  exact {r['exact']}")
    for note in notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main(meta_extra={"groups": GROUPS}))
