"""Third-party plugins through their real entry points, in subprocesses.

The example plugin (docs/examples/mxquant-example-plugin) is pip-installed once per session
into a temporary --target folder; broken plugins are written as .dist-info folders into
another. Subprocesses see them through PYTHONPATH."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cpu_auto import AUTO_CPU
from subproc import child_env, plugin_site

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "mxquant-example-plugin"


@pytest.fixture(scope="session")
def example_site(tmp_path_factory):
    """A folder holding the installed example plugin (module + .dist-info with its entry point)."""
    src = tmp_path_factory.mktemp("example-src") / "mxquant-example-plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path_factory.mktemp("example-site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(site.glob("mxquant_example_plugin-*.dist-info/entry_points.txt"))
    return site


BROKEN_PLUGINS = {
    # entry-point name: module source
    "broken": 'raise RuntimeError("this plugin is broken on purpose")\n',
    "raising": textwrap.dedent("""
        import mxquant

        @mxquant.hookimpl
        def register_backends(register):
            raise RuntimeError("register_backends fails on purpose")
        """),
    # sorts before "builtin": must still not take the built-in name
    "a-hijack": textwrap.dedent("""
        import mxquant
        from mxquant import reference

        @mxquant.hookimpl
        def register_backends(register):
            register(mxquant.Backend("cpu", mxquant.Capabilities(devices=frozenset({"cpu"})), lambda d: None,
                                     reference.quantize, reference.dequantize, priority=1000))
        """),
}


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory):
    """A folder with a distribution `mxquant-broken-plugins` whose entry points are broken plugins."""
    return plugin_site(tmp_path_factory.mktemp("broken-site"), "mxquant-broken-plugins", BROKEN_PLUGINS)


OURS = {"mxquant", "mxquant-example-plugin", "mxquant-broken-plugins"}
"""The distributions these tests install; any other plugin found is the environment's, not theirs."""


def run_py(code, *sites, **env):
    """Run `code` in a subprocess seeing `sites`; MXQUANT_PLUGINS names this file's plugins
    unless `env` sets it, so a third-party plugin installed here takes no part."""
    full = child_env(*sites, **{"MXQUANT_PLUGINS": ",".join(["example", *BROKEN_PLUGINS]), **env})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


INFO = textwrap.dedent("""
    import contextlib, io, json, sys
    import mxquant.cli

    def info(*args):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = mxquant.cli.main(["info", *args])
        return rc, buf.getvalue()
    """)


def info_json(*sites, **env):
    proc = run_py(INFO + "rc, out = info('--json'); assert rc == 0; print(out)", *sites, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def by_name(items):
    return {item["name"]: item for item in items}


def test_example_plugin_discovered(example_site):
    report = info_json(example_site)
    b = by_name(report["backends"])["cpu-chunked"]
    assert (b["origin"], b["plugin"], b["distribution"], b["priority"]) == (
        "plugin", "example", "mxquant-example-plugin", -10)
    assert b["availability"] == [{"device": "cpu", "available": True, "reason": None}]
    assert b["deviations"] == [] and b["error"] is None
    assert b["capabilities"]["scale_layouts"] == ["linear", "swizzled"]
    p = by_name(report["plugins"])["example"]
    assert (p["status"], p["distribution"], p["value"], p["backends"]) == (
        "loaded", "mxquant-example-plugin", "mxquant_example_plugin", ["cpu-chunked"])
    # below the built-in cpu: never picked automatically
    assert [(r["device"], r["backend"]) for r in report["resolution"]] == [("cpu", AUTO_CPU)]


SELECT = textwrap.dedent("""
    import json, os
    import torch, mxquant, mxquant_example_plugin as plugin
    from mxquant import reference
    from mxquant.layouts import to_public

    plugin.CHUNK_ELEMENTS = 8 * 32  # small inputs still take the chunked path (a few rows per chunk)
    calls = []
    real = plugin.backend.quantize
    plugin.backend.quantize = lambda *a: calls.append(1) or real(*a)

    def bits(t):
        return t.view(torch.uint8)

    def check(**kw):
        exact = True
        torch.manual_seed(0)
        for shape in [(37, 64), (3, 7, 96), (8, 32), (1, 32), (0, 64)]:
            for hp in (torch.float32, torch.bfloat16, torch.float16):
                x = (torch.randn(shape) * 300).to(hp)
                if x.numel() > 40:
                    x.view(-1)[40] = float("inf")
                for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
                    for mode in ("rceil", "floor"):
                        for layout in ("linear", "swizzled"):
                            d, s = mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, scale_layout=layout, **kw)
                            rd, rs = reference.quantize(x, dtype, mode, layout)
                            rs = to_public(rs, layout)  # the public swizzled scale is flat, the backends' 2-D
                            exact &= d.shape == rd.shape and s.shape == rs.shape and s.dtype == rs.dtype
                            exact &= torch.equal(bits(d), bits(rd)) and torch.equal(bits(s), bits(rs))
                            y = mxquant.mxfp8_dequantize(d, s, scale_layout=layout, out_dtype=hp, **kw)
                            exact &= torch.equal(y.view(torch.uint8), reference.dequantize(
                                rd, rs, layout, hp).view(torch.uint8))
        n = len(calls)
        calls.clear()
        return {"exact": bool(exact), "chunked_calls": n}

    out = {"env": check()}                          # MXQUANT_BACKEND=cpu-chunked from the parent
    del os.environ["MXQUANT_BACKEND"]
    out["argument"] = check(backend="cpu-chunked")
    with mxquant.use_backend("cpu-chunked"):
        out["use_backend"] = check()
    out["automatic"] = check()
    print(json.dumps(out))
    """)


def test_example_plugin_selected_and_bit_exact(example_site):
    proc = run_py(SELECT, example_site, MXQUANT_BACKEND="cpu-chunked")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    calls = 5 * 3 * 2 * 2 * 2
    for how in ("env", "argument", "use_backend"):
        assert out[how] == {"exact": True, "chunked_calls": calls}, how
    assert out["automatic"] == {"exact": True, "chunked_calls": 0}


BROKEN = INFO + textwrap.dedent("""
    import torch, mxquant
    from mxquant import reference
    x = torch.randn(4, 64)
    d, s = mxquant.mxfp8_quantize(x)
    exact = torch.equal(d.view(torch.uint8), reference.quantize(x, torch.float8_e4m3fn, "rceil", "linear")[0].view(torch.uint8))
    table_rc, table = info("--full")
    json_rc, js = info("--json")
    print(json.dumps({"exact": exact, "table_rc": table_rc, "table": table, "json_rc": json_rc,
                      "report": json.loads(js), "resolved": mxquant.get_registry().resolved_name(
                          mxquant.backend.Call("quantize", x.device, x.dtype, torch.float8_e4m3fn, "rceil", "linear"))}))
    """)


def test_broken_plugins_reported_and_harmless(example_site, broken_site):
    proc = run_py(BROKEN, example_site, broken_site, COLUMNS="250")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["exact"] and out["table_rc"] == 0 and out["json_rc"] == 0 and out["resolved"] == AUTO_CPU
    plugins = by_name(out["report"]["plugins"])
    assert plugins["broken"]["status"] == "error"
    assert "RuntimeError: this plugin is broken on purpose" in plugins["broken"]["error"]
    assert plugins["broken"]["distribution"] == "mxquant-broken-plugins"
    assert plugins["raising"]["status"] == "error"
    assert "register_backends fails on purpose" in plugins["raising"]["error"]
    assert plugins["a-hijack"]["status"] == "error"
    assert "'cpu' is already registered by built-in" in plugins["a-hijack"]["error"]
    assert plugins["example"]["status"] == "loaded" and plugins["builtin"]["status"] == "loaded"
    backends = by_name(out["report"]["backends"])
    assert backends["cpu"]["origin"] == "built-in" and backends["cpu"]["priority"] == 0
    assert "cpu-chunked" in backends
    for text in ("broken", "this plugin is broken on purpose", "register_backends fails on purpose",
                 "a-hijack", "cpu-chunked"):
        assert text in out["table"], text


def test_unreadable_entry_points_file_is_reported(tmp_path):
    info = tmp_path / "garbled-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: garbled\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mxquant.backends]\nthis line has no equals sign\n")
    # (put on sys.path after `import torch`: torch's own entry-point scan at import would fail on it)
    code = INFO + textwrap.dedent(f"""
        import torch, mxquant
        sys.path.insert(0, {str(tmp_path)!r})
        mxquant.mxfp8_quantize(torch.randn(2, 32))
        rc, out = info("--json")
        print(out)
        """)
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr
    plugins = json.loads(proc.stdout)["plugins"]
    bad = [p for p in plugins if p["distribution"] == "garbled"]
    assert bad and bad[0]["status"] == "error" and "unreadable entry-point metadata" in bad[0]["error"]
    assert by_name(plugins)["builtin"]["status"] == "loaded"


FORCE_CHUNKED = INFO + textwrap.dedent("""
    import torch, mxquant
    try:
        mxquant.mxfp8_quantize(torch.randn(2, 32), backend="cpu-chunked")
        forced = "ok"
    except mxquant.UnknownBackendError as exc:
        forced = str(exc)
    rc, out = info("--json")
    print(json.dumps({"forced": forced, "report": json.loads(out)}))
    """)


def resolution(report):
    return [(r["device"], r["backend"]) for r in report["resolution"]]


@pytest.fixture(scope="module")
def installed_resolution(example_site, broken_site):
    """What the default call resolves to with every plugin installed in this environment but
    ours: a setting that loads the installed ones too ("all", "-name") must resolve the same
    (ours never change it), whatever is installed here (a priority-5 plugin, say)."""
    proc = run_py(FORCE_CHUNKED, example_site, broken_site, MXQUANT_PLUGINS="-example,-broken,-raising,-a-hijack")
    assert proc.returncode == 0, proc.stderr
    return resolution(json.loads(proc.stdout)["report"])


@pytest.mark.parametrize("setting, loaded, skipped_because, loads_installed", [
    ("none", {"builtin"}, "MXQUANT_PLUGINS=none", False),
    ("all", {"builtin", "example"}, None, True),
    ("example", {"builtin", "example"}, "not listed in MXQUANT_PLUGINS=example", False),
    ("-broken,-raising,-a-hijack", {"builtin", "example"}, "denied by MXQUANT_PLUGINS=-broken,-raising,-a-hijack", True),
    ("-example", {"builtin"}, None, True),
    ("example,-broken", {"builtin"}, "mixes allowed and denied names", False),
])
def test_plugins_env(example_site, broken_site, installed_resolution, setting, loaded, skipped_because,
                     loads_installed):
    proc = run_py(FORCE_CHUNKED, example_site, broken_site, MXQUANT_PLUGINS=setting)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    report = out["report"]
    assert report["env"]["MXQUANT_PLUGINS"] == setting
    # ("all" and "-name" load whatever else is installed here too: only ours are compared)
    plugins = {n: p for n, p in by_name(report["plugins"]).items() if p["distribution"] in OURS}
    assert set(plugins) == {"builtin", "example", "broken", "raising", "a-hijack"}
    assert {n for n, p in plugins.items() if p["status"] == "loaded"} == loaded
    for name in ("broken", "a-hijack"):  # never loaded without error in any setting here
        assert plugins[name]["status"] in ("skipped", "error")
    if skipped_because:
        assert skipped_because in plugins["broken"]["skipped"]
    if "example" in loaded:
        assert out["forced"] == "ok"
    else:
        assert plugins["example"]["status"] == "skipped"
        assert "unknown backend 'cpu-chunked'" in out["forced"] and "  cpu " in out["forced"]
    assert resolution(report) == (installed_resolution if loads_installed else [("cpu", AUTO_CPU)])
