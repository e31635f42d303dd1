"""The `triton` backend's FP4 quantize tiles as a launch takes them (backends/_triton_fp4_ops.py's
_tile_plan, FP4_CONFIGS, _spread): which program shape, row order and load eviction policy each
kind of call gets per card class. No triton needed (the launch side imports none); the tiles'
bytes are checked by tests/test_triton_fp4.py (CONSECUTIVE among its configs) and their speed
recorded in docs/performance.md (fifteenth session)."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from mxquant.backends import _triton_fp4_ops as ops

from test_triton_fp4 import CONSECUTIVE


def test_the_h100s_tiles_per_kind_of_call():
    """FP4_CONFIGS' H100 entries as a launch takes them (ops._tile_plan), at 8192 columns and at
    short rows: MXFP4 linear and fp32 NVFP4 1 x 8192 / 8; MXFP4 swizzled 4 rows 32 apart x 1024 /
    4; 2-byte NVFP4 1 x 4096 / 4 linear, 4 x 1024 / 4 swizzled (bf16 rows 32 apart, evict_first;
    fp16 consecutive, evict_last), swizzled on the table 1 x 4096 / 4 evict_last; tiles never
    below 4 groups when swizzled; the H200's class 1 x 8192 / 8 everywhere."""
    bf, fp, f32 = torch.bfloat16, torch.float16, torch.float32
    plan = functools.partial(ops._tile_plan, device=None, config=None)
    assert plan(False, False, False, bf, 8192, 8192, card="default") == (1, 8192, 8, False, "evict_first")
    assert plan(False, False, True, bf, 8192, 8192, card="default") == (4, 1024, 4, True, "evict_last")
    assert plan(True, False, True, f32, 8192, 8192, card="default") == (1, 8192, 8, False, "evict_last")
    assert plan(True, True, False, bf, 8192, 8192, card="default") == (1, 4096, 4, False, "evict_first")
    assert plan(True, True, False, fp, 8192, 8192, card="default") == (1, 4096, 4, False, "evict_first")
    assert plan(True, True, True, bf, 8192, 8192, card="default") == (4, 1024, 4, True, "evict_first")
    assert plan(True, True, True, fp, 8192, 8192, card="default") == (4, 1024, 4, False, "evict_last")
    for dtype in (bf, fp):  # reading the table: 1 x 4096 / 4, evict_last swizzled; linear as without it
        assert plan(True, True, True, dtype, 8192, 8192, card="default", table=True) == (1, 4096, 4, False, "evict_last")
        assert plan(True, True, False, dtype, 8192, 8192, card="default", table=True) == (1, 4096, 4, False, "evict_first")
    assert plan(False, False, True, bf, 256, 128, card="default") == (32, 128, 4, True, "evict_last")
    assert plan(True, True, True, bf, 128, 64, card="default") == (64, 64, 4, True, "evict_first")
    for nv, free, swz in itertools.product((False, True), (False, True), (False, True)):
        if free and not nv:
            continue
        assert plan(nv, free, swz, bf, 8192, 8192, card="fast-hbm")[:3] == (1, 8192, 8)
        assert plan(nv, free, swz, bf, 8192, 8192, card="fast-hbm", table=free)[:3] == (1, 8192, 8)


def test_rows_32_apart_only_where_a_tile_allows_them():
    """Swizzled programs of 4-128 rows (a multiple of 4 dividing 128) take rows 32 apart by
    default; 1-row programs and linear scales never; a config that asks for them elsewhere is
    refused."""
    assert ops._spread(True, 4, None) and ops._spread(True, 128, None) and ops._spread(True, 16, (16, 256, 4))
    assert not ops._spread(True, 1, None) and not ops._spread(True, 2, None) and not ops._spread(False, 4, None)
    assert not ops._spread(True, 16, CONSECUTIVE)
    for bm, swz in ((2, True), (4, False), (256, True)):
        with pytest.raises(ValueError, match="32 apart"):
            ops._spread(swz, bm, (bm, 256, 4, 0, 8, "evict_last", True))
