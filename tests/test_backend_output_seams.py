"""Contract tests (injected fake backends, in-process plugins) for the output seams the
twenty-eighth session's review found open: a backend that hands out one static buffer twice (a
later call changed a result its caller still held, and `mxquant verify` passed it), outputs that
overlap one another, an output that requires grad or is an inference tensor outside inference
mode, a backend that raises SystemExit under `mxquant verify` (it exited 0 with no report), an
exception whose str() raises, a write into the input before raising, and a plugin that prints to
stdout while `--json` reports are built (the JSON was unreadable). Oracle: the reference's bytes
(mx_oracle), and json.loads of what stdout holds."""

from __future__ import annotations

import json
import os

import pytest
import torch

import mxquant
import mxquant.cli
from inline_plugin import Plugin
from mx_oracle import backend_dequantize, backend_quantize

pytestmark = pytest.mark.usefixtures("cpu_only")


def add(registry, name, quantize=None, dequantize=None, probe=lambda device: None):
    backend = mxquant.Backend(name, mxquant.Capabilities(devices=frozenset({"cpu"})), probe, quantize, dequantize,
                              priority=-5)
    registry.register_plugin(Plugin(backend), f"plugin-of-{name}")


class Reusing:
    """Copies each result into one buffer per output shape and returns the buffer."""

    def __init__(self):
        self.buffers = {}

    def quantize(self, x, dtype, mode, layout):
        outs = backend_quantize(x, dtype, mode, layout)
        key = tuple((t.shape, t.dtype) for t in outs)
        bufs = self.buffers.setdefault(key, tuple(torch.empty_like(t) for t in outs))
        for b, t in zip(bufs, outs):
            b.copy_(t)
        return bufs


def test_contract_a_backend_reusing_its_output_buffers_fails_verify(registry):
    from mxquant.conformance import collect

    add(registry, "reusing", quantize=Reusing().quantize)
    x = torch.randn(4, 64)
    first = mxquant.mxfp8_quantize(x, backend="reusing")
    kept = first.data.view(torch.uint8).clone()
    mxquant.mxfp8_quantize(torch.randn(4, 64), backend="reusing")
    assert not torch.equal(first.data.view(torch.uint8), kept)  # what the caller meets: its result changed
    report = collect(["reusing"], seed=0, registry=registry)
    failed = [r for r in report["results"] if r["status"] == "fail" and r["op"] == "quantize"]
    assert failed and all("share memory with those it returned for" in r["reason"] for r in failed), \
        [r["reason"] for r in failed][:3]


class Arena:
    """Hands out fresh slices of one large buffer, each once: legitimate, and verify passes it."""

    def __init__(self):
        self.buffer, self.used = torch.empty(1 << 24, dtype=torch.uint8), 0

    def take(self, like):
        n = like.numel() * like.element_size()
        out = self.buffer[self.used:self.used + n].view(like.dtype).view(like.shape)
        self.used += (n + 63) // 64 * 64
        return out.copy_(like)

    def quantize(self, x, dtype, mode, layout):
        return tuple(self.take(t) for t in backend_quantize(x, dtype, mode, layout))


class Scribbler(Reusing):
    """New outputs every call, but each call also scribbles over the previous call's data."""

    def quantize(self, x, dtype, mode, layout):
        if getattr(self, "last", None) is not None and self.last.numel():
            self.last.view(torch.uint8).view(-1)[0] ^= 0x55
        out = backend_quantize(x, dtype, mode, layout)
        self.last = out[0]
        return out


def test_contract_verify_passes_an_arena_and_fails_a_scribbler(registry):
    from mxquant.conformance import collect

    add(registry, "arena", quantize=Arena().quantize)
    add(registry, "scribbler", quantize=Scribbler().quantize)
    report = collect(["arena", "scribbler"], seed=0, registry=registry)
    quant = [r for r in report["results"] if r["op"] == "quantize" and r["status"] != "not-supported"]
    assert quant and all(r["status"] == "pass" for r in quant if r["backend"] == "arena")
    scribbled = [r for r in quant if r["backend"] == "scribbler"]
    assert scribbled and all(r["status"] == "fail" and "changed later" in r["reason"] for r in scribbled), \
        [r["reason"] for r in scribbled][:3]


def _overlapping(x, dtype, mode, layout):
    data, scale = backend_quantize(x, dtype, mode, layout)
    both = torch.empty(data.numel(), dtype=torch.uint8)  # scale's bytes inside data's
    both.copy_(data.view(torch.uint8).reshape(-1))
    return both.view(data.dtype).view(data.shape), both[: scale.numel()].view(scale.dtype).view(scale.shape)


def test_contract_outputs_that_overlap_are_refused_per_call_and_by_verify(registry):
    from mxquant.conformance import collect

    add(registry, "overlap", quantize=_overlapping)
    with pytest.raises(mxquant.BackendOutputError, match="outputs 0 and 1 share memory"):
        mxquant.mxfp8_quantize(torch.randn(4, 64), backend="overlap")
    report = collect(["overlap"], seed=0, registry=registry)
    assert any(r["status"] == "fail" and "share memory" in r["reason"] for r in report["results"])


def test_contract_outputs_that_require_grad_or_are_inference_tensors_are_refused(registry):
    w = torch.ones((), requires_grad=True)

    def with_grad(data, scale, layout, out_dtype):
        return backend_dequantize(data, scale, layout, out_dtype) * w

    def under_inference(data, scale, layout, out_dtype):
        with torch.inference_mode():
            return backend_dequantize(data, scale, layout, out_dtype)

    add(registry, "grad", dequantize=with_grad)
    add(registry, "inference", dequantize=under_inference)
    q = mxquant.mxfp8_quantize(torch.randn(4, 64), backend="cpu")
    with pytest.raises(mxquant.BackendOutputError, match="requires grad"):
        mxquant.mxfp8_dequantize(*q, backend="grad")
    with pytest.raises(mxquant.BackendOutputError, match="inference tensor"):
        mxquant.mxfp8_dequantize(*q, backend="inference")
    with torch.inference_mode():  # asked for one: fine
        q = mxquant.mxfp8_quantize(torch.randn(4, 64), backend="cpu")
        assert mxquant.mxfp8_dequantize(*q, backend="inference").is_inference()


def test_contract_verify_reports_a_backend_that_raises_systemexit(registry, capsys):
    def exits(x, dtype, mode, layout):
        raise SystemExit(0)

    add(registry, "exits", quantize=exits)
    rc = mxquant.cli.main(["verify", "--json", "--backend", "exits"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and any(r["status"] == "fail" and "raised SystemExit" in r["reason"] for r in report["results"])


def test_contract_an_unreadable_exception_and_a_write_before_raising_are_named(registry):
    class Unreadable(Exception):
        def __str__(self):
            raise RuntimeError("str exploded")

    def raises(x, dtype, mode, layout):
        raise Unreadable()

    def writes_then_raises(x, dtype, mode, layout):
        x.mul_(2)
        raise ValueError("half way")

    add(registry, "unreadable", quantize=raises)
    add(registry, "halfway", quantize=writes_then_raises)
    with pytest.raises(mxquant.BackendCallError, match=r"'unreadable' .* raised Unreadable .*could not be read"):
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="unreadable")
    x = torch.ones(2, 32)
    with pytest.raises(mxquant.BackendCallError, match="half way. It had written into its input"):
        mxquant.mxfp8_quantize(x, backend="halfway")
    assert bool((x == 2).all())


@pytest.mark.parametrize("command", [["info", "--json"], ["verify", "--json", "--backend", "chatty"]])
def test_contract_json_reports_stay_json_when_a_backend_prints(registry, capfd, command):
    def chatty_probe(device):
        print("Loading chatty kernels... done")
        os.write(1, b"and a message from C\n")
        return None

    add(registry, "chatty", quantize=backend_quantize, probe=chatty_probe)
    mxquant.cli.main(command)
    out, err = capfd.readouterr()
    json.loads(out)
    assert "Loading chatty kernels" in err and "a message from C" in err
