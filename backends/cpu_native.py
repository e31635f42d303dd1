"""The `cpu-native` backend: the C kernel of backends/csrc/mxq_cpu.c, called through ctypes.

Byte-exact with the reference, multi-threaded over row blocks (torch.get_num_threads()
threads, GIL released), instruction set picked at run time. Outputs are the only large
allocations: a row-strided input is read in place; only an input whose last dimension is
not contiguous (or whose rows cannot be addressed with one stride) is copied first.

`quantize_into` / `dequantize_into` write into caller-provided buffers; they exist so the
benchmark can measure what reusing outputs saves (mxquant's public API has no out=).
"""

from __future__ import annotations

import torch

from mxquant.backend import Backend
from mxquant.formats import BLOCK
from mxquant.outputs import own_outputs

from . import _native_lib
from ._common import as_rows
from ._cpu_shared import (CPU_CAPABILITIES, check_dequantize_buffer, check_quantize_buffers, dequantize_fresh,
                          quantize_fresh)

_HP_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_ELEM_CODE = {torch.float8_e4m3fn: 0, torch.float8_e5m2: 1}
_MODE_CODE = {"rceil": 0, "floor": 1, "compressed-tensors": 2}


def _lib():
    lib, reason = _native_lib.load()
    if lib is None:
        raise RuntimeError(f"cpu-native: {reason}")
    return lib


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
    check_dequantize_buffer(data, out)
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
    esum = torch.empty(2 * x2.shape[0], dtype=torch.float64)
    sums = torch.empty(2, dtype=torch.float64)
    rc = lib.mxq_error_sums(x2.data_ptr(), _HP_CODE[x.dtype], x2.shape[0], k, x2.stride(0), d2.data_ptr(),
                            s.data_ptr(), _ELEM_CODE[data.dtype], esum.data_ptr(), sums.data_ptr(),
                            torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"cpu-native: mxq_error_sums returned {rc}")
    return float(sums[0]), float(sums[1])


def _probe(device: torch.device):
    if device.type != "cpu":
        return f"serves cpu only, not {device.type}"
    return _native_lib.load()[1]


def _description() -> str:
    lib, _ = _native_lib.load()
    isa = lib.mxq_isa().decode() if lib is not None else "not loaded"
    return f"C kernel (backends/csrc/mxq_cpu.c) via ctypes, {isa}, threads = torch.get_num_threads()"


backend = Backend(
    name="cpu-native",
    capabilities=CPU_CAPABILITIES,
    probe=_probe,
    quantize=quantize,
    dequantize=dequantize,
    priority=2,
    description=_description(),
    install_hint="pip install -e . from a source checkout, with a C compiler (gcc or clang)",
)

assert BLOCK == 32  # the C kernel's block size

own_outputs(backend)  # outputs allocated here: no per-call check (mxquant/outputs.py)
