"""mxfp8_quantize_rowcol (docs/semantics.md, "Row-wise and column-wise in one call"): each of
(row, col) byte for byte its single call (today's row-wise call; the row-wise call on
x.mT.contiguous()) and the NumPy oracle, on special tiles, the adversarial rows, strided views
and odd shapes, in every input dtype, element dtype, scale mode and layout; errors, fakes, compile."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant.conformance.training_inputs import matrix_inputs

import mx_oracle as oracle
from training_helpers import GRID_LAYOUTS, assert_bytes, ids


@pytest.mark.parametrize("hp, dtype, mode, layout", GRID_LAYOUTS, ids=[ids(c) for c in GRID_LAYOUTS])
@pytest.mark.parametrize("backend", [None, "cpu"], ids=["routed", "reference"])
def test_each_half_is_its_single_call_and_the_oracle(hp, dtype, mode, layout, backend):
    """The routed backend and the reference (`cpu`), each half against its single call and the
    NumPy oracle."""
    for name, x in matrix_inputs(hp, 0):
        row, col = mxquant.mxfp8_quantize_rowcol(x, dtype, scale_mode=mode, scale_layout=layout, backend=backend)
        want_row = mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, scale_layout=layout)
        want_col = mxquant.mxfp8_quantize(x.mT.contiguous(), dtype, scale_mode=mode, scale_layout=layout)
        for got, want, what in ((row, want_row, "row"), (col, want_col, "col")):
            assert_bytes(got.data, want.data, f"{name} {what} data")
            assert_bytes(got.scale, want.scale, f"{name} {what} scale")
        od, os = oracle.quantize(x, dtype, mode, layout)
        assert_bytes(row.data, od, f"{name} row data vs oracle")
        assert_bytes(row.scale, oracle.public(os, layout), f"{name} row scale vs oracle")
        od, os = oracle.quantize_colwise(x, dtype, mode, layout)
        assert_bytes(col.data, od, f"{name} col data vs oracle")
        assert_bytes(col.scale, oracle.public(os, layout), f"{name} col scale vs oracle")


ERRORS = [
    (torch.zeros(48, 64), ValueError, r"mxfp8_quantize_rowcol: x\.shape\[-2\] = 48 \(M\) must be a multiple of 32"),
    (torch.zeros(64, 48), ValueError, r"mxfp8_quantize_rowcol: x\.shape\[-1\] = 48 \(K\) must be a multiple of 32"),
    (torch.zeros(64), ValueError, r"mxfp8_quantize_rowcol: x must have at least two dimensions"),
    (torch.zeros(64, 64, dtype=torch.float64), TypeError, r"x has dtype float64"),
]


@pytest.mark.parametrize("x, exc, match", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors(x, exc, match):
    with pytest.raises(exc, match=match):
        mxquant.mxfp8_quantize_rowcol(x)
    with FakeTensorMode() as fake, pytest.raises(exc, match=match):
        torch.ops.mxquant.quantize_rowcol(fake.from_tensor(x), torch.float8_e4m3fn, "rceil", "linear", None)


def test_fake_shapes():
    with FakeTensorMode() as fake:
        x = fake.from_tensor(torch.empty(3, 64, 160, dtype=torch.float16))
        (rd, rs), (cd, cs) = mxquant.mxfp8_quantize_rowcol(x, scale_layout="swizzled")
    assert rd.shape == (3, 64, 160) and cd.shape == (3, 160, 64)
    assert rs.shape == (256 * 8,) and cs.shape == (512 * 4,)  # round_up(192, 128) * 8; round_up(480, 128) * 4


def test_opcheck_and_compile():
    x = matrix_inputs(torch.float32, 0)[5][1]  # random (2, 96, 64)
    torch.library.opcheck(torch.ops.mxquant.quantize_rowcol.default, (x, torch.float8_e4m3fn, "floor", "swizzled", None))

    def f(x):
        return mxquant.mxfp8_quantize_rowcol(x, torch.float8_e5m2, scale_layout="swizzled")

    torch._dynamo.reset()
    x = matrix_inputs(torch.bfloat16, 0)[0][1]  # the special tiles: NaN / Inf blocks included
    (a, b), (c, d) = torch.compile(f, fullgraph=True)(x)
    (wa, wb), (wc, wd) = f(x)
    for got, want in ((a, wa), (b, wb), (c, wc), (d, wd)):
        assert_bytes(got, want, "compiled")
