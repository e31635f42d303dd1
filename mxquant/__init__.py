"""mxquant: one portable call for MXFP8 (OCP Microscaling FP8) quantization in PyTorch.

    data, scale = mxquant.mxfp8_quantize(x)            # e4m3 elements, rceil E8M0 scales
    y = mxquant.mxfp8_dequantize(data, scale)
    w_q = mxquant.mxfp8_fake_quantize(w)               # QAT: round trip, straight-through gradient
    col = mxquant.mxfp8_quantize(x, axis=-2)           # training: column-wise, rowcol, 32x32, grouped (MoE)
    q4 = mxquant.mxfp4_quantize(x); n4 = mxquant.nvfp4_quantize(x)  # 4-bit: MXFP4, NVFP4

The contract: docs/semantics.md; backends and how one is chosen: docs/backends.md.
Importing this package imports no platform package (triton, flashinfer, Intel's) and registers
no torch custom op: each is registered on its first lookup as torch.ops.mxquant.<name>
(lazy_ops.py), which is where a call that needs the dispatcher finds it.
"""

import warnings as _warnings
from typing import TYPE_CHECKING as _TYPE_CHECKING

with _warnings.catch_warnings():
    # torch warns at import when numpy is not installed ("Failed to initialize NumPy": its numpy
    # interop, which mxquant never uses), and every `mxquant` command would print it. Scoped to
    # this one import and this one message; a process that imported torch first is unaffected.
    _warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
    import torch as _torch  # noqa: F401
del _torch, _warnings

from . import forking as _forking  # noqa: F401  (takes this process's pid at import)
from ._version import __version__
from .backend import Backend, BackendSpec, Capabilities, Deviation
from .cpu_cache import empty_cpu_cache
from .errors import (BackendCallError, BackendError, BackendIncapableError, BackendOutputError, BackendUnavailableError,
                     NoBackendError, UnknownBackendError)
from .hookspecs import hookimpl
from .ops import MXFP8Quantized, mxfp8_dequantize, mxfp8_quantize
from .ops_fp4 import MXFP4Quantized, NVFP4Quantized, mxfp4_dequantize, mxfp4_quantize, nvfp4_dequantize, nvfp4_quantize
from .ops_training import mxfp8_quantize_2d, mxfp8_quantize_grouped, mxfp8_quantize_rowcol
from .registry import get_registry
from .report import list_backends
from .selection import allow_deviations, use_backend
from . import lazy_ops as _lazy_ops

_lazy_ops.install()
if _TYPE_CHECKING:  # for static tools; at run time these come from __getattr__
    from .fake_quant import mxfp8_fake_quantize
    from .tile_scales import tile_scales_to_colwise, tile_scales_to_rowwise

# Public names whose modules register a custom op when imported: imported on first use.
_LAZY = {"mxfp8_fake_quantize": "fake_quant", "tile_scales_to_rowwise": "tile_scales",
         "tile_scales_to_colwise": "tile_scales"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "mxfp8_quantize",
    "mxfp8_dequantize",
    "mxfp8_fake_quantize",
    "mxfp8_quantize_rowcol",
    "mxfp8_quantize_2d",
    "mxfp8_quantize_grouped",
    "tile_scales_to_rowwise",
    "tile_scales_to_colwise",
    "MXFP8Quantized",
    "mxfp4_quantize",
    "mxfp4_dequantize",
    "nvfp4_quantize",
    "nvfp4_dequantize",
    "MXFP4Quantized",
    "NVFP4Quantized",
    "list_backends",
    "use_backend",
    "allow_deviations",
    "empty_cpu_cache",
    "get_registry",
    "hookimpl",
    "Backend",
    "BackendSpec",
    "Capabilities",
    "Deviation",
    "BackendError",
    "BackendUnavailableError",
    "BackendIncapableError",
    "UnknownBackendError",
    "NoBackendError",
    "BackendOutputError",
    "BackendCallError",
    "__version__",
]
