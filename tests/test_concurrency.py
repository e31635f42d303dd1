"""Many threads at once against the registry: first calls on a fresh registry (discovery,
imports, probes and resolution all racing), and plugins registered and unregistered while calls
run. Every call must succeed with the bytes of the independent oracle (tests/mx_oracle.py),
and no call may be served by a backend after its plugin is gone."""

from __future__ import annotations

import sys
import threading

import torch

import mxquant
from mxquant.registry import Registry, set_registry

from inline_plugin import Plugin
from mx_oracle import backend_quantize
from mx_oracle import dequantize as oracle_dequantize
from mx_oracle import public as oracle_public
from mx_oracle import quantize as oracle_quantize

THREADS = 16
E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2


def inputs(n):
    g = torch.Generator().manual_seed(n)
    xs = [(torch.randn(4, 64, generator=g) * 10).to(torch.bfloat16) for _ in range(n)]
    dtypes = [E4 if i % 2 else E5 for i in range(n)]
    layouts = ["swizzled" if i % 3 == 0 else "linear" for i in range(n)]
    want = [oracle_quantize(x, d, "rceil", l) for x, d, l in zip(xs, dtypes, layouts)]
    return xs, dtypes, layouts, [(data, oracle_public(scale, l)) for (data, scale), l in zip(want, layouts)]


def run_together(fns):
    """Start one thread per fn, release them at once (a Barrier), join; the exceptions raised."""
    barrier = threading.Barrier(len(fns))
    errors = []

    def body(fn):
        try:
            barrier.wait()
            fn()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(fn,)) for fn in fns]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: races show up
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_first_calls_race_on_a_fresh_registry(registry):
    xs, dtypes, layouts, want = inputs(THREADS)
    for _ in range(6):  # each round: a registry that has discovered nothing yet
        set_registry(Registry())
        got = [None] * THREADS

        def call(i):
            def fn():
                got[i] = mxquant.mxfp8_quantize(xs[i], dtypes[i], scale_layout=layouts[i])
            return fn

        errors = run_together([call(i) for i in range(THREADS)])
        assert errors == [], errors[:3]
        for (data, scale), (want_d, want_s) in zip(got, want):
            assert torch.equal(data.view(torch.uint8), want_d) and torch.equal(scale.view(torch.uint8), want_s)


def test_first_calls_race_forced_and_dequantize(registry):
    xs, dtypes, layouts, want = inputs(THREADS)
    for _ in range(4):
        set_registry(Registry())
        got = [None] * THREADS

        def call(i):
            def fn():
                data, scale = (t.view(dt) for t, dt in zip(want[i], (dtypes[i], torch.float8_e8m0fnu)))
                if i % 2:
                    got[i] = mxquant.mxfp8_quantize(xs[i], dtypes[i], scale_layout=layouts[i], backend="cpu")
                else:
                    got[i] = mxquant.mxfp8_dequantize(data, scale, scale_layout=layouts[i], out_dtype=torch.float32)
            return fn

        errors = run_together([call(i) for i in range(THREADS)])
        assert errors == [], errors[:3]
        for i in range(THREADS):
            if i % 2:
                assert torch.equal(got[i][0].view(torch.uint8), want[i][0])
                assert torch.equal(got[i][1].view(torch.uint8), want[i][1])
            else:
                lin = oracle_quantize(xs[i], dtypes[i], "rceil", "linear")[1].reshape(-1, 2)
                expected = oracle_dequantize(want[i][0].view(dtypes[i]), lin, torch.float32)
                assert torch.equal(got[i].view(torch.int32), expected.view(torch.int32))


class Racer:
    """A plugin with one exact backend of high priority that counts its calls."""

    def __init__(self):
        self.calls = 0

        def quantize(x, dtype, mode, layout):
            self.calls += 1
            return backend_quantize(x, dtype, mode, layout)

        self.backend = mxquant.Backend("racer", mxquant.Capabilities(devices=frozenset({"cpu"})), lambda d: None,
                                       quantize, priority=100)
        self.plugin = Plugin(self.backend)


def test_register_and_unregister_race_calls(registry):
    xs, dtypes, layouts, want = inputs(THREADS - 1)
    racer = Racer()
    done = threading.Event()

    def flip():
        try:
            for _ in range(40):
                registry.register_plugin(racer.plugin, "racer-plugin")
                registry.unregister_plugin("racer-plugin")
        finally:
            done.set()

    def caller(i):
        def fn():
            while not done.is_set():
                data, scale = mxquant.mxfp8_quantize(xs[i], dtypes[i], scale_layout=layouts[i])
                assert torch.equal(data.view(torch.uint8), want[i][0]) and torch.equal(scale.view(torch.uint8), want[i][1])
        return fn

    errors = run_together([flip] + [caller(i) for i in range(THREADS - 1)])
    assert errors == [], errors[:3]
    # the plugin is gone: no cached resolution may still point at its backend
    racer.calls = 0
    for i in range(THREADS - 1):
        mxquant.mxfp8_quantize(xs[i], dtypes[i], scale_layout=layouts[i])
    assert racer.calls == 0
    assert "racer" not in {e.name for e in registry.entries()}


def test_unregister_during_resolution_leaves_no_stale_cache_entry(registry, monkeypatch):
    # Deterministic form of the race above: the plugin is unregistered by another thread while
    # a call is resolving (after it chose the plugin's backend, before it cached it). Without
    # one lock around resolve-and-cache the call would cache the departed backend for good.
    racer = Racer()
    registry.register_plugin(racer.plugin, "racer-plugin")
    real_resolve = registry.resolve
    unregistering = []

    def resolve_then_race(*args, **kwargs):
        chosen = real_resolve(*args, **kwargs)
        if not unregistering:
            t = threading.Thread(target=registry.unregister_plugin, args=("racer-plugin",))
            unregistering.append(t)
            t.start()
            t.join(0.5)  # it completes here unless resolution holds the registry's lock
        return chosen

    monkeypatch.setattr(registry, "resolve", resolve_then_race)
    x = torch.randn(2, 64)
    mxquant.mxfp8_quantize(x)
    unregistering[0].join(30)
    assert not unregistering[0].is_alive()
    racer.calls = 0
    data, scale = mxquant.mxfp8_quantize(x)
    assert racer.calls == 0, "a departed plugin's backend still served the call"
    want_d, want_s = oracle_quantize(x, E4)
    assert torch.equal(data.view(torch.uint8), want_d) and torch.equal(scale.view(torch.uint8), want_s)
