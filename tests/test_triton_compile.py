"""The Triton kernels compile for Hopper (sm_90) at their shipped configurations, by Triton's own
compiler and the wheel's ptxas, with no GPU: what the interpreter run of
tests/test_triton_training.py cannot check (layouts, types the compiler rejects, register
spills). Needs triton importable and TRITON_INTERPRET unset; the main environment has no
triton, so here it skips, and tests/test_triton_interpreter.py runs it in the side
environment that has."""

from __future__ import annotations

import inspect
import itertools
import os
import re

import pytest

from training_helpers import GLUON_TEST_CONFIGS

try:
    import triton  # noqa: F401
    _NO_TRITON = None
except Exception as exc:  # ImportError, or a broken install
    _NO_TRITON = f"{type(exc).__name__}: {exc}"
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _aot_compile(fn, pointers, constexprs, warps):
    """fn compiled for sm_90 by Triton's own compiler (PTX and cubin through the wheel's ptxas):
    no GPU needed; what the interpreter cannot check (layouts, types the compiler rejects). No
    alignment or divisibility assumed (_aot_compile_as_launched assumes what a launch gets)."""
    return _aot_compile_as_launched(fn, pointers, constexprs, warps, divisible=None)


@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason=f"needs triton importable and TRITON_INTERPRET unset "
                    f"(Triton's compiler, no GPU needed){': ' + _NO_TRITON if _NO_TRITON else ''}")
@pytest.mark.parametrize("hp", ["*bf16", "*fp32", "*fp16"])
def test_kernels_compile_for_sm90(hp):
    """Every kernel at its shipped configuration, both element dtypes and layouts, compiles for
    Hopper (the interpreter runs the Python; this runs the compiler)."""
    from mxquant.backends import _triton_kernels, _triton_training
    from mxquant.backends import _triton_training_ops as ops

    for e5, (mode, swz) in itertools.product((False, True), (("rceil", False), ("compressed-tensors", True))):
        modes = dict(EMAX=15 if e5 else 8, RCEIL=mode == "rceil", TIE_UP=mode != "rceil", E5M2=e5)
        fp8 = "*fp8e5" if e5 else "*fp8e4nv"
        for row in (False, True):
            bm, bk, warps = ops._block_config("rowcol" if row else "colwise", None, swz, row)
            c = dict(**modes, ROW=row, SWIZZLED=swz, BLOCK_M=bm, BLOCK_K=bk, EVICT="evict_last", BIG=row, INTERPRETED=False)
            _aot_compile(_triton_training.rowcol_kernel, [hp, fp8, "*u8", fp8, "*u8"], c, warps)
        bm, bk, warps = ops.TRAINING_CONFIGS["2d"]
        c = dict(**modes, BLOCK_M=bm, BLOCK_K=bk, EVICT="evict_last", BIG=swz, INTERPRETED=False)
        _aot_compile(_triton_training.tiles_kernel, [hp, fp8, "*u8"], c, warps)
        c = dict(**modes, BLOCK_M=8, BLOCK_K=512, G_PAD=256, EVICT="evict_last", BIG=swz, INTERPRETED=False)
        _aot_compile(_triton_training.tokens_kernel, [hp, "*i32", fp8, "*u8"], c, 4)
        c = dict(**modes, SWIZZLED=True, BLOCK_M=8, BLOCK_K=512, MASK_M=True, MASK_K=swz, EVICT="evict_last",
                 PERSISTENT=False, STAGES=1, BIG=False, SPREAD=True, INTERPRETED=False)
        _aot_compile(_triton_training.experts_kernel, [hp, fp8, "*u8"], c, 4)
        _aot_compile(_triton_kernels.mxfp8_quantize_kernel, [hp, fp8, "*u8"], {**c, "SWIZZLED": swz}, 4)


def _aot_compile_as_launched(fn, pointers, constexprs, warps, divisible, gluon=False, options=None):
    """fn compiled for sm_90 as a launch specializes it (what the layouts and vector widths depend
    on): 16-byte aligned pointers, the integers in `divisible` multiples of 16 (constexprs hold
    the ones equal to 1); divisible None: no such attributes at all; a Gluon kernel with gluon;
    options: other compile options (maxnreg)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource
    if gluon:
        from triton.experimental.gluon._runtime import GluonASTSource as source
    constexprs = {**{p.name: p.default for p in fn.params if p.is_constexpr and p.name not in constexprs
                     and p.default is not inspect.Parameter.empty}, **constexprs}  # defaulted ones as a launch fills them
    it = iter(pointers)
    sig = {n: "constexpr" if n in constexprs else (next(it) if n.endswith("_ptr") else "i32") for n in fn.arg_names}
    attrs = {} if divisible is None else {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
                                          if sig[n] != "constexpr" and (n.endswith("_ptr") or n in divisible)}
    return triton.compile(source(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, **(options or {})})


@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason=f"needs triton importable and TRITON_INTERPRET unset "
                    f"(Triton's compiler, no GPU needed){': ' + _NO_TRITON if _NO_TRITON else ''}")
@pytest.mark.parametrize("hp", ["*bf16", "*fp32", "*fp16"])
def test_gluon_colwise_kernel_moves_no_data_between_threads(hp):
    """backends/_gluon_training.py at its shipped and tested shapes compiles for Hopper, and its
    PTX is what its docstring claims: no shared memory and no barrier (the transpose is a
    renumbering of registers), x read in 16-byte vectors, the column-wise data written HALF
    bytes per store (16 rows per thread: 16-byte stores; 8: 8-byte ones)."""
    from mxquant.backends import _gluon_training as g
    from mxquant.backends import _triton_training_ops as ops

    divisible = {"M", "K", "stride_l", "stride_m", "m_last", "k_last", "rs_cols", "cs_cols"}
    shapes = {(*cfg, 1)[:3] for cfg in [*ops.GLUON_CONFIGS.values(), *(c[1:] for c in GLUON_TEST_CONFIGS)]}
    flags = (False, True)
    # e5m2 changes only the element conversion, not a layout or a store: it rides along, on in half of
    # the (ROW, SWIZZLED) pairs, so that each pair is one compile (a cold compile is about a second,
    # and CI's Triton cache starts empty); prefetch with ROW
    for (half, warps, slabs), row, swz, packed in itertools.product(sorted(shapes), flags, flags, flags):
        if packed and (slabs == 1 or (swz and slabs == 8)):  # packed words: 2 or more slabs, swizzled 2 or 4
            continue
        if (packed or slabs == 8) and hp != "*bf16":  # the same code but the load's dtype: one input dtype
            continue
        e5 = row != swz
        load, store = g.layouts(half, warps)
        c = dict(EMAX=15 if e5 else 8, RCEIL=not swz, TIE_UP=swz, E5M2=e5, stride_k=1, L=1, ROW=row, SWIZZLED=swz,
                 HALF=half, NW=warps, SLABS=slabs, LOAD=load, STORE=store, BIG=False, CS_EVICT="", CD_EVICT="",
                 PACKED=packed, PREFETCH=packed and row)
        fp8 = "*fp8e5" if e5 else "*fp8e4nv"
        k = _aot_compile_as_launched(g.rowcol_kernel, [hp, fp8, "*u8", fp8, "*u8"], c, warps, divisible, gluon=True)
        ptx = k.asm["ptx"]
        what = f"{hp} HALF {half} warps {warps} slabs {slabs} ROW {row} swizzled {swz} e5m2 {e5} packed {packed}"
        assert k.metadata.shared == 0 and "bar.sync" not in ptx, what
        loads = [ln for ln in ptx.splitlines() if "ld.global" in ln]
        assert loads and all(".v4." in ln for ln in loads), what
        vec = {16: "st.global.v4.b32 ", 8: "st.global.v2.b32 ", 4: "st.global.b32 "}[half]
        stores = {w: sum(f"st.global.{w} " in ln for ln in ptx.splitlines()) for w in ("b16", "b32", "v2.b32", "v4.b32")}
        assert stores[vec[10:-1]] >= 8 * slabs, what  # the data: 8 columns per thread and slab
        if slabs > 1:  # a column's scale bytes of the tile's slabs in one store (8 linear bytes: two words;
            # swizzled, 4 at a time: the next 4 are in the next 512-byte block)
            width = {2: "b16", 4: "b32", 8: "b32" if swz else "v2.b32"}[slabs]
            assert stores[width] > (8 * slabs if width == vec[10:-1] else 0), what
    for name in ("colwise", "colwise swizzled") if hp == "*bf16" else ():  # the shipped stores' policies (one dtype)
        half, warps, slabs, _ = ops._gluon_shape(("gluon", *ops.GLUON_CONFIGS[name]))
        cs, cd = ops._gluon_policies(("gluon", *ops.GLUON_CONFIGS[name]))
        flags = ops._gluon_flags(("gluon", *ops.GLUON_CONFIGS[name]))
        load, store = g.layouts(half, warps)
        c = dict(EMAX=8, RCEIL=True, TIE_UP=False, E5M2=False, stride_k=1, L=1, ROW=False, SWIZZLED="swizzled" in name,
                 HALF=half, NW=warps, SLABS=slabs, LOAD=load, STORE=store, BIG=False, CS_EVICT=cs, CD_EVICT=cd,
                 PACKED="packed" in flags, PREFETCH="prefetch" in flags)
        ptx = _aot_compile_as_launched(g.rowcol_kernel, [hp, "*fp8e4nv", "*u8", "*fp8e4nv", "*u8"], c, warps, divisible,
                                       gluon=True).asm["ptx"]
        hint = f".L1::{cs}.L2::cache_hint" if cs else ""
        assert re.search(rf"st\.global{re.escape(hint)}\.b{8 * slabs} ", ptx), (name, cs)
        if "prefetch" in flags:  # the second slab's loads (HALF a slab) are issued before the first slab's stores
            lines = [ln for ln in ptx.splitlines() if "ld.global" in ln or "st.global" in ln]
            first_store = next(i for i, ln in enumerate(lines) if "st.global" in ln)
            assert first_store == 2 * half and all("ld.global" in ln for ln in lines[:first_store]), (name, lines[:20])
    load, store = g.layouts(8, 2)  # 64-bit offsets (BIG) compile too
    for row, swz in itertools.product((False, True), (False, True)):
        if not swz:  # packed words, 8 slabs
            c = dict(EMAX=8, RCEIL=True, TIE_UP=False, E5M2=False, ROW=row, SWIZZLED=False, HALF=8, NW=2, SLABS=8,
                     LOAD=load, STORE=store, BIG=True, CS_EVICT="evict_last", CD_EVICT="", PACKED=True, PREFETCH=True)
            _aot_compile_as_launched(g.rowcol_kernel, [hp, "*fp8e4nv", "*u8", "*fp8e4nv", "*u8"], c, 2, divisible,
                                     gluon=True)
        c = dict(EMAX=8, RCEIL=True, TIE_UP=False, E5M2=False, ROW=row, SWIZZLED=swz, HALF=8, NW=2, SLABS=2,
                 LOAD=load, STORE=store, BIG=True, CS_EVICT="evict_last", CD_EVICT="evict_first", PACKED=False,
                 PREFETCH=False)
        _aot_compile_as_launched(g.rowcol_kernel, [hp, "*fp8e4nv", "*u8", "*fp8e4nv", "*u8"], c, 2, divisible,
                                 gluon=True)


@pytest.mark.skipif(bool(_NO_TRITON), reason=f"needs triton importable{': ' + _NO_TRITON if _NO_TRITON else ''}")
def test_every_kernel_takes_the_raw_launch():
    """Each Triton / Gluon kernel of the backend (every `*_kernel` of its kernel modules) has the
    parameter shape the raw launch needs (backends/_triton_launch.py launch_tail): pointers,
    then runtime integers, then constexprs only, none of them defaulted but as launch_tail fills
    in. Whether each plan passes what its kernel takes is left to the CUDA tests (a plan whose
    launch_tail is None keeps Triton's own, slower launch)."""
    import triton

    from mxquant.backends import _gluon_training, _triton_dequant, _triton_fp4, _triton_kernels, _triton_training
    from mxquant.backends._triton_launch import launch_tail

    modules = (_triton_kernels, _triton_training, _triton_fp4, _gluon_training, _triton_dequant)
    kernels = {f"{m.__name__}.{n}": k for m in modules
               for n, k in vars(m).items() if n.endswith("_kernel") and isinstance(k, triton.runtime.JITFunction)}
    assert {k.split(".")[-2] for k in kernels} == {m.__name__.split(".")[-1] for m in modules}, sorted(kernels)
    for name, k in kernels.items():
        n_ptr = sum(p.name.endswith("_ptr") for p in k.params)
        n_int = sum(not p.is_constexpr for p in k.params) - n_ptr
        given = {p.name: 0 for p in k.params if p.is_constexpr and p.default is inspect.Parameter.empty}
        tail = launch_tail(k, n_ptr, (0,) * n_int, given)
        assert tail is not None and len(tail) == len(k.params) - n_ptr, name
