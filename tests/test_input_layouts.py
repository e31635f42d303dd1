"""Sparse, MKLDNN and other non-strided tensors get one clear TypeError naming the argument and its
layout, from every call and backend, also for a signature whose dense twin was checked and cached
before (the cached paths skip the checks a signature pins; a layout is not part of a shape).

Before (the ninth session's review): torch's own errors, of a type that differed from backend to
backend (NotImplementedError from `cpu`, RuntimeError from `cpu-native`), and for the newer calls
wrapped in a BackendCallError that blamed a built-in backend and suggested forcing another."""

from __future__ import annotations

import warnings

import pytest
import torch

import mxquant

BACKENDS = ["cpu", "cpu-native"]
E4M3 = torch.float8_e4m3fn


def _sparse(t, how):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        return getattr(t, how)()


def _x():
    return torch.randn(64, 64)


def _ends():
    return torch.tensor([32, 64], dtype=torch.int32)


# name -> (call(x, ends, g, backend), the argument made non-strided, how, which tensors are dense)
def _quantize_cases():
    x, ends, g = _x(), _ends(), torch.ones(1)
    calls = {
        "mxfp8_quantize": lambda x, e, g, b: mxquant.mxfp8_quantize(x, backend=b),
        "mxfp8_quantize(axis=-2)": lambda x, e, g, b: mxquant.mxfp8_quantize(x, axis=-2, backend=b),
        "mxfp8_quantize_rowcol": lambda x, e, g, b: mxquant.mxfp8_quantize_rowcol(x, backend=b),
        "mxfp8_quantize_2d": lambda x, e, g, b: mxquant.mxfp8_quantize_2d(x, backend=b),
        "mxfp8_quantize_grouped": lambda x, e, g, b: mxquant.mxfp8_quantize_grouped(x, e, backend=b),
        "mxfp8_quantize_grouped(axis=-2)": lambda x, e, g, b: mxquant.mxfp8_quantize_grouped(x, e, axis=-2, backend=b),
        "mxfp4_quantize": lambda x, e, g, b: mxquant.mxfp4_quantize(x, backend=b),
        "nvfp4_quantize": lambda x, e, g, b: mxquant.nvfp4_quantize(x, backend=b),
        "nvfp4_quantize(g)": lambda x, e, g, b: mxquant.nvfp4_quantize(x, g, backend=b),
    }
    for name, call in calls.items():
        for how in ("to_sparse", "to_sparse_csr", "to_mkldnn"):
            yield name, call, "x", how, (x, ends, g)
    yield "mxfp8_quantize_grouped", calls["mxfp8_quantize_grouped"], "group_ends", "to_sparse", (x, ends, g)
    yield "nvfp4_quantize(g)", calls["nvfp4_quantize(g)"], "global_scale", "to_sparse", (x, ends, g)
    yield "nvfp4_quantize(g)", calls["nvfp4_quantize(g)"], "global_scale", "to_mkldnn", (x, ends, g)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,call,arg,how,dense", [pytest.param(*c, id=f"{c[0]}-{c[2]}-{c[3]}")
                                                     for c in _quantize_cases()])
def test_a_non_strided_argument_is_a_type_error_naming_it(backend, name, call, arg, how, dense):
    x, ends, g = dense
    call(x, ends, g, backend)  # the dense signature first: checked, then cached
    _assert_refused(call, {"x": x, "group_ends": ends, "global_scale": g}, arg, how, backend)


def _assert_refused(call, args: dict, arg: str, how: str, backend: str) -> None:
    """call(*args, backend) with args[arg] made non-strided (`how`) raises one TypeError naming it."""
    bad = {**args, arg: _sparse(args[arg], how)}
    with pytest.raises(TypeError, match=rf"{arg} has layout torch\.\w+; mxquant takes dense \(torch\.strided\)"):
        call(*bad.values(), backend)


def _dequantize_cases():
    x = _x()
    q8 = mxquant.mxfp8_quantize(x)
    q4 = mxquant.mxfp4_quantize(x)
    n4 = mxquant.nvfp4_quantize(x)
    yield ("mxfp8_dequantize", lambda d, s, g, b: mxquant.mxfp8_dequantize(d, s, backend=b), (q8.data, q8.scale, None),
           [("data", "to_sparse_csr"), ("scale", "to_sparse_csr")])
    yield ("mxfp4_dequantize", lambda d, s, g, b: mxquant.mxfp4_dequantize(d, s, backend=b), (q4.data, q4.scale, None),
           [("data", "to_sparse"), ("data", "to_sparse_csr"), ("data", "to_mkldnn"), ("scale", "to_sparse_csr")])
    yield ("nvfp4_dequantize", lambda d, s, g, b: mxquant.nvfp4_dequantize(d, s, g, backend=b),
           (n4.data, n4.scale, n4.global_scale),
           [("data", "to_sparse"), ("scale", "to_sparse_csr"), ("global_scale", "to_sparse")])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,call,dense,variants", [pytest.param(*c, id=c[0]) for c in _dequantize_cases()])
def test_dequantize_rejects_non_strided_data_scale_and_global_scale(backend, name, call, dense, variants):
    data, scale, g = dense
    call(data, scale, g, backend)  # cached as a valid signature first
    for arg, how in variants:
        _assert_refused(call, {"data": data, "scale": scale, "global_scale": g}, arg, how, backend)


def test_the_dense_call_after_a_rejected_sparse_one_still_gives_the_reference_bytes():
    """The rejection leaves no cache entry behind that a later dense call of the same shape trips on."""
    x = _x()
    with pytest.raises(TypeError):
        mxquant.mxfp8_quantize(_sparse(x, "to_sparse"), backend="cpu-native")
    got = mxquant.mxfp8_quantize(x, backend="cpu-native")
    want = mxquant.mxfp8_quantize(x, backend="cpu")
    assert torch.equal(got.data.view(torch.uint8), want.data.view(torch.uint8))
    assert torch.equal(got.scale.view(torch.uint8), want.scale.view(torch.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nested_tensors_of_either_layout_are_refused(backend):
    """A nested tensor in the default (strided) layout reports layout == torch.strided; it
    reached x.shape and torch's "NestedTensorImpl doesn't support sizes" (review of this session)."""
    x = _x()
    mxquant.mxfp8_quantize(x, backend=backend)  # the dense signature cached first
    for layout in (torch.strided, torch.jagged):
        nt = torch.nested.nested_tensor([x[:32], x[32:]], layout=layout)
        for call in (lambda t: mxquant.mxfp8_quantize(t, backend=backend),
                     lambda t: mxquant.mxfp8_quantize(t, axis=-2, backend=backend),
                     lambda t: mxquant.mxfp4_quantize(t, backend=backend)):
            with pytest.raises(TypeError, match=r"x has (a nested tensor|layout torch\.jagged); mxquant takes dense"):
                call(nt)


def test_tile_scale_converters_refuse_a_sparse_scale():
    scale = mxquant.mxfp8_quantize_2d(torch.randn(64, 64)).scale
    for fn in (mxquant.tile_scales_to_rowwise, mxquant.tile_scales_to_colwise):
        with pytest.raises(TypeError, match=r"scale has layout torch\.sparse_csr; mxquant takes dense .*scale\.to_dense"):
            fn(_sparse(scale, "to_sparse_csr"))
