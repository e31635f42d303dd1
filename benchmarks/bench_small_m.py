"""Small-M latency (decode-sized activations) on one CUDA GPU: issue 22 part 3.

    python3 benchmarks/bench_small_m.py --out small-m-out [--m 1 8 64 256] [--k 4096 7168 16384]

bf16 input (M x K), e4m3 elements, rceil, linear scales. For each shape, contenders:
  public          mxquant.mxfp8_quantize(x)            (registry, checks, backend, launch)
  raw launch      the Triton backend's cached plan launched into preallocated outputs
  cast            x.to(torch.float8_e4m3fn): a bare cast kernel of the same size
  torchao         torch.compile(torchao to_mx) (fullgraph), where torchao imports
Two times per contender:
  graph_us  device time per call inside a CUDA graph: `calls` calls captured back to back in
            one graph, replayed; CUDA events around each replay, divided by `calls`; median
            over replays (what a vLLM-style engine pays once its step is captured)
  eager_us  wall time per call of `calls` eager calls (device synchronised around the loop;
            the median of `repeats` loops): at these sizes the host's time per call, since
            the device work hides behind it
Targets (issue 22): graph_us(public) <= 1.5x graph_us(cast) at M <= 64, and
eager_us(public) <= 1.5x eager_us(cast). Writes bench_small_m.json (card, rows) and prints a
table with both ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys

import torch

from bench_quantize import card_meta, torchao_quantizer  # noqa: E402  (benchmarks/ on sys.path)
from timing import per_call_us  # noqa: E402

E4M3 = torch.float8_e4m3fn


def graph_us(fn, calls=100, replays=30):
    """Device µs per call of fn() replayed inside one CUDA graph of `calls` captured calls."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs recommends
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    del graph
    return statistics.median(times)


def raw_launch(x):
    """The Triton backend's cached launch plan for x's shape, into preallocated outputs."""
    from mxquant.backends import _triton_launch
    from mxquant.backends import triton as tb

    data, scale = tb.quantize(x, E4M3, "rceil", "linear")  # builds and caches the plan
    m, k = x.shape
    plan = next(p for key, p in _triton_launch._PLANS.items()
                if key[:2] == (m, k) and key[5] == "rceil" and not key[6])
    return lambda: plan.launch(x.device, x, data, scale)


def contenders(x):
    import mxquant

    out = {"public": lambda: mxquant.mxfp8_quantize(x), "raw launch": raw_launch(x), "cast": lambda: x.to(E4M3)}
    tao, why = torchao_quantizer("rceil")
    if tao is not None:
        out["torchao"] = lambda: tao(x)
    return out, why


def exact(x):
    """The public call's bytes against the CPU reference (the oracle) at this shape."""
    import mxquant
    from mxquant import reference

    q = mxquant.mxfp8_quantize(x)
    want = reference.quantize(x.cpu(), E4M3, "rceil", "linear")
    return bool(torch.equal(q.data.cpu().view(torch.uint8), want[0].view(torch.uint8))
                and torch.equal(q.scale.cpu().view(torch.uint8), want[1].view(torch.uint8)))


def run(ms, ks, calls, repeats):
    rows, why = [], None
    for k in ks:
        for m in ms:
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            fns, why = contenders(x)
            ok = exact(x)
            for name, fn in fns.items():
                rows.append({"M": m, "K": k, "contender": name, "exact": ok if name == "public" else None,
                             "graph_us": graph_us(fn, calls), "eager_us": per_call_us(fn, calls, repeats)})
    for r in rows:
        cast = next(q for q in rows if (q["M"], q["K"], q["contender"]) == (r["M"], r["K"], "cast"))
        r["graph x cast"] = r["graph_us"] / cast["graph_us"]
        r["eager x cast"] = r["eager_us"] / cast["eager_us"]
    return rows, why


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="small-m-out")
    p.add_argument("--m", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--k", type=int, nargs="+", default=[4096, 7168, 16384])
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--repeats", type=int, default=9)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_small_m: needs a CUDA GPU", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    rows, why = run(a.m, a.k, a.calls, a.repeats)
    meta = {**card_meta(), "torch": torch.__version__, "date": datetime.date.today().isoformat(),
            "command": " ".join(sys.argv), "torchao": why or "ok"}
    with open(os.path.join(a.out, "bench_small_m.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(json.dumps(meta))
    print(f"{'M':>4} {'K':>6} {'contender':12} {'graph us':>9} {'x cast':>7} {'eager us':>9} {'x cast':>7} exact")
    for r in rows:
        print(f"{r['M']:>4} {r['K']:>6} {r['contender']:12} {r['graph_us']:9.2f} {r['graph x cast']:7.2f} "
              f"{r['eager_us']:9.2f} {r['eager x cast']:7.2f} {'' if r['exact'] is None else r['exact']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
