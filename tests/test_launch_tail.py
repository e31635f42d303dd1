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
