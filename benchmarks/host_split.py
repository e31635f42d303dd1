"""Host time per call of the quantize path at 16x4096, split into its layers (one CUDA GPU).

    python3 benchmarks/host_split.py [--out DIR]

Each line is the CPU time of one call (µs; median of `repeats` loops of `calls` calls, the
device synchronized around each loop; at 16x4096 the device work, ~5 µs, hides behind the
host time). Layers, outermost first:
  public        mxquant.mxfp8_quantize(x)                      (from the 2nd call: the backend's prepared call)
  backend       mxquant.backends.triton.quantize(x, ...)        (cached signature, 2 allocations, launch)
  allocations   the two torch.empty_strided calls the backend makes (and, for scale, the
                same with torch.empty, which the backend used before)
  one buffer, ...  both outputs carved from one allocation (two ways), a candidate for the
                allocations' share of the public call (not what the backend does)
  raw launch    the cached plan's launch into preallocated outputs (Triton's C launcher,
                integer pointers)
  triton runner the compiled kernel's Python launcher with tensors (what the earlier direct
                launch meant to call; it never armed under Triton 3.6)
  triton jit    kernel[grid](...), Triton's own per-call argument binding and cache lookup
                (what every cached call took before issue 14)
  cast          x.to(torch.float8_e4m3fn), a plain PyTorch op, for scale
  public, no prepared call   the public call as before ops.py took the backend's prepared call
                (registry key and lookup, then the backend's own), in the same run
Writes host_split.json and host_profile.txt (cProfile of the backend and public calls).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys

import torch

from timing import per_call_us  # benchmarks/ is on sys.path when a script here runs

E4M3 = torch.float8_e4m3fn


def layers(shape=(16, 4096)):
    import mxquant
    from mxquant.backends import _triton_launch
    from mxquant.backends import triton as tb

    x = torch.randn(*shape, dtype=torch.bfloat16, device="cuda")
    m, k = shape
    data, scale = tb.quantize(x, E4M3, "rceil", "linear")
    tb.quantize(x, E4M3, "rceil", "linear")
    dev = x.device
    plan = next(p for key, p in _triton_launch._PLANS.items() if key[:2] == (m, k) and key[5] == "rceil" and not key[6])
    sbytes = scale.view(torch.uint8)
    compiled = plan.kernel[(plan.grid,)](x, data, sbytes, *plan.ints, **plan.constexprs, num_warps=plan.num_warps)
    run = compiled.run
    stream = torch.cuda.current_stream().cuda_stream
    fns = {
        "public": lambda: mxquant.mxfp8_quantize(x),
        "backend": lambda: tb.quantize(x, E4M3, "rceil", "linear"),
        "allocations": lambda: (torch.empty_strided(x.shape, (k, 1), dtype=E4M3, device=dev),
                                torch.empty_strided((m, k // 32), (k // 32, 1), dtype=torch.float8_e8m0fnu,
                                                    device=dev)),
        "allocations (torch.empty)": lambda: (torch.empty(x.shape, dtype=E4M3, device=dev),
                                              torch.empty((m, k // 32), dtype=torch.float8_e8m0fnu, device=dev)),
        # candidates for cutting the public call's allocations (issue 22's eager small-M target):
        # one buffer for both outputs, the scale 256-byte aligned after the data
        "one buffer, two views": lambda: _one_buffer(m, k, dev, False),
        "one buffer, as_strided": lambda: _one_buffer(m, k, dev, True),
        "raw launch": lambda: plan.launch(dev, x, data, scale),
        "triton runner": lambda: run(plan.grid, 1, 1, stream, compiled.function, compiled.packed_metadata, None,
                                     None, None, x, data, sbytes, *plan.ints, *plan.constexprs.values()),
        "triton jit": lambda: plan.kernel[(plan.grid,)](x, data, sbytes, *plan.ints, **plan.constexprs,
                                                          num_warps=plan.num_warps),
        "cast": lambda: x.to(E4M3),
    }
    if plan.raw is None:
        import triton

        print("host_split: raw launch path not armed:", _triton_launch._FAST_LAUNCH, triton.__version__,
              triton.knobs.runtime.launch_enter_hook, triton.knobs.runtime.launch_exit_hook,
              getattr(run, "global_scratch_size", "?"), getattr(run, "profile_scratch_size", "?"),
              hasattr(run, "launch"), file=sys.stderr)
    times = {name: per_call_us(fn) for name, fn in fns.items()}
    times["public, no prepared call"] = _unprepared(lambda: mxquant.mxfp8_quantize(x))
    return times


def _unprepared(fn) -> float:
    """per_call_us(fn) with the triton quantize's `prepare` hidden (ops.run_quantize's path before
    the prepared call: two keys and lookups), the registry's prepared calls forgotten; restored."""
    from mxquant.backends import triton as tb
    from mxquant.registry import get_registry

    prepare = tb.quantize.prepare
    del tb.quantize.prepare
    get_registry().reset_cache()
    try:
        return per_call_us(fn)
    finally:
        tb.quantize.prepare = prepare
        get_registry().reset_cache()


def _one_buffer(m, k, dev, strided):
    """Both quantize outputs of an (m, k) input from one allocation (a candidate, not what the
    backend does): data at byte 0, the scale from the next multiple of 256."""
    off = (m * k + 255) // 256 * 256
    buf = torch.empty_strided((off + m * (k // 32),), (1,), dtype=torch.uint8, device=dev)
    if strided:
        return (buf.view(E4M3).as_strided((m, k), (k, 1), 0),
                buf.view(torch.float8_e8m0fnu).as_strided((m, k // 32), (k // 32, 1), off))
    return buf[:m * k].view(E4M3).view(m, k), buf[off:].view(torch.float8_e8m0fnu).view(m, k // 32)


def write_profile(path, calls=3000):
    """cProfile of the backend call and the public call at 16x4096 (where host time goes)."""
    import mxquant
    from mxquant.backends import triton as tb

    x = torch.randn(16, 4096, dtype=torch.bfloat16, device="cuda")
    with open(path, "w") as f:
        for name, fn in (("backend", lambda: tb.quantize(x, E4M3, "rceil", "linear")),
                         ("public", lambda: mxquant.mxfp8_quantize(x))):
            fn()
            torch.cuda.synchronize()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(calls):
                fn()
            prof.disable()
            torch.cuda.synchronize()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
            f.write(f"=== {name}\n{s.getvalue()}\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="host-out")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("host_split: needs a CUDA GPU", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    times = layers()
    write_profile(os.path.join(a.out, "host_profile.txt"))
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "command": " ".join(sys.argv)}
    with open(os.path.join(a.out, "host_split.json"), "w") as f:
        json.dump({"meta": meta, "us_per_call_16x4096": times}, f, indent=1)
    for name, us in times.items():
        print(f"host {name:14s} {us:7.2f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
