"""The training and MoE calls in plain PyTorch (docs/semantics.md, "Training and MoE calls"):
column-wise, row+column, 32x32 tiles and grouped scales (row-wise and K-groups). The oracle the backends are compared
with; each call applies reference.encode_blocks to blocks along its own dimensions (column-wise
reduces over dim -2 of x directly, it does not quantize a transposed copy), so the tests'
transpose identities compare two different computations."""

from __future__ import annotations

import math

import torch

from .formats import BLOCK
from .layouts import swizzle, swizzle_experts, swizzle_groups, swizzle_kgroups
from .reference import encode_blocks, quantize

_E8M0 = torch.float8_e8m0fnu


def quantize_colwise(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str):
    """Blocks of 32 along dim -2 of x (..., M, K): data (..., K, M), scale as quantize gives
    for x.mT.contiguous() (linear (..., K, M // 32); swizzled 2-D)."""
    *lead, m, k = x.shape
    n = math.prod(lead)
    values = x.contiguous().reshape(n, m // BLOCK, BLOCK, k).to(torch.float32)
    data, scale = encode_blocks(values, (2,), dtype, scale_mode)  # scale (n, M/32, 1, K)
    data = data.permute(0, 3, 1, 2).reshape(*lead, k, m).contiguous().view(dtype)
    scale = scale.reshape(n, m // BLOCK, k).transpose(1, 2)  # (n, K, M/32)
    if scale_layout == "swizzled":
        scale = swizzle(scale.reshape(n * k, m // BLOCK))
    else:
        scale = scale.reshape(*lead, k, m // BLOCK).contiguous()
    return data, scale.view(_E8M0)


def quantize_rowcol(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str):
    """(row data, row scale, column data, column scale): the two calls above."""
    return (*quantize(x, dtype, scale_mode, scale_layout), *quantize_colwise(x, dtype, scale_mode, scale_layout))


def quantize_2d(x: torch.Tensor, dtype: torch.dtype, scale_mode: str):
    """One scale per 32x32 tile of x (..., M, K): data of x's shape, scale (..., M/32, K/32)."""
    *lead, m, k = x.shape
    n = math.prod(lead)
    values = x.contiguous().reshape(n, m // BLOCK, BLOCK, k // BLOCK, BLOCK).to(torch.float32)
    data, scale = encode_blocks(values, (2, 4), dtype, scale_mode)
    return data.reshape(x.shape).view(dtype), scale.reshape(*lead, m // BLOCK, k // BLOCK).view(_E8M0)


def quantize_grouped(x: torch.Tensor, group_ends, dtype: torch.dtype, scale_mode: str):
    """Row-wise data; scales per expert (3-D x, group_ends None) or per token group (2-D x),
    each group in the 128x4 layout on its own (layouts.swizzle_experts / swizzle_groups)."""
    data, linear = quantize(x, dtype, scale_mode, "linear")
    scale_bytes = linear.view(torch.uint8)
    if group_ends is None:
        scale = swizzle_experts(scale_bytes)
    else:
        scale = swizzle_groups(scale_bytes, group_ends.tolist())  # the CPU reference may read them
    return data, scale.view(_E8M0)


def quantize_grouped_colwise(x: torch.Tensor, group_ends, dtype: torch.dtype, scale_mode: str):
    """K-groups (MoE weight gradient): x (T, N) column-wise, data (N, T) as quantize_colwise
    gives it; each token group's scales (N, tokens / 32) in the 128x4 layout on its own
    (layouts.swizzle_kgroups)."""
    data, linear = quantize_colwise(x, dtype, scale_mode, "linear")
    scale = swizzle_kgroups(linear.view(torch.uint8), group_ends.tolist())  # the CPU reference may read them
    return data, scale.view(_E8M0)
