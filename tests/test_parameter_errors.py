"""A mistyped argument gets the same error whether x is a plain tensor (the eager path) or an
nn.Parameter (x requires grad: the custom op's path): the checks run before the op's schema
does. Before (the ninth session's review), the Parameter got the schema's RuntimeError
("Expected a value of type ...") where the plain tensor got checks.py's TypeError / ValueError."""

from __future__ import annotations

import pytest
import torch

import mxquant

CALLS = {
    "mxfp8_quantize(backend=1)": lambda x: mxquant.mxfp8_quantize(x, backend=1),
    "mxfp8_quantize(dtype='e4m3')": lambda x: mxquant.mxfp8_quantize(x, dtype="e4m3"),
    "mxfp8_quantize(axis=-2, scale_layout=None)": lambda x: mxquant.mxfp8_quantize(x, axis=-2, scale_layout=None),
    "mxfp8_quantize_rowcol(scale_mode=3)": lambda x: mxquant.mxfp8_quantize_rowcol(x, scale_mode=3),
    "mxfp8_quantize_2d(backend=2)": lambda x: mxquant.mxfp8_quantize_2d(x, backend=2),
    "mxfp8_quantize_grouped(ends as a list)": lambda x: mxquant.mxfp8_quantize_grouped(x, [32, 64]),
    "mxfp8_quantize_grouped(axis=-2, ends as a list)": lambda x: mxquant.mxfp8_quantize_grouped(x, [32, 64], axis=-2),
    "mxfp8_fake_quantize(scale_mode=None)": lambda x: mxquant.mxfp8_fake_quantize(x, scale_mode=None),
    "mxfp4_quantize(scale_layout=None)": lambda x: mxquant.mxfp4_quantize(x, scale_layout=None),
    "nvfp4_quantize(global_scale=2.0)": lambda x: mxquant.nvfp4_quantize(x, 2.0),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_a_parameter_gets_the_same_error_as_a_plain_tensor(call):
    x = torch.randn(64, 64)
    with pytest.raises((TypeError, ValueError)) as plain:
        call(x)
    with pytest.raises((TypeError, ValueError)) as param:
        call(torch.nn.Parameter(x.clone()))
    assert type(param.value) is type(plain.value)
    assert str(param.value) == str(plain.value)


def test_the_dequantize_calls_check_first_too():
    x = torch.randn(64, 64)
    q8, q4, n4 = mxquant.mxfp8_quantize(x), mxquant.mxfp4_quantize(x), mxquant.nvfp4_quantize(x)
    calls = [
        lambda d, s, g: mxquant.mxfp8_dequantize(d, s, out_dtype="bf16"),
        lambda d, s, g: mxquant.mxfp4_dequantize(d, s, scale_layout=7),
        lambda d, s, g: mxquant.nvfp4_dequantize(d, s, 1.0),
    ]
    for call, (d, s, g) in zip(calls, [(q8.data, q8.scale, None), (q4.data, q4.scale, None), (n4.data, n4.scale, n4.global_scale)]):
        with pytest.raises((TypeError, ValueError)) as plain:
            call(d, s, g)
        with pytest.raises((TypeError, ValueError)) as meta:  # meta data: the custom op's path
            call(d.to("meta"), s.to("meta"), g)
        assert type(meta.value) is type(plain.value) and str(meta.value) == str(plain.value)
