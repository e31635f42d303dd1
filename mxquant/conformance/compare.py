"""The comparison of one backend with the reference for one combination (verify.py runs them):
the result records, the tally that attributes differing blocks to declared deviations
(deviation_rules.py), and the quantize / dequantize checks over the inputs of inputs.py. The
training and MoE calls are compared in verify_training.py with the same tally."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .. import layouts, reference
from ..backend import Backend
from ..formats import BLOCK, ELEMENT_FORMATS, describe_dtype
from ..call_path import CALL_ERRORS
from ..outputs import byte_span, overlapping, tensor_problem
from .deviation_rules import DEVIATION_RULES
from .inputs import dequantize_inputs, quantize_inputs

SCHEMA_VERSION = 1
PASS, DEVIATION, FAIL, UNAVAILABLE, NOT_SUPPORTED = "pass", "deviation", "fail", "unavailable", "not-supported"
MAX_EXAMPLES = 5

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


# ---- comparison ------------------------------------------------------------------------------

_CPU = torch.device("cpu")


def _rows(shape) -> int:
    return math.prod(shape[:-1])


def _structure_error(what: str, got: torch.Tensor, want_shape, want_dtype) -> Optional[str]:
    """The per-call output check's verdict (mxquant/outputs.py) on an output already on the CPU."""
    return tensor_problem(what, got, torch.Size(want_shape), want_dtype, _CPU)


def _scale_rows(scale: torch.Tensor, layout: str, rows: int, nb: int) -> tuple[torch.Tensor, int]:
    """(rows, nb) scale bytes, and how many padding bytes of a swizzled layout are not zero."""
    b = scale.view(torch.uint8)
    if layout == "linear":
        return b.reshape(rows, nb), 0
    flat = b.reshape(-1)
    real = layouts.unswizzle(flat, rows, nb)
    padding = int((flat != 0).sum()) - int((real != 0).sum())
    return real, padding


RULED_OPS = ("quantize", "mxfp4_quantize")
"""The calls whose differing blocks a declared deviation may explain (deviation_rules.py); in any
other call a difference is a failure, or unattributed where the backend declares codes."""


class Kept:
    """Every output a backend returned in one check, with a copy of its bytes: no output may share
    bytes with one returned earlier (slices of one arena are fine, each handed out once), and at the end each must still hold its bytes (a backend
    that hands out one static buffer twice changes a result its caller still holds). And no two
    outputs of one call may overlap."""

    def __init__(self):
        self._kept, self._spans = [], []  # (case, outputs, copies); (case, [start, end) of an output's bytes)

    def problem(self, case: str, outs) -> Optional[str]:
        outs = tuple(o for o in outs if isinstance(o, torch.Tensor)) if isinstance(outs, (tuple, list)) else ()
        why = overlapping(outs)
        spans = [byte_span(o) for o in outs if o.numel()]
        earlier = next((c for c, (a0, a1) in self._spans for b0, b1 in spans if a0 < b1 and b0 < a1), None)
        if why is None and earlier is not None:
            why = f"its outputs share memory with those it returned for {earlier} (outputs must be new tensors)"
        self._kept.append((case, outs, tuple(o.clone() for o in outs)))
        self._spans += [(case, span) for span in spans]
        return f"{case}: {why}" if why else None

    def changed(self) -> Optional[str]:
        """After the last call: the first earlier output whose bytes changed since it was returned."""
        for case, outs, copies in self._kept:
            if not all(_same_bits(o, c) for o, c in zip(outs, copies)):
                return f"{case}: changed later (a reused buffer? outputs must be new tensors)"
        return None


class _Tally:
    def __init__(self, result: Result, backend: Backend, fmt):
        self.result, self.fmt = result, fmt
        self.kept = Kept()
        declared = [d.code for d in backend.deviations]
        self.known = [c for c in DEVIATION_RULES if c in declared and result.op in RULED_OPS]
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
        changed = self.kept.changed()
        if changed:
            self.problems.append(changed)
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


def check_quantize(backend: Backend, device: torch.device, hp, dtype, mode, layout, seed: int) -> Result:
    result = Result(backend.name, str(device), "quantize", describe_dtype(hp), describe_dtype(dtype), mode, layout, FAIL)
    fmt = ELEMENT_FORMATS[dtype]
    tally = _Tally(result, backend, fmt)
    for case, x, names in quantize_inputs(hp, seed):
        result.cases += 1
        k = x.shape[-1]
        rows, nb = _rows(x.shape), k // BLOCK
        ref_data, ref_scale = reference.quantize(x, dtype, mode, layout)
        xd = x.to(device)
        x_copy = xd.clone()
        try:
            out = backend.quantize(xd, dtype, mode, layout)
            reused = tally.kept.problem(case, out)
            data, scale = out
            data, scale = data.cpu(), scale.cpu()
        except CALL_ERRORS as exc:
            tally.problems.append(f"{case}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if reused:
            tally.problems.append(reused)
            continue
        if not _same_bits(xd, x_copy):
            tally.problems.append(f"{case}: wrote into its input x (inputs are read-only)")
            xd.copy_(x_copy)  # on the CPU xd is the shared input itself (inputs.py caches them)
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


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether `a` still holds exactly the bytes of its copy `b` (NaN payloads included)."""
    return a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def checked_outputs(tally, case: str, call, xd: torch.Tensor, ref: tuple):
    """A backend's outputs of `call()` on the device input `xd`, on the CPU, or None after
    recording why not in `tally`: it raised, wrote into its input (restored), or returned the
    wrong number of outputs or one of the wrong shape or dtype (against `ref`)."""
    x_copy = xd.clone()
    try:
        outs = call()
        reused = tally.kept.problem(case, outs)
        got = tuple(t.cpu() for t in outs)
    except CALL_ERRORS as exc:
        tally.problems.append(f"{case}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return None
    if reused:
        tally.problems.append(reused)
        return None
    if not _same_bits(xd, x_copy):
        tally.problems.append(f"{case}: wrote into its input x (inputs are read-only)")
        xd.copy_(x_copy)
        return None
    err = f"returned {len(got)} outputs, expected {len(ref)}" if len(got) != len(ref) else next(
        (e for i, (g, r) in enumerate(zip(got, ref)) if (e := _structure_error(f"output {i}", g, r.shape, r.dtype))),
        None)
    if err:
        tally.problems.append(f"{case}: {err}")
        return None
    return got


def _bits(a: torch.Tensor) -> torch.Tensor:
    """A float tensor of 2 or 4 bytes an element as unsigned bits in int64."""
    size = a.element_size()
    return a.view({2: torch.int16, 4: torch.int32}[size]).to(torch.int64) & ((1 << 8 * size) - 1)


def _same_values(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: identical bits, NaN included (dequantize writes one NaN per out_dtype,
    docs/semantics.md, "Dequantize")."""
    ints = {2: torch.int16, 4: torch.int32}[a.element_size()]
    return a.view(ints) == b.view(ints)


def value_example(got: torch.Tensor, want: torch.Tensor) -> dict:
    """An element of a differing dequantized block: the values and their bits (two NaNs differ
    only there)."""
    return {"expected": float(want), "got": float(got), "expected_bits": hex(int(_bits(want))),
            "got_bits": hex(int(_bits(got)))}


def check_dequantize(backend: Backend, device: torch.device, out_dtype, dtype, layout, seed: int) -> Result:
    result = Result(backend.name, str(device), "dequantize", describe_dtype(out_dtype), describe_dtype(dtype), None,
                    layout, FAIL)
    tally = _Tally(result, backend, ELEMENT_FORMATS[dtype])
    for case, data, scale in dequantize_inputs(dtype, layout, seed):
        result.cases += 1
        k = data.shape[-1]
        rows, nb = _rows(data.shape), k // BLOCK
        ref = reference.dequantize(data, scale, layout, out_dtype)
        dd, sd = data.to(device), scale.to(device)
        copies = dd.clone(), sd.clone()
        try:
            out = backend.dequantize(dd, sd, layout, out_dtype)
            reused = tally.kept.problem(case, (out,))
            out = out.cpu()
        except CALL_ERRORS as exc:
            tally.problems.append(f"{case}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if reused:
            tally.problems.append(reused)
            continue
        written = [n for n, t, c in (("data", dd, copies[0]), ("scale", sd, copies[1])) if not _same_bits(t, c)]
        if written:
            tally.problems.append(f"{case}: wrote into its input {' and '.join(written)} (inputs are read-only)")
            dd.copy_(copies[0]), sd.copy_(copies[1])  # shared inputs (inputs.py caches them)
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
                    "elements": {str(j): value_example(go[i, j], eo[i, j]) for j in wrong}}

        tally.add(case, diff, None, example)
    tally.finish()
    return result
