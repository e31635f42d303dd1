"""Scale layouts: "linear" ((*x.shape[:-1], K // 32), row-major) and "swizzled" (the 128x4
layout of cuBLAS and FlashInfer). Shapes, swizzle and unswizzle live here and nowhere else
(docs/semantics.md, "Scale layouts").

Two forms of the swizzled scale: backends return (and receive) it 2-D,
(round_up(M, 128), round_up(K // 32, 4)); the public functions hand it out flat, 1-D, so that
it never has a linear scale's shape (a linear scale has x.dim() dims and K // 32 last)."""

from __future__ import annotations

import math

import torch

from .formats import BLOCK

SWIZZLE_ROWS = 128
SWIZZLE_COLS = 4


def round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def swizzled_scale_shape(rows: int, k: int, block: int = BLOCK) -> tuple[int, int]:
    """Shape of the swizzled scale tensor for `rows` (leading dims flattened) by `k` elements
    in blocks of `block` (32 for MXFP8 / MXFP4, 16 for NVFP4)."""
    return round_up(rows, SWIZZLE_ROWS), round_up(k // block, SWIZZLE_COLS)


def scale_shape(shape: tuple[int, ...], layout: str, block: int = BLOCK) -> tuple[int, ...]:
    """Shape of the scale tensor a backend returns (and receives) for an input of `shape`:
    linear (*shape[:-1], K // block), swizzled 2-D (round_up(M, 128), round_up(K // block, 4))."""
    k = shape[-1]
    if layout == "linear":
        return (*shape[:-1], k // block)
    return swizzled_scale_shape(math.prod(shape[:-1]), k, block)


def public_scale_shape(shape: tuple[int, ...], layout: str, block: int = BLOCK) -> tuple[int, ...]:
    """Shape of the scale tensor mxfp8_quantize returns (and mxfp8_dequantize takes): linear as
    above, swizzled flat, 1-D of round_up(M, 128) * round_up(K // block, 4) bytes."""
    want = scale_shape(shape, layout, block)
    return want if layout == "linear" else (want[0] * want[1],)


def layout_of(got: tuple[int, ...], shape: tuple[int, ...], block: int = BLOCK) -> str | None:
    """Which layout's public scale shape `got` is for data of `shape`, or None. The two
    never coincide except for a 1-D empty input (both (0,)), where there are no scales at all."""
    for layout in ("linear", "swizzled"):
        if tuple(got) == public_scale_shape(tuple(shape), layout, block):
            return layout
    return None


def to_public(scale: torch.Tensor, layout: str) -> torch.Tensor:
    """A backend's scale as the public functions return it (a free view for swizzled)."""
    return scale.reshape(-1) if layout == "swizzled" else scale


def to_backend(scale: torch.Tensor, shape: tuple[int, ...], layout: str, block: int = BLOCK) -> torch.Tensor:
    """A public (validated) scale as a backend takes it: swizzled back to 2-D."""
    return scale.reshape(scale_shape(tuple(shape), layout, block)) if layout == "swizzled" else scale


def _tile_view(padded_rows: int, padded_cols: int):
    """Index map of the 128x4 layout: tiles row-major, inside a tile (r%32)*16 + (r//32)*4 + c."""
    return (padded_rows // SWIZZLE_ROWS, SWIZZLE_ROWS // 32, 32, padded_cols // SWIZZLE_COLS, SWIZZLE_COLS)


def swizzle(scale_2d: torch.Tensor) -> torch.Tensor:
    """(rows, cols) uint8 scales -> the 128x4 layout, shape (rows', cols') padded to multiples
    of 128 and 4 with zero bytes, bytes in memory order of that layout."""
    rows, cols = scale_2d.shape
    prow, pcol = round_up(rows, SWIZZLE_ROWS), round_up(cols, SWIZZLE_COLS)
    padded = scale_2d.new_zeros((prow, pcol))
    padded[:rows, :cols] = scale_2d
    # (row_tile, r//32, r%32, col_tile, c) -> (row_tile, col_tile, r%32, r//32, c)
    tiles = padded.view(_tile_view(prow, pcol)).permute(0, 3, 2, 1, 4)
    return tiles.contiguous().view(prow, pcol)


def _tiles_in_row_order(flat: torch.Tensor, prow: int, pcol: int) -> torch.Tensor:
    """128x4-layout bytes of prow x pcol scales as a (row_tile, r//32, r%32, col_tile, c) view:
    its elements in row-major scale order (a view where `flat` is contiguous)."""
    nt_r, q, r32, nt_c, c = _tile_view(prow, pcol)
    return flat.reshape(nt_r, nt_c, r32, q, c).permute(0, 3, 2, 1, 4)


def unswizzle(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of `swizzle`: the 128x4-layout bytes back to (rows, cols)."""
    prow, pcol = round_up(rows, SWIZZLE_ROWS), round_up(cols, SWIZZLE_COLS)
    return _tiles_in_row_order(flat, prow, pcol).reshape(prow, pcol)[:rows, :cols]


def swizzle_offsets(r0: int, r1: int, nb: int, pcols: int) -> torch.Tensor:
    """Flat byte offsets of scales (r0..r1, 0..nb) in the 128x4 layout (docs/semantics.md)."""
    r = torch.arange(r0, r1).unsqueeze(1)
    c = torch.arange(nb)
    return (((r >> 7) * (pcols >> 2) + (c >> 2)) * 512 + (r & 31) * 16 + ((r >> 5) & 3) * 4 + (c & 3)).view(-1)


def swizzled_rows(flat: torch.Tensor, r0: int, n: int, nb: int) -> torch.Tensor | None:
    """The bytes of scale rows r0..r0+n (all nb columns) of the flat 128x4-layout buffer `flat`
    as a 5-D view that `lin.view(view.shape)` matches element for element, for (n, nb) linear
    scales `lin`: one strided copy instead of an offset gather or scatter. None unless nb is a
    multiple of 4 (no padding columns) and the rows are whole tiles (r0 and n multiples of 128)
    or whole 32-row groups of one tile."""
    if nb % SWIZZLE_COLS or r0 % 32 or n % 32 or n == 0:
        return None
    if r0 % SWIZZLE_ROWS == 0 and n % SWIZZLE_ROWS == 0:
        return _tiles_in_row_order(flat[r0 * nb:(r0 + n) * nb], n, nb)
    if r0 // SWIZZLE_ROWS == (r0 + n - 1) // SWIZZLE_ROWS:  # 32-row groups q0.. of one tile
        t0 = r0 - r0 % SWIZZLE_ROWS
        q0 = (r0 - t0) // 32
        return _tiles_in_row_order(flat[t0 * nb:(t0 + SWIZZLE_ROWS) * nb], SWIZZLE_ROWS, nb)[:, q0:q0 + n // 32]
    return None


# ---- grouped (MoE) layouts: docs/semantics.md, "Grouped scales for MoE" -----------------------

def expert_scale_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """Scale shape of mxfp8_quantize_grouped for 3-D expert weights (E, N, K): one flat 128x4
    layout per expert, (E, round_up(N, 128) * round_up(K // 32, 4))."""
    e, n, k = shape
    prow, pcol = swizzled_scale_shape(n, k)
    return e, prow * pcol


def grouped_scale_shape(rows: int, k: int, groups: int) -> tuple[int]:
    """Scale shape of mxfp8_quantize_grouped for (T, K) activations in `groups` groups: the upper
    bound (T + 128 * G) * round_up(K // 32, 4), fixed by the shapes alone (no host sync)."""
    return ((rows + SWIZZLE_ROWS * groups) * round_up(k // BLOCK, SWIZZLE_COLS),)


def swizzle_experts(scale_3d: torch.Tensor) -> torch.Tensor:
    """(E, N, C) uint8 scales -> (E, round_up(N, 128) * round_up(C, 4)): each expert's 128x4
    layout (swizzle of scale_3d[e]), zero padded, one row per expert."""
    e, n, c = scale_3d.shape
    prow, pcol = swizzled_scale_shape(n, c * BLOCK)
    padded = scale_3d.new_zeros((e, prow, pcol))
    padded[:, :n, :c] = scale_3d
    tiles = padded.view(e, *_tile_view(prow, pcol)).permute(0, 1, 4, 3, 2, 5)
    return tiles.contiguous().view(e, prow * pcol)


def swizzle_groups(scale_2d: torch.Tensor, ends: list[int]) -> torch.Tensor:
    """(T, C) uint8 scales of token-sorted rows and the groups' cumulative ends (host ints,
    validated) -> the flat grouped layout: group g's rows swizzled on their own, padded to a
    multiple of 128 rows, starting at row P_g = sum of the earlier groups' padded rows; every
    other byte zero; (T + 128 * G) * round_up(C, 4) bytes in all."""
    rows, c = scale_2d.shape
    pcol = round_up(c, SWIZZLE_COLS)
    out = scale_2d.new_zeros(grouped_scale_shape(rows, c * BLOCK, len(ends)))
    start = padded_start = 0
    for end in ends:
        if end > start:
            block = swizzle(scale_2d[start:end]).reshape(-1)
            out[padded_start * pcol:padded_start * pcol + block.numel()] = block
            padded_start += round_up(end - start, SWIZZLE_ROWS)
        start = end
    return out


def kgroup_scale_shape(rows: int, n: int, groups: int) -> tuple[int]:
    """Scale shape of mxfp8_quantize_grouped(axis=-2) for (T, N) in `groups` groups of tokens
    (K-groups: blocks of 32 along T): round_up(N, 128) * (T // 32 + 4 * G) bytes, the upper bound
    torchao's K-groups rearrange allocates, fixed by the shapes alone (no host sync)."""
    return (round_up(n, SWIZZLE_ROWS) * (rows // BLOCK + SWIZZLE_COLS * groups),)


def swizzle_kgroups(scale_2d: torch.Tensor, ends: list[int]) -> torch.Tensor:
    """(N, T // 32) uint8 column-wise scales and the token groups' cumulative ends (host ints,
    validated: multiples of 32) -> the flat K-groups layout: group g's scale columns
    (c_g = its tokens / 32) swizzled on their own, padded to round_up(N, 128) rows and
    round_up(c_g, 4) columns, starting at byte Q_g * round_up(N, 128) with Q_g the sum of the
    earlier groups' padded columns; every other byte zero."""
    n, c = scale_2d.shape
    prow = round_up(n, SWIZZLE_ROWS)
    out = scale_2d.new_zeros(kgroup_scale_shape(c * BLOCK, n, len(ends)))
    start = padded_start = 0
    for end in (e // BLOCK for e in ends):
        if end > start:
            block = swizzle(scale_2d[:, start:end]).reshape(-1)
            out[padded_start * prow:padded_start * prow + block.numel()] = block
            padded_start += round_up(end - start, SWIZZLE_COLS)
        start = end
    return out
