"""How many Triton kernel compilations a first `mxquant verify --backend triton` needs, counted on
a machine without a GPU: verify's checks of the triton backend run on CPU tensors under Triton's
interpreter, and each launch's signature is recorded the way Triton keys its compiled kernels (the
kernel, its constexprs and warps, each integer argument as 1 / a multiple of 16 / other, each
tensor 16-byte aligned or not).

    TRITON_INTERPRET=1 python3 benchmarks/verify_specializations.py   (an environment with triton)

Prints the checks run and how many did not pass (the interpreter stands in for the GPU's fp8
conversion as in tests/test_triton_interpreter.py), the launches, and the distinct
specializations per kernel.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time

import torch

from mxquant.backends import _triton_launch
from mxquant.conformance import verify as V
from mxquant.registry import get_registry

SEEN: collections.Counter = collections.Counter()


def _int_class(v) -> str:
    if isinstance(v, bool) or not isinstance(v, int):
        return "-"
    return "1" if v == 1 else ("16" if v % 16 == 0 else "n")


def _record(plan, tensors) -> None:
    name = getattr(plan.kernel, "fn", plan.kernel).__name__
    SEEN[(name, tuple(sorted(plan.constexprs.items())), plan.num_warps, tuple(_int_class(i) for i in plan.ints),
          tuple(t.data_ptr() % 16 == 0 for t in tensors))] += 1


def _hook() -> None:
    launch_n, launch = _triton_launch.Plan.launch_n, _triton_launch.Plan.launch

    def counted_n(self, device, *tensors):
        _record(self, tensors)
        return launch_n(self, device, *tensors)

    def counted(self, device, a, b, c):
        _record(self, (a, b, c))
        return launch(self, device, a, b, c)

    _triton_launch.Plan.launch_n, _triton_launch.Plan.launch = counted_n, counted


def main() -> int:
    _hook()
    registry = get_registry()
    backend = registry.load(next(e for e in registry.entries() if e.name == "triton"))
    # the same backend, serving the CPU (its kernels take CPU tensors under the interpreter)
    backend = dataclasses.replace(backend, capabilities=dataclasses.replace(backend.capabilities,
                                                                              devices=frozenset({"cpu"})))
    device, t0, checks, not_pass = torch.device("cpu"), time.time(), 0, 0
    for combination in V.claimed_combinations(backend):
        status = V.check_call(backend, device, *combination, 0).status
        if status != V.NOT_SUPPORTED:
            checks += 1
            not_pass += status != V.PASS
    per_kernel = collections.Counter(key[0] for key in SEEN)
    print(f"checks {checks}, not passed {not_pass}, launches {sum(SEEN.values())}, distinct specializations "
          f"{len(SEEN)} ({time.time() - t0:.0f} s)")
    print(dict(per_kernel))
    return 0 if not_pass == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
