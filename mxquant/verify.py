"""`mxquant verify`: every registered backend against the CPU reference, on this machine.

For each backend and each device type it serves that this machine has (cpu, cuda:0, xpu:0),
the backend is probed; where it is available, every combination it declares (input dtype,
element dtype, scale mode, scale layout for quantize; element dtype, layout, output dtype for
dequantize) runs on:

- the adversarial batch of mxquant/cases.py (every named special block plus random hard
  blocks, more than 128 rows so the swizzled layout pads and tiles);
- random data of several shapes: rank 1, odd leading dimensions, row counts that are not
  multiples of 128, empty inputs, a transposed and a row-sliced (strided) input;
- for dequantize: every element byte under every scale byte, and the reference's own
  outputs for the inputs above.

Outputs are compared byte for byte with mxquant.reference on the CPU (shape, dtype,
contiguity, the elements, the scales and the swizzled layout's padding). Each combination is

    pass            identical
    deviation       differs, and every differing block is explained by a deviation the backend
                    declares (the codes are listed, with how many blocks each explains)
    fail            differs where no declared deviation explains it, raised, or broke the
                    contract's shapes/dtypes -- an undeclared difference; exit status 1
    unavailable     the backend cannot run on this device here (the reason)
    not-supported   outside the capabilities the backend declares

Which blocks a deviation code may explain is a rule on the input block (`DEVIATION_RULES`),
for the codes mxquant knows. A code it does not know (a plugin's own) cannot be checked: a
backend declaring one gets `deviation` for its remaining differences, reported as
"unattributed" so a reader sees that nobody checked them.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch

from . import cases, reference
from .backend import Backend, Call
from .formats import BLOCK, ELEMENT_FORMATS, INPUT_DTYPES, OUTPUT_DTYPES, SCALE_LAYOUTS, SCALE_MODES, describe_dtype
from .registry import Entry, Registry, get_registry

SCHEMA_VERSION = 1
PASS, DEVIATION, FAIL, UNAVAILABLE, NOT_SUPPORTED = "pass", "deviation", "fail", "unavailable", "not-supported"
MAX_EXAMPLES = 5

_TINY = 2.0**-126  # smallest normal fp32


# ---- deviation rules: which input blocks a declared deviation code may explain ---------------

def _amax(blocks: torch.Tensor) -> torch.Tensor:
    inf = float("inf")
    return blocks.nan_to_num(nan=0.0, posinf=inf, neginf=-inf).abs().amax(dim=-1)


def _rule_nan(blocks, fmt):
    return blocks.isnan().any(dim=-1)


def _rule_inf(blocks, fmt):
    return blocks.isinf().any(dim=-1)


def _rule_tiny(blocks, fmt):
    subnormal = ((blocks != 0) & (blocks.abs() < _TINY)).any(dim=-1)
    return subnormal | (_amax(blocks) < fmt.max_finite * _TINY)


def _rule_approx_scale(blocks, fmt):
    # amax / max_finite within 40 fp32 ulps of a power of two: amax's mantissa field near
    # 1.75's (both maxima are 1.75 * 2**emax). 40: a float log2 + ceil (the XPU kernel) was
    # worked out to misplace amax up to ~39 ulps above; an approximate reciprocal, ~2.
    amax = _amax(blocks)
    mant = amax.view(torch.int32) & 0x7FFFFF
    return amax.isfinite() & (amax > 0) & ((mant - 0x600000).abs() <= 40)


def _rule_zero(blocks, fmt):
    return (blocks == 0).all(dim=-1)


def _rule_min_scale(blocks, fmt):
    # A kernel whose scale has a floor of 2**e_min (e_min = ceil(log2(1 / (max_finite * 512))):
    # -17 for e4m3, -24 for e5m2) differs on blocks whose rceil exponent is below it:
    # amax <= max_finite * 2**(e_min - 1), which is 1.75 * 2**-10 for both formats.
    amax = _amax(blocks)
    return (amax > 0) & (amax <= 1.75 * 2.0**-10)


DEVIATION_RULES: dict[str, tuple[str, Callable]] = {
    "nan-ignored": ("blocks holding a NaN", _rule_nan),
    "inf-saturates": ("blocks holding an Inf", _rule_inf),
    "tiny-flush": ("blocks with a nonzero |x| < 2**-126, or amax < max_finite * 2**-126", _rule_tiny),
    "approx-scale": ("blocks whose amax / max_finite is within 40 fp32 ulps of a power of two", _rule_approx_scale),
    "zero-block-scale": ("all-zero blocks", _rule_zero),
    "min-scale": ("nonzero blocks with amax <= 1.75 * 2**-10", _rule_min_scale),
    "inf-elements": ("blocks holding an Inf", _rule_inf),
}
"""code -> (which blocks it may explain, rule(blocks fp32 (n, 32), ElementFormat) -> bool (n,)).
Rules apply to quantize; a dequantize difference is explained only by a code verify does not know.
A differing block is attributed to the first declared code, in this order, whose rule covers it
(a tiny block whose amax is 448 * 2**k counts for tiny-flush, not approx-scale), so a code with
no blocks attributed was not needed to explain anything."""


# ---- records --------------------------------------------------------------------------------

@dataclass
class Result:
    backend: str
    device: str
    op: Optional[str]
    """"quantize" or "dequantize"; None on the one record of an unavailable backend/device."""
    hp_dtype: Optional[str]
    """Input dtype of quantize, output dtype of dequantize."""
    element_dtype: Optional[str]
    scale_mode: Optional[str]
    scale_layout: Optional[str]
    status: str
    reason: Optional[str] = None
    cases: int = 0
    """Inputs compared."""
    blocks: int = 0
    """Blocks of 32 compared."""
    differing_blocks: int = 0
    deviations: dict = field(default_factory=dict)
    """Declared code -> number of differing blocks attributed to it (each block to the first
    code in DEVIATION_RULES order whose rule covers it)."""
    unattributed_blocks: int = 0
    """Differing blocks explained only by a declared code verify has no rule for."""
    unexplained_blocks: int = 0
    """Differing blocks no declared deviation explains (status fail)."""
    examples: list = field(default_factory=list)
    """A few differing blocks: case, block index, special-block name, scale and element bytes."""


@dataclass
class Target:
    backend: str
    device: str
    available: bool
    reason: Optional[str]
    deviations: list
    """[{"code", "summary", "rule"}] as declared; rule is verify's rule text, or None if unknown."""


# ---- inputs ---------------------------------------------------------------------------------

def _special_names(input_dtype: torch.dtype, batch: torch.Tensor) -> list[Optional[str]]:
    """Names of the leading blocks of `cases.adversarial_batch` (its special blocks), checked
    against the batch itself; unnamed (None) where they do not match."""
    names, blocks = [], []
    for dtype, fmt in ELEMENT_FORMATS.items():
        for name, b in cases.special_blocks(dtype).items():
            names.append(f"{fmt.name}:{name}")
            blocks.append(b.to(input_dtype))
    flat = batch.reshape(-1, BLOCK)
    out: list[Optional[str]] = []
    for i, (name, b) in enumerate(zip(names, blocks)):
        if i >= flat.shape[0]:
            break
        a = flat[i]
        same = (a == b) | (a.isnan() & b.isnan())
        out.append(name if bool(same.all()) else None)
    return out


def _random(shape, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Normal values with a random power-of-two magnitude per block (kept inside `dtype`'s
    normal range: no Inf, few subnormals; cases.adversarial_batch has the edges), a few zeros."""
    n = math.prod(shape)
    if n == 0:
        return torch.zeros(shape, dtype=dtype)
    fin = torch.finfo(dtype)
    lo, hi = max(-30, math.log2(fin.smallest_normal) + 4), min(30, math.log2(fin.max) - 4)
    x = torch.randn(n // BLOCK, BLOCK, generator=gen)
    x = x * torch.exp2(torch.randint(int(lo), int(hi) + 1, (n // BLOCK, 1), generator=gen).float())
    x = torch.where(torch.rand(x.shape, generator=gen) < 0.02, 0.0, x)
    return x.reshape(shape).to(dtype)


RANDOM_SHAPES = [(32,), (1, 32), (3, 5, 64), (130, 96), (257, 64), (2, 3, 7, 32), (0, 64), (4, 0)]


def quantize_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor, list]]:
    """[(case name, CPU tensor, special-block names of its leading blocks)]."""
    gen = torch.Generator().manual_seed(seed)
    batch = cases.adversarial_batch(input_dtype, seed)
    out = [("adversarial", batch, _special_names(input_dtype, batch))]
    for shape in RANDOM_SHAPES:
        out.append((f"random{tuple(shape)}", _random(shape, gen, input_dtype), []))
    out.append(("transposed(3, 64, 96)", _random((64, 3, 96), gen, input_dtype).transpose(0, 1), []))
    out.append(("row-sliced(40, 128 of 192)", _random((40, 192), gen, input_dtype)[:, :128], []))
    return out


def dequantize_inputs(element_dtype: torch.dtype, layout: str, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """[(case name, data, scale)] on the CPU, scales in `layout`."""
    out = []
    # every element byte (rows of 256) under every scale byte (one scale per row, repeated)
    data = torch.arange(256, dtype=torch.int32).to(torch.uint8).repeat(256, 1).view(element_dtype)
    scale = torch.arange(256, dtype=torch.int32).to(torch.uint8).unsqueeze(1).repeat(1, 256 // BLOCK)
    if layout == "swizzled":
        scale = reference.swizzle(scale)
    out.append(("all-bytes(256, 256)", data, scale.view(torch.float8_e8m0fnu)))
    for name, x, _ in quantize_inputs(torch.float32, seed):
        d, s = reference.quantize(x, element_dtype, "rceil", layout)
        out.append((name, d, s))
    return out


# ---- comparison ------------------------------------------------------------------------------

def _rows(shape) -> int:
    return math.prod(shape[:-1])


def _structure_error(what: str, got: torch.Tensor, want_shape, want_dtype) -> Optional[str]:
    if not isinstance(got, torch.Tensor):
        return f"{what} is a {type(got).__name__}, not a tensor"
    if got.dtype != want_dtype:
        return f"{what} has dtype {describe_dtype(got.dtype)}, expected {describe_dtype(want_dtype)}"
    if tuple(got.shape) != tuple(want_shape):
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(want_shape)}"
    if not got.is_contiguous():
        return f"{what} is not contiguous"
    return None


def _scale_rows(scale: torch.Tensor, layout: str, rows: int, nb: int) -> tuple[torch.Tensor, int]:
    """(rows, nb) scale bytes, and how many padding bytes of a swizzled layout are not zero."""
    b = scale.view(torch.uint8)
    if layout == "linear":
        return b.reshape(rows, nb), 0
    flat = b.reshape(-1)
    real = reference.unswizzle(flat, rows, nb)
    padding = int((flat != 0).sum()) - int((real != 0).sum())
    return real, padding


class _Tally:
    def __init__(self, result: Result, backend: Backend, fmt):
        self.result, self.fmt = result, fmt
        declared = [d.code for d in backend.deviations]
        self.known = [c for c in DEVIATION_RULES if c in declared and result.op == "quantize"]
        self.unknown = [c for c in declared if c not in DEVIATION_RULES]
        self.problems: list[str] = []

    def add(self, case: str, diff: torch.Tensor, blocks: Optional[torch.Tensor], example) -> None:
        """diff: bool (n,) per block; blocks: the input blocks (n, 32) fp32 (quantize) or None."""
        r = self.result
        r.blocks += diff.numel()
        idx = diff.nonzero().flatten()
        if idx.numel() == 0:
            return
        r.differing_blocks += idx.numel()
        explained = torch.zeros(idx.numel(), dtype=torch.bool)
        codes_of = [[] for _ in range(idx.numel())]
        for code in self.known:
            hit = DEVIATION_RULES[code][1](blocks[idx], self.fmt) & ~explained
            if bool(hit.any()):
                r.deviations[code] = r.deviations.get(code, 0) + int(hit.sum())
                for j in hit.nonzero().flatten().tolist():
                    codes_of[j].append(code)
            explained |= hit
        rest = int((~explained).sum())
        if rest and self.unknown:
            r.unattributed_blocks += rest
        elif rest:
            r.unexplained_blocks += rest
        # examples: unexplained blocks first
        order = sorted(range(idx.numel()), key=lambda j: bool(explained[j]))
        for j in order:
            if len(r.examples) >= MAX_EXAMPLES:
                break
            ex = example(int(idx[j]))
            ex["case"] = case
            ex["explained_by"] = codes_of[j] or (self.unknown if self.unknown else [])
            r.examples.append(ex)

    def finish(self) -> None:
        r = self.result
        if self.problems:
            r.status, r.reason = FAIL, "; ".join(self.problems[:3]) + (" ..." if len(self.problems) > 3 else "")
        elif r.unexplained_blocks:
            r.status = FAIL
            r.reason = f"{r.unexplained_blocks} of {r.blocks} blocks differ from the reference, unexplained by any declared deviation"
        elif r.differing_blocks:
            r.status = DEVIATION
            parts = [f"{c} {n}" for c, n in r.deviations.items()]
            if r.unattributed_blocks:
                parts.append(f"unattributed {r.unattributed_blocks} (declared: {', '.join(self.unknown)})")
            r.reason = f"{r.differing_blocks} of {r.blocks} blocks differ, explained by: " + ", ".join(parts)
        else:
            r.status = PASS


def _bytes(t: torch.Tensor) -> list[int]:
    return [int(v) for v in t.tolist()]


def check_quantize(backend: Backend, device: torch.device, hp, dtype, mode, layout, seed: int) -> Result:
    result = Result(backend.name, str(device), "quantize", describe_dtype(hp), describe_dtype(dtype), mode, layout, FAIL)
    fmt = ELEMENT_FORMATS[dtype]
    tally = _Tally(result, backend, fmt)
    for case, x, names in quantize_inputs(hp, seed):
        result.cases += 1
        k = x.shape[-1]
        rows, nb = _rows(x.shape), k // BLOCK
        ref_data, ref_scale = reference.quantize(x, dtype, mode, layout)
        try:
            data, scale = backend.quantize(x.to(device), dtype, mode, layout)
            data, scale = data.cpu(), scale.cpu()
        except Exception as exc:
            tally.problems.append(f"{case}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        err = (_structure_error("data", data, x.shape, dtype)
               or _structure_error("scale", scale, ref_scale.shape, torch.float8_e8m0fnu))
        if err:
            tally.problems.append(f"{case}: {err}")
            continue
        got_s, padding = _scale_rows(scale, layout, rows, nb)
        if padding:
            tally.problems.append(f"{case}: {padding} padding bytes of the swizzled scales are not zero")
        exp_s, _ = _scale_rows(ref_scale, layout, rows, nb)
        got_d = data.view(torch.uint8).reshape(rows, nb, BLOCK)
        exp_d = ref_data.view(torch.uint8).reshape(rows, nb, BLOCK)
        diff = ((got_d != exp_d).any(dim=-1) | (got_s != exp_s)).reshape(-1)
        blocks = x.contiguous().reshape(rows * nb, BLOCK).float()
        gd, ed, gs, es = got_d.reshape(-1, BLOCK), exp_d.reshape(-1, BLOCK), got_s.reshape(-1), exp_s.reshape(-1)

        def example(i, gd=gd, ed=ed, gs=gs, es=es, names=names, nb=nb):
            wrong = (gd[i] != ed[i]).nonzero().flatten()[:4].tolist()
            return {"block": i, "row": i // max(nb, 1), "name": names[i] if i < len(names) else None,
                    "scale": {"expected": int(es[i]), "got": int(gs[i])},
                    "elements": {str(j): {"expected": int(ed[i, j]), "got": int(gd[i, j])} for j in wrong}}

        tally.add(case, diff, blocks, example)
    tally.finish()
    return result


def _same_values(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: identical bits, or both NaN (a NaN's payload is not part of the contract)."""
    ints = {2: torch.int16, 4: torch.int32}[a.element_size()]
    return (a.view(ints) == b.view(ints)) | (a.isnan() & b.isnan())


def check_dequantize(backend: Backend, device: torch.device, out_dtype, dtype, layout, seed: int) -> Result:
    result = Result(backend.name, str(device), "dequantize", describe_dtype(out_dtype), describe_dtype(dtype), None,
                    layout, FAIL)
    tally = _Tally(result, backend, ELEMENT_FORMATS[dtype])
    for case, data, scale in dequantize_inputs(dtype, layout, seed):
        result.cases += 1
        k = data.shape[-1]
        rows, nb = _rows(data.shape), k // BLOCK
        ref = reference.dequantize(data, scale, layout, out_dtype)
        try:
            out = backend.dequantize(data.to(device), scale.to(device), layout, out_dtype).cpu()
        except Exception as exc:
            tally.problems.append(f"{case}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        err = _structure_error("output", out, data.shape, out_dtype)
        if err:
            tally.problems.append(f"{case}: {err}")
            continue
        same = _same_values(out.contiguous(), ref).reshape(rows, nb, BLOCK)
        diff = (~same).any(dim=-1).reshape(-1)
        go, eo = out.reshape(-1, BLOCK), ref.reshape(-1, BLOCK)

        def example(i, go=go, eo=eo, same=same.reshape(-1, BLOCK), nb=nb):
            wrong = (~same[i]).nonzero().flatten()[:4].tolist()
            return {"block": i, "row": i // max(nb, 1), "name": None,
                    "elements": {str(j): {"expected": float(eo[i, j]), "got": float(go[i, j])} for j in wrong}}

        tally.add(case, diff, None, example)
    tally.finish()
    return result


# ---- the run --------------------------------------------------------------------------------

def _local_devices() -> list[torch.device]:
    from .report import local_device_types

    return [torch.device("cpu") if t == "cpu" else torch.device(t, 0) for t in local_device_types()]


def _combinations():
    for hp, dt, mode, layout in itertools.product(INPUT_DTYPES, ELEMENT_FORMATS, SCALE_MODES, SCALE_LAYOUTS):
        yield "quantize", hp, dt, mode, layout
    for dt, layout, out in itertools.product(ELEMENT_FORMATS, SCALE_LAYOUTS, OUTPUT_DTYPES):
        yield "dequantize", out, dt, None, layout


def verify_entry(registry: Registry, entry: Entry, seed: int) -> tuple[list[Target], list[Result]]:
    targets, results = [], []
    backend = registry.load(entry)
    served = sorted(backend.capabilities.devices) if backend is not None else list(entry.spec.devices if entry.spec else ())
    local = {d.type: d for d in _local_devices()}
    for device_type in served:
        try:
            device = local.get(device_type) or torch.device(device_type, 0)
            reason = registry.probe(entry, device)
        except Exception as exc:  # e.g. a device type this torch does not know
            device, reason = device_type, f"cannot probe device type {device_type!r}: {type(exc).__name__}: {exc}"
        if reason is None and device_type not in local:
            reason = f"no {device_type} device here"
        declared = [] if backend is None else [
            {"code": d.code, "summary": d.summary,
             "rule": DEVIATION_RULES[d.code][0] if d.code in DEVIATION_RULES else None} for d in backend.deviations]
        targets.append(Target(entry.name, str(device), reason is None, reason, declared))
        if reason is not None:
            results.append(Result(entry.name, str(device), None, None, None, None, None, UNAVAILABLE, reason))
            continue
        for op, hp, dt, mode, layout in _combinations():
            call = Call(op, device, hp, dt, mode, layout)
            why = backend.incapable_reason(call)
            if why:
                results.append(Result(entry.name, str(device), op, describe_dtype(hp), describe_dtype(dt), mode, layout,
                                      NOT_SUPPORTED, why))
            elif op == "quantize":
                results.append(check_quantize(backend, device, hp, dt, mode, layout, seed))
            else:
                results.append(check_dequantize(backend, device, hp, dt, layout, seed))
    return targets, results


def collect(backends: Optional[list[str]] = None, seed: int = 0, registry: Optional[Registry] = None) -> dict:
    """Run the checks; returns the JSON-able report (what `mxquant verify --json` prints)."""
    from . import __version__

    registry = registry or get_registry()
    entries = registry.entries()
    errors = []
    if backends:
        known = {e.name for e in entries}
        errors = [f"unknown backend {name!r} (known: {', '.join(sorted(known))})" for name in backends if name not in known]
        entries = [e for e in entries if e.name in set(backends)]
    targets, results = [], []
    for entry in entries:
        t, r = verify_entry(registry, entry, seed)
        targets += t
        results += r
    summary = {s: sum(r.status == s for r in results) for s in (PASS, DEVIATION, FAIL, UNAVAILABLE, NOT_SUPPORTED)}
    return {
        "schema_version": SCHEMA_VERSION,
        "mxquant_version": __version__,
        "torch_version": str(torch.__version__),
        "seed": seed,
        "devices": [str(d) for d in _local_devices()],
        "ok": summary[FAIL] == 0 and not errors,
        "summary": summary,
        "errors": errors,
        "targets": [asdict(t) for t in targets],
        "results": [asdict(r) for r in results],
    }


def exit_code(report: dict) -> int:
    if report["errors"]:
        return 2
    return 1 if report["summary"][FAIL] else 0


def run_verify(as_json: bool = False, backends: Optional[list[str]] = None, seed: int = 0) -> int:
    """Print the verification (a table, or JSON); 0 if nothing differs undeclared, 1 if
    something does, 2 for an unknown --backend name."""
    report = collect(backends, seed)
    if as_json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report)
    return exit_code(report)


_STYLE = {PASS: "[green]pass[/green]", DEVIATION: "[yellow]DEVIATION[/yellow]", FAIL: "[bold red]FAIL[/bold red]",
          UNAVAILABLE: "[dim]unavailable[/dim]", NOT_SUPPORTED: "[dim]not supported[/dim]"}
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2"}


def _describe_call(r: dict) -> str:
    hp, el = _SHORT.get(r["hp_dtype"], r["hp_dtype"]), _SHORT.get(r["element_dtype"], r["element_dtype"])
    if r["op"] == "quantize":
        return f"quantize {hp}->{el} {r['scale_mode']} {r['scale_layout']}"
    return f"dequantize {el}->{hp} {r['scale_layout']}"


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=sys.stdout)
    s = report["summary"]
    console.print(f"[bold]mxquant verify[/bold] {report['mxquant_version']}  torch {escape(report['torch_version'])}  "
                  f"seed {report['seed']}  devices here: {', '.join(report['devices'])}")
    by_target: dict = {}
    for r in report["results"]:
        by_target.setdefault((r["backend"], r["device"]), []).append(r)
    table = Table(title="Available backends against the CPU reference, byte for byte", title_justify="left")
    for col in ("backend", "device", "call", "status", "detail"):
        table.add_column(col, overflow="fold", no_wrap=col in ("call", "status"))
    not_run = []
    for (name, device), rows in by_target.items():
        if rows[0]["op"] is None:
            not_run.append((name, device, rows[0]["reason"] or ""))
            continue
        skipped = [r for r in rows if r["status"] == NOT_SUPPORTED]
        for i, r in enumerate(r for r in rows if r["status"] != NOT_SUPPORTED):
            detail = r["reason"] or f"{r['cases']} inputs, {r['blocks']} blocks"
            if r["status"] == FAIL and r["examples"]:
                ex = r["examples"][0]
                where = ex.get("name") or f"block {ex['block']}"
                detail += f" (e.g. {ex['case']} {where}: " + json.dumps(
                    {k: v for k, v in ex.items() if k in ("scale", "elements")}) + ")"
            table.add_row(escape(name) if i == 0 else "", device if i == 0 else "", _describe_call(r),
                          _STYLE[r["status"]], escape(detail))
        if skipped:
            table.add_row("", "", f"{len(skipped)} other combinations", _STYLE[NOT_SUPPORTED],
                          "outside its declared capabilities")
        if table.rows:
            table.rows[-1].end_section = True
    if table.rows:
        console.print(table)
    for name, device, reason in not_run:
        console.print(f"[dim]not run:[/dim] [bold]{escape(name)}[/bold] on {device}: {escape(reason)}")
    for t in report["targets"]:
        if t["available"] and t["deviations"]:
            console.print(f"[bold]{escape(t['backend'])}[/bold] on {t['device']} declares:")
            for d in t["deviations"]:
                rule = d["rule"] or "no rule in mxquant verify: its differences are reported unattributed"
                console.print(f"  {escape(d['code'])}: {escape(d['summary'])} [dim](explains {escape(rule)})[/dim]")
    for err in report["errors"]:
        console.print(f"[red]error:[/red] {escape(err)}")
    verdict = ("[bold red]FAIL[/bold red]: undeclared differences from the reference" if s[FAIL]
               else "[red]error[/red]" if report["errors"] else "[green]ok[/green]: no undeclared difference")
    console.print(f"{verdict}  (pass {s[PASS]}, deviation {s[DEVIATION]}, fail {s[FAIL]}, "
                  f"unavailable {s[UNAVAILABLE]}, not supported {s[NOT_SUPPORTED]})")
