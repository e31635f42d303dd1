"""The custom ops of the MXFP4 and NVFP4 calls (`mxquant::mxfp4_quantize`, `mxfp4_dequantize`,
`nvfp4_quantize`, `nvfp4_dequantize`; ops_fp4.py holds the public functions and run_*): their
fakes and no gradient. Registered on first lookup of torch.ops.mxquant.<name> (lazy_ops.py),
not at import."""

from __future__ import annotations

from typing import Optional

import torch

from .call_path import no_gradient
from .checks_fp4 import check_dequantize, check_quantize
from .formats import MXFP4_BLOCK, NVFP4_BLOCK
from .layouts import public_scale_shape
from .ops_fp4 import (packed_shape, run_mxfp4_dequantize, run_mxfp4_quantize, run_nvfp4_dequantize, run_nvfp4_quantize,
                      unpacked_shape)

U8, E8M0, E4M3, F32 = torch.uint8, torch.float8_e8m0fnu, torch.float8_e4m3fn, torch.float32


@torch.library.custom_op("mxquant::mxfp4_quantize", mutates_args=())
def _mxfp4_quantize_op(x: torch.Tensor, scale_mode: str, scale_layout: str, backend: Optional[str] = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    return run_mxfp4_quantize(x, scale_mode, scale_layout, backend)


@_mxfp4_quantize_op.register_fake
def _(x, scale_mode, scale_layout, backend=None):
    check_quantize("mxfp4", x, scale_mode, scale_layout, backend)
    shape = tuple(x.shape)
    return (x.new_empty(packed_shape(shape), dtype=U8),
            x.new_empty(public_scale_shape(shape, scale_layout, MXFP4_BLOCK), dtype=E8M0))


@torch.library.custom_op("mxquant::nvfp4_quantize", mutates_args=())
def _nvfp4_quantize_op(x: torch.Tensor, global_scale: Optional[torch.Tensor], scale_mode: str, scale_layout: str,
                       backend: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return run_nvfp4_quantize(x, global_scale, scale_mode, scale_layout, backend)


@_nvfp4_quantize_op.register_fake
def _(x, global_scale, scale_mode, scale_layout, backend=None):
    check_quantize("nvfp4", x, scale_mode, scale_layout, backend, global_scale)
    shape = tuple(x.shape)
    return (x.new_empty(packed_shape(shape), dtype=U8),
            x.new_empty(public_scale_shape(shape, scale_layout, NVFP4_BLOCK), dtype=E4M3),
            x.new_empty((1,), dtype=F32))


@torch.library.custom_op("mxquant::mxfp4_dequantize", mutates_args=())
def _mxfp4_dequantize_op(data: torch.Tensor, scale: torch.Tensor, scale_layout: str, out_dtype: torch.dtype,
                         backend: Optional[str] = None) -> torch.Tensor:
    return run_mxfp4_dequantize(data, scale, scale_layout, out_dtype, backend)


@_mxfp4_dequantize_op.register_fake
def _(data, scale, scale_layout, out_dtype, backend=None):
    check_dequantize("mxfp4", data, scale, scale_layout, out_dtype, backend)
    return data.new_empty(unpacked_shape(tuple(data.shape)), dtype=out_dtype)


@torch.library.custom_op("mxquant::nvfp4_dequantize", mutates_args=())
def _nvfp4_dequantize_op(data: torch.Tensor, scale: torch.Tensor, global_scale: torch.Tensor, scale_layout: str,
                         out_dtype: torch.dtype, backend: Optional[str] = None) -> torch.Tensor:
    return run_nvfp4_dequantize(data, scale, global_scale, scale_layout, out_dtype, backend)


@_nvfp4_dequantize_op.register_fake
def _(data, scale, global_scale, scale_layout, out_dtype, backend=None):
    check_dequantize("nvfp4", data, scale, scale_layout, out_dtype, backend, global_scale)
    return data.new_empty(unpacked_shape(tuple(data.shape)), dtype=out_dtype)


no_gradient((_mxfp4_quantize_op, 4), (_nvfp4_quantize_op, 5), (_mxfp4_dequantize_op, 5), (_nvfp4_dequantize_op, 6))
