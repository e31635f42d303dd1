"""`mxquant verify` for the training and MoE calls (backend.TRAINING_OPS): a backend that claims
one is run on conformance/training_inputs.py and compared with reference_training.py byte for
byte, per block (1x32 blocks; 32x32 tiles for quantize_2d), including every padding byte of the
swizzled and grouped layouts; differing blocks are attributed to declared deviations by the
rules of deviation_rules.py, as for quantize (verify._Tally)."""

from __future__ import annotations

import math

import torch

from .. import reference_training
from ..backend import Backend
from ..formats import BLOCK, ELEMENT_FORMATS, describe_dtype
from ..layouts import swizzle, swizzle_experts, swizzle_groups, swizzle_kgroups
from .training_inputs import colwise_inputs, grouped_inputs, kgroup_inputs, matrix_inputs, tile_grid_inputs
from .compare import FAIL, Result, _Tally, checked_outputs


def _inputs(op: str, hp, seed: int):
    if op == "quantize_grouped":
        return grouped_inputs(hp, seed)
    if op == "quantize_grouped_colwise":
        return kgroup_inputs(hp, seed)
    if op == "quantize_colwise":
        return [(name, x, None) for name, x in colwise_inputs(hp, seed)]
    return [(name, x, None) for name, x in (*matrix_inputs(hp, seed), *tile_grid_inputs(hp, seed))]


def _row_blocks(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1, BLOCK)


def _tile_blocks(t: torch.Tensor) -> torch.Tensor:
    *lead, m, k = t.shape
    tiles = t.contiguous().reshape(math.prod(lead), m // BLOCK, BLOCK, k // BLOCK, BLOCK).permute(0, 1, 3, 2, 4)
    return tiles.reshape(-1, BLOCK * BLOCK)


def _parts(op: str, x: torch.Tensor, ends, layout: str) -> list:
    """[(index of the data output, of the scale output, the input's blocks (n, B) fp32, the
    data's blocks (fn), the scale layout of block ids (n,) -> the backend's scale form)]."""
    xt = x.mT.contiguous() if x.dim() >= 2 else x

    def rows_layout(rows_of: torch.Tensor, lay: str):
        rows, nb = math.prod(rows_of.shape[:-1]), rows_of.shape[-1] // BLOCK
        return (lambda ids: swizzle(ids.reshape(rows, nb))) if lay == "swizzled" else (lambda ids: ids)

    row = (0, 1, _row_blocks(x.float()), _row_blocks, rows_layout(x, layout))
    col = (0, 1, _row_blocks(xt.float()), _row_blocks, rows_layout(xt, layout))
    if op == "quantize_colwise":
        return [col]
    if op == "quantize_rowcol":
        return [row, (2, 3) + col[2:]]
    if op == "quantize_2d":
        return [(0, 1, _tile_blocks(x.float()), _tile_blocks, lambda ids: ids)]
    if op == "quantize_grouped_colwise":  # column blocks (those of x^T), each token group's on its own
        columns = x.shape[0] // BLOCK
        return [(0, 1) + col[2:4] + (lambda ids: swizzle_kgroups(ids.reshape(xt.shape[0], columns), ends.tolist()),)]
    nb = x.shape[-1] // BLOCK
    if ends is None:
        return [(0, 1, _row_blocks(x.float()), _row_blocks, lambda ids: swizzle_experts(ids.reshape(*x.shape[:2], nb)))]
    return [(0, 1, _row_blocks(x.float()), _row_blocks, lambda ids: swizzle_groups(ids.reshape(x.shape[0], nb), ends.tolist()))]


def _per_block(scale: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Scale bytes per block from the backend's scale form, and its nonzero padding bytes;
    `where`: the layout of block ids + 1 (0 at padding bytes)."""
    flat, where = scale.view(torch.uint8).reshape(-1), where.reshape(-1)
    real = where > 0
    out = torch.zeros(int(real.sum()), dtype=torch.uint8)
    out[where[real] - 1] = flat[real]
    return out, int((flat[~real] != 0).sum())


def _call(backend: Backend, op: str, x, ends, dtype, mode, layout):
    fn = getattr(backend, op)
    if op in ("quantize_grouped", "quantize_grouped_colwise"):
        return fn(x, ends, dtype, mode)
    return fn(x, dtype, mode) if op == "quantize_2d" else fn(x, dtype, mode, layout)


def check_training(backend: Backend, device: torch.device, op: str, hp, dtype, mode, layout, seed: int) -> Result:
    result = Result(backend.name, str(device), op, describe_dtype(hp), describe_dtype(dtype), mode, layout, FAIL)
    tally = _Tally(result, backend, ELEMENT_FORMATS[dtype])
    tally.known = result_known(backend)  # (_Tally applies the rules to quantize only)
    for case, x, ends in _inputs(op, hp, seed):
        result.cases += 1
        ref = _call(reference_training, op, x, ends, dtype, mode, layout)
        xd = x.to(device)
        dev_ends = None if ends is None else ends.to(device)
        got = checked_outputs(tally, case, lambda: _call(backend, op, xd, dev_ends, dtype, mode, layout), xd, ref)
        if got is None:
            continue
        for di, si, blocks, data_blocks, place in _parts(op, x, ends, layout):
            where = place(torch.arange(1, blocks.shape[0] + 1))
            gs, padding = _per_block(got[si], where)
            es, _ = _per_block(ref[si], where)
            if padding:
                tally.problems.append(f"{case}: {padding} padding bytes of the scale layout are not zero")
            gd, ed = data_blocks(got[di].view(torch.uint8)), data_blocks(ref[di].view(torch.uint8))
            diff = (gd != ed).any(dim=-1) | (gs != es)

            def example(i, gd=gd, ed=ed, gs=gs, es=es):
                wrong = (gd[i] != ed[i]).nonzero().flatten()[:4].tolist()
                return {"block": i, "row": None, "name": None, "scale": {"expected": int(es[i]), "got": int(gs[i])},
                        "elements": {str(j): {"expected": int(ed[i, j]), "got": int(gd[i, j])} for j in wrong}}

            tally.add(case, diff, blocks, example)
    tally.finish()
    return result


def result_known(backend: Backend) -> list:
    """Declared codes verify has a rule for (as _Tally takes them for quantize)."""
    from .deviation_rules import DEVIATION_RULES

    declared = [d.code for d in backend.deviations]
    return [c for c in DEVIATION_RULES if c in declared]
