"""Capability routing of the MXFP4 / NVFP4 calls (backend.FP4_OPS) and their `mxquant verify` rows:
a backend written for today's contract (no ops listed) never serves them and forcing it is
BackendIncapableError, as is forcing a built-in backend that does not claim them; a plugin that
claims one serves only it, with its outputs checked; verify compares a claimant byte for byte
(a one-byte difference fails, an exact copy passes) and gives a non-claimant no rows."""

from __future__ import annotations

import pytest
import torch

import mxquant
from mxquant import reference, reference_fp4
from mxquant.conformance import collect
from mxquant.errors import BackendIncapableError, BackendOutputError

from inline_plugin import Plugin

X = torch.randn(4, 64)
CALLS = {
    "mxfp4_quantize": lambda **kw: mxquant.mxfp4_quantize(X, **kw),
    "nvfp4_quantize": lambda **kw: mxquant.nvfp4_quantize(X, **kw),
    "mxfp4_dequantize": lambda **kw: mxquant.mxfp4_dequantize(*mxquant.mxfp4_quantize(X), **kw),
    "nvfp4_dequantize": lambda **kw: mxquant.nvfp4_dequantize(*mxquant.nvfp4_quantize(X), **kw),
}


def _backend(name, ops=(), **fns):
    return mxquant.Backend(name=name, capabilities=mxquant.Capabilities(devices=frozenset({"cpu"}), ops=frozenset(ops)),
                           probe=lambda d: None, quantize=reference.quantize, dequantize=reference.dequantize,
                           priority=100, **fns)


@pytest.mark.parametrize("op", list(CALLS))
def test_todays_plugin_never_serves_fp4(registry, op):
    registry.register_plugin(Plugin(_backend("today")), "today")
    CALLS[op]()  # served by the reference
    with pytest.raises(BackendIncapableError, match=rf"'today'.*does not claim {op} \(capabilities\.ops: none\)"):
        CALLS[op](backend="today")


@pytest.mark.parametrize("name", ["cpu-eager", "cpu-native"])
def test_forcing_a_builtin_that_does_not_claim_fp4(name):
    backend = mxquant.get_registry().load(next(e for e in mxquant.get_registry().entries() if e.name == name))
    if backend is None or "mxfp4_quantize" in backend.capabilities.ops:
        pytest.skip(f"{name} not loadable here or claims the call")
    with pytest.raises(BackendIncapableError, match=r"does not claim mxfp4_quantize"):
        mxquant.mxfp4_quantize(X, backend=name)


def test_a_claimed_call_is_routed_and_checked(registry):
    calls = []

    def mine(x, mode, layout):
        calls.append(mode)
        return reference_fp4.mxfp4_quantize(x, mode, layout)

    registry.register_plugin(Plugin(_backend("fp4", ops=("mxfp4_quantize",), mxfp4_quantize=mine)), "fp4")
    got = mxquant.mxfp4_quantize(X, scale_mode="floor")
    assert calls == ["floor"] and torch.equal(got.data, mxquant.mxfp4_quantize(X, scale_mode="floor", backend="cpu").data)
    mxquant.nvfp4_quantize(X)  # not claimed: the reference
    assert calls == ["floor"]
    registry.unregister_plugin("fp4")
    bad = lambda x, mode, layout: (reference_fp4.mxfp4_quantize(x, mode, layout)[0][:, :-1], reference_fp4.mxfp4_quantize(x, mode, layout)[1])  # noqa: E731
    registry.register_plugin(Plugin(_backend("bad", ops=("mxfp4_quantize",), mxfp4_quantize=bad)), "bad")
    with pytest.raises(BackendOutputError, match=r"data has shape \(4, 31\), expected \(4, 32\)"):
        mxquant.mxfp4_quantize(X)


def _dq_scribbles_on_scale(data, scale, g, layout, out_dtype):
    out = reference_fp4.nvfp4_dequantize(data, scale, g, layout, out_dtype)
    scale.view(torch.uint8).view(-1)[0] ^= 1  # a backend writing into an input other than the first
    return out


def _q_scribbles_on_global_scale(x, g, mode, layout):
    out = reference_fp4.nvfp4_quantize(x, g, mode, layout)
    g.mul_(2)
    return out


@pytest.mark.parametrize("op,fn,call", [
    ("nvfp4_dequantize", _dq_scribbles_on_scale,
     lambda q: mxquant.nvfp4_dequantize(q.data, q.scale, q.global_scale)),
    ("nvfp4_quantize", _q_scribbles_on_global_scale,
     lambda q: mxquant.nvfp4_quantize(X, q.global_scale.clone()))])
def test_a_backend_writing_into_any_input_is_refused(registry, op, fn, call):
    """Every tensor input is read-only, not only the first (scale and global_scale were unwatched)."""
    q = mxquant.nvfp4_quantize(X)
    registry.register_plugin(Plugin(_backend("scribbler", ops=(op,), **{op: fn})), "scribbler")
    with pytest.raises(BackendOutputError, match=r"it wrote into its inputs \(inputs are read-only\)"):
        call(q)


def _nvfp4_one_byte_off(x, g, mode, layout):
    data, scale, gs = reference_fp4.nvfp4_quantize(x, g, mode, layout)
    data = data.clone()
    if data.numel():
        data.view(-1)[0] ^= 1
    return data, scale, gs


def test_verify_rows(registry):
    exact = _backend("exact", ops=("nvfp4_quantize", "mxfp4_dequantize"), nvfp4_quantize=reference_fp4.nvfp4_quantize,
                     mxfp4_dequantize=reference_fp4.mxfp4_dequantize)
    registry.register_plugin(Plugin(exact), "exact")
    registry.register_plugin(Plugin(_backend("off", ops=("nvfp4_quantize",), nvfp4_quantize=_nvfp4_one_byte_off)), "off")
    registry.register_plugin(Plugin(_backend("today")), "today")
    report = collect(["exact", "off", "today"], registry=registry)
    rows = {(r["backend"], r["op"], r["hp_dtype"], r["scale_layout"]): r for r in report["results"]}
    fp4 = [k for k in rows if k[1] and "fp4" in k[1]]
    assert {k[0] for k in fp4} == {"exact", "off"}  # today's plugin: no FP4 rows
    assert all(rows[k]["status"] == "pass" for k in fp4 if k[0] == "exact")
    assert len([k for k in fp4 if k[0] == "exact"]) == 6 + 6  # 3 dtypes x 2 layouts each
    off = [rows[k] for k in fp4 if k[0] == "off"]
    assert off and all(r["status"] == "fail" and r["unexplained_blocks"] > 0 for r in off)


def test_info_lists_the_fp4_ops():
    from mxquant.backend import FP4_OPS

    report = {b.name: b for b in mxquant.list_backends()}
    assert set(FP4_OPS) <= set(report["cpu"].capabilities["ops"])  # `mxquant info --json` prints these records
