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
from .compare import (FAIL, Result, _same_bits, _same_values, _scale_rows, _structure_error, _Tally, checked_outputs,
                      value_example)
from .fp4_inputs import fp4_inputs


def _quantize(fn, op, x, mode, layout):
    return fn(x, mode, layout) if op == "mxfp4_quantize" else fn(x, None, mode, layout)


def check_fp4(backend: Backend, device: torch.device, op: str, hp, mode, layout, seed: int) -> Result:
    fmt = op.split("_")[0]
    block = MXFP4_BLOCK if fmt == "mxfp4" else NVFP4_BLOCK
    result = Result(backend.name, str(device), op, describe_dtype(hp), "e2m1", mode, layout, FAIL)
    tally = _Tally(result, backend, E2M1)
    quantize = getattr(reference_fp4, f"{fmt}_quantize")
    for case, x in fp4_inputs(torch.float32 if op.endswith("dequantize") else hp, seed):
        result.cases += 1
        rows, nb = math.prod(x.shape[:-1]), x.shape[-1] // block
        qmode = mode or ("compressed-tensors" if fmt == "nvfp4" else "rceil")  # dequantize: data to read
        ref = _quantize(quantize, f"{fmt}_quantize", x, qmode, layout)
        if op.endswith("dequantize"):
            inputs = (ref[0], ref[1]) + ((ref[2],) if fmt == "nvfp4" else ())
            ref_out = getattr(reference_fp4, op)(*inputs, layout, hp)
            moved = tuple(t.to(device) for t in inputs)
            copies = tuple(t.clone() for t in moved)
            try:
                got = getattr(backend, op)(*moved, layout, hp).cpu()
            except Exception as exc:
                tally.problems.append(f"{case}: raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                continue
            if not all(_same_bits(a, b) for a, b in zip(moved, copies)):
                tally.problems.append(f"{case}: wrote into its inputs (inputs are read-only)")
                continue
            err = _structure_error("output", got, ref_out.shape, hp)
            if err:
                tally.problems.append(f"{case}: {err}")
                continue
            same = _same_values(got.contiguous(), ref_out).reshape(rows * nb, block)
            go, eo = got.contiguous().reshape(rows * nb, block), ref_out.reshape(rows * nb, block)

            def example(i, same=same, go=go, eo=eo, nb=nb):
                wrong = (~same[i]).nonzero().flatten()[:4].tolist()
                return {"block": i, "row": i // max(nb, 1), "name": None,
                        "elements": {str(j): value_example(go[i, j], eo[i, j]) for j in wrong}}

            tally.add(case, (~same).any(-1), None, example)
            continue
        xd = x.to(device)
        got = checked_outputs(tally, case, lambda: _quantize(getattr(backend, op), op, xd, mode, layout), xd, ref)
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
