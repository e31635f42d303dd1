"""Finding and loading the native CPU kernel (backends/csrc/mxq_cpu.c, built by setup.py).

The library is plain C called through ctypes, so it has no Python or libtorch ABI and ctypes
releases the GIL during each call. `load()` returns the library, or None and a reason that
says what to do: never built (and why, from the note setup.py leaves), built but not loadable,
or left by an earlier build when a later one failed (a note newer than the library).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.machinery
import os
from typing import Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
STEM = "_mxq_cpu"
ERROR_FILE = os.path.join(HERE, STEM + ".build-error.txt")  # written by setup.py on failure
ABI_VERSION = 10  # 2: mxq_isa_name / mxq_select_isa (the instruction-set variants); 3: mxq_error_sums;
# 4: mxq_quantize_colwise / _rowcol / _2d / _grouped (backends/csrc/mxq_cpu_training.c);
# 5: mxq_mxfp4_quantize / _dequantize, mxq_nvfp4_quantize / _dequantize (backends/csrc/mxq_cpu_fp4.c);
# 6: mxq_kgroups_rearrange (backends/csrc/mxq_cpu_kgroup.c: K-groups, mxfp8_quantize_grouped(axis=-2));
# 7: mxq_fp4_force_no_f16c (test hook: the AVX2 variant's fp16 path of a CPU without F16C, mxq_cpu_fp4.c);
# 8: mxq_fp8block_quantize (backends/csrc/mxq_cpu_fp8block.c: FP8 128x128 blocks and their error sums);
# 9: mxq_col_order / mxq_set_col_order (the column-wise walk, mxq_cpu_training.c)
# 10: mxq_set_col_order returns the setting it replaced
HP_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # the C code's in_dtype / out_dtype
MODE_CODE = {"rceil": 0, "floor": 1, "compressed-tensors": 2}

_i64, _int, _ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p


def library_path() -> Optional[str]:
    """The built library next to this file, if any (any of this Python's extension suffixes)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(HERE, STEM + suffix)
        if os.path.isfile(path):
            return path
    return None


def _not_built_reason() -> str:
    if os.path.isfile(ERROR_FILE):
        with open(ERROR_FILE) as f:
            return "not built: " + f.read().strip()
    return ("not built: no compiled library next to mxquant/backends (install from a source checkout "
            "on a machine with a C compiler: pip install -e .)")


@functools.lru_cache(maxsize=None)
def load() -> tuple[Optional[ctypes.CDLL], Optional[str]]:
    """(library, None) or (None, reason)."""
    path = library_path()
    if path is None:
        return None, _not_built_reason()
    if os.path.isfile(ERROR_FILE) and os.path.getmtime(ERROR_FILE) >= os.path.getmtime(path):
        # a later build failed (setup.py removes the old library; this catches one it could not)
        return None, f"{_not_built_reason()} (the library from an earlier build, {path}, is stale: not loaded)"
    try:
        lib = ctypes.CDLL(path)
        version = lib.mxq_abi_version()
        if version != ABI_VERSION:
            return None, f"library failed to load: {path} has ABI {version}, expected {ABI_VERSION} (reinstall: pip install -e .)"
        lib.mxq_quantize.argtypes = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr, _int, _int, _int, _int]
        lib.mxq_quantize.restype = _int
        lib.mxq_dequantize.argtypes = [_ptr, _i64, _i64, _i64, _ptr, _int, _int, _ptr, _int, _int]
        lib.mxq_dequantize.restype = _int
        lib.mxq_error_sums.argtypes = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr, _int, _ptr, _ptr, _int]
        lib.mxq_error_sums.restype = _int
        x_args = [_ptr, _int, _i64, _i64, _i64, _i64, _i64]  # x, in_dtype, batches, M, K, batch / row stride
        lib.mxq_quantize_colwise.argtypes = [*x_args, _ptr, _ptr, _int, _int, _int, _int]
        lib.mxq_quantize_rowcol.argtypes = [*x_args, _ptr, _ptr, _ptr, _ptr, _int, _int, _int, _int]
        lib.mxq_quantize_2d.argtypes = [*x_args, _ptr, _ptr, _int, _int, _int]
        lib.mxq_quantize_grouped.argtypes = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr, _i64, _ptr, _i64, _ptr, _int,
                                             _int, _int]
        # linear scales, N, T / 32, ends, groups, scale, scale bytes, threads
        lib.mxq_kgroups_rearrange.argtypes = [_ptr, _i64, _i64, _ptr, _i64, _ptr, _i64, _int]
        # x, in_dtype, rows, K, row stride (elements), data, scale | data, rows, K, row stride (bytes), scale
        q_args, dq_args = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr], [_ptr, _i64, _i64, _i64, _ptr]
        lib.mxq_mxfp4_quantize.argtypes = [*q_args, _int, _int, _int]  # mode, swizzled, threads
        lib.mxq_nvfp4_quantize.argtypes = [*q_args, _ptr, _int, _int, _int]  # g, compute g, swizzled, threads
        lib.mxq_mxfp4_dequantize.argtypes = [*dq_args, _int, _ptr, _int, _int]  # swizzled, out, out dtype, threads
        lib.mxq_nvfp4_dequantize.argtypes = [*dq_args, _ptr, _int, _ptr, _int, _int]  # g, swizzled, out, ...
        for fn in (lib.mxq_quantize_colwise, lib.mxq_quantize_rowcol, lib.mxq_quantize_2d, lib.mxq_quantize_grouped,
                   lib.mxq_kgroups_rearrange,
                   lib.mxq_mxfp4_quantize, lib.mxq_nvfp4_quantize, lib.mxq_mxfp4_dequantize, lib.mxq_nvfp4_dequantize):
            fn.restype = _int
        # x, in_dtype, rows, K, row stride (elements), data, scale, esum (or NULL), sums, threads
        lib.mxq_fp8block_quantize.argtypes = [_ptr, _int, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _int]
        lib.mxq_fp8block_quantize.restype = _int
        lib.mxq_fp4_force_no_f16c.argtypes = [_int]
        lib.mxq_fp4_force_no_f16c.restype = _int
        lib.mxq_isa.restype = ctypes.c_char_p
        lib.mxq_isa_name.argtypes = [_int, ctypes.POINTER(_int)]
        lib.mxq_isa_name.restype = ctypes.c_char_p
        lib.mxq_select_isa.argtypes = [_int]
        lib.mxq_select_isa.restype = _int
        lib.mxq_col_order.restype = _int
        lib.mxq_set_col_order.argtypes = [_int]
        lib.mxq_set_col_order.restype = _int
    except (OSError, AttributeError) as exc:
        return None, f"library failed to load: {path}: {exc}"
    return lib, None


def require():
    """The loaded library, or RuntimeError saying why not (a call reached cpu-native where it cannot run)."""
    lib, reason = load()
    if lib is None:
        raise RuntimeError(f"cpu-native: {reason}")
    return lib


def isa_variants(lib) -> list[tuple[str, bool]]:
    """The kernel's instruction-set variants, best first: (name as `mxquant info` shows it,
    whether this CPU can run it). The first runnable one is used unless select_isa chose."""
    out, i, ok = [], 0, _int()
    while (name := lib.mxq_isa_name(i, ctypes.byref(ok))) is not None:
        out.append((name.decode(), bool(ok.value)))
        i += 1
    return out


def select_isa(lib, name: Optional[str]) -> None:
    """Test hook: run the variant `name` from now on (None: the automatic choice). Raises
    ValueError for an unknown name or one this CPU cannot run. Not while calls are running."""
    names = [n for n, _ in isa_variants(lib)]
    if name is not None and name not in names:
        raise ValueError(f"unknown instruction-set variant {name!r}; known: {', '.join(names)}")
    if lib.mxq_select_isa(-1 if name is None else names.index(name)) != 0:
        raise ValueError(f"this CPU cannot run the {name!r} variant")


COL_ORDERS = ("bands", "column")
"""The column-wise call's walks of a work unit (mxq_cpu_training.c): 64-column tiles of bands two
at a time across the unit, or each tile column down all of the unit's bands; the same bytes."""


def col_order(lib) -> Optional[str]:
    """The column-wise walk in use ("column" on AMD CPUs, "bands" elsewhere, unless set), or None
    where the variant in use has one walk: only the AVX2 and AVX-512 variants have two (the
    baseline, aarch64 and generic code walks band by band)."""
    if "avx" not in lib.mxq_isa().decode():
        return None
    return COL_ORDERS[lib.mxq_col_order()]


def set_col_order(lib, name: Optional[str]) -> Optional[str]:
    """Test and benchmark hook: the column-wise walk from now on (None: the automatic choice);
    returns the setting it replaced (the C library's). Not while calls are running."""
    if name is not None and name not in COL_ORDERS:
        raise ValueError(f"unknown column-wise walk {name!r}; known: {', '.join(COL_ORDERS)}")
    previous = lib.mxq_set_col_order(-1 if name is None else COL_ORDERS.index(name))
    return None if previous < 0 else COL_ORDERS[previous]


@contextlib.contextmanager
def forced_col_order(lib, name: Optional[str]):
    """set_col_order(lib, name) inside the block, the setting before it again after it (so that
    blocks nest)."""
    previous = set_col_order(lib, name)
    try:
        yield
    finally:
        set_col_order(lib, previous)
