"""backends/_triton_launch.py's launch_tail: the raw launcher's arguments after the tensors'
pointers, from the kernel's own parameter list. A contract test with fake parameter records
(name, is_constexpr, default: the fields of Triton's KernelParam), no Triton here; the real
kernels' parameter lists are checked against the same rules in tests/test_triton_compile.py
(side environment), and the raw launches themselves by the CUDA tests.

On an H100 (2026-12-05, tenth session) a kernel given a constexpr parameter with a default that
the plan did not pass failed every raw launch ("function takes exactly 44 arguments (42
given)"): the tail was the plan's constexprs, not the kernel's."""

import inspect
from types import SimpleNamespace

from mxquant.backends._triton_launch import launch_tail

EMPTY = inspect.Parameter.empty


def params(*spec):
    """spec: "name" (a runtime argument), "name:c" (a constexpr without default), "name:c=V"."""
    out = []
    for s in spec:
        name, _, kind = s.partition(":")
        default = EMPTY
        if "=" in kind:
            kind, value = kind.split("=")
            default = int(value)
        out.append(SimpleNamespace(name=name, is_constexpr=kind == "c", default=default))
    return SimpleNamespace(params=out)


KERNEL = params("x_ptr", "y_ptr", "m", "k", "A:c", "B:c", "C:c=7", "D:c=9")


def test_constexprs_in_the_kernels_order_and_defaults_filled_in():
    # the plan's dict in another order, C given, D left to its default
    assert launch_tail(KERNEL, 2, (5, 6), {"C": 1, "B": 2, "A": 3}) == (5, 6, 3, 2, 1, 9)


def test_every_constexpr_given():
    assert launch_tail(KERNEL, 2, (5, 6), {"A": 0, "B": 0, "C": 0, "D": 0}) == (5, 6, 0, 0, 0, 0)


def test_shapes_it_refuses_keep_tritons_own_launch():
    assert launch_tail(KERNEL, 2, (5, 6), {"A": 3}) is None  # B has no default and is not given
    assert launch_tail(KERNEL, 2, (5, 6), {"A": 3, "B": 2, "E": 1}) is None  # a name the kernel lacks
    assert launch_tail(KERNEL, 2, (5,), {"A": 3, "B": 2}) is None  # an integer short: k would be a constexpr
    assert launch_tail(params("x_ptr", "A:c", "m", "B:c"), 2, (5,), {"A": 1, "B": 2}) is None  # a constexpr
    # counted as a tensor
    mixed = params("x_ptr", "m", "A:c", "k")  # a runtime argument after a constexpr
    assert launch_tail(mixed, 1, (5,), {"A": 1}) is None
    assert launch_tail(SimpleNamespace(), 1, (), {}) is None  # no parameter list


def test_a_bound_launch_passes_what_launch_passes(monkeypatch):
    # Plan.bound (the prepared call's launch) against Plan.launch on one armed fake plan: the
    # same raw-launcher arguments, and Triton's path (here: a recording stand-in) when a launch
    # hook is installed. Contract test: fake launcher and runtime, no Triton here.
    import torch

    from mxquant.backends import _triton_launch as tl

    calls = []
    runtime = SimpleNamespace(launch_enter_hook=None, launch_exit_hook=None)
    monkeypatch.setattr(tl, "_RUNTIME", [runtime])
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 1000 + index, raising=False)
    p = tl.Plan(None, 12, (1, 2), {}, 4)
    p.raw = lambda *a: calls.append(("raw", a))
    p.head, p.tail = (12, "fn", False, False, "meta"), (1, 2, 3)
    p.compiled = SimpleNamespace(launch_metadata=lambda *a: "now",
                                 run=lambda *a: calls.append(("triton", len(a))))
    dev = SimpleNamespace(index=3, type="cuda")
    a, b, c = torch.zeros(4), torch.zeros(2), torch.zeros(1)
    p.launch(dev, a, b, c)
    p.bound(dev)(a, b, c)
    assert calls[0] == calls[1] and calls[0][1][3] == 1003 and calls[0][1][-6:] == (
        a.data_ptr(), b.data_ptr(), c.data_ptr(), 1, 2, 3)
    runtime.launch_enter_hook = SimpleNamespace(calls=[print])  # a profiler's hook
    p.bound(dev)(a, b, c)
    assert calls[2][0] == "triton"
