"""The custom ops of the training and MoE calls (`mxquant::quantize_colwise`, `quantize_rowcol`,
`quantize_2d`, `quantize_grouped`, `quantize_grouped_colwise`; ops_training.py holds the public
functions and run_*): their fakes, which check the arguments and return empty tensors of the
public shapes without reading group_ends (no sync), and no gradient. Registered on first lookup of torch.ops.mxquant.<name>
(lazy_ops.py), not at import."""

from __future__ import annotations

from typing import Optional

import torch

from .call_path import no_gradient
from .checks_training import check_grouped, check_grouped_colwise, check_matrix
from .layouts import kgroup_scale_shape, public_scale_shape
from .ops_training import (grouped_shape, run_2d, run_colwise, run_grouped, run_grouped_colwise, run_rowcol,
                           tile_scale_shape, transposed_shape)

E8M0 = torch.float8_e8m0fnu


@torch.library.custom_op("mxquant::quantize_colwise", mutates_args=())
def quantize_colwise(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str,
                     backend: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    return run_colwise(x, dtype, scale_mode, scale_layout, backend)


@quantize_colwise.register_fake
def _colwise_fake(x, dtype, scale_mode, scale_layout, backend=None):
    check_matrix("mxfp8_quantize(axis=-2)", x, dtype, scale_mode, scale_layout, backend, m32=True, k32=False)
    t = transposed_shape(tuple(x.shape))
    return x.new_empty(t, dtype=dtype), x.new_empty(public_scale_shape(t, scale_layout), dtype=E8M0)


@torch.library.custom_op("mxquant::quantize_rowcol", mutates_args=())
def quantize_rowcol(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str, backend: Optional[str] = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return run_rowcol(x, dtype, scale_mode, scale_layout, backend)


@quantize_rowcol.register_fake
def _rowcol_fake(x, dtype, scale_mode, scale_layout, backend=None):
    check_matrix("mxfp8_quantize_rowcol", x, dtype, scale_mode, scale_layout, backend, m32=True, k32=True)
    shape, t = tuple(x.shape), transposed_shape(tuple(x.shape))
    return (x.new_empty(shape, dtype=dtype), x.new_empty(public_scale_shape(shape, scale_layout), dtype=E8M0),
            x.new_empty(t, dtype=dtype), x.new_empty(public_scale_shape(t, scale_layout), dtype=E8M0))


@torch.library.custom_op("mxquant::quantize_2d", mutates_args=())
def quantize_2d(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, backend: Optional[str] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    return run_2d(x, dtype, scale_mode, backend)


@quantize_2d.register_fake
def _2d_fake(x, dtype, scale_mode, backend=None):
    check_matrix("mxfp8_quantize_2d", x, dtype, scale_mode, "linear", backend, m32=True, k32=True)
    return x.new_empty(x.shape, dtype=dtype), x.new_empty(tile_scale_shape(tuple(x.shape)), dtype=E8M0)


@torch.library.custom_op("mxquant::quantize_grouped", mutates_args=())
def quantize_grouped(x: torch.Tensor, group_ends: Optional[torch.Tensor], dtype: torch.dtype, scale_mode: str,
                     backend: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    return run_grouped(x, group_ends, dtype, scale_mode, backend)


@quantize_grouped.register_fake
def _grouped_fake(x, group_ends, dtype, scale_mode, backend=None):
    check_grouped(x, group_ends, dtype, scale_mode, backend)  # the values are not read: no sync
    return x.new_empty(x.shape, dtype=dtype), x.new_empty(grouped_shape(tuple(x.shape), group_ends), dtype=E8M0)


@torch.library.custom_op("mxquant::quantize_grouped_colwise", mutates_args=())
def quantize_grouped_colwise(x: torch.Tensor, group_ends: torch.Tensor, dtype: torch.dtype, scale_mode: str,
                             backend: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    return run_grouped_colwise(x, group_ends, dtype, scale_mode, backend)


@quantize_grouped_colwise.register_fake
def _grouped_colwise_fake(x, group_ends, dtype, scale_mode, backend=None):
    check_grouped_colwise(x, group_ends, dtype, scale_mode, backend)  # the values are not read: no sync
    t, n = x.shape
    return (x.new_empty((n, t), dtype=dtype),
            x.new_empty(kgroup_scale_shape(t, n, group_ends.shape[0]), dtype=E8M0))


no_gradient((quantize_colwise, 5), (quantize_rowcol, 5), (quantize_2d, 4), (quantize_grouped, 5),
            (quantize_grouped_colwise, 5))
