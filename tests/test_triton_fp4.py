"""The `triton` backend's MXFP4 / NVFP4 kernels (backends/_triton_fp4.py), byte for byte against
the NumPy oracle (tests/fp4_oracle.py, written from docs/semantics.md, not from reference_fp4) and
through the conformance kit (mxquant/conformance/verify_fp4.py), on the named FP4 blocks, the
MXFP8 adversarial batch, random odd shapes, strided rows, both scale layouts, every input dtype
and scale mode, a given and a computed NVFP4 global scale, and every nibble and scale byte for
dequantize.

Two ways to run, one body per case (`dev`), as tests/test_triton_training.py (whose device
parameters and poisoned-output fixture this module uses):
- "cpu": the kernels under Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, a venv
  holding triton: tests/test_triton_interpreter.py runs this module in its side environment),
  with small tile configurations too, so small inputs span several tiles and padding tiles;
- "cuda" (marked `cuda`): the same on a GPU, plus big shapes, the public calls, CUDA graphs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import mxquant
from mxquant.backend import FP4_OPS
from mxquant.backends import _triton_fp4_ops as ops
from mxquant.conformance import verify_fp4
from mxquant.conformance.compare import PASS
from mxquant.conformance.fp4_inputs import fp4_inputs
from mxquant.formats import MXFP4_BLOCK, NVFP4_BLOCK

import fp4_oracle as oracle
from test_triton_compile import _INTERPRET, _NO_TRITON, _aot_compile, _aot_compile_as_launched
from test_triton_training import DEVS, _random, cuda_only, poisoned_outputs  # noqa: F401  (autouse fixture)
from test_fp4 import assert_same_values
from training_helpers import INPUTS, LAYOUTS, MODES, assert_bytes, ids

MX_GRID = list(itertools.product(INPUTS, MODES, LAYOUTS))
NV_GRID = list(itertools.product(INPUTS, LAYOUTS, (False, True)))
OUTS = [torch.bfloat16, torch.float32, torch.float16]
DQ_GRID = list(itertools.product(("mxfp4", "nvfp4"), OUTS, LAYOUTS))
SMALL = {"linear": (16, 64, 1), "swizzled": (32, 128, 1)}  # several tiles, partial and padding-only ones
SMALL_NV = {"linear": (16, 32, 1), "swizzled": (32, 64, 1)}
SHIPPED_BEFORE = {"linear": (16, 256, 4), "swizzled": (16, 256, 4)}
"""The tiles the H100's configuration gave these inputs until 2026-12-05: with fp32 input the GPU
run on that day found NVFP4 scale bytes 0 where the contract has 0x20 at (16, 256, 4)."""
CONSECUTIVE = (16, 256, 4, 0, 8, "evict_last", False)
"""A many-row swizzled tile whose rows are consecutive (its 7th entry), where ops._spread would
otherwise put them 32 apart."""
SMALL_ON = {"linear": (torch.float32, torch.bfloat16), "swizzled": (torch.float32, torch.float16)}
"""Under the interpreter, the input dtypes that run the small tiles (SMALL, SMALL_NV) in
test_small_tiles_odd_shapes_and_strided_rows: fp32 and one 2-byte dtype per layout, so both
NVFP4 kernels (fp32's and the 2-byte one) and MXFP4 take them in each layout; the third runs
the shipped and the consecutive-rows tiles, NVFP4 also the pre-2026-12-05 one (a program costs
the interpreter about the same at any size, so small tiles' many programs are its time). A GPU
runs them all."""


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _flat(scale: torch.Tensor, layout: str) -> torch.Tensor:
    return scale.reshape(-1) if layout == "swizzled" else scale


def check_mxfp4(x, mode, layout, config=None, name=""):
    data, scale = ops.mxfp4_quantize(x, mode, layout, config)
    want_data, want_scale = oracle.mxfp4_quantize(x.cpu(), mode, layout)
    assert scale.dtype == torch.float8_e8m0fnu and scale.is_contiguous()
    assert_bytes(data.cpu(), want_data, f"{name} data")
    assert_bytes(_flat(scale.cpu(), layout), want_scale, f"{name} scale")


def check_nvfp4(x, given, layout, config=None, name=""):
    g = None
    if given:  # a scale as llm-compressor shares between fused weights: not this tensor's own
        g = torch.tensor([oracle.nvfp4_global_scale(x.cpu()) * 0.6875], dtype=torch.float32, device=x.device)
    data, scale, g_out = ops.nvfp4_quantize(x, g, "compressed-tensors", layout, config)
    want_data, want_scale, want_g = oracle.nvfp4_quantize(x.cpu(), None if g is None else g.item(), layout)
    assert scale.dtype == torch.float8_e4m3fn and g_out.dtype == torch.float32 and tuple(g_out.shape) == (1,)
    assert g_out.item() == np.float32(want_g), f"{name} global scale {g_out.item()}, expected {want_g}"
    assert g is None or g_out.data_ptr() != g.data_ptr(), "the global scale returned is the caller's tensor"
    assert_bytes(data.cpu(), want_data, f"{name} data")
    assert_bytes(_flat(scale.cpu(), layout), want_scale, f"{name} scale")


# ---- quantize: every input dtype x mode x layout on the conformance inputs --------------------

@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp, mode, layout", MX_GRID, ids=[ids(c) for c in MX_GRID])
def test_mxfp4_quantize_conformance_inputs(dev, hp, mode, layout):
    for case, x in fp4_inputs(hp, 0):
        check_mxfp4(x.to(dev), mode, layout, name=case)


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp, layout, given", NV_GRID, ids=[ids(c) for c in NV_GRID])
def test_nvfp4_quantize_conformance_inputs(dev, hp, layout, given):
    for case, x in fp4_inputs(hp, 0):
        check_nvfp4(x.to(dev), given, layout, name=case)


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", INPUTS, ids=_name)
def test_nvfp4_global_scale_edges(dev, hp):
    """g = 1.0 where 2688 / amax is not finite in x's dtype (amax zero, tiny, only NaN / Inf),
    and amax at the top of the dtype's range; the elements follow from that g."""
    fin = torch.finfo(hp)
    rows = [torch.zeros(32), torch.full((32,), fin.tiny / 4), torch.tensor([float("nan"), float("inf")] * 16),
            torch.full((32,), fin.max), torch.full((32,), 2688.0 / fin.max)]
    for i, row in enumerate(rows):
        x = row.to(hp).reshape(2, 16).to(dev)
        for layout in LAYOUTS:
            check_nvfp4(x, False, layout, name=f"edge {i}")


def _threshold_groups(hp, g: float, rng) -> torch.Tensor:
    """(64, 16) groups for a given global scale g: each group's amax sets its scale s (log-uniform
    over e4m3's range, some past 448 and some rounding to 0), the other 15 elements sit at and
    one or two steps of x's dtype beside the e2m1 rounding thresholds times d = RN(s / g), or are
    the dtype's tiniest values, either sign."""
    steps = {torch.float32: np.float32, torch.bfloat16: None}[hp]
    groups = []
    for i in range(64):
        target = 2.0 ** rng.uniform(-9, 8.8) if i % 8 else (1000.0 if i % 16 else 2.0**-11)
        a = float(oracle.round_to(6.0 * target / g, hp))
        if not np.isfinite(a) or a == 0:
            continue
        p = min(float(np.float32(g * oracle.round_to(a / 6.0, hp))), 448.0)
        sv = float(oracle.round_grid(np.array(p), 3, -6)) or 0.125
        d = float(np.float32(np.float32(sv) / np.float32(g)))
        row = [a]
        if sv == 0.125 and p < 2.0**-9:  # the scale rounded to 0 (byte 0x20): elements below amax
            row += [float(oracle.round_to(a * u, hp)) for u in rng.uniform(-1, 1, 13)]
        for t in rng.choice([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], 13 if len(row) == 1 else 0):
            v = oracle.round_to(t * d, hp)
            k = int(rng.integers(-2, 3))
            if steps is not None:
                for _ in range(abs(k)):
                    v = np.nextafter(np.float32(v), np.float32(np.inf if k > 0 else -np.inf))
            else:  # bf16: k steps of its 8-bit significand
                v = float(v) * (1 + k * 2.0**-7)
            row.append(float(oracle.round_to(v, hp)) * (1 if rng.random() < 0.5 else -1))
        row += [float(torch.finfo(hp).smallest_normal) * 2.0**-3 * -1, -0.0]
        groups.append(row)
    return torch.tensor(groups, dtype=torch.float64).to(hp)


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", [torch.float32, torch.bfloat16], ids=_name)
def test_nvfp4_elements_at_the_rounding_thresholds(dev, hp):
    """Elements at and beside every e2m1 threshold of their group's d = scale / g (where a
    quotient that is not the IEEE one rounds to the wrong nibble), for given global scales from
    1e-30 to 3e25, and the tiniest values of x's dtype, either sign. (Written for an FMA quotient
    tried in the eighth session, exact on an H100 for g in [2**-20, 2**20], slower, not kept.)"""
    rng = np.random.default_rng(23)
    for g in (2.0**-20, 2.0**20, 2.0**-21, 2.0**21, 1e-30, 3e25, 1.0, 2688.0 / 3.7, 7.1e-4):
        x = _threshold_groups(hp, g, rng).to(dev)
        gt = torch.tensor([g], dtype=torch.float32, device=dev)
        for layout in LAYOUTS:
            data, scale, _ = ops.nvfp4_quantize(x, gt, "compressed-tensors", layout, None)
            want_data, want_scale, _ = oracle.nvfp4_quantize(x.cpu(), gt.item(), layout)
            assert_bytes(data.cpu(), want_data, f"g {g} {layout} data")
            assert_bytes(_flat(scale.cpu(), layout), want_scale, f"g {g} {layout} scale")


# ---- structure: tiles, odd shapes, strided rows, padding --------------------------------------

@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", INPUTS, ids=_name)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_small_tiles_odd_shapes_and_strided_rows(dev, hp, layout):
    """Several tiles per input (small configurations, the shipped one, and the H100's tile before
    2026-12-05, SHIPPED_BEFORE), partial tiles, tiles that cover only swizzled padding,
    row-strided and transposed views, 3-D inputs (the small ones under the interpreter: SMALL_ON)."""
    gen = 10 * INPUTS.index(hp)
    base = _random((133, 192), gen, hp, dev)
    views = {"(133, 192)": base, "rows ::2": base[::2], "columns 64:160": base[:, 64:160],
             "(3, 5, 96)": _random((3, 5, 96), gen + 1, hp, dev), "transposed": _random((64, 40), gen + 2, hp, dev).mT,
             "(1, 32)": base[:1, :32], "(2, 16)": base[:2, :16]}
    mode = MODES[INPUTS.index(hp)]
    small = dev == "cuda" or hp in SMALL_ON[layout]
    for name, x in views.items():
        for config in (None, SMALL[layout], CONSECUTIVE) if small else (None, CONSECUTIVE):
            if x.shape[-1] % MXFP4_BLOCK == 0:
                check_mxfp4(x, mode, layout, config, f"{name} {config}")
        for config in (None, SMALL_NV[layout], SHIPPED_BEFORE[layout], CONSECUTIVE) if small else \
                (None, SHIPPED_BEFORE[layout], CONSECUTIVE):
            check_nvfp4(x, name.startswith("rows"), layout, config, f"{name} {config}")


@pytest.mark.parametrize("dev", DEVS)
def test_empty_inputs(dev):
    for shape in ((0, 64), (4, 0), (2, 0, 32)):
        x = torch.zeros(shape, dtype=torch.bfloat16, device=dev)
        for layout in LAYOUTS:
            check_mxfp4(x, "rceil", layout, name=str(shape))
            check_nvfp4(x, False, layout, name=str(shape))
            check_nvfp4(x, True, layout, name=str(shape))


# ---- dequantize: every nibble and scale byte ----------------------------------------------------

def _dequant_inputs(fmt, layout, seed):
    """(data, backend scale, linear scale bytes, g): quantized conformance rows, then random bytes:
    every nibble, every scale byte (E8M0 0x00 / 0xFF, e4m3 subnormals and NaN, negative e4m3)."""
    gen = torch.Generator().manual_seed(seed)
    block = NVFP4_BLOCK if fmt == "nvfp4" else MXFP4_BLOCK
    x = fp4_inputs(torch.float32, 0)[0][1]
    if fmt == "nvfp4":
        data, scale_lin, g = oracle.nvfp4_quantize(x)
    else:
        data, scale_lin = oracle.mxfp4_quantize(x)
        g = None
    rows = torch.randint(0, 256, (77, 32), generator=gen, dtype=torch.uint8)  # K = 64, as the batch
    data = torch.cat([data, rows])
    scale_lin = torch.cat([scale_lin, torch.randint(0, 256, (77, 64 // block), generator=gen, dtype=torch.uint8)])
    scale = oracle.swizzle(scale_lin) if layout == "swizzled" else scale_lin
    g = torch.tensor([g if g is not None else 0.0], dtype=torch.float32)
    return data, scale, scale_lin, g


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("fmt, out_dtype, layout", DQ_GRID, ids=[ids(c) for c in DQ_GRID])
def test_dequantize_every_byte(dev, fmt, out_dtype, layout):
    data, scale, scale_lin, g = _dequant_inputs(fmt, layout, 5)
    sdtype = torch.float8_e4m3fn if fmt == "nvfp4" else torch.float8_e8m0fnu
    if fmt == "nvfp4":
        want = oracle.nvfp4_dequantize(data, scale_lin, g.item(), out_dtype)
    else:
        want = oracle.mxfp4_dequantize(data, scale_lin.numpy(), out_dtype)
    wide = torch.cat([data, data], dim=1).to(dev)
    runs = ((None, data.to(dev)), ((4, 32, 1), data.to(dev)), (None, wide[:, 32:]))  # last: strided rows
    if dev == "cpu" and out_dtype != torch.bfloat16:  # the interpreter: small tiles on one output dtype
        runs = runs[::2]
    for config, d in runs:
        s = scale.view(sdtype).to(dev)
        if fmt == "nvfp4":
            got = ops.nvfp4_dequantize(d, s, g.to(dev), layout, out_dtype, config)
        else:
            got = ops.mxfp4_dequantize(d, s, layout, out_dtype, config)
        assert_same_values(got.cpu(), want, f"{fmt} {config} stride {d.stride()}")


# ---- the conformance kit: `mxquant verify`'s rows for this backend ------------------------------

VERIFY = [("mxfp4_quantize", torch.bfloat16, "compressed-tensors", "swizzled"),
          ("mxfp4_quantize", torch.float16, "rceil", "linear"),
          ("nvfp4_quantize", torch.float32, None, "swizzled"),
          ("nvfp4_quantize", torch.bfloat16, None, "linear"),
          ("mxfp4_dequantize", torch.bfloat16, None, "swizzled"),
          ("nvfp4_dequantize", torch.float16, None, "linear")]


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("op, hp, mode, layout", VERIFY, ids=[ids(c) for c in VERIFY])
def test_verify_kit_passes(dev, op, hp, mode, layout):
    from mxquant.backends import triton as tb

    assert set(FP4_OPS) <= tb.backend.capabilities.ops
    result = verify_fp4.check_fp4(tb.backend, torch.device(dev), op, hp, mode, layout, seed=3)
    assert result.status == PASS and result.cases > 0, (result.reason, result.examples[:2])


# ---- CUDA only: big shapes, the public calls, CUDA graphs ---------------------------------------

@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("hp", INPUTS, ids=_name)
def test_cuda_big_shapes_and_public_calls(hp):
    x = _random((4096, 4096), 7, hp, "cuda")
    for mode, layout in itertools.product(MODES, LAYOUTS):
        check_mxfp4(x, mode, layout, name="4096x4096")
    for layout, given in itertools.product(LAYOUTS, (False, True)):
        check_nvfp4(x, given, layout, name="4096x4096")
    q = mxquant.mxfp4_quantize(x, scale_mode="compressed-tensors", scale_layout="swizzled", backend="triton")
    want = oracle.mxfp4_quantize(x.cpu(), "compressed-tensors", "swizzled")
    assert_bytes(q.data.cpu(), want[0], "public data")
    assert_bytes(q.scale.cpu(), want[1], "public scale")
    n = mxquant.nvfp4_quantize(x, backend="triton")
    y = mxquant.nvfp4_dequantize(n.data, n.scale, n.global_scale, out_dtype=hp, backend="triton")
    assert_same_values(y.cpu(), mxquant.nvfp4_dequantize(n.data.cpu(), n.scale.cpu(), n.global_scale.cpu(), out_dtype=hp),
                  "public nvfp4 dequantize")


@cuda_only
@pytest.mark.cuda
def test_cuda_nvfp4_kernel_compiles_under_its_register_cap(monkeypatch):
    """backends/_triton_fp4.py's NVFP4 quantize kernel for bf16 input (bf16 not in ops.NV_DIVISION_FREE)
    is compiled with ptxas's register cap of this card's class (ops.NVFP4_MAXNREG; none for
    classes it does not list), the MXFP4 one without, and the capped kernel's bytes are the
    oracle's."""
    from mxquant.backends import _triton_launch

    x = _random((1024, 8192), 11, torch.bfloat16, "cuda")
    kernel = ops._kernels().fp4_quantize_kernel
    cap = ops.NVFP4_MAXNREG.get(ops._card(x.device))
    monkeypatch.setattr(ops, "NV_DIVISION_FREE", frozenset())  # bf16 NVFP4 on this kernel (the other is uncapped)
    _triton_launch._PLANS.clear()
    check_nvfp4(x, True, "linear", name="capped")
    check_mxfp4(x, "rceil", "linear", name="uncapped")
    plans = [p for p in _triton_launch._PLANS.values() if p.kernel is kernel]
    _triton_launch._PLANS.clear()
    regs = {p.constexprs["NV"]: p.compiled.n_regs for p in plans if p.compiled is not None}
    assert {p.constexprs["NV"]: p.options.get("maxnreg") for p in plans} == {True: cap, False: None}
    assert cap is None or not regs or regs[True] <= cap, regs


@cuda_only
@pytest.mark.cuda
def test_cuda_graph_replay_recomputes_the_global_scale():
    x = _random((512, 1024), 8, torch.bfloat16, "cuda")
    ops.nvfp4_quantize(x, None, "compressed-tensors", "swizzled")  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.nvfp4_quantize(x, None, "compressed-tensors", "swizzled")
    x.mul_(3.0)  # a new amax: the replay must zero the amax and derive g again
    graph.replay()
    torch.cuda.synchronize()
    want = oracle.nvfp4_quantize(x.cpu(), None, "swizzled")
    assert out[2].item() == np.float32(want[2])
    assert_bytes(out[0].cpu(), want[0], "replayed data")
    assert_bytes(out[1].reshape(-1).cpu(), want[1], "replayed scale")


# ---- compiled for Hopper (no GPU needed; run without TRITON_INTERPRET) ------------------------

@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason="needs triton importable and TRITON_INTERPRET unset")
@pytest.mark.parametrize("hp", ["*bf16", "*fp32", "*fp16"])
def test_fp4_kernels_compile_for_sm90(hp, monkeypatch):
    """Every backends/_triton_fp4.py kernel at its shipped configurations (register cap included:
    bf16 NVFP4 is capped when it runs here, not in ops.NV_DIVISION_FREE) compiles for sm_90 (PTX and
    cubin), and its divisions are IEEE ones that keep subnormals (div.rn.f32, never div.full /
    div.approx / .ftz)."""
    from mxquant.backends import _triton_fp4 as k

    monkeypatch.setattr(ops, "NV_DIVISION_FREE", frozenset())
    kind = {"*fp32": 0, "*bf16": 1, "*fp16": 2}[hp]
    dtype = {"*fp32": torch.float32, "*bf16": torch.bfloat16, "*fp16": torch.float16}[hp]
    compiled, nv_kernels = [], []
    for (nv, given, mode, swz), card in itertools.product(
            [(False, False, "rceil", False), (False, False, "compressed-tensors", True), (False, False, "floor", False),
             (True, False, "compressed-tensors", True), (True, True, "compressed-tensors", False)], ops.FP4_CONFIGS):
        bm, bk, warps, spread, evict = ops._tile_plan(nv, False, swz, dtype, 8192, 8192, None, None, card)
        c = dict(NV=nv, GIVEN=given, RCEIL=mode == "rceil", TIE_UP=mode == "compressed-tensors", X_KIND=kind,
                 SWIZZLED=swz, BLOCK_M=bm, BLOCK_K=bk, MASK=swz, EVICT=evict, BIG=swz,
                 INTERPRETED=False, NK_SHIFT=-1 if swz else 0, SPREAD=spread)
        g = ("*i32" if not given else "*fp32") if nv else "*u8"
        cap = ops._maxnreg(nv, None, dtype, card)
        compiled.append(_aot_compile_as_launched(k.fp4_quantize_kernel, [hp, "*u8", "*u8", g, "*fp32" if nv else "*u8"],
                                                 c, warps, None, options={"maxnreg": cap} if cap else None))
        # the register cap the launch gives it reaches the PTX (bf16 NVFP4 on the H100's class)
        assert (f".maxnreg {cap}" in compiled[-1].asm["ptx"]) if cap else ".maxnreg" not in compiled[-1].asm["ptx"]
        assert bool(cap) == (nv and hp == "*bf16" and card in ops.NVFP4_MAXNREG), (hp, nv, card)
        if nv:
            nv_kernels.append(compiled[-1])
        if nv and not given:
            c = dict(BLOCK_M=bm, BLOCK_K=bk, BIG=False, INTERPRETED=False)
            compiled.append(_aot_compile(k.amax_kernel, [hp, "*i32"], c, warps))
        bm, bk, warps = ops._config(8192, 8192, 16 if nv else 32, False, "dequantize", None, None, card=card)
        c = dict(NV=nv, SWIZZLED=swz, BLOCK_M=bm, BLOCK_K=bk, EVICT="evict_first", BIG=swz, INTERPRETED=False)
        compiled.append(_aot_compile(k.fp4_dequantize_kernel, ["*u8", "*u8", "*fp32" if nv else "*u8", hp], c, warps))
    for ck in compiled:
        ptx = ck.asm["ptx"]
        assert ck not in nv_kernels or "div.rn.f32" in ptx, "NVFP4 divides with div.rn.f32"
        # NVFP4's e4m3 scale byte from the fp32 bits, not the hardware conversion (whose byte missed
        # the 0 -> 0x20 rule on an H100, 2026-12-05); its subnormal rounding, + 2**14 then - 2**14,
        # is still there (not folded away)
        assert ck not in nv_kernels or ("satfinite.e4m3" not in ptx and "0f46800000" in ptx and "0fC6800000" in ptx)
        assert "div.full" not in ptx and "div.approx" not in ptx and ".ftz" not in ptx, ck.name


@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason="needs triton importable and TRITON_INTERPRET unset")
@pytest.mark.parametrize("hp", ["*bf16", "*fp32", "*fp16"])
def test_fp4_compiled_kernel_stores_packed_bytes_as_computed(hp):
    """The quantize kernel, compiled as a launch specializes it, stores its packed bytes in the
    layout it computes them in: the TTGIR's one layout conversion is the scale bytes' (before
    2026-12-05, seventh session, the packed bytes went through shared memory too, 2-4 KB and
    three barriers, to be stored 8 to a thread), at the shipped tiles and at many-row tiles."""
    from mxquant.backends import _triton_fp4 as k

    kind = {"*fp32": 0, "*bf16": 1, "*fp16": 2}[hp]
    divisible = {"M", "K", "stride_xm", "scale_rows", "scale_cols"}
    for nv, swz, (bm, bk, warps) in itertools.product((False, True), (False, True),
                                                      ((1, 8192, 8), (2, 4096, 8), (4, 2048, 8), (32, 256, 8))):
        c = dict(NV=nv, GIVEN=True, RCEIL=True, TIE_UP=False, X_KIND=kind, SWIZZLED=swz, BLOCK_M=bm, BLOCK_K=bk,
                 MASK=swz, EVICT="evict_last", BIG=False, INTERPRETED=False,
                 NK_SHIFT=0, SPREAD=ops._spread(swz, bm, None))
        ck = _aot_compile_as_launched(k.fp4_quantize_kernel, [hp, "*u8", "*u8", "*fp32", "*fp32"], c, warps, divisible)
        what = f"{hp} NV {nv} swizzled {swz} tile {bm} x {bk} / {warps}"
        assert ck.asm["ttgir"].count("ttg.convert_layout") == 1 and ck.metadata.shared <= 512, what
