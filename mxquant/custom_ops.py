"""The custom ops behind mxfp8_quantize and mxfp8_dequantize (`mxquant::quantize`,
`mxquant::dequantize`): their fakes, which return empty tensors of exactly the public dtypes,
shapes and contiguous strides, and their autograd formula, which gives no gradient. Registered
on first lookup of torch.ops.mxquant.quantize / .dequantize (lazy_ops.py), not at import."""

from __future__ import annotations

from typing import Optional

import torch

from .checks import check_dequantize, check_quantize
from .layouts import public_scale_shape
from .call_path import no_gradient
from .ops import run_dequantize, run_quantize


@torch.library.custom_op("mxquant::quantize", mutates_args=())
def quantize(
    x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str, backend: Optional[str] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    return run_quantize(x, dtype, scale_mode, scale_layout, backend)


@quantize.register_fake
def _quantize_fake(x, dtype, scale_mode, scale_layout, backend=None):
    check_quantize(x, dtype, scale_mode, scale_layout, backend)
    data = x.new_empty(x.shape, dtype=dtype)
    scale = x.new_empty(public_scale_shape(tuple(x.shape), scale_layout), dtype=torch.float8_e8m0fnu)
    return data, scale


@torch.library.custom_op("mxquant::dequantize", mutates_args=())
def dequantize(
    data: torch.Tensor, scale: torch.Tensor, scale_layout: str, out_dtype: torch.dtype, backend: Optional[str] = None
) -> torch.Tensor:
    return run_dequantize(data, scale, scale_layout, out_dtype, backend)


@dequantize.register_fake
def _dequantize_fake(data, scale, scale_layout, out_dtype, backend=None):
    check_dequantize(data, scale, scale_layout, out_dtype, backend)
    return data.new_empty(data.shape, dtype=out_dtype)


no_gradient((quantize, 5), (dequantize, 5))
