"""Host time per public call at 16x4096 bf16: what the call path costs on the CPU side.

    python3 benchmarks/host_overhead.py [--device cuda] [--calls 3000] [--rounds 15]

Prints one JSON line: median µs per call (of `rounds` loops of `calls` calls; the GPU is not
synchronised inside a loop, so a CUDA figure is the host's launch-side time) for
  public    mxquant.mxfp8_quantize(x) with automatic selection
  forced    the same with backend= the backend automatic selection picked
  dispatch  the public call with a do-nothing backend forced (the call path alone)
  cast      x.to(torch.float8_e4m3fn), the floor any quantizer call is compared with
It uses only the public API, so the same script measures an older mxquant installed elsewhere
(docs/performance.md compares the trees before and after a change on one machine, one run).
"""

from __future__ import annotations

import argparse
import json

import torch

import mxquant
from timing import per_call_us  # benchmarks/ is on sys.path when a script here runs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(16, 4096, dtype=torch.bfloat16, device=a.device)
    picked = mxquant.get_registry().resolved_name(
        mxquant.backend.Call("quantize", x.device, x.dtype, torch.float8_e4m3fn, "rceil", "linear"))
    data, scale = mxquant.mxfp8_quantize(x)

    class NothingPlugin:
        @mxquant.hookimpl
        def register_backends(self, register):
            register(mxquant.Backend("nothing", mxquant.Capabilities(devices=frozenset({x.device.type})),
                                     lambda device: None, lambda *args: (data, scale), priority=-100))

    mxquant.get_registry().register_plugin(NothingPlugin(), "nothing-plugin")
    out = {"mxquant": mxquant.__version__, "file": mxquant.__file__, "device": str(x.device), "picked": picked}
    for name, fn in (("public", lambda: mxquant.mxfp8_quantize(x)),
                     ("forced", lambda: mxquant.mxfp8_quantize(x, backend=picked)),
                     ("dispatch", lambda: mxquant.mxfp8_quantize(x, backend="nothing")),
                     ("cast", lambda: x.to(torch.float8_e4m3fn))):
        calls = a.calls if name in ("dispatch", "cast") or x.is_cuda else max(50, a.calls // 30)
        out[name] = round(per_call_us(fn, calls, a.rounds, warmup=200), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
