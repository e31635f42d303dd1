"""cpu-native's MXFP4 / NVFP4 calls (backend.FP4_OPS; docs/semantics.md, "MXFP4 and NVFP4"): the C
kernel of backends/csrc/mxq_cpu_fp4.c (AVX-512 variant: mxq_cpu_fp4_avx512.c), through ctypes, on
the threads and instruction-set variant of the rest of cpu-native. Byte-exact with
mxquant/reference_fp4.py.

Inputs are read in place where their rows can be addressed with one stride (as_rows), else copied
once; outputs are fresh and contiguous: data uint8 (..., K/2), scales linear or 2-D swizzled (the
backend form, backend.FP4_OPS). NVFP4's global scale, when not given, is a first pass of the
kernel over x (the largest finite |x|), then rounded as compressed-tensors does in C."""

from __future__ import annotations

import torch

from mxquant.formats import MXFP4_BLOCK, NVFP4_BLOCK
from mxquant.layouts import scale_shape

from . import _native_lib
from ._common import as_rows
from ._cpu_shared import new_tensor


def _check(rc: int, fn: str) -> None:
    if rc != 0:
        raise RuntimeError(f"cpu-native: {fn} returned {rc}")


def _quantize_outputs(x: torch.Tensor, block: int, layout: str, scale_dtype):
    """Fresh (data, scale) for x (scale first: see _cpu_shared.new_outputs), and x as rows."""
    shape = tuple(x.shape)
    scale = torch.empty(scale_shape(shape, layout, block), dtype=scale_dtype, device="cpu")
    return new_tensor((*shape[:-1], shape[-1] // 2), torch.uint8), scale, as_rows(x)


def mxfp4_quantize(x, scale_mode, scale_layout):
    data, scale, x2 = _quantize_outputs(x, MXFP4_BLOCK, scale_layout, torch.float8_e8m0fnu)
    _check(_native_lib.require().mxq_mxfp4_quantize(
        x2.data_ptr(), _native_lib.HP_CODE[x.dtype], x2.shape[0], x2.shape[1], x2.stride(0), data.data_ptr(),
        scale.data_ptr(), _native_lib.MODE_CODE[scale_mode], int(scale_layout == "swizzled"),
        torch.get_num_threads()), "mxq_mxfp4_quantize")
    return data, scale


def nvfp4_quantize(x, global_scale, scale_mode, scale_layout):
    """scale_mode: compressed-tensors, NVFP4's one rule (validated before this is called)."""
    data, scale, x2 = _quantize_outputs(x, NVFP4_BLOCK, scale_layout, torch.float8_e4m3fn)
    g = torch.ones(1, dtype=torch.float32, device="cpu")
    if global_scale is not None:
        g.copy_(global_scale.reshape(1))
    _check(_native_lib.require().mxq_nvfp4_quantize(
        x2.data_ptr(), _native_lib.HP_CODE[x.dtype], x2.shape[0], x2.shape[1], x2.stride(0), data.data_ptr(),
        scale.data_ptr(), g.data_ptr(), int(global_scale is None), int(scale_layout == "swizzled"),
        torch.get_num_threads()), "mxq_nvfp4_quantize")
    return data, scale, g


def _dequantize(fn: str, data, scale, scale_layout, out_dtype, *g):
    k = 2 * data.shape[-1]
    out = new_tensor((*data.shape[:-1], k), out_dtype)
    d2 = as_rows(data)
    s = scale.view(torch.uint8).contiguous()  # linear scales may be strided; they are small
    _check(getattr(_native_lib.require(), fn)(d2.data_ptr(), d2.shape[0], k, d2.stride(0), s.data_ptr(), *g,
                                              int(scale_layout == "swizzled"), out.data_ptr(),
                                              _native_lib.HP_CODE[out_dtype], torch.get_num_threads()), fn)
    return out


def mxfp4_dequantize(data, scale, scale_layout, out_dtype):
    return _dequantize("mxq_mxfp4_dequantize", data, scale, scale_layout, out_dtype)


def nvfp4_dequantize(data, scale, global_scale, scale_layout, out_dtype):
    g = global_scale.reshape(1).contiguous()  # float32, finite and > 0 (checked by the call path)
    return _dequantize("mxq_nvfp4_dequantize", data, scale, scale_layout, out_dtype, g.data_ptr())
