"""The `cpu-native` backend: the C kernel of backends/csrc/mxq_cpu.c (and mxq_cpu_training.c for
the training and MoE calls, all five of backend.TRAINING_OPS, K-groups with mxq_cpu_kgroup.c; mxq_cpu_fp4.c for the four
MXFP4 / NVFP4 calls of backend.FP4_OPS, _cpu_native_fp4.py), called through ctypes.

Byte-exact with the reference, multi-threaded over row blocks (torch.get_num_threads()
threads, GIL released), instruction set picked at run time. Outputs are the only large
allocations: a row-strided input is read in place; only an input whose last dimension is
not contiguous (or whose rows cannot be addressed with one stride) is copied first.

`quantize_into` / `dequantize_into` write into caller-provided buffers; they exist so the
benchmark can measure what reusing outputs saves (mxquant's public API has no out=).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from mxquant.backend import FP4_OPS, TRAINING_OPS, Backend
from mxquant.formats import BLOCK
from mxquant.layouts import expert_scale_shape, grouped_scale_shape, kgroup_scale_shape, scale_shape
from mxquant.outputs import own_outputs

from . import _cpu_native_fp4 as _fp4
from . import _native_lib
from ._common import as_rows
from ._cpu_shared import (CPU_CAPABILITIES, check_dequantize_buffer, check_quantize_buffers, dequantize_fresh,
                          new_outputs, quantize_fresh)

_HP_CODE, _MODE_CODE = _native_lib.HP_CODE, _native_lib.MODE_CODE
_ELEM_CODE = {torch.float8_e4m3fn: 0, torch.float8_e5m2: 1}
_lib = _native_lib.require


def quantize_into(x, data, scale, dtype, scale_mode, scale_layout) -> None:
    """Quantize `x` into `data` (x's element count, uint8 or `dtype`) and `scale` (the layout's
    element count, uint8 or float8_e8m0fnu). Checks the buffers before writing anything."""
    if x.device.type != "cpu":
        raise ValueError(f"cpu-native: x is on {x.device}, expected cpu")
    check_quantize_buffers(x, data, scale, dtype, scale_layout)
    _quantize(x, data, scale, dtype, scale_mode, scale_layout)


def _quantize(x, data, scale, dtype, scale_mode, scale_layout) -> None:
    lib = _lib()
    k = x.shape[-1]
    x2 = as_rows(x)
    rc = lib.mxq_quantize(x2.data_ptr(), _HP_CODE[x.dtype], x2.shape[0], k, x2.stride(0), data.data_ptr(),
                          scale.data_ptr(), _ELEM_CODE[dtype], _MODE_CODE[scale_mode],
                          int(scale_layout == "swizzled"), torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"cpu-native: mxq_quantize returned {rc}")


def quantize(x, dtype, scale_mode, scale_layout):
    return quantize_fresh(_quantize, x, dtype, scale_mode, scale_layout)


def dequantize_into(data, scale, scale_layout, out) -> None:
    """Dequantize into `out` (data's element count; its dtype is the output dtype)."""
    check_dequantize_buffer(data, scale, scale_layout, out)
    _dequantize(data, scale, scale_layout, out)


def _dequantize(data, scale, scale_layout, out) -> None:
    lib = _lib()
    k = data.shape[-1]
    d2 = as_rows(data.view(torch.uint8))
    s = scale.view(torch.uint8).contiguous()  # linear scales may be strided; they are small
    rc = lib.mxq_dequantize(d2.data_ptr(), d2.shape[0], k, d2.stride(0), s.data_ptr(), _ELEM_CODE[data.dtype],
                            int(scale_layout == "swizzled"), out.data_ptr(), _HP_CODE[out.dtype],
                            torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"cpu-native: mxq_dequantize returned {rc}")


def dequantize(data, scale, scale_layout, out_dtype):
    return dequantize_fresh(_dequantize, data, scale, scale_layout, out_dtype)


def error_sums(x, data, scale) -> tuple[float, float]:
    """(sum(x^2), sum((x - dq)^2)) for the MXFP8 result (data, linear scale) of the CPU tensor
    x, dq its exact dequantization: the C kernel in one pass, in double, the same for any
    thread count. For `mxquant convert`'s manifest (not a
    backend op). Raises RuntimeError where the library is not built."""
    lib = _lib()
    k = x.shape[-1]
    x2, d2 = as_rows(x), data.view(torch.uint8).reshape(-1, k)
    s = scale.view(torch.uint8).contiguous()
    esum = torch.empty(2 * x2.shape[0], dtype=torch.float64, device="cpu")
    sums = torch.empty(2, dtype=torch.float64, device="cpu")
    rc = lib.mxq_error_sums(x2.data_ptr(), _HP_CODE[x.dtype], x2.shape[0], k, x2.stride(0), d2.data_ptr(),
                            s.data_ptr(), _ELEM_CODE[data.dtype], esum.data_ptr(), sums.data_ptr(),
                            torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"cpu-native: mxq_error_sums returned {rc}")
    return float(sums[0]), float(sums[1])


def fp8block_quantize(x, sums: bool = True):
    """FP8 e4m3 with one scale per 128x128 block of the CPU tensor x [R, K] (bf16 / fp16 / fp32,
    K % 128 == 0): (data float8_e4m3fn [R, K], scale [ceil(R/128), K/128] in x.dtype, (sum(x^2),
    sum((x - dq)^2)) or None), the bytes of mxquant/checkpoint/fp8block.quantize (the C kernel of
    backends/csrc/mxq_cpu_fp8block.c in one pass; the sums in double, the same for any thread
    count). For `mxquant convert --scheme fp8-block` (not a backend op). Raises RuntimeError where
    the library is not built."""
    lib = _lib()
    r, k = x.shape
    x2 = as_rows(x)
    nblocks = -(-r // 128) * (k // 128)
    data = torch.empty((r, k), dtype=torch.float8_e4m3fn, device="cpu")
    scale = torch.empty((-(-r // 128), k // 128), dtype=x.dtype, device="cpu")
    esum = torch.empty(2 * nblocks, dtype=torch.float64, device="cpu") if sums else None
    out = torch.empty(2, dtype=torch.float64, device="cpu")
    rc = lib.mxq_fp8block_quantize(x2.data_ptr(), _HP_CODE[x.dtype], r, k, x2.stride(0), data.data_ptr(),
                                   scale.data_ptr(), None if esum is None else esum.data_ptr(), out.data_ptr(),
                                   torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"cpu-native: mxq_fp8block_quantize returned {rc}")
    return data, scale, ((float(out[0]), float(out[1])) if sums else None)


# ---- the training and MoE calls (backend.TRAINING_OPS; backends/csrc/mxq_cpu_training.c) -------
# Column-wise, row+column and 32x32 tiles walk x in bands of 32 rows (x read once, the transpose
# never materialised); grouped is the row-wise kernel writing each group's swizzled scales. An
# input is read in place where its last dimension is contiguous and its leading dimensions merge
# into one stride, else copied once; a column-wise x whose dim -2 is the contiguous one (y.mT)
# is y's row-wise call, read in place.

def _check(rc: int, fn: str) -> None:
    if rc != 0:
        raise RuntimeError(f"cpu-native: {fn} returned {rc}")


def _batched(x: torch.Tensor):
    """x (..., M, K) as (L, M, K) with unit stride along K (a view where possible), and the C
    arguments for it: (pointer, input dtype code, L, M, K, batch stride, row stride)."""
    *lead, m, k = x.shape
    n = math.prod(lead)
    if x.stride(-1) != 1 and k > 1:
        x = x.contiguous()
    try:
        x3 = x.view(n, m, k)
    except RuntimeError:  # leading dimensions whose strides do not merge
        x3 = x.contiguous().view(n, m, k)
    return x3, (x3.data_ptr(), _HP_CODE[x.dtype], n, m, k, x3.stride(0), x3.stride(1))


def _transposed(shape) -> tuple:
    return (*shape[:-2], shape[-1], shape[-2])


def quantize_colwise(x, dtype, scale_mode, scale_layout):
    if x.stride(-1) != 1 and x.stride(-2) == 1 and x.shape[-1] > 1:
        return quantize(x.mT, dtype, scale_mode, scale_layout)  # x.mT's rows are contiguous: read in place
    shape = _transposed(x.shape)
    data, scale = new_outputs(shape, dtype, scale_shape(shape, scale_layout))
    x3, args = _batched(x)
    _check(_lib().mxq_quantize_colwise(*args, data.data_ptr(), scale.data_ptr(), _ELEM_CODE[dtype], _MODE_CODE[scale_mode],
                                       int(scale_layout == "swizzled"), torch.get_num_threads()), "mxq_quantize_colwise")
    return data, scale


def quantize_rowcol(x, dtype, scale_mode, scale_layout):
    shape, t = tuple(x.shape), _transposed(x.shape)
    rdata, rscale = new_outputs(shape, dtype, scale_shape(shape, scale_layout))
    cdata, cscale = new_outputs(t, dtype, scale_shape(t, scale_layout))
    x3, args = _batched(x)
    _check(_lib().mxq_quantize_rowcol(*args, rdata.data_ptr(), rscale.data_ptr(), cdata.data_ptr(), cscale.data_ptr(),
                                      _ELEM_CODE[dtype], _MODE_CODE[scale_mode], int(scale_layout == "swizzled"),
                                      torch.get_num_threads()), "mxq_quantize_rowcol")
    return rdata, rscale, cdata, cscale


def quantize_2d(x, dtype, scale_mode):
    *lead, m, k = x.shape
    data, scale = new_outputs(tuple(x.shape), dtype, (*lead, m // BLOCK, k // BLOCK))
    x3, args = _batched(x)
    _check(_lib().mxq_quantize_2d(*args, data.data_ptr(), scale.data_ptr(), _ELEM_CODE[dtype], _MODE_CODE[scale_mode],
                                  torch.get_num_threads()), "mxq_quantize_2d")
    return data, scale


def quantize_grouped(x, group_ends, dtype, scale_mode):
    """3-D experts (E, N, K) are E groups of N rows; token groups (T, K) have their own ends."""
    k = x.shape[-1]
    if group_ends is None:
        e, n, _ = x.shape
        ends = torch.arange(1, e + 1, dtype=torch.int64, device="cpu") * n
        scale_dims = expert_scale_shape(tuple(x.shape))
    else:
        ends = group_ends
        scale_dims = grouped_scale_shape(x.shape[0], k, group_ends.shape[0])
    data, scale = new_outputs(tuple(x.shape), dtype, scale_dims)
    if ends.numel() == 0:  # no experts: nothing to write
        return data, scale
    ends = ends.to(torch.int32).contiguous()
    x2 = as_rows(x)
    gbuf = torch.empty(2 * ends.numel(), dtype=torch.int64, device="cpu")
    _check(_lib().mxq_quantize_grouped(x2.data_ptr(), _HP_CODE[x.dtype], x2.shape[0], k, x2.stride(0), data.data_ptr(),
                                       scale.data_ptr(), scale.numel(), ends.data_ptr(), ends.numel(), gbuf.data_ptr(),
                                       _ELEM_CODE[dtype], _MODE_CODE[scale_mode], torch.get_num_threads()), "mxq_quantize_grouped")
    return data, scale


def quantize_grouped_colwise(x, group_ends, dtype, scale_mode):
    """K-groups (x (T, N), axis=-2): the column-wise call above with linear scales, then each token
    group's scale columns placed in their own 128x4 layout (mxq_kgroups_rearrange,
    backends/csrc/mxq_cpu_kgroup.c)."""
    t, n = x.shape
    data, linear = quantize_colwise(x, dtype, scale_mode, "linear")
    (size,) = kgroup_scale_shape(t, n, group_ends.shape[0])
    scale = torch.empty(size, dtype=torch.float8_e8m0fnu, device="cpu")
    ends = group_ends.contiguous()
    _check(_lib().mxq_kgroups_rearrange(linear.data_ptr(), n, t // BLOCK, ends.data_ptr(), ends.numel(),
                                        scale.data_ptr(), size, torch.get_num_threads()), "mxq_kgroups_rearrange")
    return data, scale


def _probe(device: torch.device):
    if device.type != "cpu":
        return f"serves cpu only, not {device.type}"
    return _native_lib.load()[1]


def _description() -> str:
    lib, _ = _native_lib.load()
    isa = lib.mxq_isa().decode() if lib is not None else "not loaded"
    order = _native_lib.col_order(lib) if lib is not None else None
    walk = f", column-wise in {order} order" if order else ""
    return f"C kernel (backends/csrc/mxq_cpu.c) via ctypes, {isa}{walk}, threads = torch.get_num_threads()"


backend = Backend(
    name="cpu-native",
    capabilities=dataclasses.replace(CPU_CAPABILITIES, ops=frozenset(TRAINING_OPS + FP4_OPS)),
    probe=_probe,
    quantize=quantize,
    dequantize=dequantize,
    quantize_colwise=quantize_colwise,
    quantize_rowcol=quantize_rowcol,
    quantize_2d=quantize_2d,
    quantize_grouped=quantize_grouped,
    quantize_grouped_colwise=quantize_grouped_colwise,
    mxfp4_quantize=_fp4.mxfp4_quantize,
    mxfp4_dequantize=_fp4.mxfp4_dequantize,
    nvfp4_quantize=_fp4.nvfp4_quantize,
    nvfp4_dequantize=_fp4.nvfp4_dequantize,
    priority=2,
    description=_description(),
    install_hint="pip install -e . from a source checkout, with a C compiler (gcc or clang)",
)

assert BLOCK == 32  # the C kernel's block size

own_outputs(backend)  # outputs allocated here: no per-call check (mxquant/outputs.py)
