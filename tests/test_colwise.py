"""mxfp8_quantize(x, ..., axis=-2), column-wise (docs/semantics.md, "Column-wise"): byte for
byte today's row-wise call on x.mT.contiguous() and the NumPy oracle (tests/mx_oracle.py, its
own transpose) on the adversarial batch laid down the columns, strided views and odd shapes, in
every input dtype, element dtype, scale mode and layout; axis spellings, errors, fakes, compile."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import mxquant
from mxquant.conformance.training_inputs import colwise_inputs

import mx_oracle as oracle
from training_helpers import GRID_LAYOUTS, assert_bytes, ids


@pytest.mark.parametrize("hp, dtype, mode, layout", GRID_LAYOUTS, ids=[ids(c) for c in GRID_LAYOUTS])
@pytest.mark.parametrize("backend", [None, "cpu"], ids=["routed", "reference"])
def test_colwise_is_rowwise_of_transpose_and_oracle(hp, dtype, mode, layout, backend):
    """The routed backend (cpu-native where built) and the reference (`cpu`, the oracle of
    `mxquant verify`) each against the NumPy oracle and the transpose identity."""
    for name, x in colwise_inputs(hp, 0):
        got = mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, scale_layout=layout, axis=-2, backend=backend)
        assert got.data.dtype == dtype and got.scale.dtype == torch.float8_e8m0fnu
        row = mxquant.mxfp8_quantize(x.mT.contiguous(), dtype, scale_mode=mode, scale_layout=layout)
        assert_bytes(got.data, row.data, f"{name} data vs row-wise of x.mT")
        assert_bytes(got.scale, row.scale, f"{name} scale vs row-wise of x.mT")
        want_data, want_scale = oracle.quantize_colwise(x, dtype, mode, layout)
        assert_bytes(got.data, want_data, f"{name} data vs oracle")
        assert_bytes(got.scale, oracle.public(want_scale, layout), f"{name} scale vs oracle")


def test_axis_spellings():
    x = colwise_inputs(torch.bfloat16, 0)[4][1]  # (2, 96, 33)
    col = mxquant.mxfp8_quantize(x, axis=-2)
    for axis in (1, -2):
        assert_bytes(mxquant.mxfp8_quantize(x, axis=axis).data, col.data, f"axis={axis}")
    y = torch.randn(4, 64)
    for axis in (1, -1):
        assert_bytes(mxquant.mxfp8_quantize(y, axis=axis).scale, mxquant.mxfp8_quantize(y).scale, f"axis={axis}")


ERRORS = [
    (torch.zeros(48, 8), {"axis": -2}, ValueError, r"x\.shape\[-2\] = 48 \(M\) must be a multiple of 32"),
    (torch.zeros(64), {"axis": -2}, ValueError, r"axis=-2 is not supported for x of 1 dimensions"),
    (torch.zeros(64, 64), {"axis": 2}, ValueError, r"axis=2 is not supported"),
    (torch.zeros(64, 64), {"axis": -3}, ValueError, r"axis=-3 is not supported"),
    (torch.zeros(64, 64), {"axis": 1.0}, TypeError, r"axis must be an int"),
    (torch.zeros(64, 64), {"axis": -1.0}, TypeError, r"axis must be an int .*got float"),  # was accepted
    (torch.zeros(64, 64), {"axis": True}, TypeError, r"axis must be an int .*got bool"),
    (torch.zeros(64, 64, dtype=torch.int32), {"axis": -2}, TypeError, r"x has dtype int32"),
    (torch.zeros(64, 64), {"axis": -2, "scale_layout": "tiled"}, ValueError, r"scale_layout='tiled'"),
    # the argument checks come before the axis's (docs/semantics.md, "Errors of the new calls")
    ("abc", {"axis": 1}, TypeError, r"x must be a torch\.Tensor, got str"),
    (torch.zeros(64, dtype=torch.int32), {"axis": -2}, TypeError, r"x has dtype int32"),
    (torch.zeros(64, 64), {"axis": -3, "backend": 3}, TypeError, r"backend must be a backend name"),
    (torch.zeros(64, 64), {"axis": "a", "scale_mode": "up"}, ValueError, r"scale_mode='up'"),
]


@pytest.mark.parametrize("x, kwargs, exc, match", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        mxquant.mxfp8_quantize(x, **kwargs)
    if kwargs["axis"] == -2 and x.dim() >= 2:  # the custom op and its fake check alike
        args = (torch.float8_e4m3fn, "rceil", kwargs.get("scale_layout", "linear"), None)
        with pytest.raises(exc, match=match):
            torch.ops.mxquant.quantize_colwise(x, *args)
        with FakeTensorMode() as fake, pytest.raises(exc, match=match):
            torch.ops.mxquant.quantize_colwise(fake.from_tensor(x), *args)


@pytest.mark.parametrize("layout", ["linear", "swizzled"])
def test_fake_shapes(layout):
    with FakeTensorMode() as fake:
        x = fake.from_tensor(torch.empty(2, 64, 100, dtype=torch.bfloat16))
        data, scale = mxquant.mxfp8_quantize(x, torch.float8_e5m2, scale_layout=layout, axis=-2)
    assert data.shape == (2, 100, 64) and data.dtype == torch.float8_e5m2 and data.is_contiguous()
    assert scale.dtype == torch.float8_e8m0fnu
    assert scale.shape == ((2, 100, 2) if layout == "linear" else (256 * 4,))


def test_opcheck():
    x = colwise_inputs(torch.float32, 0)[5][1]  # (3, 2, 64, 40), finite
    torch.library.opcheck(torch.ops.mxquant.quantize_colwise.default, (x, torch.float8_e4m3fn, "rceil", "swizzled", None))


def test_torch_compile_fullgraph_and_no_gradient():
    def f(x):
        return mxquant.mxfp8_quantize(x, torch.float8_e5m2, scale_mode="floor", scale_layout="swizzled", axis=-2)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    for name, x in colwise_inputs(torch.float32, 0)[:1]:
        for got, want in zip(compiled(x), f(x)):
            assert_bytes(got, want, name)
    w = torch.nn.Parameter(torch.randn(64, 32))
    data, scale = mxquant.mxfp8_quantize(w, axis=-2)
    assert not data.requires_grad and not scale.requires_grad


def test_a_numpy_integer_axis_is_an_int():
    """numpy's integers index like ints (operator.index): axis=np.int64(-2) is column-wise."""
    import numpy as np

    x = torch.randn(64, 96)
    for axis, want in ((np.int64(-2), mxquant.mxfp8_quantize(x.mT.contiguous())), (np.int32(-1), mxquant.mxfp8_quantize(x))):
        got = mxquant.mxfp8_quantize(x, axis=axis)
        assert torch.equal(got.data.view(torch.uint8), want.data.view(torch.uint8))
        assert torch.equal(got.scale.view(torch.uint8), want.scale.view(torch.uint8))
