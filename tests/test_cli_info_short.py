"""`mxquant info` is short by default (a line per backend and device, within 80 columns and
well under 25 lines on a CPU machine); `--full` (or `-v`) prints the full tables."""

import re
import pytest

import mxquant.cli
from mxquant.cli.info_short import short_lines, short_reason, wrap
from mxquant.report import Availability, BackendRecord, DeviationRecord, PluginInfo, Report, Resolution, list_backends

from cpu_auto import AUTO_CPU  # tests/ is on sys.path

pytestmark = pytest.mark.usefixtures("cpu_only")  # they describe a CPU-only machine (conftest.py)


def run_info(capsys, *args) -> str:
    assert mxquant.cli.main(["info", *args]) == 0
    return capsys.readouterr().out


def test_short_by_default(registry, capsys):
    out = run_info(capsys)
    lines = out.splitlines()
    assert len(lines) < 25 and max(map(len, lines)) <= 80, out  # the fixture sets COLUMNS=200: ignored
    assert re.search(r"^cpu\s+built-in\s+0\s+cpu\s+available$", out, re.M), out
    report = list_backends()
    for b in report.backends:  # one line per backend device, with the reason's first clause
        for i, a in enumerate(b.availability):
            name = re.escape(b.name) + r"\s+built-in\s+" + str(b.priority) if i == 0 else ""
            status = "available" if a.available else "unavailable: " + re.escape(short_reason(a.reason))
            assert re.search(rf"^{name}\s+{a.device}\s+{status}$", out, re.M), (b.name, a.device, out)
    assert "install" not in out.replace("info --full: full reasons, install hints", "")  # hints are for --full
    assert "nan-ignored" not in out and "flashinfer (4)" in out  # deviations: counted, not described
    assert re.search(rf"^the default call \(bf16 -> e4m3, rceil, linear\) resolves to\n  on cpu: {AUTO_CPU} \(automatic\): ",
                     out, re.M), out
    # and what that backend is (cpu-native: the instruction set it picked), whole
    assert f"(automatic): {report.backend(AUTO_CPU).description}" in " ".join(out.split()), out
    assert "env unset: MXQUANT_BACKEND, MXQUANT_ALLOW_DEVIATIONS" in out
    assert "env MXQUANT_PLUGINS=none" in out  # set by tests/conftest.py


def test_full_and_verbose_print_everything(registry, capsys):
    full = run_info(capsys, "--full")
    assert full == run_info(capsys, "-v") == run_info(capsys, "--verbose")
    assert "(install: pip install" in full and "nan-ignored: " in full
    assert "Plugins (entry-point group mxquant.backends)" in full and "MXQUANT_BACKEND=(unset)" in full
    assert len(full.splitlines()) > 25  # why the short form is the default


def test_short_reason():
    assert short_reason("no CUDA device (torch.cuda.is_available() is False) (install: pip install x)") == "no CUDA device"
    assert short_reason("triton is not importable; pip install 'mxquant[cuda]'") == "triton is not importable"
    assert short_reason("odd (a long explanation)") == "odd (a long explanation)"  # too little left: kept
    assert short_reason(None) == ""
    assert wrap("a\n  b", 80) == ["a b"] and wrap("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert wrap("one two three", 8, "  ") == ["one two", "  three"]


def test_short_lines_with_long_names_plugin_errors_and_settings():
    """A report made by hand (data, no backend runs): whatever the lengths, every line fits."""
    long = "a-third-party-backend-with-a-long-name"
    report = Report(
        mxquant_version="9.9", torch_version="2.13.0+cpu", python="3.11.7", devices=["cpu"],
        backends=[BackendRecord(long, "plugin", "thirdparty-plugin-entry-point", "thirdparty-dist", -3, ["cpu", "cuda"],
                                None, [Availability("cpu", True), Availability("cuda", False, "x" * 200)],
                                [DeviationRecord("d", "s" * 300, False)]),
                  BackendRecord("broken", "plugin", "p2", None, None, [], None, [], [], error="ImportError: no")],
        plugins=[PluginInfo("builtin", "mxquant", "mxquant.backends", True, "loaded"),
                 PluginInfo("bad", "bad-dist", "bad_mod", False, "error",
                            error="Traceback (most recent call last):\n  File x\nRuntimeError: broken on purpose\n"),
                 PluginInfo("off", None, "off_mod", False, "skipped", skipped="MXQUANT_PLUGINS=-off")],
        resolution=[Resolution("cpu", "quantize", None, "MXQUANT_BACKEND=nope", "mxquant: unknown backend 'nope' " + "y" * 99)],
        env={"MXQUANT_BACKEND": "nope", "MXQUANT_ALLOW_DEVIATIONS": None, "MXQUANT_PLUGINS": "-off"},
        errors=["something " * 20])
    lines = short_lines(report)
    assert max(map(len, lines)) <= 80, "\n".join(lines)
    text = "\n".join(lines)
    # nothing is cut: long cells wrap inside their column, long lines onto indented ones
    first = lines.index(next(l for l in lines if l.startswith("a-third-party")))
    assert "".join(l[:16].strip() for l in lines[first:first + 3]) == long, text
    assert "".join(l[18:34].strip() for l in lines[first:first + 3]) == "plugin thirdparty-plugin-entry-point", text
    assert re.search(r"^a-third-party-ba\s+plugin thirdpart\s+-3\s+cpu\s+available$", text, re.M), text
    assert re.search(r"^\s+cuda\s+unavailable: x+$", text, re.M) and sum(map(len, re.findall("xx+", text))) == 200, text
    assert re.search(r"^broken\s+plugin p2\s+\?\s+-\s+error: ImportError: no$", text, re.M), text
    assert "plugin bad: error: RuntimeError: broken on purpose" in lines
    assert "plugin off: skipped: MXQUANT_PLUGINS=-off" in lines
    words = " ".join(text.split())
    assert "on cpu: none: unknown backend 'nope' yy" in words and sum(map(len, re.findall("yy+", text))) == 99
    assert "env MXQUANT_BACKEND=nope" in lines
    assert "env unset: MXQUANT_ALLOW_DEVIATIONS" in lines and "report problem: " + "something " * 19 + "something" in words
    assert "declare deviations (chosen only when allowed or forced): " + long + " (1)" in words


def test_short_lists_the_calls_each_backend_claims(registry, capsys):
    """Each backend's claimed calls (capabilities.ops) appear, by their public names, on the line
    that names it; a backend claiming none says none."""
    out = " ".join(run_info(capsys).split())  # wrapped lines joined
    section = out.split("calls beyond mxfp8 quantize / dequantize: ", 1)[1].split(" declare deviations", 1)[0]
    named = {"quantize_colwise": "column-wise", "quantize_rowcol": "row+column", "quantize_2d": "32x32",
             "quantize_grouped": "grouped", "quantize_grouped_colwise": "K-groups", "mxfp4_quantize": "mxfp4",
             "mxfp4_dequantize": "mxfp4 dequant", "nvfp4_quantize": "nvfp4", "nvfp4_dequantize": "nvfp4 dequant"}
    entries = re.findall(r"((?:[\w-]+, )*[\w-]+): (.*?)(?= [\w-]+(?:, [\w-]+)*: |$)", section)
    seen = {}
    for names, calls in entries:
        for name in names.split(", "):
            seen[name] = set(calls.split(", ")) - {"none"}
    for b in list_backends().backends:
        assert seen[b.name] == {named[op] for op in b.capabilities["ops"]}, (b.name, section)
    assert seen["cpu"] and seen["cpu-eager"] == set()  # the reference claims every call; cpu-eager none


def test_short_calls_of_a_plugin_with_a_newer_op():
    rec = BackendRecord(name="acme", origin="plugin", plugin="acme", distribution="acme", priority=5, devices=["cpu"],
                        capabilities={"ops": ["quantize_colwise", "future_op"]},
                        availability=[Availability("cpu", True)], deviations=[])
    report = Report("0", "0", "3.11", ["cpu"], [rec], [], [], {})
    text = "\n".join(short_lines(report))
    assert "  acme: column-wise, future_op" in text, text
