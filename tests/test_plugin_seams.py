"""Plugin seams found by the ninth session's review: each misbehaviour below is refused where it is
made (registration, the import of a BackendSpec, the call) with an error naming the plugin, and
never breaks the built-in backends or another plugin's calls. In process with inline plugins,
and in a subprocess with entry-point plugins (the `builtin` name)."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import types

import pytest
import torch

import mxquant
from inline_plugin import Plugin
from mx_oracle import backend_quantize
from mx_oracle import quantize as oracle_quantize
from subproc import plugin_site

pytestmark = pytest.mark.usefixtures("cpu_only")


def cpu_backend(name, quantize=backend_quantize, dequantize=None, priority=100, **kw):
    return mxquant.Backend(name, mxquant.Capabilities(devices=frozenset({"cpu"}), **kw), lambda device: None, quantize,
                           dequantize, priority=priority)


def record(registry, name):
    return next(p for p in registry.plugin_records() if p.name == name)


def names(registry) -> set:
    return {e.name for e in registry.entries()}


def exact(**kw) -> bool:
    x = torch.randn(3, 64)
    data, scale = mxquant.mxfp8_quantize(x, **kw)
    want_d, want_s = oracle_quantize(x, torch.float8_e4m3fn)
    return torch.equal(data.view(torch.uint8), want_d) and torch.equal(scale.view(torch.uint8), want_s)


def test_malformed_deviations_are_refused_at_registration(registry):
    """Plain strings for deviations were accepted, and every later call that listed the
    candidates (a forced backend that cannot run, say) died of AttributeError naming nobody."""
    bad = dataclasses.replace(cpu_backend("strings", priority=-50), deviations=("nan-ignored",))
    registry.register_plugin(Plugin(bad), "sloppy")
    assert "deviations must be a tuple of mxquant.Deviation" in record(registry, "sloppy").error
    assert "strings" not in names(registry)
    with pytest.raises(mxquant.BackendError):  # the candidates table, not an AttributeError
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="triton")
    assert exact()


def test_an_unhashable_callable_backend_serves_its_calls(registry):
    """A dataclass instance as quantize (unhashable) crashed every call in the OWN_OUTPUTS test."""
    @dataclasses.dataclass
    class Kernel:
        calls: int = 0

        def __call__(self, x, dtype, mode, layout):
            self.calls += 1
            return backend_quantize(x, dtype, mode, layout)

    kernel = Kernel()
    registry.register_plugin(Plugin(cpu_backend("dc", quantize=kernel, priority=500)), "dc")
    assert exact() and exact(backend="dc") and kernel.calls == 2


def test_a_name_differing_only_in_case_is_refused(registry):
    """"CPU" was accepted beside "cpu", and backend="CPU" then ran the built-in one silently."""
    def never(*a):
        raise AssertionError("must not run")

    registry.register_plugin(Plugin(cpu_backend("CPU", quantize=never)), "shouty")
    assert "already registered by built-in (as 'cpu': names are case-insensitive)" in record(registry, "shouty").error
    assert "CPU" not in names(registry) and "cpu" in names(registry)


def _spec_module(monkeypatch, name, backend):
    mod = types.ModuleType(name)
    mod.backend = backend
    monkeypatch.setitem(sys.modules, name, mod)
    return f"{name}:backend"


def test_a_spec_whose_backend_has_another_name_is_unavailable(registry, monkeypatch):
    """The spec "fancy" loading a Backend named "cpu": allowances and `mxquant info` went by the
    loaded name, so MXQUANT_ALLOW_DEVIATIONS=fancy allowed nothing and =cpu let it serve."""
    be = dataclasses.replace(cpu_backend("cpu", priority=1000),
                             deviations=(mxquant.Deviation("nan-ignored", "NaN ignored"),))
    spec = mxquant.BackendSpec("fancy", _spec_module(monkeypatch, "mxq_review_fancy", be), ("cpu",))
    registry.register_plugin(Plugin(spec), "fancy")
    with mxquant.allow_deviations("*"):
        assert exact()  # not served by it
        with pytest.raises(mxquant.BackendUnavailableError, match=r"is backend 'cpu', but its BackendSpec registered 'fancy'"):
            mxquant.mxfp8_quantize(torch.randn(2, 32), backend="fancy")


def test_a_spec_whose_backend_serves_other_devices_is_unavailable(registry, monkeypatch):
    """A spec for cuda loading a cpu Backend of priority 1000: the choice depended on whether
    `mxquant info` had loaded it first, and the cache kept the earlier choice."""
    calls = []

    def spy(x, *a):
        calls.append(1)
        return backend_quantize(x, *a)

    spec = mxquant.BackendSpec("lazy", _spec_module(monkeypatch, "mxq_review_lazy", cpu_backend("lazy", spy, priority=1000)),
                               ("cuda",))
    registry.register_plugin(Plugin(spec), "lazy")
    assert exact()
    mxquant.list_backends()
    entry = next(e for e in registry.entries() if e.name == "lazy")
    assert registry.load(entry) is None and "serves ['cpu'], but its BackendSpec says ['cuda']" in entry.load_error
    assert exact() and not calls


def test_outputs_that_alias_the_input_are_refused_on_both_paths(registry):
    """A view of x as data was accepted eagerly (it then changed when the caller wrote x), and
    on the custom-op path torch's aliasing RuntimeError named no plugin."""
    def viewer(x, dtype, mode, layout):
        data, scale = backend_quantize(x, dtype, mode, layout)
        flat = x.detach().reshape(-1).view(torch.uint8)[: data.numel()]
        return flat.view(data.shape).view(dtype), scale

    registry.register_plugin(Plugin(cpu_backend("viewer", quantize=viewer)), "viewer")
    x = torch.randn(4, 64)
    for arg in (x, torch.nn.Parameter(x.clone())):
        with pytest.raises(mxquant.BackendOutputError, match=r"viewer.*shares memory with input 0"):
            mxquant.mxfp8_quantize(arg, backend="viewer")


def test_system_exit_inside_a_backend_call_names_it(registry):
    def leaves(*a):
        raise SystemExit(3)

    registry.register_plugin(Plugin(cpu_backend("leaver", quantize=leaves)), "leaver")
    with pytest.raises(mxquant.BackendCallError, match="leaver") as err:
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="leaver")
    assert isinstance(err.value.__cause__, SystemExit)


def test_forcing_a_backend_without_mxfp8_quantize_is_refused(registry, monkeypatch):
    """An FP4-only backend forced by MXQUANT_BACKEND: mxfp8_quantize ran on cpu-native, silently."""
    from mxquant.selection import ENV_BACKEND

    def fp4(x, mode, layout):
        return mxquant.mxfp4_quantize(x, scale_mode=mode, scale_layout=layout, backend="cpu")

    be = cpu_backend("fp4only", quantize=None, ops=frozenset({"mxfp4_quantize"}))
    be = dataclasses.replace(be, mxfp4_quantize=lambda x, mode, layout: tuple(
        mxquant.mxfp4_quantize(x, scale_mode=mode, backend="cpu")))
    registry.register_plugin(Plugin(be), "fp4only")
    monkeypatch.setenv(ENV_BACKEND, "fp4only")
    registry.reset_cache()
    with pytest.raises(mxquant.BackendIncapableError, match="does not implement quantize"):
        mxquant.mxfp8_quantize(torch.randn(2, 32))


def test_a_third_party_entry_point_named_builtin_leaves_the_built_ins_alone(tmp_path, monkeypatch):
    """A distribution whose entry point took the name `builtin` and was found first (mxquant's
    own registration was then refused) removed every built-in backend. Here it comes first in
    the entry-point list on purpose; mxquant's own must still register, and the intruder's
    record carries the refusal, under its own distribution."""
    from importlib import metadata

    from mxquant import plugins
    from mxquant.registry import Registry, set_registry

    site = plugin_site(tmp_path, "aaa-review-evil", {"builtin": textwrap.dedent("""
        import mxquant

        @mxquant.hookimpl
        def register_backends(register):
            raise RuntimeError("evil hook")
        """)})
    monkeypatch.syspath_prepend(str(site))
    evil = list(next(metadata.distributions(path=[str(site)])).entry_points)
    ours = [e for e in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP) if e.dist.name == "mxquant"]
    assert [e.name for e in evil] == [e.name for e in ours] == ["builtin"]
    monkeypatch.setattr(plugins, "_entry_points", lambda records: [*evil, *ours])
    monkeypatch.setenv("MXQUANT_PLUGINS", "all")
    reg = Registry()
    previous = set_registry(reg)
    try:
        assert {"cpu", "cpu-native", "triton"} <= {e.name for e in reg.entries()}
        assert exact()
        by_dist = {r.distribution: r for r in reg.plugin_records()}
        assert by_dist["mxquant"].error is None
        assert "another plugin is already registered under the name 'builtin'" in by_dist["aaa-review-evil"].error
    finally:
        set_registry(previous)


def test_an_error_names_the_backend_whose_callable_raised_even_if_another_compares_equal(registry):
    """owner() matched callables with ==: two plugins' dataclass kernels that compare equal got
    mixed up, and gamma's error named delta (review of this session)."""
    @dataclasses.dataclass
    class Boom:
        def __call__(self, x, dtype, mode, layout):
            raise ValueError(f"boom from {id(self)}")

    gamma, delta = Boom(), Boom()
    assert gamma == delta
    registry.register_plugin(Plugin(cpu_backend("delta", quantize=delta, priority=-5)), "plugD")
    registry.register_plugin(Plugin(cpu_backend("gamma", quantize=gamma, priority=-5)), "plugG")
    with pytest.raises(mxquant.BackendCallError, match=r"backend 'gamma' \(plugin plugG\)"):
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="gamma")
