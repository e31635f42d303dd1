"""The torch custom ops `mxquant::quantize` / `mxquant::dequantize` and their fake implementations.

The real implementations validate their arguments and hand the call to the backend the
registry resolves for it; the fakes validate the same way and return empty tensors of exactly
the dtypes, shapes and (contiguous) strides the backends return, so torch.compile traces the
ops without running them. Scales are always float8_e8m0fnu.
"""

from __future__ import annotations

from typing import Optional

import torch

from .checks import check_dequantize, check_quantize
from .formats import BLOCK, scale_shape
from .registry import get_registry


def run_quantize(x, dtype, scale_mode, scale_layout, backend):
    """Validated call through the registry (the custom op's body and the eager fast path).

    A cached signature was fully validated when it was resolved (dtypes, mode, layout, backend),
    so a cache hit only checks the shape; a miss validates everything, then resolves."""
    registry = get_registry()
    try:
        fn = registry.cached("quantize", x.device, x.dtype, dtype, scale_mode, scale_layout, backend)
    except (AttributeError, TypeError):  # not a tensor, or an unhashable argument: let checks explain
        fn = None
    if fn is None or not x.dim() or x.shape[-1] % BLOCK:
        check_quantize(x, dtype, scale_mode, scale_layout)
        fn = registry.lookup("quantize", x.device, x.dtype, dtype, scale_mode, scale_layout, backend)
    return fn(x, dtype, scale_mode, scale_layout)


def run_dequantize(data, scale, scale_layout, out_dtype, backend):
    check_dequantize(data, scale, scale_layout, out_dtype)
    fn = get_registry().lookup("dequantize", data.device, out_dtype, data.dtype, None, scale_layout, backend)
    return fn(data, scale, scale_layout, out_dtype)


@torch.library.custom_op("mxquant::quantize", mutates_args=())
def quantize(
    x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str, backend: Optional[str] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    return run_quantize(x, dtype, scale_mode, scale_layout, backend)


@quantize.register_fake
def _quantize_fake(x, dtype, scale_mode, scale_layout, backend=None):
    check_quantize(x, dtype, scale_mode, scale_layout)
    data = x.new_empty(x.shape, dtype=dtype)
    scale = x.new_empty(scale_shape(tuple(x.shape), scale_layout), dtype=torch.float8_e8m0fnu)
    return data, scale


@torch.library.custom_op("mxquant::dequantize", mutates_args=())
def dequantize(
    data: torch.Tensor, scale: torch.Tensor, scale_layout: str, out_dtype: torch.dtype, backend: Optional[str] = None
) -> torch.Tensor:
    return run_dequantize(data, scale, scale_layout, out_dtype, backend)


@dequantize.register_fake
def _dequantize_fake(data, scale, scale_layout, out_dtype, backend=None):
    check_dequantize(data, scale, scale_layout, out_dtype)
    return data.new_empty(data.shape, dtype=out_dtype)
