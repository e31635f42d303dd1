"""The backend automatic selection picks for CPU calls: `cpu-native` where its library is
built, else `cpu-eager` (tests/test_cpu_native_build.py checks the fallback itself); and
`loaded_backend`, a registered backend's object where it can run (else the test skips)."""

import pytest
import torch

from mxquant.backends import _native_lib
from mxquant.registry import get_registry

AUTO_CPU = "cpu-native" if _native_lib.load()[0] is not None else "cpu-eager"


def loaded_backend(name: str, device=torch.device("cpu")):
    """The Backend registered as `name`, loaded; skips the test where its probe refuses `device`."""
    reg = get_registry()
    entry = next(e for e in reg.entries() if e.name == name)
    be = reg.load(entry)
    reason = reg.probe(entry, device)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")  # tests/test_cpu_native_build.py fails this in CI
    return be
