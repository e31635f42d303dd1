"""Capability routing of the training and MoE calls (backend.TRAINING_OPS): a backend written
for today's contract never claims them, whatever its priority; one that lists a call serves it
(and only it); forcing one that does not claim a call is BackendIncapableError; no claimant is
NoBackendError; a claimed call's outputs are checked; a listed call without its callable is a
registration error; `mxquant info --json` shows each backend's ops."""

from __future__ import annotations

import pytest
import torch

import mxquant
from mxquant import reference, reference_training
from mxquant.backend import CLAIMABLE_OPS, PUBLIC_NAMES, TRAINING_OPS
from mxquant.errors import BackendIncapableError, BackendOutputError, NoBackendError
from mxquant.registry import Registry, check_backend, set_registry

from inline_plugin import Plugin

X = torch.randn(64, 96)
ENDS = torch.tensor([10, 64], dtype=torch.int32)
ENDS_32 = torch.tensor([32, 64], dtype=torch.int32)  # K-groups: ends multiples of 32
CALLS = {
    "quantize_colwise": lambda **kw: mxquant.mxfp8_quantize(X, axis=-2, **kw),
    "quantize_rowcol": lambda **kw: mxquant.mxfp8_quantize_rowcol(X, **kw),
    "quantize_2d": lambda **kw: mxquant.mxfp8_quantize_2d(X, **kw),
    "quantize_grouped": lambda **kw: mxquant.mxfp8_quantize_grouped(X, ENDS, **kw),
    "quantize_grouped_colwise": lambda **kw: mxquant.mxfp8_quantize_grouped(X, ENDS_32, axis=-2, **kw),
}


def _counting(fn, calls: list, name: str):
    def wrapped(*args):
        calls.append(name)
        return fn(*args)
    return wrapped


def _backend(name, calls, ops=(), priority=100, **fns):
    return mxquant.Backend(name=name, capabilities=mxquant.Capabilities(devices=frozenset({"cpu"}), ops=frozenset(ops)),
                           probe=lambda d: None, quantize=_counting(reference.quantize, calls, "quantize"),
                           priority=priority, **fns)


def test_todays_plugin_never_claims_the_new_calls(registry):
    calls = []
    registry.register_plugin(Plugin(_backend("today", calls)), "today")
    mxquant.mxfp8_quantize(X)
    assert calls == ["quantize"]  # it wins today's call
    for op, call in CALLS.items():
        call()  # served by the reference
        with pytest.raises(BackendIncapableError, match=rf"'today'.*does not claim {op} \(capabilities\.ops: none\)"):
            call(backend="today")
    assert calls == ["quantize"]


def test_a_claimed_call_is_routed_and_only_it(registry):
    calls = []
    fn = _counting(reference_training.quantize_2d, calls, "quantize_2d")
    registry.register_plugin(Plugin(_backend("tiles", calls, ops=("quantize_2d",), quantize_2d=fn)), "tiles")
    want = mxquant.mxfp8_quantize_2d(X, backend="cpu")
    got = mxquant.mxfp8_quantize_2d(X)
    assert calls == ["quantize_2d"] and torch.equal(got.scale.view(torch.uint8), want.scale.view(torch.uint8))
    for op, call in CALLS.items():
        if op != "quantize_2d":
            call()
    assert calls == ["quantize_2d"]


def test_no_claimant_is_no_backend_error(monkeypatch):
    monkeypatch.setenv("MXQUANT_PLUGINS", "none")
    reg = Registry(entry_points=False)
    previous = set_registry(reg)
    try:
        reg.register_plugin(Plugin(_backend("today", [])), "today")
        for op, call in CALLS.items():
            name = PUBLIC_NAMES[op].partition("(")[0]  # the public call's name, not the capability's
            with pytest.raises(NoBackendError, match=rf"no backend can run {name}\(cpu, float32 -> float8_e4m3fn"):
                call()
    finally:
        set_registry(previous)


def test_claimed_outputs_are_checked(registry):
    def wrong(x, dtype, mode):
        data, scale = reference_training.quantize_2d(x, dtype, mode)
        return data, scale[..., :1].contiguous()

    registry.register_plugin(Plugin(_backend("bad", [], ops=("quantize_2d",), quantize_2d=wrong)), "bad")
    with pytest.raises(BackendOutputError, match=r"'bad' \(plugin bad.*scale has shape \(2, 1\), expected \(2, 3\)"):
        mxquant.mxfp8_quantize_2d(X)

    def wrong_col(x, dtype, mode, layout):
        data, scale = reference_training.quantize_colwise(x, dtype, mode, layout)
        return data, scale[..., :1].contiguous()

    registry.register_plugin(Plugin(_backend("badcol", [], ops=("quantize_colwise",), quantize_colwise=wrong_col,
                                             priority=200)), "badcol")
    # named as the public call is spelled, axis last
    with pytest.raises(BackendOutputError, match=r"in mxfp8_quantize\(float32 \(64, 96\) -> float8_e4m3fn, rceil, "
                                                 r"axis=-2\)"):
        mxquant.mxfp8_quantize(X, axis=-2)


def test_listed_without_callable_or_unknown_is_refused():
    with pytest.raises(TypeError, match=r"capabilities\.ops claims quantize_grouped but quantize_grouped is not given"):
        check_backend(_backend("half", [], ops=("quantize_grouped",)))
    with pytest.raises(TypeError, match=r"capabilities\.ops names 'quantize_3d'; known: quantize_colwise"):
        check_backend(_backend("typo", [], ops=("quantize_3d",)))


def test_info_lists_ops(registry):
    report = {b.name: b for b in mxquant.list_backends()}
    assert report["cpu"].capabilities["ops"] == sorted(CLAIMABLE_OPS)
    if report["cpu-eager"].capabilities is not None:
        assert report["cpu-eager"].capabilities["ops"] == []
    if report["cpu-native"].capabilities is not None:  # the training calls (issue 21) and FP4 calls (issue 23)
        from mxquant.backend import FP4_OPS, TRAINING_OPS

        assert report["cpu-native"].capabilities["ops"] == sorted(TRAINING_OPS + FP4_OPS)
