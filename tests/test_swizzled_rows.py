"""`mxquant.layouts.swizzled_rows`: a view of some scale rows of a flat 128x4-layout buffer, used
by cpu-eager to write (and read) a chunk's scales in one strided copy. The oracle is the byte
formula of docs/semantics.md ("Scale layouts"), written out here element by element."""

from __future__ import annotations

import itertools

import torch

from mxquant.layouts import swizzled_rows


def _offset(row: int, col: int, cols: int) -> int:
    """docs/semantics.md: ((row // 128)·(round_up(C,4)/4) + col // 4)·512 + (row % 32)·16
    + ((row // 32) % 4)·4 + col % 4."""
    pcols = (cols + 3) // 4 * 4
    return ((row // 128) * (pcols // 4) + col // 4) * 512 + (row % 32) * 16 + ((row // 32) % 4) * 4 + col % 4


def test_views_match_the_documented_offsets():
    checked = 0
    for rows, nb in ((256, 8), (384, 4), (96, 12), (160, 16)):
        prow = (rows + 127) // 128 * 128
        lin = torch.randint(1, 255, (rows, nb), dtype=torch.uint8)
        for r0, n in itertools.product(range(0, rows, 32), (32, 64, 96, 128, 256)):
            if r0 + n > rows:
                continue
            flat = torch.zeros(prow * nb, dtype=torch.uint8)
            view = swizzled_rows(flat, r0, n, nb)
            whole_tiles = r0 % 128 == 0 and n % 128 == 0
            one_tile = r0 // 128 == (r0 + n - 1) // 128
            assert (view is not None) == (whole_tiles or one_tile), (rows, nb, r0, n)
            if view is None:
                continue
            view.copy_(lin[r0:r0 + n].reshape(view.shape))
            want = torch.zeros_like(flat)
            for r, c in itertools.product(range(r0, r0 + n), range(nb)):
                want[_offset(r, c, nb)] = lin[r, c]
            assert torch.equal(flat, want), (rows, nb, r0, n)  # written there, nothing else touched
            back = torch.empty(n, nb, dtype=torch.uint8)
            back.view(view.shape).copy_(view)
            assert torch.equal(back, lin[r0:r0 + n])
            checked += 1
    assert checked > 20


def test_no_view_where_one_copy_cannot_do():
    flat = torch.zeros(256 * 8, dtype=torch.uint8)
    assert swizzled_rows(flat[: 256 * 6], 0, 128, 6) is None  # padding columns (C % 4)
    assert swizzled_rows(flat, 16, 32, 8) is None             # not on a 32-row boundary
    assert swizzled_rows(flat, 0, 48, 8) is None              # part of a 32-row group
    assert swizzled_rows(flat, 64, 128, 8) is None            # across two tiles, not whole
    assert swizzled_rows(flat, 0, 0, 8) is None
