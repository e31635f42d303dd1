"""cpu-native's instruction-set variants, for tests that run each of them (the test hook
_native_lib.select_isa). The kernel is built with AVX-512 (BW/VL), AVX2 and baseline variants on
x86-64 and uses the best one the CPU runs; these tests force each in turn, so a machine with
AVX-512 tests all three, and one without it tests what it can run (the AVX-512 one skips)."""

from __future__ import annotations

import contextlib

import pytest

from mxquant.backends import _native_lib

_LIB = _native_lib.load()[0]
VARIANTS = _native_lib.isa_variants(_LIB) if _LIB is not None else []  # [(name, runnable here)]
# fixture params: "cpu-native@<variant>", or plain "cpu-native" where the library is not built
NATIVE_VARIANTS = [f"cpu-native@{name}" for name, _ in VARIANTS] or ["cpu-native"]


@contextlib.contextmanager
def native_isa(name):
    """Run cpu-native's `name` variant inside the block (None: leave the automatic choice); skip
    the test where this CPU cannot run it."""
    if name is None:
        yield
        return
    if not dict(VARIANTS)[name]:
        pytest.skip(f"cpu-native {name}: this CPU lacks its instructions (the variant is tested only "
                    "on a CPU that has them; CI machines without AVX-512 skip it)")
    _native_lib.select_isa(_LIB, name)
    try:
        yield
    finally:
        _native_lib.select_isa(_LIB, None)
