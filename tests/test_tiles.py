"""mxfp8_quantize_2d and the tile-scale converters (docs/semantics.md, "32x32 tiles"): the
NumPy oracle's 32x32 tiles (tests/mx_oracle.py), the transpose identity, and the converters
against NumPy's repeat of the tile scales and the oracle's swizzle, and through
mxfp8_dequantize in both orientations; errors, fakes, compile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant.conformance.training_inputs import matrix_inputs

import mx_oracle as oracle
from training_helpers import GRID, LAYOUTS, assert_bytes, ids, u8


@pytest.mark.parametrize("hp, dtype, mode", GRID, ids=[ids(c) for c in GRID])
@pytest.mark.parametrize("backend", [None, "cpu"], ids=["routed", "reference"])
def test_tiles_against_the_oracle_and_the_transpose(hp, dtype, mode, backend):
    """The routed backend and the reference (`cpu`) against the NumPy oracle and the transpose."""
    for name, x in matrix_inputs(hp, 0):
        got = mxquant.mxfp8_quantize_2d(x, dtype, scale_mode=mode, backend=backend)
        want_data, want_scale = oracle.quantize_tiles(x, dtype, mode)
        assert_bytes(got.data, want_data, f"{name} data vs oracle")
        assert_bytes(got.scale, want_scale, f"{name} scale vs oracle")
        t = mxquant.mxfp8_quantize_2d(x.mT, dtype, scale_mode=mode, backend=backend)
        assert_bytes(t.data, got.data.mT, f"{name} data of x.mT")
        assert_bytes(t.scale, got.scale.mT, f"{name} scale of x.mT")


def _repeat(scale: torch.Tensor) -> np.ndarray:
    """NumPy: each tile scale repeated over its 32 rows, (..., R/32, C) -> (..., R, C)."""
    return np.repeat(u8(scale).numpy(), 32, axis=-2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_converters_against_numpy(layout):
    for name, x in matrix_inputs(torch.bfloat16, 0):
        q = mxquant.mxfp8_quantize_2d(x, torch.float8_e5m2, scale_mode="floor")
        for convert, want in ((mxquant.tile_scales_to_rowwise, _repeat(q.scale)),
                              (mxquant.tile_scales_to_colwise, _repeat(q.scale.mT))):
            got = convert(q.scale, layout=layout)
            assert got.dtype == torch.float8_e8m0fnu
            want = torch.from_numpy(np.ascontiguousarray(want))
            if layout == "swizzled":
                want = oracle.swizzle(want.reshape(math.prod(want.shape[:-1]), want.shape[-1])).reshape(-1)
            assert_bytes(got, want, f"{name} {convert.__name__} {layout}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_quantization_feeds_both_orientations(layout):
    """dequantize(data, rowwise) is the tiles' values (the oracle's decode times each tile's
    scale); dequantize(data.mT, colwise) is their transpose: no re-quantization needed."""
    for name, x in matrix_inputs(torch.float32, 0):
        q = mxquant.mxfp8_quantize_2d(x)
        rows = mxquant.mxfp8_dequantize(q.data, mxquant.tile_scales_to_rowwise(q.scale, layout=layout),
                                        scale_layout=layout, out_dtype=torch.float32)
        want = oracle.dequantize(q.data, torch.from_numpy(_repeat(q.scale)), torch.float32)
        assert torch.equal(rows.nan_to_num(7.0), want.nan_to_num(7.0)), name
        cols = mxquant.mxfp8_dequantize(q.data.mT.contiguous(), mxquant.tile_scales_to_colwise(q.scale, layout=layout),
                                        scale_layout=layout, out_dtype=torch.float32)
        assert torch.equal(cols.nan_to_num(7.0), want.mT.nan_to_num(7.0)), name


ERRORS = [
    (torch.zeros(48, 64), ValueError, r"mxfp8_quantize_2d: x\.shape\[-2\] = 48 \(M\) must be a multiple of 32"),
    (torch.zeros(64, 40), ValueError, r"mxfp8_quantize_2d: x\.shape\[-1\] = 40 \(K\) must be a multiple of 32"),
    (torch.zeros(32), ValueError, r"mxfp8_quantize_2d: x must have at least two dimensions"),
]


@pytest.mark.parametrize("x, exc, match", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors(x, exc, match):
    with pytest.raises(exc, match=match):
        mxquant.mxfp8_quantize_2d(x)
    with FakeTensorMode() as fake, pytest.raises(exc, match=match):
        torch.ops.mxquant.quantize_2d(fake.from_tensor(x), torch.float8_e4m3fn, "rceil", None)


def test_converter_errors():
    scale = mxquant.mxfp8_quantize_2d(torch.zeros(64, 64)).scale
    with pytest.raises(TypeError, match=r"tile_scales_to_rowwise: scale has dtype uint8; it must be float8_e8m0fnu"):
        mxquant.tile_scales_to_rowwise(scale.view(torch.uint8))
    with pytest.raises(ValueError, match=r"tile_scales_to_colwise: scale must have at least two dimensions"):
        mxquant.tile_scales_to_colwise(scale[0])
    with pytest.raises(ValueError, match=r"layout='blocked' is not supported"):
        mxquant.tile_scales_to_rowwise(scale, layout="blocked")


def test_fake_shapes_opcheck_compile():
    with FakeTensorMode() as fake:
        q = mxquant.mxfp8_quantize_2d(fake.from_tensor(torch.empty(2, 96, 160)), torch.float8_e5m2)
    assert q.data.shape == (2, 96, 160) and q.data.dtype == torch.float8_e5m2
    assert q.scale.shape == (2, 3, 5) and q.scale.dtype == torch.float8_e8m0fnu
    x = matrix_inputs(torch.float32, 0)[5][1]  # random (2, 96, 64)
    torch.library.opcheck(torch.ops.mxquant.quantize_2d.default, (x, torch.float8_e4m3fn, "rceil", None))

    def f(x):
        q = mxquant.mxfp8_quantize_2d(x, scale_mode="compressed-tensors")
        return q.data, mxquant.tile_scales_to_rowwise(q.scale, layout="swizzled"), mxquant.tile_scales_to_colwise(q.scale)

    torch._dynamo.reset()
    x = matrix_inputs(torch.bfloat16, 0)[0][1]
    for got, want in zip(torch.compile(f, fullgraph=True)(x), f(x)):
        assert_bytes(got, want, "compiled")
