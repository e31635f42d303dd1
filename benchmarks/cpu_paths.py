"""The CPU paths side by side: cpu-native, cpu-eager, the reference (`cpu`) and torch's own cast.

Used by bench_cpu.py (its "paths" and "peak_memory" sections). Timings interleave the
candidates round by round, so drift and other load on the machine hit all of them alike, and
each call starts after a 20 ms busy wait (`settle`: no candidate runs beside its
predecessor's spinning OpenMP threads);
each reports the median and the fastest round of wall time, and the median CPU time of the
process (all its threads: the work a call costs, which waiting for a busy machine's cores does
not inflate). GB/s counts bytes read plus bytes written
(input, fp8 data, scales). "fresh" allocates the outputs in every call, as the public API does;
"into" writes into buffers allocated once (quantize_into / dequantize_into; torch: copy_ into
a preallocated fp8 tensor), which is what an out= argument would buy.

Peak memory runs each call in a fresh subprocess: it resets the peak RSS (/proc/self/clear_refs),
calls once, and reports VmHWM minus the RSS before the call, next to the size of the outputs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

import torch

from mxquant import reference
from mxquant.backends import _native_lib, cpu_eager

E4M3 = torch.float8_e4m3fn
SHAPES = [(2048, 4096, torch.bfloat16), (4096, 8192, torch.bfloat16), (2048, 4096, torch.float32)]


def _native():
    from mxquant.backends import cpu_native

    return cpu_native if _native_lib.load()[0] is not None else None


def native_isa() -> str:
    """The instruction-set variant cpu-native runs now (or why it cannot run)."""
    lib, reason = _native_lib.load()
    return lib.mxq_isa().decode() if lib is not None else reason


def select_isa(name) -> None:
    """Run cpu-native's `name` variant (None: the automatic choice); --isa of the scripts."""
    if name is not None:
        _native_lib.select_isa(_native_lib.load()[0], name)


SETTLE_S = 0.02


def settle(seconds: float = SETTLE_S) -> None:
    """Busy-wait in Python, touching no torch op. After a torch op, GNU OpenMP's worker threads
    keep spinning for a few ms, taking a core from whatever runs next and starts threads of
    its own: cpu-native timed right after torch's cast took 9.8 ms instead of 5.2 on the
    2-core machine (with OMP_WAIT_POLICY=passive: 5.2 in both orders). Waiting first times each
    candidate alone. A busy wait, not sleep: with both vCPUs idle the next call's threads
    started slower still."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pass


def timed_rounds(fns: dict, rounds: int, slow: dict | None = None) -> dict:
    """Median and min seconds of each callable, interleaved; `slow` ones run every
    `slow[name]`-th round only (the reference: seconds per call). Each call runs after
    settle(), so none pays for its predecessor's spinning threads."""
    slow = slow or {}
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up: library load, allocator, page cache
    for i in range(rounds):
        for name, f in fns.items():
            if i % slow.get(name, 1):
                continue
            settle()
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "n": len(v),
                "cpu_median_s": statistics.median(cpu[k])} for k, v in times.items()}


def run_header() -> dict:
    """What every CPU benchmark's JSON starts with: when, the command, versions, the CPU, the
    threads, the cpu-native variant, the load before."""
    import platform

    from timing import cpu_model

    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(["python3", *sys.argv]),
            "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(), "native_isa": native_isa(),
            "native_col_walk": _col_walk(), "loadavg_before": os.getloadavg()}


def _col_walk():
    """cpu-native's column-wise walk in use ("bands" or "column"), or None without the library or
    in its baseline variant (one walk)."""
    lib = _native_lib.load()[0]
    return _native_lib.col_order(lib) if lib is not None else None


def add_common_args(parser, default_shapes: str) -> None:
    """--rounds, --isa, --shapes (MxK:dtype, comma-separated; parse with `shapes`) and --out."""
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds per candidate (default 15)")
    parser.add_argument("--isa", help="cpu-native's instruction-set variant, e.g. 'x86-64 avx2' (default: the CPU's best)")
    parser.add_argument("--shapes", default=default_shapes, help=f"comma-separated MxK:dtype (default {default_shapes})")
    parser.add_argument("--out", help="also write the JSON here")


def shapes(spec: str) -> list[tuple[int, int, torch.dtype]]:
    """'2048x4096:bfloat16,...' -> [(2048, 4096, torch.bfloat16), ...]"""
    out = []
    for item in spec.split(","):
        dims, hp = item.split(":")
        m, k = map(int, dims.split("x"))
        out.append((m, k, getattr(torch, hp)))
    return out


def emit(result: dict, out: str | None) -> None:
    """The result as JSON on stdout, and in `out` too when given (with the load after)."""
    result["loadavg_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")


def _summary(stats: dict, nbytes: int, peer: str) -> dict:
    out = {}
    for name, s in stats.items():
        out[name] = {"ms": round(s["median_s"] * 1e3, 2), "min_ms": round(s["min_s"] * 1e3, 2),
                     "GB/s": round(nbytes / s["median_s"] / 1e9, 3), "rounds": s["n"],
                     f"time_vs_{peer}": round(s["median_s"] / stats[peer]["median_s"], 3),
                     "cpu_ms": round(s["cpu_median_s"] * 1e3, 2),
                     f"cpu_vs_{peer}": round(s["cpu_median_s"] / stats[peer]["cpu_median_s"], 3)}
    return out


def quantize_paths(m: int, k: int, hp: torch.dtype, rounds: int) -> dict:
    x = torch.randn(m, k, dtype=hp)
    mode, layout = "rceil", "linear"
    data = torch.empty(m, k, dtype=torch.uint8)
    scale = torch.empty(m, k // 32, dtype=torch.uint8)
    cast_out = torch.empty(m, k, dtype=E4M3)
    fns = {"torch_cast_fresh": lambda: x.to(E4M3), "torch_cast_into": lambda: cast_out.copy_(x)}
    native = _native()
    if native is not None:
        fns["native_fresh"] = lambda: native.quantize(x, E4M3, mode, layout)
        fns["native_into"] = lambda: native.quantize_into(x, data, scale, E4M3, mode, layout)
    fns["eager_fresh"] = lambda: cpu_eager.quantize(x, E4M3, mode, layout)
    fns["eager_into"] = lambda: cpu_eager.quantize_into(x, data, scale, E4M3, mode, layout)
    fns["reference"] = lambda: reference.quantize(x, E4M3, mode, layout)
    stats = timed_rounds(fns, rounds, slow={"reference": max(1, rounds // 3)})
    nbytes = m * k * (x.element_size() + 1 + 1 / 32)
    res = _summary(stats, nbytes, "torch_cast_fresh")
    if native is not None:
        for name in ("eager_fresh", "reference"):
            res[name]["time_vs_native_fresh"] = round(stats[name]["median_s"] / stats["native_fresh"]["median_s"], 3)
    return res


def dequantize_paths(m: int, k: int, out_dtype: torch.dtype, rounds: int) -> dict:
    data, scale = reference.quantize(torch.randn(m, k), E4M3, "rceil", "linear")
    out = torch.empty(m, k, dtype=out_dtype)
    fns = {"torch_cast_fresh": lambda: data.to(out_dtype)}  # the unscaled fp8 cast, as a peer
    native = _native()
    if native is not None:
        fns["native_fresh"] = lambda: native.dequantize(data, scale, "linear", out_dtype)
        fns["native_into"] = lambda: native.dequantize_into(data, scale, "linear", out)
    fns["eager_fresh"] = lambda: cpu_eager.dequantize(data, scale, "linear", out_dtype)
    fns["reference"] = lambda: reference.dequantize(data, scale, "linear", out_dtype)
    stats = timed_rounds(fns, rounds, slow={"reference": max(1, rounds // 3)})
    return _summary(stats, m * k * (1 + 1 / 32 + torch.finfo(out_dtype).bits // 8), "torch_cast_fresh")


PEAK = textwrap.dedent("""
    import gc, json, sys, torch
    torch.set_num_threads(int(sys.argv[5]))
    from mxquant import reference
    from mxquant.backends import cpu_eager
    E4M3 = torch.float8_e4m3fn
    path, m, k, hp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), getattr(torch, sys.argv[4])
    if path == "native":
        from mxquant.backends import cpu_native
        call = lambda x: cpu_native.quantize(x, E4M3, "rceil", "linear")
    elif path == "eager":
        call = lambda x: cpu_eager.quantize(x, E4M3, "rceil", "linear")
    elif path == "reference":
        call = lambda x: reference.quantize(x, E4M3, "rceil", "linear")
    else:
        call = lambda x: (x.to(E4M3),)
    call(torch.randn(64, 256, dtype=hp))  # load libraries, first-call setup
    x = torch.randn(m, k, dtype=hp)
    gc.collect()
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    before = status("VmRSS")
    out = call(x)
    peak = status("VmHWM")
    print(json.dumps({"extra_bytes": peak - before, "output_bytes": sum(t.numel() * t.element_size() for t in out)}))
""")


def peak_memory(m: int, k: int, hp: torch.dtype, paths=("native", "eager", "reference", "torch_cast")) -> dict:
    res = {}
    for path in paths:
        if path == "native" and _native() is None:
            continue
        done = subprocess.run([sys.executable, "-c", PEAK, path, str(m), str(k), str(hp).replace("torch.", ""),
                               str(torch.get_num_threads())], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        if done.returncode:
            res[path] = {"error": done.stderr.strip().splitlines()[-1:]}
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        mib = 1 << 20
        res[path] = {"extra_MiB": round(r["extra_bytes"] / mib, 1), "outputs_MiB": round(r["output_bytes"] / mib, 1),
                     "extra_minus_outputs_MiB": round((r["extra_bytes"] - r["output_bytes"]) / mib, 1),
                     "extra_vs_input": round(r["extra_bytes"] / (m * k * torch.finfo(hp).bits // 8), 2)}
    return res


def run_all(rounds: int = 9) -> dict:
    out = {"native_isa": native_isa(), "quantize": {},
           "dequantize": {}}
    for m, k, hp in SHAPES:
        out["quantize"][f"{m}x{k}_{str(hp).replace('torch.', '')}_rceil_linear"] = quantize_paths(m, k, hp, rounds)
    for out_dtype in (torch.bfloat16, torch.float32):
        name = f"2048x4096_e4m3_to_{str(out_dtype).replace('torch.', '')}_linear"
        out["dequantize"][name] = dequantize_paths(2048, 4096, out_dtype, rounds)
    out["peak_memory"] = {f"{m}x{k}_{str(hp).replace('torch.', '')}": peak_memory(m, k, hp)
                          for m, k, hp in (SHAPES[1], SHAPES[2])}
    return out
