"""Inputs for the training and MoE calls (docs/semantics.md, "Training and MoE calls"), used by
`mxquant verify` and the tests: the special blocks of cases.py laid along dim -2 (column-wise),
as 32x32 tiles (each a circulant of one special block, so the tile's amax, its NaN / Inf and its
transpose are those of the block), and token groups with ragged and empty groups; plus random
data of odd shapes. Nothing here computes expected outputs."""

from __future__ import annotations

import functools

import torch

from ..formats import BLOCK, ELEMENT_FORMATS
from . import cases
from .inputs import _random


def special_tiles(input_dtype: torch.dtype) -> torch.Tensor:
    """Every special block of both element dtypes as a 32x32 circulant tile (row i: the block
    rolled by i), four tiles per tile row: (32 * rows, 128) of input_dtype."""
    tiles = []
    for dtype in ELEMENT_FORMATS:
        for block in cases.special_blocks(dtype).values():
            tiles.append(torch.stack([block.roll(i) for i in range(BLOCK)]).to(input_dtype))
    while len(tiles) % 4:
        tiles.append(torch.zeros(BLOCK, BLOCK, dtype=input_dtype))
    grid = torch.stack(tiles).reshape(-1, 4, BLOCK, BLOCK)  # (tile row, tile col, 32, 32)
    return grid.permute(0, 2, 1, 3).reshape(-1, 4 * BLOCK)


def _tiled_random(shape, gen, dtype) -> torch.Tensor:
    """Random values with one random power-of-two magnitude per 32x32 tile."""
    *lead, m, k = shape
    x = _random(shape, gen, dtype).float()
    if x.numel():
        mag = torch.exp2(torch.randint(-20, 21, (*lead, m // BLOCK, 1, k // BLOCK, 1), generator=gen).float())
        x = (x.reshape(*lead, m // BLOCK, BLOCK, k // BLOCK, BLOCK) * mag).reshape(shape)
    fin = torch.finfo(dtype)
    return x.clamp(-fin.max, fin.max).to(dtype)


@functools.lru_cache(maxsize=None)
def colwise_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor]]:
    """x (..., M, K) with M a multiple of 32 (K any): the adversarial batch transposed (its
    blocks run down the columns), as a strided view and contiguous, and random odd shapes."""
    gen = torch.Generator().manual_seed(seed)
    batch = cases.adversarial_batch(input_dtype, seed)  # (N, 128)
    out = [("adversarial^T", batch.mT.contiguous()), ("adversarial^T (strided view)", batch.mT)]
    for shape in [(32, 1), (64, 5), (2, 96, 33), (3, 2, 64, 40), (32, 0), (0, 32, 7), (160, 256)]:
        wide = _random((*shape[:-1], BLOCK * shape[-1]), gen, input_dtype)  # K any: every 32nd column
        out.append((f"random{shape}", torch.empty(shape, dtype=input_dtype).copy_(wide[..., ::BLOCK])))
    return out


@functools.lru_cache(maxsize=None)
def matrix_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor]]:
    """x (..., M, K) with M and K multiples of 32 (row+column and tiles): the special tiles and
    their transpose, the adversarial batch cut to whole tile rows, random odd shapes."""
    gen = torch.Generator().manual_seed(seed)
    tiles = special_tiles(input_dtype)
    batch = cases.adversarial_batch(input_dtype, seed)
    out = [("special-tiles", tiles), ("special-tiles^T (strided view)", tiles.mT),
           ("adversarial-rows", batch[: batch.shape[0] // BLOCK * BLOCK])]
    for shape in [(32, 32), (64, 96), (2, 96, 64), (2, 3, 32, 160), (0, 32), (32, 0), (160, 288)]:
        out.append((f"random{shape}", _tiled_random(shape, gen, input_dtype)))
    return out


@functools.lru_cache(maxsize=None)
def tile_grid_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor]]:
    """Random tiles on grids of 12 x 12, 2 x 32 and 32 x 2 tiles, so that a defect at one tile
    position (up to the 12th down and across, the 32nd along one edge) shows in `mxquant verify`
    (row+column and 32x32 calls). Kept out of matrix_inputs: the Triton interpreter tests run
    those, and these would multiply their time."""
    gen = torch.Generator().manual_seed(seed + 7)
    return [(f"random{shape}", _tiled_random(shape, gen, input_dtype)) for shape in [(384, 384), (64, 1024), (1024, 64)]]


@functools.lru_cache(maxsize=None)
def grouped_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor, object]]:
    """(name, x, group_ends or None): token groups (ragged, empty first / middle / last, one
    group, groups of exactly 128 rows, no rows at all) and 3-D expert weights of odd sizes."""
    gen = torch.Generator().manual_seed(seed)
    batch = cases.adversarial_batch(input_dtype, seed)
    t = batch.shape[0]

    def ends(*values):
        return torch.tensor(values, dtype=torch.int32)

    out = [("adversarial, empty first / middle / last groups", batch, ends(0, 1, 1, t, t)),
           ("adversarial, ragged groups", batch, ends(5, 70, t)), ("adversarial, one group", batch, ends(t))]
    x = _random((300, 96), gen, input_dtype)
    out += [("random(300, 96), ragged", x, ends(1, 129, 129, 256, 300, 300)),
            ("random(256, 96), groups of 128", x[:256], ends(128, 256)),
            ("random(0, 64), no rows", _random((0, 64), gen, input_dtype), ends(0, 0, 0))]
    for shape in [(3, 130, 96), (2, 128, 128), (1, 1, 32), (0, 5, 32), (2, 200, 160)]:
        out.append((f"experts{shape}", _random(shape, gen, input_dtype), None))
    # two column tiles of the 128x4 layout (K / 32 = 5) for token groups too
    out.append(("random(200, 160), two column tiles", _random((200, 160), gen, input_dtype), ends(70, 200)))
    return out


@functools.lru_cache(maxsize=None)
def kgroup_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, x (T, N), group_ends) for K-groups (mxfp8_quantize_grouped(axis=-2)): the
    adversarial batch transposed (its special blocks run down the token dimension), contiguous
    and as a strided view, in empty first / middle / last, ragged and single groups; random
    (T, N) with groups of 1..8 blocks (widths not multiples of 4), N not a multiple of 128, one
    column, no columns, no tokens. Every end a multiple of 32."""
    gen = torch.Generator().manual_seed(seed)
    batch = cases.adversarial_batch(input_dtype, seed)  # (R, 128): T = 128 down the columns

    def ends(*values):
        return torch.tensor(values, dtype=torch.int32)

    def tokens(t, n):  # random blocks along T: the row-wise random data of (n, t), transposed
        return _random((n, t), gen, input_dtype).mT.contiguous()

    out = [("adversarial^T, empty first / middle / last groups", batch.mT.contiguous(), ends(0, 32, 32, 128, 128)),
           ("adversarial^T (strided view), ragged groups", batch.mT, ends(32, 64, 128)),
           ("adversarial^T, one group", batch.mT.contiguous(), ends(128))]
    x = tokens(544, 130)
    out += [("random(544, 130), groups of 5, 0, 4, 8 blocks", x, ends(160, 160, 288, 544, 544)),
            ("random(544, 130), groups of 1 block, then 16", x, ends(32, 544)),
            ("random(96, 1), one column", tokens(96, 1), ends(32, 32, 96)),
            ("random(64, 0), no columns", torch.zeros(64, 0, dtype=input_dtype), ends(64)),
            ("random(0, 48), no tokens", torch.zeros(0, 48, dtype=input_dtype), ends(0, 0))]
    return out
