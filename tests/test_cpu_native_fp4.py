"""cpu-native's MXFP4 / NVFP4 calls (backends/csrc/mxq_cpu_fp4.c, _avx512.c, _avx2.c) on every
instruction-set variant of its kernel (the AVX-512 one skips on a CPU without it), byte for byte
against the NumPy oracle (tests/fp4_oracle.py) and through the conformance kit (`mxquant verify`'s
FP4 rows). Inputs: the step-1 FP4 inputs (named blocks, the adversarial batch, random and odd
shapes), plus the C kernel's own edges: blocks of every magnitude (2^-140 .. 2^120) with NaN /
+-Inf / subnormal / dtype-max / zero values, the compressed-tensors sign at half the dtype's
smallest subnormal, the fp16 / bf16 / fp32 amax edges semantics.md names (subnormal amax, amax
>= 1.75 * 2^emax), NVFP4 global scales at their overflow edges, K not a multiple of 16 or 8
groups (the AVX-512 and AVX2 code's chunks; specials at their edges), rows read in place with a
row stride, expanded and unmergeable rows, 1 and 2 threads. Dequantize: every data byte with every scale byte."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
import torch

import mxquant
from mxquant.backend import FP4_OPS, Call
from mxquant.backends import _native_lib
from mxquant.conformance import verify_fp4
from mxquant.conformance.compare import PASS
from mxquant.conformance.fp4_inputs import fp4_inputs

import fp4_oracle as oracle
from cpu_auto import loaded_backend
from mx_oracle import swizzle
from native_isa import VARIANTS, native_isa
from test_cpu_native_training import _mixed_columns, variant  # noqa: F401 (variant: the ISA fixture)
from test_fp4 import assert_same_values
from training_helpers import INPUTS, LAYOUTS, MODES, assert_bytes, ids

NATIVE = "cpu-native"
MX_GRID = list(itertools.product(INPUTS, MODES, LAYOUTS))
NV_GRID = list(itertools.product(INPUTS, LAYOUTS))
HP_IDS = [ids((hp,)) for hp in INPUTS]
_WANT: dict = {}  # oracle results by (case, dtype, call): the same for every variant


def _mixed(rows: int, k: int, hp, seed: int) -> torch.Tensor:
    """(rows, k): one magnitude per block of 32 along a row, specials in a fifth of the blocks."""
    return _mixed_columns((k, rows), hp, seed).mT.contiguous()


def _edge_blocks(hp) -> torch.Tensor:
    """Rows of 32 whose bytes hinge on one rounding. Row 0, amax 12 (s = 1 in every mode): y =
    x / 2 at half the dtype's smallest subnormal (compressed-tensors' sign: +0) and at one and 1.5
    of it (-). Then amax at the dtype's max, at 1.75 * 2^emax, fp16/bf16-subnormal and tiny."""
    fin = torch.finfo(hp)
    tiny = fin.smallest_normal * 2.0 ** -{torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}[hp]
    emax = int(np.log2(fin.max))
    rows = [[12.0, -tiny, -2 * tiny, -3 * tiny, tiny, -0.0, 0.0, -6.0, 2 * tiny, -5 * tiny] + [0.5] * 22]
    for amax in (fin.max, 1.75 * 2.0**emax, fin.smallest_normal / 2, tiny * 3, fin.smallest_normal):
        rows.append([amax, -amax, amax / 3, -amax / 7, tiny, -tiny, amax / 6, 0.0] + [amax / 12] * 24)
    return torch.tensor(rows, dtype=torch.float64).to(hp)


def _neighbours(v: torch.Tensor) -> torch.Tensor:
    """v (in its dtype) and the next values down and up, by the bits (v >= 0)."""
    ints = v.view(torch.int16 if v.element_size() == 2 else torch.int32)
    return torch.stack([v, (ints - (ints > 0).to(ints.dtype)).view(v.dtype), (ints + 1).view(v.dtype)])


def _threshold_blocks(hp) -> torch.Tensor:
    """One row of 32 per scale exponent s (every mode gives s: amax 1.5 * 2^(s+2)), s from the bottom
    of the range (-127 .. -120) through the middle to the top: each e2m1 rounding edge T * 2^s and
    the dtype's values next to it, alternating signs, and -h * 2^s with its neighbours, h half the
    dtype's smallest subnormal (compressed-tensors' sign: y rounds to -0 or not), zeros."""
    fin = torch.finfo(hp)
    half_sub = fin.smallest_normal * 2.0 ** -{torch.float32: 24, torch.bfloat16: 8, torch.float16: 11}[hp]
    top = int(np.log2(fin.max)) - 3
    rows = []
    for s in [*range(-127, -119), *range(-30, 31), 60, 100, 125]:
        if s > top or 1.5 * 2.0 ** (s + 2) < fin.smallest_normal * 2.0**-6:
            continue
        edges = torch.tensor([t * 2.0**s for t in (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)], dtype=torch.float64)
        near = _neighbours(edges.to(hp)).double().T.reshape(-1) * torch.tensor([1.0, -1.0, 1.0]).repeat(7)
        sign = -_neighbours(torch.tensor([half_sub * 2.0**s]).to(hp)).double().reshape(-1)
        rest = torch.tensor([-2 * half_sub, 0.0, -0.0, 0.6, -1.1, 4.4, -5.9]) * 2.0**s
        rows.append(torch.cat([torch.tensor([1.5 * 2.0 ** (s + 2)]), near, sign, rest]))
    return torch.stack(rows).to(hp)


def native_inputs(hp) -> list[tuple[str, torch.Tensor]]:
    out = list(fp4_inputs(hp, 0))
    out.append(("e2m1 edges and signs for each s", _threshold_blocks(hp)))
    big = _mixed(512, 1024, hp, 12)  # 512K elements: two threads where two are asked for
    out += [("edge blocks", _edge_blocks(hp)),
            ("mixed blocks (96, 640)", _mixed(96, 640, hp, 11)),
            ("mixed blocks (512, 1024)", big),
            ("row stride > K (64, 480)", big[:64, 32:512]),
            ("every other row (40, 1024)", big[:80:2]),
            ("one row expanded (5, 1024)", big[3:4].expand(5, 1024)),
            ("leading dims do not merge (2, 5, 96)", big.view(4, 128, 1024)[::2, :5, :96]),
            ("transposed (64, 96)", _mixed(96, 64, hp, 13).mT),
            ("K = 17 groups of 32 (9, 544)", _mixed(9, 544, hp, 14)),
            ("K = 17 groups of 16 (7, 272)", _mixed(7, 288, hp, 15)[:, :272]),
            ("K = 33 groups of 16 (3, 528)", _mixed(3, 544, hp, 16)[:, 16:]),
            ("K = 48 (5, 48)", _mixed(5, 64, hp, 17)[:, :48]),
            ("K = 13 groups of 16 (6, 208)", _mixed(6, 224, hp, 18)[:, :208]),
            ("K = 15 groups of 16 (11, 240)", _mixed(11, 256, hp, 19)[:, :240]),
            ("specials at the AVX2 chunks' edges (3, 272)", _chunk_edge_specials(hp))]
    return out


def _chunk_edge_specials(hp) -> torch.Tensor:
    """(3, 272): 17 groups of 16, the AVX2 code's chunks of 8 groups (8, 8, 1), with NaN / +-Inf in
    a chunk's first, last and lone tail group, the largest finite |x| in the row's last element."""
    x = _mixed(3, 288, hp, 20)[:, :272].clone()
    x[0, 7 * 16 + 3], x[0, 0] = float("nan"), float("-inf")
    x[1, 16 * 16 + 5], x[2, 15 * 16] = float("inf"), float("nan")
    x[2, -1] = -torch.finfo(hp).max
    return x


def _oracle(name, hp, call, fn):
    key = (name, str(hp), *call)
    if key not in _WANT:
        _WANT[key] = fn()
    return _WANT[key]


@pytest.mark.parametrize("hp, mode, layout", MX_GRID, ids=[ids(c) for c in MX_GRID])
def test_mxfp4_quantize(variant, hp, mode, layout):  # noqa: F811
    for name, x in native_inputs(hp):
        if x.shape[-1] % 32:
            continue
        got = mxquant.mxfp4_quantize(x, scale_mode=mode, scale_layout=layout, backend=NATIVE)
        want_data, want_scale = _oracle(name, hp, ("mxfp4", mode, layout),
                                        lambda: oracle.mxfp4_quantize(x, mode, layout))
        assert_bytes(got.data, want_data, f"{name}: data")
        assert_bytes(got.scale, want_scale, f"{name}: scale")


GIVEN = [None, 0.75, 3.0e-3, 2.0**-140, 1.0e38]  # global scales: computed, ordinary, huge q, tiny q


@pytest.mark.parametrize("hp, layout", NV_GRID, ids=[ids(c) for c in NV_GRID])
def test_nvfp4_quantize(variant, hp, layout):  # noqa: F811
    for (name, x), given in itertools.product(native_inputs(hp), GIVEN):
        g = None if given is None else torch.tensor([given], dtype=torch.float32)
        got = mxquant.nvfp4_quantize(x, g, scale_layout=layout, backend=NATIVE)
        want_data, want_scale, want_g = _oracle(name, hp, ("nvfp4", given, layout),
                                                lambda: oracle.nvfp4_quantize(x, None if g is None else float(g), layout))
        assert got.global_scale.item() == want_g, f"{name}: global scale {got.global_scale.item()} != {want_g}"
        assert_bytes(got.data, want_data, f"{name}: data (global scale {given})")
        assert_bytes(got.scale, want_scale, f"{name}: scale (global scale {given})")


def _global_scale_cases(hp) -> list[tuple[str, torch.Tensor]]:
    """Whole tensors whose global scale is at an edge: zero, no finite element, an amax whose
    reciprocal or 2688 times it overflows the dtype (g = 1), amax at the dtype's max."""
    fin = torch.finfo(hp)
    edge = 2688.0 / fin.max  # below about this amax, g is not finite in the dtype
    cases = [("zeros", torch.zeros(3, 32)), ("NaN and Inf only", torch.tensor([[float("nan"), float("inf")] * 16])),
             ("Inf and finite", torch.tensor([[float("-inf")] + [0.25] * 31])),
             ("dtype max", torch.full((2, 32), fin.max)), ("subnormal amax", torch.full((2, 32), fin.smallest_normal / 4))]
    last, inf_last = torch.linspace(-1, 1, 144).repeat(2).reshape(2, 3, 48)  # rows of 96 / 192 bytes: loop tails
    last[2, 47] = inf_last[2, 47] = 3.0
    inf_last[1, 47] = float("inf")
    cases += [("largest |x| last in the row", last), ("Inf last in the row", inf_last)]
    for f in (0.5, 0.99, 1.0, 1.01, 2.0, 16.0):
        cases.append((f"amax {f} x 2688 / dtype max", torch.linspace(-1, 1, 64).reshape(2, 32) * edge * f))
    return [(name, x.to(hp)) for name, x in cases]


@pytest.mark.parametrize("hp", INPUTS, ids=HP_IDS)
def test_nvfp4_global_scale_edges(variant, hp):  # noqa: F811
    for name, x in _global_scale_cases(hp):
        got = mxquant.nvfp4_quantize(x, backend=NATIVE)
        want_data, want_scale, want_g = oracle.nvfp4_quantize(x)
        assert got.global_scale.item() == want_g, f"{name}: global scale {got.global_scale.item()} != {want_g}"
        assert_bytes(got.data, want_data, f"{name}: data")
        assert_bytes(got.scale, want_scale, f"{name}: scale")


def _e2m1_edge_rows() -> torch.Tensor:
    """fp32 rows of 32 whose scale is 1 (MXFP4 amax 6: s = 0 in every mode; NVFP4 with global
    scale 1: each group of 16 starts with +-6, scale 1.0), so y = x: the 81 fp32 values around
    each e2m1 rounding edge (0, 0.25, 0.75 .. 5, 6) and 100 000 random bit patterns below 6,
    random signs. The vector code's e2m1 (one fp32 add, or 16-bit lanes after rounding to odd)
    meets every tie and every value next to one."""
    g = torch.Generator().manual_seed(31)
    edges = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]).view(torch.int32)
    near = (edges[:, None] + torch.arange(-40, 41, dtype=torch.int32)).clamp(0, 0x40C00000).reshape(-1)
    bits = torch.cat([near, torch.randint(0, 0x40C00001, (100_000,), generator=g, dtype=torch.int32)])
    sign = torch.randint(0, 2, bits.shape, generator=g, dtype=torch.int32) << 31
    v = (bits | sign).view(torch.float32)
    v = torch.cat([v, torch.zeros(-v.numel() % 30)]).reshape(-1, 2, 15)
    six = torch.where(torch.rand(v.shape[0], 2, 1, generator=g) < 0.5, -6.0, 6.0)
    return torch.cat([six, v], dim=2).reshape(-1, 32)


@pytest.mark.parametrize("mode", MODES)
def test_e2m1_every_edge(variant, mode):  # noqa: F811
    x = _e2m1_edge_rows()
    mx = mxquant.mxfp4_quantize(x, scale_mode=mode, backend=NATIVE)
    want = oracle.mxfp4_quantize(x, mode)
    assert_bytes(mx.data, want[0], "mxfp4 data")
    assert_bytes(mx.scale, want[1], "mxfp4 scale")
    nv = mxquant.nvfp4_quantize(x, torch.tensor([1.0]), backend=NATIVE)
    want = _oracle("e2m1 edges", torch.float32, ("nvfp4", 1.0), lambda: oracle.nvfp4_quantize(x, 1.0))
    assert_bytes(nv.data, want[0], "nvfp4 data")
    assert_bytes(nv.scale, want[1], "nvfp4 scale")


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("hp", INPUTS, ids=HP_IDS)
def test_thread_counts(variant, threads, hp):  # noqa: F811
    """Inputs of 2 and 4 threads' worth of rows, each format, on 1 and 2 threads."""
    for x in (_mixed(512, 1024, hp, 21), _mixed(1000, 544, hp, 22)[:, :512]):
        mx = mxquant.mxfp4_quantize(x, scale_mode="compressed-tensors", scale_layout="swizzled", backend=NATIVE)
        want = oracle.mxfp4_quantize(x, "compressed-tensors", "swizzled")
        assert_bytes(mx.data, want[0], "mxfp4 data")
        assert_bytes(mx.scale, want[1], "mxfp4 scale")
        nv = mxquant.nvfp4_quantize(x, backend=NATIVE)
        want = oracle.nvfp4_quantize(x)
        assert nv.global_scale.item() == want[2]
        assert_bytes(nv.data, want[0], "nvfp4 data")
        assert_bytes(nv.scale, want[1], "nvfp4 scale")


def _every_byte(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.randint(0, 256, (rows * cols,), generator=g, dtype=torch.int64)
    b[: min(256, b.numel())] = torch.arange(min(256, b.numel()))
    return b[torch.randperm(b.numel(), generator=g)].to(torch.uint8).reshape(rows, cols)


@pytest.mark.parametrize("fmt", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("out, layout", NV_GRID, ids=[ids(c) for c in NV_GRID])
def test_dequantize_every_byte(variant, threads, fmt, out, layout):  # noqa: F811
    """Random data (every byte value) with every scale byte (E8M0 0xFF and e4m3 0x7F / 0xFF: NaN;
    negative e4m3 scales; products past fp32 / fp16 range), data rows read with a row stride."""
    block = 32 if fmt == "mxfp4" else 16
    for rows, k in ((300, 512), (130, 1056), (1, 48 if fmt == "nvfp4" else 64)):
        wide = _every_byte(rows, k // 2 + 8, rows)
        data = wide[:, 8:]  # rows k/2 + 8 bytes apart
        lin = _every_byte(rows, k // block, k)
        scale = swizzle(lin).reshape(-1) if layout == "swizzled" else lin
        if fmt == "mxfp4":
            got = mxquant.mxfp4_dequantize(data, scale.view(torch.float8_e8m0fnu), scale_layout=layout, out_dtype=out,
                                           backend=NATIVE)
            with np.errstate(all="ignore"):
                want = oracle.mxfp4_dequantize(data, lin.numpy(), out)
            assert_same_values(got, want, f"({rows}, {k}) mxfp4 -> {out}")
            continue
        for g in (1.0, 0.75, 3.0e-3, 2.0**-140, 1.0e38):
            got = mxquant.nvfp4_dequantize(data, scale.view(torch.float8_e4m3fn), torch.tensor([g]), scale_layout=layout,
                                           out_dtype=out, backend=NATIVE)
            with np.errstate(all="ignore"):
                want = oracle.nvfp4_dequantize(data, lin, g, out)
            assert_same_values(got, want, f"({rows}, {k}) nvfp4 g={g} -> {out}")


def _kit_rows():
    for fmt, modes in (("mxfp4", MODES), ("nvfp4", ["compressed-tensors"])):
        for hp, mode, layout in itertools.product(INPUTS, modes, LAYOUTS):
            yield f"{fmt}_quantize", hp, mode, layout
        for out, layout in itertools.product(INPUTS, LAYOUTS):
            yield f"{fmt}_dequantize", out, None, layout


KIT = list(_kit_rows())


@pytest.mark.parametrize("op, hp, mode, layout", KIT, ids=[ids(c) for c in KIT])
def test_verify_kit_passes(variant, op, hp, mode, layout):  # noqa: F811
    """`mxquant verify --backend cpu-native`'s FP4 rows (per block against reference_fp4, padding
    bytes, the global scale, dequantized values), here for each instruction-set variant."""
    result = verify_fp4.check_fp4(loaded_backend(NATIVE), torch.device("cpu"), op, hp, mode, layout, seed=0)
    assert result.status == PASS and result.cases > 0, (result.reason, result.examples[:2])


@pytest.mark.parametrize("op", FP4_OPS)
def test_claims_the_fp4_calls_and_is_chosen_on_cpu(op):
    be = loaded_backend(NATIVE)
    assert op in be.capabilities.ops
    for hp, layout in itertools.product(INPUTS, LAYOUTS):
        mode = None if op.endswith("dequantize") else ("rceil" if op.startswith("mxfp4") else "compressed-tensors")
        call = Call(op, torch.device("cpu"), hp, torch.float4_e2m1fn_x2, mode, layout)
        assert mxquant.get_registry().resolved_name(call) == NATIVE, call.describe()


# ---- the AVX2 variant on a CPU without F16C: fp16 by mxq_cpu_fp4.c's scalar code ----------------
AVX2 = "x86-64 avx2"


@contextlib.contextmanager
def avx2_without_f16c():
    """The AVX2 variant as it runs on a CPU without F16C (the hook mxq_fp4_force_no_f16c), or skip."""
    lib = _native_lib.load()[0]
    if lib is None or not dict(VARIANTS).get(AVX2):
        pytest.skip(f"cpu-native {AVX2}: not built or this CPU lacks AVX2")
    with native_isa(AVX2):
        lib.mxq_fp4_force_no_f16c(1)
        try:
            yield
        finally:
            lib.mxq_fp4_force_no_f16c(0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fp16_on_avx2_without_f16c(layout):
    """fp16 quantize and dequantize where the AVX2 variant has no F16C: this module's fp16 cases
    (native inputs, every mode, the global scale edges, every data and scale byte) on that path."""
    loaded_backend(NATIVE)
    with avx2_without_f16c():
        for mode in MODES:
            test_mxfp4_quantize(None, torch.float16, mode, layout)
        test_nvfp4_quantize(None, torch.float16, layout)
        test_nvfp4_global_scale_edges(None, torch.float16)
        for fmt in ("mxfp4", "nvfp4"):
            test_dequantize_every_byte(None, 1, fmt, torch.float16, layout)
