"""What a plugin declares, checked where it is made (the twenty-eighth session's review): a
malformed Capabilities, Deviation or BackendSpec, or a backend name with a blank, comma or colon,
is refused at construction or registration, and never breaks another backend's calls (before,
`Capabilities(devices=None)` at any priority made every automatic call on every device raise
TypeError). The authoring mistakes that registered nothing silently (an unmarked hook, a
wrapper, a returned list or generator) are the plugin's reported error; a plugin that failed or
was skipped does not turn an allowance naming its backend into an error of every call; blank
names are no name; MXQUANT_PLUGINS' keywords stand alone and a name it gives that no plugin has
is reported. Oracle: the NumPy-free bytes oracle mx_oracle, and the messages' facts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import mxquant
from inline_plugin import Plugin, quantizes_exactly as exact
from inline_plugin import plugin_record as record
from mx_oracle import backend_quantize
from subproc import child_env, plugin_site

pytestmark = pytest.mark.usefixtures("cpu_only")


@pytest.mark.parametrize("make, error", [
    (lambda: mxquant.Capabilities(devices=None), "Capabilities.devices must be a set of str"),
    (lambda: mxquant.Capabilities(devices="cpu"), "Capabilities.devices must be a set of str"),
    (lambda: mxquant.Capabilities(devices={"cpu"}, element_dtypes=None), "element_dtypes must be a set of dtype"),
    (lambda: mxquant.Capabilities(devices={"cpu"}, scale_modes=["rceil", 3]), "scale_modes must be a set of str"),
    (lambda: mxquant.Deviation(None, "x"), "Deviation.code must be a str"),
    (lambda: mxquant.Deviation("a:b", "x"), "Deviation.code 'a:b' is not a valid name"),
    (lambda: mxquant.BackendSpec("specnone", "m:x", None), "BackendSpec.devices must be a set of str"),
    (lambda: mxquant.BackendSpec("ok", "no-colon", ("cpu",)), "must be 'module:attribute'"),
    (lambda: mxquant.BackendSpec("ok", "m:x", ("cpu",), install_hint=object()), "install_hint must be a str"),
    *[(lambda n=n: mxquant.BackendSpec(n, "m:x", ("cpu",)), "is not a valid name")
      for n in ("cpu ", "a:b", "x,y", "   ", "tab\tname", "new\nline", "")],
])
def test_malformed_declarations_are_refused_where_made(make, error):
    with pytest.raises((TypeError, ValueError), match=error.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_contract_a_plugin_that_makes_a_malformed_declaration_breaks_nothing_else(registry):
    class Sloppy:
        @mxquant.hookimpl
        def register_backends(self, register):
            register(mxquant.Backend("sloppy", mxquant.Capabilities(devices=None), lambda d: None,
                                     backend_quantize, priority=100))

    registry.register_plugin(Sloppy(), "sloppy")
    assert "Capabilities.devices must be a set of str" in record(registry, "sloppy").error
    assert "sloppy" not in {e.name for e in registry.entries()}
    assert exact() and exact(backend="cpu")
    spec = mxquant.Backend("spaced name", mxquant.Capabilities(devices={"cpu"}), lambda d: None, backend_quantize)
    registry.register_plugin(Plugin(spec), "spaced")
    assert "is not a valid name" in record(registry, "spaced").error
    assert exact()


@pytest.mark.parametrize("source, error", [
    ("def register_backends(register):\n    pass\n", "not marked with @mxquant.hookimpl"),
    ("@mxquant.hookimpl(wrapper=True)\ndef register_backends(register):\n    yield\n", "marked as a wrapper"),
    ("@mxquant.hookimpl\ndef register_backends(register):\n"
     "    return [mxquant.Backend('listed', mxquant.Capabilities(devices={'cpu'}), lambda d: None)]\n",
     "returned a list"),
    ("@mxquant.hookimpl\ndef register_backends(register):\n    yield\n", "returned a generator"),
])
def test_hooks_that_register_nothing_by_mistake_are_the_plugins_error(tmp_path, source, error):
    site = plugin_site(tmp_path, "mxquant-mistakes", {"mistake": "import mxquant\n\n" + source})
    child = textwrap.dedent("""
        import mxquant, json
        r = mxquant.get_registry()
        rec = next(p for p in r.plugin_records() if p.name == "mistake")
        print(json.dumps(rec.error))
    """)
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120,
                         env=child_env(site, MXQUANT_PLUGINS="mistake"))
    assert error in out.stdout, out.stdout + out.stderr


def test_contract_a_failed_plugin_named_in_an_allowance_does_not_break_every_call(registry, monkeypatch):
    registry.register_plugin(Plugin(fail=RuntimeError("no driver")), "broken")
    monkeypatch.setenv("MXQUANT_ALLOW_DEVIATIONS", "brokenbk")
    with pytest.warns(RuntimeWarning, match="'brokenbk' names no registered backend; it allows nothing.*broken") as w:
        assert exact()
    assert w[0].filename.endswith("inline_plugin.py")  # the line that called mxquant, not one inside it
    assert exact(backend="cpu")
    with pytest.raises(mxquant.UnknownBackendError, match=r"(?s)not loaded, so their backends.*plugin broken: "
                                                          r"register_backends raised RuntimeError: no driver"):
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="brokenbk")


def test_without_failed_plugins_an_allowance_typo_is_still_an_error(registry, monkeypatch):
    monkeypatch.setenv("MXQUANT_PLUGINS", "-nonexistent")  # (the setting's own record is no failed plugin)
    monkeypatch.setenv("MXQUANT_ALLOW_DEVIATIONS", "flashinfre")
    with pytest.raises(ValueError, match="'flashinfre' names no registered backend"):
        mxquant.mxfp8_quantize(torch.randn(2, 32))


def test_a_blank_name_is_no_name_and_never_bypasses_the_environment(registry, monkeypatch):
    monkeypatch.setenv("MXQUANT_BACKEND", "nosuch")
    for blank in ("", "  ", "\t"):
        with pytest.raises(mxquant.UnknownBackendError, match="'nosuch'"):
            mxquant.mxfp8_quantize(torch.randn(2, 32), backend=blank)
    for blank in (None, "", "  "):  # use_backend: none forced either, and an enclosing one holds
        with mxquant.use_backend(blank):
            with pytest.raises(mxquant.UnknownBackendError, match="'nosuch'"):
                mxquant.mxfp8_quantize(torch.randn(2, 32))
        with mxquant.use_backend("cpu"), mxquant.use_backend(blank):
            assert exact()
    with pytest.raises(TypeError, match="use_backend\\(\\) takes a backend name \\(str\\) or None, got int"):
        with mxquant.use_backend(3):
            pass


def test_verify_backend_names_are_matched_as_forcing_matches_them(registry):
    from mxquant.conformance import collect

    report = collect([" CPU "], seed=0, registry=registry)
    assert not report.get("errors") and {t["backend"] for t in report["targets"]} == {"cpu"}


@pytest.mark.parametrize("value, error", [
    ("all,foo", "'all' stands alone"), ("none,foo", "'none' stands alone"),
    ("-exmaple", "names 'exmaple', but no installed plugin is called that"),
])
def test_mxquant_plugins_keywords_stand_alone_and_unknown_names_are_reported(monkeypatch, value, error):
    from mxquant.registry import Registry

    monkeypatch.setenv("MXQUANT_PLUGINS", value)
    errors = [p.error for p in Registry().plugin_records() if p.error]
    assert any(error in e for e in errors), errors


def test_keywords_are_case_folded(monkeypatch):
    from mxquant.plugins import plugin_filter

    assert plugin_filter("ALL")("x") is None and plugin_filter("None")("x")
