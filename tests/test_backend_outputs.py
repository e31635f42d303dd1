"""Contract tests: a backend's outputs are checked before they reach the caller (mxquant/outputs.py).

Each test registers an injected fake backend (an in-process plugin) that breaks one rule of
the output contract (docs/writing-a-backend.md, "Outputs") and checks that the public call
raises BackendOutputError naming the backend, its plugin and what is wrong, instead of
returning the outputs; and that `mxquant verify` fails a backend that writes into its input."""

from __future__ import annotations

import json

import pytest
import torch

import mxquant
import mxquant.cli
from mxquant import reference

from inline_plugin import Plugin
from mx_oracle import public as oracle_public
from mx_oracle import quantize as oracle_quantize

E4 = torch.float8_e4m3fn


def add(registry, name, quantize=None, dequantize=None):
    backend = mxquant.Backend(name, mxquant.Capabilities(devices=frozenset({"cpu"})), lambda device: None,
                              quantize, dequantize, priority=-5)
    registry.register_plugin(Plugin(backend), f"plugin-of-{name}")


def _flat(x, dtype, mode, layout):
    data, _ = reference.quantize(x, dtype, mode, layout)
    return data.reshape(-1), torch.zeros(1, dtype=torch.float8_e8m0fnu)


def _meta(x, dtype, mode, layout):
    return tuple(t.to("meta") for t in reference.quantize(x, dtype, mode, layout))


def _strided_data(x, dtype, mode, layout):
    data, scale = reference.quantize(x, dtype, mode, layout)
    return data.t().contiguous().t(), scale


def _strided_scale(x, dtype, mode, layout):
    data, scale = reference.quantize(x, dtype, mode, layout)
    return data, scale.t().contiguous().t()


def _writes_input(x, dtype, mode, layout):
    out = reference.quantize(x, dtype, mode, layout)
    x.mul_(2)
    return out


def _uint8_scale(x, dtype, mode, layout):
    data, scale = reference.quantize(x, dtype, mode, layout)
    return data, scale.view(torch.uint8)


def _one_tensor(x, dtype, mode, layout):
    return reference.quantize(x, dtype, mode, layout)[0]


def _swapped(x, dtype, mode, layout):
    data, scale = reference.quantize(x, dtype, mode, layout)
    return scale, data


QUANTIZE_BREAKS = {
    "flat": (_flat, "data has shape (256,), expected (4, 64)"),
    "meta": (_meta, "data is on device meta, expected cpu"),
    "strided-data": (_strided_data, "data is not contiguous"),
    "strided-scale": (_strided_scale, "scale is not contiguous"),
    "writes-input": (_writes_input, "it wrote into its input x"),
    "uint8-scale": (_uint8_scale, "scale has dtype uint8, expected float8_e8m0fnu"),
    "one-tensor": (_one_tensor, "quantize returned a Tensor, expected a tuple (data, scale)"),
    "swapped": (_swapped, "data has dtype float8_e8m0fnu, expected float8_e4m3fn"),
}


def _float64(data, scale, layout, out_dtype):
    return reference.dequantize(data, scale, layout, torch.float32).double()


def _dq_writes_scale(data, scale, layout, out_dtype):
    out = reference.dequantize(data, scale, layout, out_dtype)
    scale.view(torch.uint8).add_(1)
    return out


def _dq_strided(data, scale, layout, out_dtype):
    return reference.dequantize(data, scale, layout, out_dtype).t().contiguous().t()


DEQUANTIZE_BREAKS = {
    "float64": (_float64, "the output has dtype float64, expected bfloat16"),
    "writes-scale": (_dq_writes_scale, "it wrote into its input scale"),
    "strided-out": (_dq_strided, "the output is not contiguous"),
}


def call_broken(registry, name):
    """Register backend `name` of QUANTIZE_BREAKS / DEQUANTIZE_BREAKS and call it."""
    x = torch.randn(4, 64)
    if name in QUANTIZE_BREAKS:
        add(registry, name, quantize=QUANTIZE_BREAKS[name][0])
        return mxquant.mxfp8_quantize(x, backend=name)
    add(registry, name, dequantize=DEQUANTIZE_BREAKS[name][0])
    data, scale = oracle_quantize(x, E4)
    return mxquant.mxfp8_dequantize(data.view(E4), scale.view(torch.float8_e8m0fnu), backend=name)


@pytest.mark.parametrize("name", [*QUANTIZE_BREAKS, *DEQUANTIZE_BREAKS])
def test_contract_broken_outputs_raise(registry, name):
    problem = (QUANTIZE_BREAKS.get(name) or DEQUANTIZE_BREAKS[name])[1]
    with pytest.raises(mxquant.BackendOutputError) as info:
        call_broken(registry, name)
    err = info.value
    assert err.backend == name and problem in err.problem, str(err)
    assert f"backend {name!r} (plugin plugin-of-{name})" in str(err) and problem in str(err)


def test_contract_swizzled_scale_shape_is_the_backend_form(registry):
    # The backend contract's swizzled scale is 2-D (round_up(M, 128), round_up(K / 32, 4));
    # a backend returning it flattened breaks it, whatever the public API returns.
    def flat_swizzled(x, dtype, mode, layout):
        data, scale = reference.quantize(x, dtype, mode, layout)
        return data, scale.reshape(-1)

    add(registry, "flat-swizzled", quantize=flat_swizzled)
    with pytest.raises(mxquant.BackendOutputError, match=r"scale has shape \(512,\), expected \(128, 4\)"):
        mxquant.mxfp8_quantize(torch.randn(3, 96), scale_layout="swizzled", backend="flat-swizzled")


def test_contract_conforming_outputs_pass_untouched(registry):
    # The checks let a conforming backend's own tensors through (no copy), for every shape
    # class: leading dims, empty, swizzled; and a list (data, scale) comes back as a tuple.
    seen = []

    def exact(x, dtype, mode, layout):
        data, scale = oracle_quantize(x, dtype, mode, layout)
        seen.append((data, scale))
        return [data.view(dtype), scale.view(torch.float8_e8m0fnu)]

    add(registry, "exact", quantize=exact)
    for shape in ((4, 64), (2, 3, 32), (0, 64), (5, 0), (130, 160)):
        for layout in ("linear", "swizzled"):
            x = torch.randn(shape)
            data, scale = mxquant.mxfp8_quantize(x, scale_layout=layout, backend="exact")
            want_d, want_s = seen[-1]
            assert data.data_ptr() == want_d.data_ptr() or data.numel() == 0
            assert torch.equal(data.view(torch.uint8), want_d)
            assert torch.equal(scale.view(torch.uint8), oracle_public(want_s, layout))


def test_contract_inference_tensors_are_checked_too(registry):
    add(registry, "meta", quantize=_meta)
    with torch.inference_mode():
        x = torch.randn(4, 64)
        with pytest.raises(mxquant.BackendOutputError, match="on device meta"):
            mxquant.mxfp8_quantize(x, backend="meta")


def test_contract_verify_fails_a_backend_that_writes_its_input(registry, capsys):
    # A raw write (through .data, which no version counter sees) is caught by verify's copy.
    def sneaky(x, dtype, mode, layout):
        out = reference.quantize(x, dtype, mode, layout)
        x.data.view(-1)[:1] = 0
        return out

    def sneaky_dq(data, scale, layout, out_dtype):
        out = reference.dequantize(data, scale, layout, out_dtype)
        data.data.view(torch.uint8).view(-1)[:1] = 0x7F
        return out

    add(registry, "sneaky", quantize=sneaky, dequantize=sneaky_dq)
    rc = mxquant.cli.main(["verify", "--json", "--backend", "sneaky"])
    report = json.loads(capsys.readouterr().out)
    failed = [r for r in report["results"] if r["status"] == "fail"]
    assert rc == 1 and failed
    assert {r["op"] for r in failed} == {"quantize", "dequantize"}
    assert all("wrote into its input" in r["reason"] for r in failed), [r["reason"] for r in failed]
    assert any("input data" in r["reason"] for r in failed if r["op"] == "dequantize")
