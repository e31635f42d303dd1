"""Side-by-side MXFP8 quantize benchmark on one CUDA GPU, all contenders in one process and run.

    python3 benchmarks/bench_quantize.py --out bench-out        # or: mxquant bench --out bench-out

Contenders (bf16 input, e4m3 elements, rceil, floor and compressed-tensors): our Triton
backend called directly (linear and swizzled scales), the public `mxquant.mxfp8_quantize`
(dispatch included), `torch.compile` of our reference (rceil), `torch.compile(torchao ...
to_mx)` with linear and swizzled scales when torchao imports (rceil and floor; it has no
compressed-tensors mode), and two ceilings: a plain `x.to(torch.float8_e4m3fn)` cast and a
device-to-device copy. Dequantize rows (mode "dequantize", e4m3 -> bf16): ours linear,
swizzled and public, `torch.compile` of mxquant.reference.dequantize and of torchao's
`to_dtype`, against a copy; bytes 1 + 1/32 read and 2 written per element.
Times are medians over CUDA events around each call, L2 flushed (1 GiB written) before each
call, as triton.testing.do_bench does with a larger flush (see bench()).
Bytes moved: 2 read + 1 write + 1/32 scale per element for the quantizers, 2 + 1 for the
cast, 2 + 2 for the copy; GB/s = bytes / time. Each contender's output is also compared
with the reference on the same input (plus one zero block and one NaN block): `exact`.
Writes bench.json (with the card: name, SM count, nominal memory bandwidth, the backend's card
class) and bench.png (bandwidth vs size) to --out, and prints a table. The Triton
block-shape and eviction-policy sweeps are benchmarks/sweep_triton.py.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # no compile workers competing for the CPU

import torch  # noqa: E402

from timing import per_call_us  # noqa: E402  (benchmarks/ is on sys.path when a script here runs)

SHAPES = [(1, 4096), (16, 4096), (128, 7168), (2048, 4096), (4096, 7168), (8192, 8192), (16384, 16384)]
E4M3 = torch.float8_e4m3fn


_FLUSH = []


def bench(fn, rep_ms=100):
    """Median device time of fn() in µs, L2 flushed before each call (CUDA events).

    As triton.testing.do_bench, but the flush writes 1 GiB rather than 256 MB: its ~0.35 ms on
    the GPU keeps the host ahead, so a call's launch latency (host time) is not counted when
    the host is slower than the flush: what is timed is the device's work."""
    if not _FLUSH:
        _FLUSH.append(torch.empty(1 << 30, dtype=torch.uint8, device="cuda"))
    flush = _FLUSH[0]
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        flush.zero_()
        fn()
    torch.cuda.synchronize()
    per_iter_ms = (time.perf_counter() - t0) / 5 * 1e3
    n = int(max(20, min(1000, rep_ms / per_iter_ms)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        flush.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3


def torchao_quantizer(mode, swizzled=False):
    """torch.compile(torchao to_mx) for `mode` (rceil or floor; torchao has no
    compressed-tensors mode), or None with the reason if torchao is missing."""
    try:
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
        from torchao.prototype.mx_formats.mx_tensor import to_mx
    except Exception as exc:  # pragma: no cover - depends on the machine
        return None, f"torchao not importable: {type(exc).__name__}: {exc}"
    scaling = {"rceil": ScaleCalculationMode.RCEIL, "floor": ScaleCalculationMode.FLOOR}.get(mode)
    if scaling is None:
        return None, None

    def run(x):
        scale, data = to_mx(x, E4M3, 32, scaling, swizzled)
        return data, scale

    return torch.compile(run, fullgraph=True), None


def contenders(mode):
    import mxquant
    from mxquant import reference
    from mxquant.backends import triton as tb

    out = {
        "triton": lambda x: tb.quantize(x, E4M3, mode, "linear"),
        "triton swizzled": lambda x: tb.quantize(x, E4M3, mode, "swizzled"),
        "mxquant api": lambda x: mxquant.mxfp8_quantize(x, scale_mode=mode),
    }
    if mode == "rceil":  # one mode is enough to place the compiled reference
        out["compile(reference)"] = torch.compile(lambda x: reference.quantize(x, E4M3, mode, "linear"),
                                                  fullgraph=True)
    why = None
    for swz, name in ((False, "compile(torchao to_mx)"), (True, "compile(torchao to_mx) swizzled")):
        tao, why = torchao_quantizer(mode, swz)
        if tao is not None:
            out[name] = tao
    return out, why


def dequant_contenders():
    """bf16 out from e4m3 data: ours (linear, swizzled, public), torch.compile of the
    reference, torch.compile of torchao's to_dtype (linear scales; what MXTensor.dequantize
    runs after unswizzling)."""
    import mxquant
    from mxquant import reference
    from mxquant.backends import triton as tb

    bf16 = torch.bfloat16
    out = {
        "dq triton": lambda d, s, ds, ss: tb.dequantize(d, s, "linear", bf16),
        "dq triton swizzled": lambda d, s, ds, ss: tb.dequantize(ds, ss, "swizzled", bf16),
        "dq mxquant api": lambda d, s, ds, ss: mxquant.mxfp8_dequantize(d, s, out_dtype=bf16),
        "dq compile(reference)": (lambda f: lambda d, s, ds, ss: f(d, s))(
            torch.compile(lambda d, s: reference.dequantize(d, s, "linear", bf16), fullgraph=True)),
    }
    try:
        from torchao.prototype.mx_formats.mx_tensor import to_dtype
    except Exception:  # pragma: no cover - depends on the machine
        return out
    f = torch.compile(lambda d, s: to_dtype(d, s, E4M3, 32, bf16), fullgraph=True)
    out["dq compile(torchao to_dtype)"] = lambda d, s, ds, ss: f(d, s)
    return out


def probe_input(x):
    """x with its first block zeroed and its second holding a NaN (the exactness probe)."""
    x = x.clone()
    x.view(-1)[:32] = 0
    if x.numel() >= 64:
        x.view(-1)[40] = float("nan")
    return x


def exactness(fn, x, mode, layout, refs):
    """Does fn give the reference's bytes on probe_input(x)? refs caches the reference per
    (mode, layout) (the CPU reference is slow on the largest shapes)."""
    from mxquant import reference

    x = probe_input(x)
    try:
        data, scale = fn(x)
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    if (mode, layout) not in refs:
        refs[(mode, layout)] = reference.quantize(x.cpu(), E4M3, mode, layout)
    rd, rs = refs[(mode, layout)]
    same_d = torch.equal(data.reshape(rd.shape).cpu().view(torch.uint8), rd.view(torch.uint8))
    same_s = torch.equal(scale.reshape(rs.shape).cpu().view(torch.uint8), rs.view(torch.uint8))
    if same_d and same_s:
        return "yes"
    bad_s = (scale.reshape(rs.shape).cpu().view(torch.uint8) != rs.view(torch.uint8)).sum().item()
    bad_d = (data.reshape(rd.shape).cpu().view(torch.uint8) != rd.view(torch.uint8)).sum().item()
    return f"no ({bad_s} scale, {bad_d} element bytes differ)"


def run(shapes, modes, rep_ms, rounds=2):
    rows = []
    for mode in modes:
        for m, k in shapes:
            torch._dynamo.reset()  # fresh static compiles for this shape (no recompile-limit fallbacks)
            fns, tao_missing = contenders(mode)
            if tao_missing:
                print(f"note: {tao_missing}", file=sys.stderr)
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            n = m * k
            refs = {}
            copy_dst = torch.empty_like(x)
            base = {"mode": mode, "shape": f"{m}x{k}", "elements": n}
            timed = {
                "copy (ceiling)": (lambda: copy_dst.copy_(x), 4 * n, "-"),
                "cast .to(e4m3)": (lambda: x.to(E4M3), 3 * n, "-"),
            }
            for name, fn in fns.items():  # compiles (and checks) every contender before timing any
                layout = "swizzled" if "swizzled" in name else "linear"
                timed[name] = (functools.partial(fn, x), n * (3 + 1 / 32), exactness(fn, x, mode, layout, refs))
            times = interleaved({name: call for name, (call, _, _) in timed.items()}, rep_ms, rounds)
            for name, (_, nbytes, exact) in timed.items():
                rows.append({**base, "contender": name, "us": min(times[name]), "rounds_us": times[name],
                             "bytes": nbytes, "exact": exact})
            del x, copy_dst, timed, refs
            torch.cuda.empty_cache()
    return rows


def run_dequantize(shapes, rep_ms, rounds=2):
    """Dequantize to bf16, rows under mode "dequantize" (bytes: 1 + 1/32 read, 2 written)."""
    from mxquant import reference
    from mxquant.backends import triton as tb

    rows = []
    for m, k in shapes:
        torch._dynamo.reset()
        fns = dequant_contenders()
        x = probe_input(torch.randn(m, k, dtype=torch.bfloat16, device="cuda"))
        d, s = tb.quantize(x, E4M3, "rceil", "linear")
        ds, ss = tb.quantize(x, E4M3, "rceil", "swizzled")
        want = reference.dequantize(d.cpu(), s.cpu(), "linear", torch.bfloat16).view(torch.int16)
        n = m * k
        copy_src, copy_dst = torch.empty_like(x), torch.empty_like(x)
        timed = {"copy (ceiling)": (lambda: copy_dst.copy_(copy_src), 4 * n, "-")}
        for name, fn in fns.items():
            try:
                got = fn(d, s, ds, ss).cpu()
                same = (got.view(torch.int16) == want) | (got.isnan() & want.view(torch.bfloat16).isnan())
                exact = "yes" if bool(same.all()) else f"no ({int((~same).sum())} values differ)"
            except Exception as exc:
                exact = f"error: {type(exc).__name__}"
            timed[name] = (functools.partial(fn, d, s, ds, ss), n * (3 + 1 / 32), exact)
        times = interleaved({name: call for name, (call, _, _) in timed.items()}, rep_ms, rounds)
        for name, (_, nbytes, exact) in timed.items():
            rows.append({"mode": "dequantize", "shape": f"{m}x{k}", "elements": n, "contender": name,
                         "us": min(times[name]), "rounds_us": times[name], "bytes": nbytes, "exact": exact})
        del x, d, s, ds, ss, copy_src, copy_dst, timed, want
        torch.cuda.empty_cache()
    return rows


def interleaved(calls: dict, rep_ms, rounds) -> dict:
    """{name: [µs per round]}: each callable timed `rounds` times with `bench`, interleaved
    round by round (drift hits all alike); callers keep the lowest median."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(bench(call, rep_ms))
    return times


def ratios(rows):
    """GB/s; % of the copy's bandwidth at the same shape (same mode group); time over torchao's
    (same mode and shape, the swizzled torchao for swizzled contenders)."""
    for r in rows:
        r["GB/s"] = r["bytes"] / (r["us"] * 1e-6) / 1e9
    for r in rows:
        same = [q for q in rows if q["mode"] == r["mode"] and q["shape"] == r["shape"]]
        copy = next(q for q in same if q["contender"] == "copy (ceiling)")
        peer = "compile(torchao to_mx)" + (" swizzled" if "swizzled" in r["contender"] else "")
        if r["mode"] == "dequantize":
            peer = "dq compile(torchao to_dtype)"
        tao = next((q for q in same if q["contender"] == peer), None)
        r["% copy BW"] = 100 * r["GB/s"] / copy["GB/s"]
        r["x torchao"] = r["us"] / tao["us"] if tao else None
    return rows


def card_meta():
    """The card the run is on: name, SMs, memory bandwidth from the clock and bus width, class."""
    from mxquant.backends import triton as tb

    props = torch.cuda.get_device_properties(0)
    clock, bus = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    return {"device": props.name, "sms": props.multi_processor_count, "l2_mb": props.L2_cache_size / 2**20,
            "memory_gb_s_nominal": round(2 * clock * 1e3 * bus / 8 / 1e9) if clock and bus else None,
            "card class": tb.card(torch.device("cuda", 0))[0]}


def host_overhead(shape=(16, 4096), calls=2000, repeats=15):
    """Host time per call (µs, median of `repeats` loops of `calls`): public API vs the backend."""
    import mxquant
    from mxquant.backends import triton as tb

    x = torch.randn(*shape, dtype=torch.bfloat16, device="cuda")
    out = {}
    fns = {"triton backend direct": lambda: tb.quantize(x, E4M3, "rceil", "linear"),
           "mxquant.mxfp8_quantize": lambda: mxquant.mxfp8_quantize(x),
           "cast .to(e4m3)": lambda: x.to(E4M3)}
    tao, _ = torchao_quantizer("rceil")
    if tao is not None:
        fns["compile(torchao to_mx)"] = functools.partial(tao, x)
    for name, fn in fns.items():
        out[name] = per_call_us(fn, calls, repeats)
    return out


def print_table(rows):
    head = ["mode", "shape", "contender", "us", "GB/s", "% copy BW", "x torchao", "exact"]
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    table = [[fmt(r[h]) for h in head] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-|-".join("-" * w for w in widths))
    for t in table:
        print(" | ".join(v.ljust(w) for v, w in zip(t, widths)))


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # pragma: no cover
        print(f"note: no plot ({exc})", file=sys.stderr)
        return
    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(7 * len(modes), 5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        names = list(dict.fromkeys(r["contender"] for r in rows))
        for name in names:
            pts = sorted((r["elements"], r["GB/s"]) for r in rows if r["mode"] == mode and r["contender"] == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("elements (bf16 input)")
        ax.set_ylabel("GB/s")
        ax.set_title(f"MXFP8 quantize, e4m3, {mode}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def save(path, meta, rows, overhead=None):
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows, "host_us_per_call_16x4096": overhead}, f, indent=1)


def parse_shapes(text, default):
    """"16x4096,8192x8192" -> [(16, 4096), (8192, 8192)]; `default` when text is empty."""
    return default if not text else [tuple(int(v) for v in s.split("x")) for s in text.split(",")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench-out", help="folder for bench.json and bench.png")
    p.add_argument("--modes", default="rceil,floor,compressed-tensors")
    p.add_argument("--no-dequantize", action="store_true", help="skip the dequantize rows")
    p.add_argument("--shapes", default=None, help="e.g. 16x4096,8192x8192 (default: the standard set)")
    p.add_argument("--rep-ms", type=int, default=100, help="measuring time per contender (ms)")
    p.add_argument("--profile-host", action="store_true", help="write host_profile.txt (cProfile at 16x4096)")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_quantize: needs a CUDA GPU", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    shapes = parse_shapes(a.shapes, SHAPES)
    meta = {
        "date": datetime.date.today().isoformat(),
        **card_meta(),
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }
    try:
        import triton

        meta["triton"] = triton.__version__
        import torchao

        meta["torchao"] = torchao.__version__
    except Exception:
        pass
    path = os.path.join(a.out, "bench.json")
    rows = ratios(run(shapes, a.modes.split(","), a.rep_ms))
    save(path, meta, rows)  # the quantize rows survive a run cut short
    if not a.no_dequantize:
        rows = ratios(rows + run_dequantize(shapes, a.rep_ms))
        save(path, meta, rows)
    overhead = host_overhead()
    if a.profile_host:  # benchmarks/host_split.py owns the host-time profile
        import host_split

        host_split.write_profile(os.path.join(a.out, "host_profile.txt"))
    save(path, meta, rows, overhead)
    plot(rows, os.path.join(a.out, "bench.png"))
    print(json.dumps(meta))
    print_table(rows)
    print("host time per call at 16x4096 (µs):", json.dumps({k: round(v, 2) for k, v in overhead.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
