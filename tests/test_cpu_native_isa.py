"""cpu-native's instruction-set variants (backends/csrc/mxq_cpu.c: AVX-512 BW/VL with hand-written
block code, AVX2, baseline): which one runs, that `mxquant info` names it, and every variant
byte-exact with the reference on blocks at the edge of the AVX-512 code's fast path. The other
byte-exact tests run each variant too (tests/test_cpu_backends.py's `backend` fixture). A variant
the CPU cannot run skips: CI machines without AVX-512 test the AVX2 and baseline code only."""

from __future__ import annotations

import itertools
import platform

import pytest
import torch

from mxquant import reference
from mxquant.backends import _native_lib
from mxquant.formats import ELEMENT_FORMATS, INPUT_DTYPES, SCALE_MODES

from cpu_auto import loaded_backend
from native_isa import _LIB, NATIVE_VARIANTS, VARIANTS, native_isa
from test_cpu_backends import assert_quantize_exact

needs_lib = pytest.mark.skipif(_LIB is None, reason="cpu-native not built")
AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), None)
    except OSError:
        return None


@needs_lib
def test_the_best_variant_the_cpu_runs_is_used_and_shown():
    flags = _cpu_flags()
    if platform.machine() not in ("x86_64", "AMD64") or flags is None:
        pytest.skip("needs an x86-64 Linux CPU (/proc/cpuinfo flags) as the oracle")
    want = "x86-64 avx512bw" if AVX512 <= flags else "x86-64 avx2" if "avx2" in flags else "x86-64 baseline"
    assert _LIB.mxq_isa().decode() == want
    assert dict(VARIANTS)[want] and all(ok for _, ok in VARIANTS[[n for n, _ in VARIANTS].index(want):])
    assert f", {want}," in loaded_backend("cpu-native").description  # what `mxquant info` prints


@needs_lib
def test_select_isa_names_and_refusals():
    with pytest.raises(ValueError, match="unknown instruction-set variant 'sse9'"):
        _native_lib.select_isa(_LIB, "sse9")
    for name, ok in VARIANTS:
        if not ok:
            with pytest.raises(ValueError, match="cannot run"):
                _native_lib.select_isa(_LIB, name)
            continue
        with native_isa(name):
            assert _LIB.mxq_isa().decode() == name
    assert _LIB.mxq_isa().decode() == next(n for n, ok in VARIANTS if ok)  # automatic again


def edge_blocks(hp, elem, mode, seed):
    """Two blocks per power of two of the block amax across hp's range, the other 31 elements
    below the amax, with the bit patterns at the edge of the smallest |x| the fast path takes (a
    normal x whose |x| * 2^-s is an fp8 normal; s from the reference's scale). Even blocks: the
    others within the fp8 normal range (the fast path), two of them at the edge and one bit
    above. Odd blocks: the others spread down past the fp8 subnormals, three of them one bit
    below, at and above the edge (the general path)."""
    g = torch.Generator().manual_seed(seed)
    fin = torch.finfo(hp)
    lo, hi = int(torch.tensor(fin.smallest_normal * fin.eps).log2()), int(torch.tensor(fin.max).log2())
    e = torch.arange(lo, hi + 1, dtype=torch.float64).repeat_interleave(2).unsqueeze(1)
    span = {torch.float8_e4m3fn: 13, torch.float8_e5m2: 28}[elem]  # fp8 normal binades - 1
    span = torch.tensor([span, 28]).repeat(len(e) // 2).unsqueeze(1)
    drop = torch.cat([torch.zeros(len(e), 1), (torch.rand(len(e), 31, generator=g) * span).floor()], 1).double()
    mant = 1 + torch.rand(len(e), 32, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(len(e), 32, generator=g) < 0.5, -1.0, 1.0).double()
    x = (torch.exp2(e - drop) * mant * sign).clamp(-fin.max, fin.max).to(hp)
    s = reference.quantize(x, elem, mode, "linear")[1].view(torch.uint8).to(torch.int64) - 127  # (blocks, 1)
    emin = {torch.float8_e4m3fn: -6, torch.float8_e5m2: -14}[elem]
    ints = x.view(torch.int32 if hp == torch.float32 else torch.int16).clone()
    edge = torch.exp2((s + emin).clamp(min=-126).double()).float().to(hp).view(ints.dtype)
    ints[0::2, 1:4] = edge[0::2] + torch.tensor([0, 0, 1], dtype=ints.dtype)
    ints[1::2, 1:4] = edge[1::2] + torch.tensor([-1, 0, 1], dtype=ints.dtype)
    ints[:, 2] |= torch.tensor(-1 << (ints.element_size() * 8 - 1), dtype=ints.dtype)  # one negative
    return ints.view(hp)


@needs_lib
@pytest.mark.parametrize("variant", NATIVE_VARIANTS)
@pytest.mark.parametrize("hp", INPUT_DTYPES, ids=str)
def test_every_variant_exact_at_the_fast_path_edge(variant, hp):
    with native_isa(variant.partition("@")[2] or None):
        be = loaded_backend("cpu-native")
        for elem, mode in itertools.product(ELEMENT_FORMATS, SCALE_MODES):
            x = edge_blocks(hp, elem, mode, seed=7)
            assert_quantize_exact(be, x, elem, mode, "linear", f"{variant} fast-path edge")
