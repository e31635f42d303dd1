"""Converters from the scales of mxfp8_quantize_2d (one per 32x32 tile, (..., M/32, K/32)) to
1x32 block scales, so one tile-quantized tensor feeds an MXFP8 GEMM in both orientations
(docs/semantics.md, "32x32 tiles"). Exact byte copies in plain tensor ops, on any device, behind
one custom op (`mxquant::expand_tile_scales`, with a fake) so that torch.compile(fullgraph=True)
traces them (inductor has no code generation for float8_e8m0fnu). Every block of 32 lies inside
one tile, so its scale is the tile's."""

from __future__ import annotations

import math

import torch

from .checks import _choice, check_dense
from .formats import BLOCK, SCALE_LAYOUTS
from .layouts import swizzle, swizzled_scale_shape

_E8M0 = torch.float8_e8m0fnu


def tile_scales_to_rowwise(scale: torch.Tensor, *, layout: str = "linear") -> torch.Tensor:
    """The scale of `data` (..., M, K) read in row blocks of 32 along K:
    linear (..., M, K/32), out[..., r, j] = scale[..., r // 32, j]; or swizzled, flat, as
    mxfp8_quantize(..., scale_layout="swizzled") returns it for data of that shape."""
    _check(scale, layout, "tile_scales_to_rowwise")
    return expand_tile_scales(scale, False, layout)


def tile_scales_to_colwise(scale: torch.Tensor, *, layout: str = "linear") -> torch.Tensor:
    """The scale of `data.mT.contiguous()` (..., K, M), the column-wise operand, in row blocks of
    32 along M: linear (..., K, M/32), out[..., k, i] = scale[..., i, k // 32]; or swizzled, flat."""
    _check(scale, layout, "tile_scales_to_colwise")
    return expand_tile_scales(scale, True, layout)


def _check(scale, layout, name: str) -> None:
    if not isinstance(scale, torch.Tensor):
        raise TypeError(f"{name}: scale must be a torch.Tensor, got {type(scale).__name__}")
    check_dense("scale", scale, name)
    if scale.dtype != _E8M0:
        raise TypeError(f"{name}: scale has dtype {str(scale.dtype).replace('torch.', '')}; it must be float8_e8m0fnu "
                        "(the scale mxfp8_quantize_2d returns)")
    if scale.dim() < 2:
        raise ValueError(f"{name}: scale must have at least two dimensions (..., M/32, K/32), got shape "
                         f"{tuple(scale.shape)}")
    _choice("layout", layout, SCALE_LAYOUTS, name)


@torch.library.custom_op("mxquant::expand_tile_scales", mutates_args=())
def expand_tile_scales(scale: torch.Tensor, colwise: bool, layout: str) -> torch.Tensor:
    """(..., R/32, C) tile scales (of scale.mT when colwise) -> (..., R, C) block scales, each
    tile row repeated 32 times; swizzled: flat."""
    tiles = scale.mT if colwise else scale
    *lead, r, c = tiles.shape
    rows = tiles.view(torch.uint8).unsqueeze(-2).expand(*lead, r, BLOCK, c).reshape(*lead, r * BLOCK, c)
    if layout == "swizzled":
        return swizzle(rows.reshape(math.prod(lead) * r * BLOCK, c)).reshape(-1).view(_E8M0)
    return rows.clone(memory_format=torch.contiguous_format).view(_E8M0)  # never a view of the input


@expand_tile_scales.register_fake
def _expand_fake(scale, colwise, layout):
    *lead, r, c = scale.mT.shape if colwise else scale.shape
    if layout == "swizzled":
        prow, pcol = swizzled_scale_shape(math.prod(lead) * r * BLOCK, c * BLOCK)
        return scale.new_empty((prow * pcol,))
    return scale.new_empty((*lead, r * BLOCK, c))
