"""The inputs `mxquant verify` runs every backend on: the adversarial batch of cases.py
(with the names of its special blocks), random data of several shapes (rank 1, odd leading
dimensions, row counts not multiples of 128, empty, transposed, row-sliced), and for
dequantize every element byte under every scale byte plus the reference's outputs."""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch

from .. import layouts, reference
from ..formats import BLOCK, ELEMENT_FORMATS
from . import cases

def _special_names(input_dtype: torch.dtype, batch: torch.Tensor) -> list[Optional[str]]:
    """Names of the leading blocks of `cases.adversarial_batch` (its special blocks), checked
    against the batch itself; unnamed (None) where they do not match."""
    names, blocks = [], []
    for dtype, fmt in ELEMENT_FORMATS.items():
        for name, b in cases.special_blocks(dtype).items():
            names.append(f"{fmt.name}:{name}")
            blocks.append(b.to(input_dtype))
    flat = batch.reshape(-1, BLOCK)
    out: list[Optional[str]] = []
    for i, (name, b) in enumerate(zip(names, blocks)):
        if i >= flat.shape[0]:
            break
        a = flat[i]
        same = (a == b) | (a.isnan() & b.isnan())
        out.append(name if bool(same.all()) else None)
    return out


def _random(shape, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Normal values with a random power-of-two magnitude per block (kept inside `dtype`'s
    normal range: no Inf, few subnormals; cases.adversarial_batch has the edges), a few zeros."""
    n = math.prod(shape)
    if n == 0:
        return torch.zeros(shape, dtype=dtype)
    fin = torch.finfo(dtype)
    lo, hi = max(-30, math.log2(fin.smallest_normal) + 4), min(30, math.log2(fin.max) - 4)
    x = torch.randn(n // BLOCK, BLOCK, generator=gen)
    x = x * torch.exp2(torch.randint(int(lo), int(hi) + 1, (n // BLOCK, 1), generator=gen).float())
    x = torch.where(torch.rand(x.shape, generator=gen) < 0.02, 0.0, x)
    return x.reshape(shape).to(dtype)


RANDOM_SHAPES = [(32,), (1, 32), (3, 5, 64), (130, 96), (257, 64), (2, 3, 7, 32), (0, 64), (4, 0),
                 (200, 160)]  # the last: two row tiles and two column tiles of the 128x4 layout


@functools.lru_cache(maxsize=None)
def quantize_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor, list]]:
    """[(case name, CPU tensor, special-block names of its leading blocks)]; built once per
    (dtype, seed) and shared by every combination (verify restores an input a backend wrote)."""
    gen = torch.Generator().manual_seed(seed)
    batch = cases.adversarial_batch(input_dtype, seed)
    out = [("adversarial", batch, _special_names(input_dtype, batch))]
    for shape in RANDOM_SHAPES:
        out.append((f"random{tuple(shape)}", _random(shape, gen, input_dtype), []))
    out.append(("transposed(3, 64, 96)", _random((64, 3, 96), gen, input_dtype).transpose(0, 1), []))
    out.append(("row-sliced(40, 128 of 192)", _random((40, 192), gen, input_dtype)[:, :128], []))
    # a shape met before, with new values: a backend handing out one static buffer per shape changes
    # the earlier result (compare.Kept)
    out.append(("random(130, 96) again", _random((130, 96), gen, input_dtype), []))
    return out


@functools.lru_cache(maxsize=None)
def dequantize_inputs(element_dtype: torch.dtype, layout: str, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """[(case name, data, scale)] on the CPU, scales in `layout`; built once per arguments, as
    quantize_inputs."""
    out = []
    # every element byte (rows of 256) under every scale byte (one scale per row, repeated)
    data = torch.arange(256, dtype=torch.int32).to(torch.uint8).repeat(256, 1).view(element_dtype)
    scale = torch.arange(256, dtype=torch.int32).to(torch.uint8).unsqueeze(1).repeat(1, 256 // BLOCK)
    if layout == "swizzled":
        scale = layouts.swizzle(scale)
    out.append(("all-bytes(256, 256)", data, scale.view(torch.float8_e8m0fnu)))
    for name, x, _ in quantize_inputs(torch.float32, seed):
        d, s = reference.quantize(x, element_dtype, "rceil", layout)
        out.append((name, d, s))
    return out
