"""Every bfloat16 and float16 bit pattern (2^16 each) through cpu-native's MXFP4 (each scale mode)
and NVFP4 (global scale computed, 1.0, 1e-3) quantize, and the result back through dequantize, on
every instruction-set variant of the kernel (and the AVX2 one as it runs without F16C), byte for
byte against the NumPy oracle (tests/fp4_oracle.py). Three arrangements of the patterns, rows of
128: in bit order (neighbouring values share a block), shuffled (NaN / Inf spread over the
blocks), and the finite patterns shuffled with every group of 16 led by +-6 (so most blocks have a
small scale and their other elements land on e2m1's grid and edges rather than flush to 0)."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
import torch

import mxquant

import fp4_oracle as oracle
from cpu_auto import loaded_backend
from native_isa import NATIVE_VARIANTS, native_isa
from test_cpu_native_fp4 import avx2_without_f16c
from test_fp4 import assert_same_values
from training_helpers import MODES, assert_bytes, ids

NATIVE = "cpu-native"
HALF = [torch.bfloat16, torch.float16]
ARRANGEMENTS = ["bit order", "shuffled", "finite, shuffled, groups led by +-6"]
GLOBAL = [None, 1.0, 1e-3]
VARIANTS = [v.partition("@")[2] for v in NATIVE_VARIANTS] + ["x86-64 avx2 without F16C"]
_WANT: dict = {}  # oracle results, the same for every variant


def every_pattern(hp, arrangement: str) -> torch.Tensor:
    """The 2^16 bit patterns of hp as (rows, 128) (the finite ones only in the third arrangement)."""
    x = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(hp)
    if arrangement == ARRANGEMENTS[0]:
        return x.reshape(-1, 128)
    g = torch.Generator().manual_seed(7)
    x = x[torch.randperm(x.numel(), generator=g)]
    if arrangement == ARRANGEMENTS[1]:
        return x.reshape(-1, 128)
    x = x[x.isfinite()]
    x = x[: x.numel() // 128 * 128].clone().reshape(-1, 16)
    x[:, 0] = torch.where(torch.rand(x.shape[0], generator=g) < 0.5, -6.0, 6.0).to(hp)
    return x.reshape(-1, 128)


def _want(key, fn, *args):
    """fn(*args), the oracle's answer, computed once per key."""
    if key not in _WANT:
        with np.errstate(all="ignore"):
            _WANT[key] = fn(*args)
    return _WANT[key]


@contextlib.contextmanager
def _running(variant: str):
    loaded_backend(NATIVE)
    if variant.endswith("without F16C"):
        with avx2_without_f16c():
            yield
    else:
        with native_isa(variant or None):
            yield


CASES = [(v, hp, a) for v, hp, a in itertools.product(VARIANTS, HALF, ARRANGEMENTS)
         if hp == torch.float16 or not v.endswith("without F16C")]  # without F16C only fp16 takes another path


@pytest.mark.parametrize("variant, hp, arrangement", CASES, ids=[f"{v} {ids((hp,))} {a}" for v, hp, a in CASES])
def test_every_half_pattern(variant, hp, arrangement):
    with _running(variant):
        _check_every_pattern(hp, arrangement)


def _check_every_pattern(hp, arrangement):
    x = every_pattern(hp, arrangement)
    for mode in MODES:
        q = mxquant.mxfp4_quantize(x, scale_mode=mode, backend=NATIVE)
        data, scale = _want((hp, arrangement, mode), oracle.mxfp4_quantize, x, mode)
        assert_bytes(q.data, data, f"mxfp4 {mode} data")
        assert_bytes(q.scale, scale, f"mxfp4 {mode} scale")
        y = mxquant.mxfp4_dequantize(q.data, q.scale, out_dtype=hp, backend=NATIVE)
        want = _want((hp, arrangement, mode, "dq"), oracle.mxfp4_dequantize, data, scale.numpy(), hp)
        assert_same_values(y, want, f"mxfp4 {mode} dequantize")
    for given in GLOBAL:
        gs = None if given is None else torch.tensor([given], dtype=torch.float32)
        n = mxquant.nvfp4_quantize(x, gs, backend=NATIVE)
        data, scale, g = _want((hp, arrangement, given), oracle.nvfp4_quantize, x, None if gs is None else float(gs))
        assert n.global_scale.item() == g, f"nvfp4 global scale {n.global_scale.item()} != {g}"
        assert_bytes(n.data, data, f"nvfp4 (global scale {given}) data")
        assert_bytes(n.scale, scale, f"nvfp4 (global scale {given}) scale")
        y = mxquant.nvfp4_dequantize(n.data, n.scale, n.global_scale, out_dtype=hp, backend=NATIVE)
        want = _want((hp, arrangement, given, "dq"), oracle.nvfp4_dequantize, data, scale, g, hp)
        assert_same_values(y, want, f"nvfp4 (global scale {given}) dequantize")
