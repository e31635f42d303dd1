"""mxquant: one portable call for MXFP8 (OCP Microscaling FP8) quantization in PyTorch.

    data, scale = mxquant.mxfp8_quantize(x)            # e4m3 elements, rceil E8M0 scales
    y = mxquant.mxfp8_dequantize(data, scale)

The contract is docs/semantics.md; backends and how one is chosen: docs/backends.md.
Importing this package imports no platform package (triton, flashinfer, Intel's).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import ops as _ops
from .backend import Backend, BackendSpec, Capabilities, Deviation
from .errors import BackendError, BackendIncapableError, BackendUnavailableError, NoBackendError, UnknownBackendError
from .plugins import hookimpl
from .registry import allow_deviations, get_registry, use_backend

__version__ = "0.1.0"


def _source_tree_backends() -> None:
    # The built-in backends live in the top-level folder backends/, installed as
    # mxquant.backends. Run from a source checkout with no install (PYTHONPATH=.), bind them.
    import importlib.util
    import os
    import sys

    if "mxquant.backends" in sys.modules or importlib.util.find_spec("mxquant.backends") is not None:
        return
    init = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backends", "__init__.py")
    if os.path.isfile(init):
        spec = importlib.util.spec_from_file_location(
            "mxquant.backends", init, submodule_search_locations=[os.path.dirname(init)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["mxquant.backends"] = module
        spec.loader.exec_module(module)


_source_tree_backends()


class MXFP8Quantized(NamedTuple):
    data: torch.Tensor
    """Elements: x's shape, dtype float8_e4m3fn or float8_e5m2."""
    scale: torch.Tensor
    """E8M0 scales (float8_e8m0fnu): (*x.shape[:-1], K // 32) for "linear";
    (round_up(M, 128), round_up(K // 32, 4)) with M = prod(x.shape[:-1]) for "swizzled"."""


def _eager(t: torch.Tensor) -> bool:
    # Plain tensors outside tracing skip the dispatcher (its overhead is several microseconds);
    # fake/meta/subclass tensors and torch.compile go through the custom op and its fake.
    # A non-tensor also takes the eager path, so that checks.py reports it (TypeError naming
    # the argument) rather than the op schema's RuntimeError.
    if not isinstance(t, torch.Tensor):
        return True
    return type(t) is torch.Tensor and not t.is_meta and not torch.compiler.is_compiling()


def mxfp8_quantize(
    x: torch.Tensor,
    dtype: torch.dtype = torch.float8_e4m3fn,
    *,
    scale_mode: str = "rceil",
    scale_layout: str = "linear",
    backend: Optional[str] = None,
) -> MXFP8Quantized:
    """Quantize `x` to MXFP8: blocks of 32 along the last dimension share one E8M0 scale.

    x: float32, bfloat16 or float16, any leading shape, last dimension a multiple of 32.
    dtype: torch.float8_e4m3fn (default) or torch.float8_e5m2.
    scale_mode: "rceil" (default; NVIDIA's rule, never saturates) or "floor" (OCP MX v1.0).
    scale_layout: "linear" or "swizzled" (the 128x4 layout cuBLAS and FlashInfer use).
    backend: force a backend by name (strict: an error, never a fallback, if it cannot run).
    """
    if _eager(x):
        data, scale = _ops.run_quantize(x, dtype, scale_mode, scale_layout, backend)
    else:
        data, scale = torch.ops.mxquant.quantize(x, dtype, scale_mode, scale_layout, backend)
    return MXFP8Quantized(data, scale)


def mxfp8_dequantize(
    data: torch.Tensor,
    scale: torch.Tensor,
    *,
    scale_layout: str = "linear",
    out_dtype: torch.dtype = torch.bfloat16,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """data * 2**(scale - 127) per block, rounded once to `out_dtype`; NaN where the scale is 0xFF."""
    if _eager(data):
        return _ops.run_dequantize(data, scale, scale_layout, out_dtype, backend)
    return torch.ops.mxquant.dequantize(data, scale, scale_layout, out_dtype, backend)


def list_backends():
    """Structured records of every known backend (what `mxquant info` prints)."""
    from .report import list_backends as _list

    return _list()


__all__ = [
    "mxfp8_quantize",
    "mxfp8_dequantize",
    "MXFP8Quantized",
    "list_backends",
    "use_backend",
    "allow_deviations",
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
    "__version__",
]
