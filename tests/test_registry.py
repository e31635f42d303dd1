"""The backend registry: forcing (strict errors), priority, caching, deviations, broken backends.

Every test runs on a fresh Registry (built-in backends from the installed entry points) and
registers in-process plugin objects on it; the global registry is restored afterwards."""

import contextlib
import re

import pytest
import torch
from cpu_auto import AUTO_CPU

import mxquant
from mxquant import reference
from mxquant.backend import Call
from mxquant.errors import BackendIncapableError, BackendUnavailableError, NoBackendError, UnknownBackendError
from mxquant.selection import ENV_ALLOW, ENV_BACKEND

import mx_oracle as oracle
from inline_plugin import Plugin

BUILTINS = ("cpu", "cpu-eager", "cpu-native", "triton", "flashinfer", "xpu")


@contextlib.contextmanager
def plugged(reg, name, *backends, fail=None):
    reg.register_plugin(Plugin(*backends, fail=fail), name)
    try:
        yield
    finally:
        reg.unregister_plugin(name)


class Spy:
    """A CPU backend that runs the reference and counts its probe and quantize calls."""

    def __init__(self, name, priority=0, reason=None, deviations=(), **caps):
        self.probes = 0
        self.calls = 0
        self.reason = reason

        def probe(device):
            self.probes += 1
            if isinstance(self.reason, BaseException):
                raise self.reason
            return self.reason

        def quantize(x, dtype, mode, layout):
            self.calls += 1
            return reference.quantize(x, dtype, mode, layout)

        self.backend = mxquant.Backend(
            name=name, capabilities=mxquant.Capabilities(devices=frozenset({"cpu"}), **caps), probe=probe,
            quantize=quantize, dequantize=reference.dequantize, priority=priority, deviations=tuple(deviations))


def q(**kw):
    return mxquant.mxfp8_quantize(torch.randn(2, 64), **kw)


def used(*spies):
    """Name of the spy whose quantize ran since the last check (None: none of them, i.e. a built-in)."""
    ran = [s for s in spies if s.calls]
    for s in spies:
        s.calls = 0
    assert len(ran) <= 1
    return ran[0].backend.name if ran else None


@contextlib.contextmanager
def forcing(how, name, monkeypatch):
    """Force `name` the way `how` says; yields the kwargs to pass to the call."""
    if how == "argument":
        yield {"backend": name}
    elif how == "use_backend":
        with mxquant.use_backend(name):
            yield {}
    else:
        monkeypatch.setenv(ENV_BACKEND, name)
        yield {}
        monkeypatch.delenv(ENV_BACKEND)


FORCED_BY = {"argument": "the backend= argument", "use_backend": "mxquant.use_backend()",
             "env": f"{ENV_BACKEND}="}
HOW = list(FORCED_BY)


def assert_candidates(err, *extra):
    """The error lists every registered backend with its status."""
    names = [row[0] for row in err.candidates]
    assert sorted(names) == sorted(BUILTINS + extra)
    message = str(err)
    for name in BUILTINS + extra:
        assert f"  {name} " in message
    assert "does not serve device type 'cpu'" in message  # triton, flashinfer, xpu on a CPU call
    cpu_row = next(row for row in err.candidates if row[0] == "cpu")
    assert cpu_row[1:] == ("built-in", "ok")


# ---- forcing is strict -------------------------------------------------------------------------

@pytest.mark.parametrize("how", HOW)
def test_forced_unknown(registry, monkeypatch, how):
    with forcing(how, "nope", monkeypatch) as kw, pytest.raises(UnknownBackendError) as info:
        q(**kw)
    err = info.value
    assert err.backend == "nope"
    assert "unknown backend 'nope'" in str(err) and FORCED_BY[how] in str(err)
    assert isinstance(err, ValueError)
    assert_candidates(err)


@pytest.mark.parametrize("how", HOW)
def test_forced_unavailable(registry, monkeypatch, how):
    off = Spy("offline", priority=100, reason="no widget attached")
    with plugged(registry, "p", off.backend):
        with forcing(how, "offline", monkeypatch) as kw, pytest.raises(BackendUnavailableError) as info:
            q(**kw)
        err = info.value
        assert not isinstance(err, BackendIncapableError)
        assert err.backend == "offline" and "no widget attached" in err.reason
        assert "backend 'offline'" in str(err) and FORCED_BY[how] in str(err) and "No fallback" in str(err)
        assert dict((n, s) for n, _, s in err.candidates)["offline"] == "unavailable: no widget attached"
        assert_candidates(err, "offline")
        assert used(off) is None
        q()  # automatic choice skips it
        assert used(off) is None


@pytest.mark.parametrize("how", HOW)
def test_forced_incapable(registry, monkeypatch, how):
    rceil_only = Spy("rceil-only", priority=100, scale_modes=frozenset({"rceil"}))
    with plugged(registry, "p", rceil_only.backend):
        with forcing(how, "rceil-only", monkeypatch) as kw, pytest.raises(BackendIncapableError) as info:
            q(scale_mode="floor", **kw)
        err = info.value
        assert "does not support scale mode floor (supports rceil)" in err.reason
        assert "backend 'rceil-only'" in str(err) and FORCED_BY[how] in str(err)
        assert_candidates(err, "rceil-only")
        q(scale_mode="floor")  # automatic choice falls to cpu
        assert used(rceil_only) is None
        q(scale_mode="rceil")
        assert used(rceil_only) == "rceil-only"


def test_forcing_precedence(registry, monkeypatch):
    a, b, c = Spy("a"), Spy("b"), Spy("c")
    with plugged(registry, "p", a.backend, b.backend, c.backend):
        monkeypatch.setenv(ENV_BACKEND, "a")
        with mxquant.use_backend("b"):
            q(backend="c")
            assert used(a, b, c) == "c"
            q()
            assert used(a, b, c) == "b"
        q()
        assert used(a, b, c) == "a"


def test_no_backend_for_device(registry):
    call = Call("quantize", torch.device("xpu", 0), torch.bfloat16, torch.float8_e4m3fn, "rceil", "linear")
    with pytest.raises(NoBackendError) as info:
        registry.resolve(call)
    rows = {n: s for n, _, s in info.value.candidates}
    assert set(rows) == set(BUILTINS)
    assert rows["cpu"] == "does not serve device type 'xpu'"
    assert rows["triton"].startswith("unavailable: ")  # serves xpu, but there is none here
    assert rows["xpu"].startswith("unavailable: ")


# ---- automatic choice ------------------------------------------------------------------------------

def test_priority_order(registry):
    lo, hi, tie = Spy("lo", priority=5), Spy("hi", priority=10), Spy("a-tie", priority=5)
    with plugged(registry, "lo", lo.backend):
        with plugged(registry, "hi", hi.backend):
            q()
            assert used(lo, hi) == "hi"
        q()  # unregistering cleared the cache
        assert used(lo, hi) == "lo"
        with plugged(registry, "tie", tie.backend):
            q()
            assert used(lo, tie) == "a-tie"  # equal priority: by name
    q()
    assert used(lo, hi, tie) is None
    assert registry.resolved_name(Call("quantize", torch.device("cpu"), torch.float32, torch.float8_e4m3fn,
                                       "rceil", "linear")) == AUTO_CPU


def test_unavailable_and_incapable_skipped(registry):
    down = Spy("down", priority=30, reason="powered off")
    e4m3_only = Spy("e4m3-only", priority=20, element_dtypes=frozenset({torch.float8_e4m3fn}))
    with plugged(registry, "p", down.backend, e4m3_only.backend):
        q()
        assert used(down, e4m3_only) == "e4m3-only"
        q(dtype=torch.float8_e5m2)
        assert used(down, e4m3_only) is None


def test_probe_that_raises_becomes_a_reason(registry):
    boom = Spy("boom", priority=100, reason=RuntimeError("kaput"))
    with plugged(registry, "p", boom.backend):
        q()  # automatic: skipped
        assert used(boom) is None
        with pytest.raises(BackendUnavailableError) as info:
            q(backend="boom")
        assert "availability probe raised RuntimeError: kaput" in str(info.value)
        record = mxquant.list_backends().backend("boom")
        assert not record.availability[0].available
        assert "availability probe raised RuntimeError: kaput" in record.availability[0].reason


def test_plugin_whose_register_raises_is_reported(registry):
    good = Spy("good", priority=10)
    with plugged(registry, "bad", fail=RuntimeError("cannot register today")):
        with plugged(registry, "fine", good.backend):
            q()
            assert used(good) == "good"
            report = mxquant.list_backends()
            bad = next(p for p in report.plugins if p.name == "bad")
            assert bad.status == "error" and "cannot register today" in bad.error
            # (a third-party plugin installed here shows as skipped: MXQUANT_PLUGINS=none, tests/conftest.py)
            assert [p.name for p in report.plugin_problems() if not p.skipped] == ["bad"]


def test_plugin_cannot_take_a_registered_name(registry):
    fake_cpu = Spy("cpu", priority=100)
    with plugged(registry, "hijack", fake_cpu.backend):
        q()
        assert used(fake_cpu) is None
        rec = next(p for p in registry.plugin_records() if p.name == "hijack")
        assert "already registered by built-in" in rec.error


# ---- deviations -------------------------------------------------------------------------------------

@pytest.fixture
def deviating(registry):
    dev = Spy("dev", priority=100, deviations=[mxquant.Deviation("nan-ignored", "NaN blocks get a finite scale")])
    with plugged(registry, "p", dev.backend):
        yield dev


@pytest.mark.parametrize("value, picked", [
    (None, False), ("dev", True), ("dev:nan-ignored", True), ("*", True), ("cpu, dev", True),
    ("DEV : Nan-Ignored", True), ("cpu", False)])
def test_deviations_allowed_by_env(deviating, monkeypatch, value, picked):
    if value is not None:
        monkeypatch.setenv(ENV_ALLOW, value)
    q()
    assert used(deviating) == ("dev" if picked else None)


def test_deviations_allowed_by_context(deviating):
    q()
    assert used(deviating) is None
    with mxquant.allow_deviations("dev:nan-ignored"):
        q()
        assert used(deviating) == "dev"
    with mxquant.allow_deviations("cpu"):
        q()
        assert used(deviating) is None
    with mxquant.allow_deviations("dev"):
        q()
        assert used(deviating) == "dev"
    q()  # out of the block again: cached per allowance, not stale
    assert used(deviating) is None


@pytest.mark.parametrize("how", ["env", "context"])
@pytest.mark.parametrize("value, message", [
    ("dve", "'dve' names no registered backend (known: cpu, cpu-eager, cpu-native, dev, "),
    ("dev:nan-ignord", "backend 'dev' declares no deviation 'nan-ignord' (it declares: nan-ignored)"),
    ("cpu:nan-ignored", "backend 'cpu' declares no deviation 'nan-ignored' (it declares: none)"),
])
def test_allowance_typo_is_an_error_in_every_call_and_info(deviating, monkeypatch, how, value, message):
    monkeypatch.setenv(ENV_ALLOW, f"cpu, {value}" if how == "env" else "cpu")
    where = f"{ENV_ALLOW}=cpu, {value}: " if how == "env" else "mxquant.allow_deviations(): "
    with mxquant.allow_deviations(value) if how == "context" else contextlib.nullcontext():
        for kw in ({}, {"backend": "cpu"}):
            with pytest.raises(ValueError, match=re.escape(where + message)):
                q(**kw)
        assert message in mxquant.list_backends().resolution[0].error
    assert used(deviating) is None


@pytest.mark.parametrize("how", HOW)
def test_deviating_backend_usable_when_forced(deviating, monkeypatch, how):
    with forcing(how, "dev", monkeypatch) as kw:
        data, scale = q(**kw)
    assert used(deviating) == "dev"


def test_deviations_listed_in_candidates_and_report(deviating, monkeypatch):
    with pytest.raises(UnknownBackendError) as info:
        q(backend="nope")
    status = dict((n, s) for n, _, s in info.value.candidates)["dev"]
    assert "declares deviations (nan-ignored)" in status and ENV_ALLOW in status
    record = mxquant.list_backends().backend("dev")
    assert [(d.code, d.allowed) for d in record.deviations] == [("nan-ignored", False)]
    monkeypatch.setenv(ENV_ALLOW, "dev:nan-ignored")
    assert mxquant.list_backends().backend("dev").deviations[0].allowed


# ---- environment and caching -------------------------------------------------------------------------

def test_env_read_at_resolution_time(registry, monkeypatch):
    a, b = Spy("a", priority=-5), Spy("b", priority=-5)
    with plugged(registry, "p", a.backend, b.backend):
        for forced in ("a", "b", None, "a"):
            if forced:
                monkeypatch.setenv(ENV_BACKEND, forced)
            else:
                monkeypatch.delenv(ENV_BACKEND)
            q()
            assert used(a, b) == forced  # None: automatic picks cpu (priority 0)
        monkeypatch.setenv(ENV_BACKEND, "")  # empty means unset
        q()
        assert used(a, b) is None


def test_resolution_is_cached(registry, monkeypatch):
    spy = Spy("spy", priority=10)
    resolves = []
    real_resolve = registry.resolve
    monkeypatch.setattr(registry, "resolve", lambda *a, **k: resolves.append(1) or real_resolve(*a, **k))
    with plugged(registry, "p", spy.backend):
        x = torch.randn(4, 64)
        for _ in range(5):
            mxquant.mxfp8_quantize(x)
        assert (spy.calls, spy.probes, len(resolves)) == (5, 1, 1)
        mxquant.mxfp8_quantize(x, torch.float8_e5m2)  # another signature: resolved, probe result reused
        assert (spy.probes, len(resolves)) == (1, 2)
        registry.reset_cache()
        mxquant.mxfp8_quantize(x)
        assert (spy.probes, len(resolves)) == (2, 3)


def test_output_of_resolved_backend_matches_the_independent_oracle(registry):
    # tests/mx_oracle.py is written from docs/semantics.md, not from mxquant.reference (which
    # the resolved `cpu` backend is): comparing with the reference would compare it with itself.
    x = torch.randn(3, 5, 96, dtype=torch.bfloat16) * 100
    x[0, 0, 5] = float("nan")
    x[1, 2, 40] = 2.0**-140
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        for mode in ("rceil", "floor", "compressed-tensors"):
            for layout in ("linear", "swizzled"):
                data, scale = mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, scale_layout=layout)
                want_data, want_scale = oracle.quantize(x, dtype, mode, layout)
                assert torch.equal(data.view(torch.uint8), want_data), (dtype, mode, layout)
                if layout == "swizzled":  # the public swizzled scale is the layout's bytes, flat
                    want_scale = want_scale.reshape(-1)
                assert torch.equal(scale.view(torch.uint8), want_scale), (dtype, mode, layout)


@pytest.mark.parametrize("value", [" CPU ", "CPU", "Cpu\t"])
def test_env_backend_name_is_trimmed_and_case_folded(registry, monkeypatch, value):
    spy = Spy("spy", priority=10)  # would win an automatic choice: only the forced name keeps it out
    with plugged(registry, "p", spy.backend):
        monkeypatch.setenv(ENV_BACKEND, value)
        x = torch.randn(2, 64)
        data, scale = mxquant.mxfp8_quantize(x)
        assert used(spy) is None
        want_data, want_scale = oracle.quantize(x, torch.float8_e4m3fn)
        assert torch.equal(data.view(torch.uint8), want_data) and torch.equal(scale.view(torch.uint8), want_scale)
        with mxquant.use_backend(" SPY "):
            q()
        assert used(spy) == "spy"


def test_malformed_backend_rejected_at_registration(registry):
    caps = mxquant.Capabilities(devices=frozenset({"cpu"}))
    bad = [mxquant.Backend("no-caps", None, lambda d: None, reference.quantize),
           mxquant.Backend("bad-priority", caps, lambda d: None, reference.quantize, priority=None),
           mxquant.Backend("", caps, lambda d: None, reference.quantize)]
    for i, b in enumerate(bad):
        registry.register_plugin(Plugin(b), f"bad{i}")
    try:
        q()  # nothing malformed got in the way of automatic choice
        errors = [r.error for r in registry.plugin_records() if r.name.startswith("bad")]
        assert all(e and ("TypeError" in e or "ValueError: backend name ''" in e) for e in errors), errors
        assert {e.name for e in registry.entries()} == set(BUILTINS)
    finally:
        for i in range(len(bad)):
            registry.unregister_plugin(f"bad{i}")


def test_install_hints_name_installable_packages(registry):
    # 'mxquant[cuda]' is not a published distribution: a hint says what to pip install by its
    # real name, and how to get the extra from a checkout.
    real = {"flashinfer": "pip install flashinfer-python", "triton": "pip install triton",
            "xpu": "pip install vllm-xpu-kernels"}
    from mxquant.backends import BUILTIN
    for spec in BUILTIN:
        backend = registry.load(next(e for e in registry.entries() if e.name == spec.name))
        hints = [spec.install_hint] + ([backend.install_hint] if backend is not None else [])
        for hint in filter(None, hints):
            assert "mxquant[" not in hint, (spec.name, hint)
            if spec.name in real:  # the GPU backends' packages (the CPU ones need none, or a compiler)
                assert hint.startswith(real[spec.name]) and "pip install -e '.[" in hint, (spec.name, hint)
