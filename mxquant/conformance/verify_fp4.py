"""`mxquant verify` for the MXFP4 / NVFP4 calls (backend.FP4_OPS): a backend that claims one is run
on conformance/fp4_inputs.py and compared with reference_fp4.py byte for byte per block (32
elements MXFP4, 16 NVFP4: packed data, scale byte), every padding byte of the swizzled layout,
the global scale, and for dequantize every output value's bits (NaN included: one NaN per
out_dtype, docs/semantics.md). A differing mxfp4_quantize block may be explained by a declared
deviation (deviation_rules.py, read with e2m1's maximum 6); in the other calls a difference is a
failure, or unattributed if the backend declares codes."""

from __future__ import annotations

import math

import torch

from .. import reference_fp4
from ..backend import Backend
from ..formats import E2M1, MXFP4_BLOCK, NVFP4_BLOCK, describe_dtype
from ..call_path import CALL_ERRORS
from .compare import (FAIL, Result, _same_bits, _same_values, _scale_rows, _structure_error, _Tally, checked_outputs,
                      value_example)
from .fp4_inputs import fp4_all_bytes, fp4_inputs, nvfp4_given_scale_inputs


def _quantize(fn, op, x, mode, layout, g=None):
    return fn(x, mode, layout) if op == "mxfp4_quantize" else fn(x, g, mode, layout)


def check_fp4(backend: Backend, device: torch.device, op: str, hp, mode, layout, seed: int) -> Result:
    fmt = op.split("_")[0]
    block = MXFP4_BLOCK if fmt == "mxfp4" else NVFP4_BLOCK
    result = Result(backend.name, str(device), op, describe_dtype(hp), "e2m1", mode, layout, FAIL)
    tally = _Tally(result, backend, E2M1)
    quantize = getattr(reference_fp4, f"{fmt}_quantize")
    if op.endswith("dequantize"):
        qmode = "compressed-tensors" if fmt == "nvfp4" else "rceil"  # the data to read
        n_in = 3 if fmt == "nvfp4" else 2  # data, scale (, global scale)
        cases = [(case, _quantize(quantize, f"{fmt}_quantize", x, qmode, layout)[:n_in])
                 for case, x in fp4_inputs(torch.float32, seed)] + fp4_all_bytes(fmt, layout)
        for case, inputs in cases:
            result.cases += 1
            _check_dequantize(tally, backend, device, op, case, inputs, layout, hp, block)
        tally.finish()
        return result
    cases = [(case, x, None) for case, x in fp4_inputs(hp, seed)]
    if fmt == "nvfp4":
        cases += nvfp4_given_scale_inputs(hp, seed)
    for case, x, g in cases:
        result.cases += 1
        rows, nb = math.prod(x.shape[:-1]), x.shape[-1] // block
        ref = _quantize(quantize, op, x, mode, layout, g)
        xd, g_dev = x.to(device), (None if g is None else g.to(device))
        got = checked_outputs(tally, case, lambda: _quantize(getattr(backend, op), op, xd, mode, layout, g_dev), xd, ref)
        if got is None:
            continue
        if fmt == "nvfp4" and not _same_bits(got[2], ref[2]):
            tally.problems.append(f"{case}: global scale {got[2].tolist()}, expected {ref[2].tolist()}")
        gs, padding = _scale_rows(got[1], layout, rows, nb)
        es, _ = _scale_rows(ref[1], layout, rows, nb)
        if padding:
            tally.problems.append(f"{case}: {padding} padding bytes of the swizzled scales are not zero")
        gd = got[0].reshape(rows * nb, block // 2)
        ed = ref[0].reshape(rows * nb, block // 2)
        diff = (gd != ed).any(-1) | (gs.reshape(-1) != es.reshape(-1))
        blocks = x.reshape(rows * nb, block).float()
        tally.add(case, diff, blocks, lambda i, gs=gs.reshape(-1), es=es.reshape(-1): {
            "block": i, "row": i // max(nb, 1), "name": None,
            "scale": {"expected": int(es[i]), "got": int(gs[i])}, "elements": {}})
    tally.finish()
    return result


def _check_dequantize(tally, backend, device, op, case, inputs, layout, hp, block) -> None:
    """One dequantize case: the backend's output bits against the reference's, inputs unchanged."""
    ref_out = getattr(reference_fp4, op)(*inputs, layout, hp)
    rows, nb = math.prod(ref_out.shape[:-1]), ref_out.shape[-1] // block
    moved = tuple(t.to(device) for t in inputs)
    copies = tuple(t.clone() for t in moved)
    try:
        got = getattr(backend, op)(*moved, layout, hp)
        reused = tally.kept.problem(case, (got,))
        got = got.cpu()
    except CALL_ERRORS as exc:
        tally.problems.append(f"{case}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return
    if reused:
        tally.problems.append(reused)
        return
    if not all(_same_bits(a, b) for a, b in zip(moved, copies)):
        tally.problems.append(f"{case}: wrote into its inputs (inputs are read-only)")
        return
    err = _structure_error("output", got, ref_out.shape, hp)
    if err:
        tally.problems.append(f"{case}: {err}")
        return
    same = _same_values(got.contiguous(), ref_out).reshape(rows * nb, block)
    go, eo = got.contiguous().reshape(rows * nb, block), ref_out.reshape(rows * nb, block)

    def example(i):
        wrong = (~same[i]).nonzero().flatten()[:4].tolist()
        return {"block": i, "row": i // max(nb, 1), "name": None,
                "elements": {str(j): value_example(go[i, j], eo[i, j]) for j in wrong}}

    tally.add(case, (~same).any(-1), None, example)
