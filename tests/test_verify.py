"""`mxquant verify` (mxquant/conformance/, mxquant/cli/verify.py): the CPU backend passes; an inline backend that is
wrong fails, unless a declared deviation explains exactly what differs.

Each test runs on a fresh Registry (built-ins from the entry points) with in-process plugins,
and restores the global one. The inline backends serve the CPU and declare one combination,
so each run checks a few inputs only."""

from __future__ import annotations

import json
import math

import torch

import mxquant
import mxquant.cli
from mxquant import reference

from mxquant.conformance import DEVIATION_RULES, collect
from mxquant.formats import SCALE_MODES

import mx_oracle as oracle
from inline_plugin import Plugin

E4M3 = torch.float8_e4m3fn
ONE_COMBO = dict(element_dtypes=frozenset({E4M3}), scale_modes=frozenset({"rceil"}),
                 scale_layouts=frozenset({"linear"}), input_dtypes=frozenset({torch.float32}))


def nan_blocks_wrong(x, dtype, mode, layout):
    """The reference, except blocks holding a NaN get scale 0xFE (what a NaN-blind kernel does)."""
    data, scale = reference.quantize(x, dtype, mode, layout)
    k = x.shape[-1]
    rows = math.prod(x.shape[:-1])
    has_nan = x.contiguous().reshape(rows, k // 32, 32).isnan().any(-1).reshape(scale.shape)
    scale = torch.where(has_nan, 0xFE, scale.view(torch.uint8)).to(torch.uint8)
    return data, scale.view(torch.float8_e8m0fnu)


def everything_wrong(x, dtype, mode, layout):
    data, scale = reference.quantize(x, dtype, mode, layout)
    return data, (scale.view(torch.uint8) ^ 1).view(torch.float8_e8m0fnu)


def add(registry, quantize=None, deviations=(), dequantize=None, probe=None, name="wrong", **caps):
    backend = mxquant.Backend(
        name=name, capabilities=mxquant.Capabilities(devices=frozenset({"cpu"}), **(caps or ONE_COMBO)),
        probe=probe or (lambda device: None), quantize=quantize, dequantize=dequantize, priority=-5,
        deviations=tuple(deviations))
    registry.register_plugin(Plugin(backend), f"plugin-{name}")
    return backend


def verify_json(capsys, *argv) -> tuple[int, dict]:
    rc = mxquant.cli.main(["verify", "--json", *argv])
    return rc, json.loads(capsys.readouterr().out)


def results_of(report, backend):
    return [r for r in report["results"] if r["backend"] == backend]


oracle_quantize, oracle_dequantize = oracle.backend_quantize, oracle.backend_dequantize


ALL_COMBOS = dict(scale_modes=frozenset(SCALE_MODES))


def test_verify_independent_implementation_passes(registry, capsys):
    # tests/mx_oracle.py, written from docs/semantics.md and not from mxquant.reference, as a
    # backend: verify compares it with the reference on every combination and input and finds
    # no difference. (Verifying the `cpu` backend would compare the reference with itself.)
    add(registry, oracle_quantize, dequantize=oracle_dequantize, name="oracle", **ALL_COMBOS)
    rc, report = verify_json(capsys, "--backend", "oracle", "--backend", "flashinfer")
    assert rc == 0 and report["ok"] and report["summary"]["fail"] == 0
    results = results_of(report, "oracle")
    assert len(results) == 48 and {r["status"] for r in results} == {"pass"}  # 36 quantize (3 modes) + 12 dequantize
    assert all(r["cases"] >= 10 and r["blocks"] > 1000 for r in results)
    # the backends that cannot run here are reported with their reason, not failed
    fi = results_of(report, "flashinfer")
    assert [r["status"] for r in fi] == ["unavailable"] and fi[0]["reason"]
    assert {t["backend"] for t in report["targets"]} == {"oracle", "flashinfer"}


def test_verify_table_names_the_backend(registry, capsys):
    add(registry, oracle_quantize, dequantize=oracle_dequantize, name="oracle", **ALL_COMBOS)
    rc = mxquant.cli.main(["verify", "--backend", "oracle", "--seed", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "oracle" in out and "quantize bf16->e4m3 rceil swizzled" in out and "pass" in out
    assert "no undeclared difference" in out and "FAIL" not in out


def test_verify_undeclared_difference_fails(registry, capsys):
    add(registry, nan_blocks_wrong)
    rc, report = verify_json(capsys, "--backend", "wrong")
    (r,) = [r for r in results_of(report, "wrong") if r["status"] != "not-supported"]
    assert rc == 1 and not report["ok"]
    assert r["status"] == "fail" and r["unexplained_blocks"] == r["differing_blocks"] > 0
    assert any(ex["name"] == "e4m3:one_nan" for ex in r["examples"]) or r["examples"][0]["scale"]["got"] == 0xFE
    # the table says it too, naming the backend
    assert mxquant.cli.main(["verify", "--backend", "wrong"]) == 1
    out = capsys.readouterr().out
    assert "wrong" in out and "FAIL" in out and "unexplained" in out


def test_verify_declared_deviation_is_reported_not_failed(registry, capsys):
    add(registry, nan_blocks_wrong, deviations=[mxquant.Deviation("nan-ignored", "NaN blocks get scale 0xFE")])
    rc, report = verify_json(capsys, "--backend", "wrong")
    (r,) = [r for r in results_of(report, "wrong") if r["status"] != "not-supported"]
    assert rc == 0 and report["ok"]
    assert r["status"] == "deviation" and r["unexplained_blocks"] == 0
    assert r["deviations"] == {"nan-ignored": r["differing_blocks"]} and r["differing_blocks"] > 0
    (target,) = report["targets"]
    assert target["deviations"][0]["rule"] == DEVIATION_RULES["nan-ignored"][0]
    assert mxquant.cli.main(["verify", "--backend", "wrong"]) == 0
    out = capsys.readouterr().out
    assert "DEVIATION" in out and "nan-ignored" in out and "FAIL" not in out


def test_verify_deviation_that_does_not_match_still_fails(registry, capsys):
    add(registry, nan_blocks_wrong, deviations=[mxquant.Deviation("tiny-flush", "flushes tiny blocks")])
    rc, _ = verify_json(capsys, "--backend", "wrong")
    assert rc == 1
    add(registry, everything_wrong, deviations=[mxquant.Deviation("nan-ignored", "x")], name="wrong2")
    rc, report = verify_json(capsys, "--backend", "wrong2")
    (r,) = [r for r in results_of(report, "wrong2") if r["status"] != "not-supported"]
    assert rc == 1 and r["status"] == "fail" and 0 < r["deviations"]["nan-ignored"] < r["differing_blocks"]


def test_verify_unknown_deviation_code_is_unattributed(registry, capsys):
    add(registry, everything_wrong, deviations=[mxquant.Deviation("vendor-rounding", "rounds its own way")])
    rc, report = verify_json(capsys, "--backend", "wrong")
    (r,) = [r for r in results_of(report, "wrong") if r["status"] != "not-supported"]
    assert rc == 0 and r["status"] == "deviation" and r["unattributed_blocks"] == r["differing_blocks"] > 0
    assert "unattributed" in r["reason"] and report["targets"][0]["deviations"][0]["rule"] is None


def test_verify_contract_breaks_fail(registry, capsys):
    def raises(x, *args):
        raise RuntimeError("kernel exploded")

    def strided_scale(x, dtype, mode, layout):
        data, scale = reference.quantize(x, dtype, mode, layout)
        return data, scale.t().contiguous().t() if scale.dim() == 2 and scale.shape[0] > 1 else scale

    def dirty_padding(x, dtype, mode, layout):
        data, scale = reference.quantize(x, dtype, mode, layout)
        b = scale.view(torch.uint8).clone()
        if b.numel():
            b.view(-1)[-1] = 7  # the last byte is padding whenever rows % 128 or cols % 4
        return data, b.view(torch.float8_e8m0fnu)

    swizzled = dict(ONE_COMBO, scale_layouts=frozenset({"swizzled"}))
    add(registry, raises, name="raises")
    add(registry, strided_scale, name="strided")
    add(registry, dirty_padding, name="padding", **swizzled)
    rc, report = verify_json(capsys, "--backend", "raises", "--backend", "strided", "--backend", "padding")
    assert rc == 1
    reasons = {r["backend"]: r["reason"] for r in report["results"] if r["status"] == "fail"}
    assert "raised RuntimeError: kernel exploded" in reasons["raises"]
    assert "not contiguous" in reasons["strided"]
    assert "padding bytes" in reasons["padding"]


def test_verify_dequantize(registry, capsys):
    def wrong_dequantize(data, scale, layout, out_dtype):
        out = reference.dequantize(data, scale, layout, out_dtype)
        return torch.where(out.isnan(), 0.0, out).to(out_dtype)  # NaN -> 0

    caps = dict(ONE_COMBO, input_dtypes=frozenset({torch.bfloat16}))
    add(registry, dequantize=reference.dequantize, name="good", **caps)
    add(registry, dequantize=wrong_dequantize, name="bad", **caps)
    rc, report = verify_json(capsys, "--backend", "good", "--backend", "bad")
    status = {(r["backend"], r["op"]): r["status"] for r in report["results"] if r["status"] != "not-supported"}
    assert status == {("good", "dequantize"): "pass", ("bad", "dequantize"): "fail"} and rc == 1


def test_verify_unavailable_and_unknown(registry, capsys):
    add(registry, nan_blocks_wrong, probe=lambda device: "needs a frobnicator")
    rc, report = verify_json(capsys, "--backend", "wrong")
    assert rc == 0 and [(r["status"], r["reason"]) for r in results_of(report, "wrong")] == [
        ("unavailable", "needs a frobnicator")]
    rc, report = verify_json(capsys, "--backend", "no-such-backend")
    assert rc == 2 and "unknown backend 'no-such-backend'" in report["errors"][0]


def test_verify_collect_is_deterministic_per_seed(registry):
    add(registry, nan_blocks_wrong)
    a, b = collect(["wrong"], seed=3), collect(["wrong"], seed=3)
    assert a["results"] == b["results"]


def test_verify_reports_progress_on_stderr(registry, capsys):
    # the table waits for the last check (minutes when a GPU backend compiles its kernels the
    # first time): meanwhile stderr says how far it is, a line per 10% in a log; --json is silent
    add(registry, oracle_quantize, dequantize=oracle_dequantize, name="oracle", **ALL_COMBOS)
    assert mxquant.cli.main(["verify", "--backend", "oracle"]) == 0
    lines = capsys.readouterr().err.splitlines()
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert all(line.startswith("verify oracle on cpu: ") and line.endswith(" s") for line in lines), lines
    assert done == sorted(done) and done[-1] == 48 and all(line.split("/")[1].startswith("48 checks") for line in lines)
    assert 10 <= len(lines) <= 11  # 10% steps of 48 checks, the last included
    assert mxquant.cli.main(["verify", "--json", "--backend", "oracle"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] and captured.err == ""


def test_verify_progress_on_a_terminal_rewrites_one_line():
    from mxquant.cli.verify import Progress

    class Tty(list):
        def isatty(self):
            return True

        def write(self, s):
            self.append(s)

        def flush(self):
            pass

    out = Tty()
    p = Progress(out)
    for i in range(1, 4):
        p("b", "cuda:0", i, 3)
    p("c", "cpu", 1, 1)
    assert [s.split(",")[0] for s in out] == ["\rverify b on cuda:0: 1/3 checks", "\rverify b on cuda:0: 2/3 checks",
                                              "\rverify b on cuda:0: 3/3 checks", "\rverify c on cpu: 1/1 checks"]
    assert [s.endswith("\n") for s in out] == [False, False, True, True]
