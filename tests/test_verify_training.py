"""`mxquant verify` on the training and MoE calls (conformance/verify_training.py): a backend
claiming them is compared with the reference per block, padding bytes included; a wrong byte,
nonzero padding or a wrong shape is a fail; a difference on NaN blocks only, declared as
nan-ignored, is a deviation; a backend that claims none gets no rows for them."""

from __future__ import annotations

import pytest
import torch

import mxquant
from mxquant import reference, reference_training
from mxquant.backend import TRAINING_OPS
from mxquant.conformance import collect
from mxquant.formats import SCALE_MODES

from inline_plugin import Plugin


def _plugin_backend(name, ops=TRAINING_OPS, deviations=(), **fns):
    impl = {op: getattr(reference_training, op) for op in ops} | fns
    return mxquant.Backend(name=name, capabilities=mxquant.Capabilities(devices=frozenset({"cpu"}), ops=frozenset(ops),
                                                                 scale_modes=frozenset(SCALE_MODES)),
                           probe=lambda d: None, quantize=reference.quantize, priority=-50,
                           deviations=deviations, **impl)


def _statuses(registry, backend):
    registry.register_plugin(Plugin(backend), backend.name)
    report = collect([backend.name], registry=registry)
    out = {}
    for r in report["results"]:
        out.setdefault(r["op"], set()).add(r["status"])
    return out, report


def test_exact_plugin_passes_and_todays_gets_no_rows(registry):
    got, report = _statuses(registry, _plugin_backend("exact"))
    assert all(got[op] == {"pass"} for op in TRAINING_OPS), got
    assert sum(r["op"] in TRAINING_OPS for r in report["results"]) == 18 * 2 + 18 * 2 + 18 + 18 + 18  # colwise/rowcol: 2 layouts
    got, _ = _statuses(registry, _plugin_backend("today", ops=()))
    assert not set(got) & set(TRAINING_OPS), got


def _grouped_with_padding(x, ends, dtype, mode):
    data, scale = reference_training.quantize_grouped(x, ends, dtype, mode)
    scale = scale.view(torch.uint8).clone()
    scale.view(-1)[-1] = 1  # the tail byte is padding in every grouped input
    return data, scale.view(torch.float8_e8m0fnu)


def _colwise_one_byte_off(x, dtype, mode, layout):
    data, scale = reference_training.quantize_colwise(x, dtype, mode, layout)
    data = data.view(torch.uint8).clone()
    if data.numel():
        data.view(-1)[0] ^= 1
    return data.view(dtype), scale


def _2d_wrong_shape(x, dtype, mode):
    data, scale = reference_training.quantize_2d(x, dtype, mode)
    return data, scale.reshape(-1)


@pytest.mark.parametrize("op, fn, reason", [
    ("quantize_grouped", _grouped_with_padding, "padding bytes of the scale layout are not zero"),
    ("quantize_colwise", _colwise_one_byte_off, "blocks differ from the reference"),
    ("quantize_2d", _2d_wrong_shape, "output 1 has shape"),
])
def test_broken_plugin_fails(registry, op, fn, reason):
    got, report = _statuses(registry, _plugin_backend("broken", ops=(op,), **{op: fn}))
    assert got[op] == {"fail"}
    assert all(reason in r["reason"] for r in report["results"] if r["op"] == op)


def test_nan_only_difference_is_a_declared_deviation(registry):
    def nan_ignored_2d(x, dtype, mode):
        data, scale = reference_training.quantize_2d(x, dtype, mode)
        nan_tile = scale.view(torch.uint8) == 0xFF
        tiles_nan = x.float().isnan()
        *lead, m, k = x.shape
        has_nan = tiles_nan.reshape(*lead, m // 32, 32, k // 32, 32).any(-1).any(-2)
        scale = torch.where(nan_tile & has_nan, 0x7F, scale.view(torch.uint8)).view(torch.float8_e8m0fnu)
        return data, scale.contiguous()

    dev = (mxquant.Deviation("nan-ignored", "NaN tiles get a finite scale"),)
    got, report = _statuses(registry, _plugin_backend("nanny", ops=("quantize_2d",), deviations=dev,
                                                       quantize_2d=nan_ignored_2d))
    assert got["quantize_2d"] == {"deviation"}, report["results"][0]
