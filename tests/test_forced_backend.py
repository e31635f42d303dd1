"""A forced backend means the same whichever way it is forced (`backend=`, `use_backend()`,
MXQUANT_BACKEND) and whichever public function is called: it serves every op it implements
(strictly), and an op it does not implement at all (a quantize-only backend's dequantize) is
chosen automatically. Before: MXQUANT_BACKEND / use_backend() naming a quantize-only backend
broke mxfp8_dequantize and mxfp8_fake_quantize, while `backend=` on mxfp8_fake_quantize forced
only its quantize step, even for a backend that dequantizes too."""

from __future__ import annotations

import pytest
import torch

import mxquant
from inline_plugin import Plugin
from mx_oracle import backend_dequantize, backend_quantize
from mx_oracle import dequantize as oracle_dequantize
from mx_oracle import quantize as oracle_quantize
from test_registry import HOW, forcing

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)


class Counted:
    """A CPU backend below the built-ins (never chosen automatically) running the oracle and
    counting its calls; quantize-only unless `dequantizes`."""

    def __init__(self, name, dequantizes):
        self.calls = {"quantize": 0, "dequantize": 0}

        def quantize(*a):
            self.calls["quantize"] += 1
            return backend_quantize(*a)

        def dequantize(*a):
            self.calls["dequantize"] += 1
            return backend_dequantize(*a)

        self.backend = mxquant.Backend(name, mxquant.Capabilities(devices=frozenset({"cpu"})), lambda d: None,
                                       quantize, dequantize if dequantizes else None, priority=-100)

    def taken(self) -> tuple[int, int]:
        counts = (self.calls["quantize"], self.calls["dequantize"])
        self.calls = {"quantize": 0, "dequantize": 0}
        return counts


@pytest.fixture
def backends(registry):
    made = {"qonly": Counted("qonly", dequantizes=False), "both": Counted("both", dequantizes=True)}
    registry.register_plugin(Plugin(*(c.backend for c in made.values())), "forced-test")
    return made


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", ["qonly", "both"])
def test_forcing_means_the_same_every_way(backends, monkeypatch, how, name):
    spy = backends[name]
    x = (torch.randn(6, 64) * 50).to(torch.bfloat16)
    want_d, want_s = oracle_quantize(x, torch.float8_e4m3fn)
    want_y = oracle_dequantize(want_d.view(torch.float8_e4m3fn), want_s, torch.bfloat16).view(torch.uint8)
    with forcing(how, name, monkeypatch) as kw:
        d, s = mxquant.mxfp8_quantize(x, **kw)
        assert spy.taken() == (1, 0)
        y = mxquant.mxfp8_dequantize(d, s, **kw)
        assert spy.taken() == (0, 1 if name == "both" else 0)
        fq = mxquant.mxfp8_fake_quantize(x, **kw)
        assert spy.taken() == (1, 1 if name == "both" else 0)
    assert torch.equal(d.view(torch.uint8), want_d) and torch.equal(s.view(torch.uint8), want_s)
    assert torch.equal(y.view(torch.uint8), want_y) and torch.equal(fq.view(torch.uint8), want_y)


@pytest.mark.parametrize("how", HOW)
def test_forced_dequantize_stays_strict(backends, monkeypatch, how):
    """A forced backend that implements dequantize but not this call of it raises, every way:
    only an op the backend lacks altogether is left to automatic choice."""
    narrow = mxquant.Backend("narrow", mxquant.Capabilities(devices=frozenset({"cpu"}), scale_layouts=frozenset({"linear"})),
                             lambda d: None, backend_quantize, backend_dequantize, priority=-100)
    mxquant.get_registry().register_plugin(Plugin(narrow), "narrow-test")
    d, s = mxquant.mxfp8_quantize(torch.randn(4, 64), scale_layout="swizzled")
    with forcing(how, "narrow", monkeypatch) as kw, pytest.raises(mxquant.BackendIncapableError, match="scale layout"):
        mxquant.mxfp8_dequantize(d, s, scale_layout="swizzled", **kw)
