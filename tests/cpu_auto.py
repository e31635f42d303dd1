"""The backend automatic selection picks for CPU calls: `cpu-native` where its library is
built, else `cpu-eager` (tests/test_cpu_native_build.py checks the fallback itself)."""

from mxquant.backends import _native_lib

AUTO_CPU = "cpu-native" if _native_lib.load()[0] is not None else "cpu-eager"
