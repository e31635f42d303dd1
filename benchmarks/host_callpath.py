"""The public call path's own Python per call, on any machine: mxfp8_quantize(x) served by a
stand-in in-tree backend (marked as allocating its own outputs) whose prepared call returns
fixed tensors, so what is timed is ops.py's path to the prepared call (issue 22's eager small-M
host time; the GPU's allocations and launch come on top: benchmarks/host_split.py).

    python3 benchmarks/host_callpath.py [--shape 16 4096]
"""

from __future__ import annotations

import argparse
import timeit

import torch

import mxquant
from mxquant import reference
from mxquant.outputs import own_outputs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=2, default=[16, 4096])
    a = p.parse_args(argv)
    x = torch.randn(*a.shape, dtype=torch.bfloat16)
    out = reference.quantize(x, torch.float8_e4m3fn, "rceil", "linear")

    def quantize(x, dtype, scale_mode, scale_layout):
        return out

    def prepare(x, dtype, scale_mode, scale_layout):
        return lambda x: out

    quantize.prepare = prepare
    backend = own_outputs(mxquant.Backend("stand-in", mxquant.Capabilities(devices=frozenset({"cpu"})),
                                          lambda device: None, quantize=quantize, priority=100))

    class Plugin:
        @mxquant.hookimpl
        def register_backends(self, register):
            register(backend)

    mxquant.get_registry().register_plugin(Plugin(), "host-callpath-stand-in")
    mxquant.mxfp8_quantize(x)
    call = prepare(x, None, None, None)
    for name, fn in (("public call", lambda: mxquant.mxfp8_quantize(x)), ("prepared call alone", lambda: call(x))):
        n = 50000
        us = min(timeit.timeit(fn, number=n) / n * 1e6 for _ in range(7))
        print(f"{name:20s} {us:6.3f} us")


if __name__ == "__main__":
    main()
