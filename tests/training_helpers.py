"""What the tests of the training and MoE calls share: their parameter grid, byte views and
the byte comparison (shape, dtype, bytes, contiguity)."""

from __future__ import annotations

import itertools

import torch

ELEMS = [torch.float8_e4m3fn, torch.float8_e5m2]
MODES = ["rceil", "floor", "compressed-tensors"]
LAYOUTS = ["linear", "swizzled"]
INPUTS = [torch.float32, torch.bfloat16, torch.float16]
GRID = list(itertools.product(INPUTS, ELEMS, MODES))
GRID_LAYOUTS = list(itertools.product(INPUTS, ELEMS, MODES, LAYOUTS))
PAIRWISE = [(hp, ELEMS[(i + j) % 2], mode) for i, hp in enumerate(INPUTS) for j, mode in enumerate(MODES)]
"""Nine of GRID's eighteen cases in which every pair of values meets (each input dtype with each
element dtype and each scale mode, each element dtype with each scale mode): what Triton's
interpreter runs of a grid whose cases cost it seconds each (tests/test_triton_training.py's
grouped kernels, whose arithmetic is the row-wise kernel's helpers, run there on all of
GRID_LAYOUTS); a GPU runs all eighteen."""
GLUON_TEST_CONFIGS = [("gluon", 16, 4), ("gluon", 8, 2, 4), ("gluon", 4, 4, 2),
                      ("gluon", 8, 2, 8, 0, "evict_last", "", "packed prefetch"), ("gluon", 8, 2, 4, 0, "", "", "packed"),
                      ("gluon", 8, 2, 2, 0, "", "", "packed prefetch")]
"""The Gluon column-wise / row+column kernel's shapes the tests run besides the shipped ones
("gluon", rows per thread, warps, 32-row slabs per tile[, register cap, store policies, flags]):
tests/test_triton_training.py on a GPU, tests/test_triton_compile.py compiled for sm_90. The
packed ones take their word stores where every tile is whole (linear scales, M a multiple of
32 x slabs) or with swizzled scales at 2 or 4 slabs, and the joined bytes elsewhere: the CUDA
shapes have both."""


def ids(combo) -> str:
    return "-".join(str(v).replace("torch.", "") for v in combo)


def u8(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def assert_bytes(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """`got` (an mxquant output) has `want`'s shape and bytes (want: uint8 or any 1-byte dtype)
    and is contiguous."""
    assert got.is_contiguous(), f"{what}: not contiguous"
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    diff = (got.view(torch.uint8) != u8(want)).nonzero()
    assert diff.numel() == 0, f"{what}: {diff.shape[0]} bytes differ, first at {diff[0].tolist()}"
