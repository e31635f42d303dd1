"""The training and MoE calls (docs/semantics.md, "Training and MoE calls"): column-wise
(mxfp8_quantize(..., axis=-2), which lands here), row+column, 32x32 tiles and grouped scales.

The same path as ops.py: public function -> custom op (`mxquant::quantize_colwise`,
`quantize_rowcol`, `quantize_2d`, `quantize_grouped`, `quantize_grouped_colwise`, defined in custom_ops_training.py and
registered on first lookup, lazy_ops.py) and its fake -> argument checks (a repeated signature
skips those it pins, call_path.checked_outputs) -> the backend the registry resolves for the op (only one that claims it, backend.TRAINING_OPS) -> its
outputs checked against the contract's shapes (every backend: these calls are new, no in-tree
kernel is exempted) -> swizzled scales flattened (layouts.to_public)."""

from __future__ import annotations

from typing import Optional

import torch

from .checks_training import check_group_end_values, check_grouped, check_grouped_colwise, check_matrix, is_colwise
from .backend import PUBLIC_NAMES, public_call
from .errors import BackendOutputError
from .formats import BLOCK, describe_dtype
from .layouts import expert_scale_shape, grouped_scale_shape, kgroup_scale_shape, scale_shape, to_public
from .call_path import (CALL_ERRORS, MXFP8Quantized, _eager, _raised, dispatch, checked_outputs, input_versions,
                        output_problem)
from .outputs import is_own, owner
from .registry import get_registry
from .selection import overrides

_E8M0 = torch.float8_e8m0fnu


def mxfp8_quantize_rowcol(x: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn, *, scale_mode: str = "rceil",
                          scale_layout: str = "linear", backend: Optional[str] = None):
    """(row, col): `mxfp8_quantize(x, ...)` and `mxfp8_quantize(x, ..., axis=-2)` from one read
    of x (..., M, K), M and K multiples of 32; each an MXFP8Quantized, byte-identical to its call."""
    if _eager(x):
        out = run_rowcol(x, dtype, scale_mode, scale_layout, backend)
    else:
        op = lambda: torch.ops.mxquant.quantize_rowcol(x, dtype, scale_mode, scale_layout, backend)  # noqa: E731
        out = dispatch(op, check_matrix, "mxfp8_quantize_rowcol", x, dtype, scale_mode, scale_layout, backend,
                       m32=True, k32=True)
    return MXFP8Quantized(out[0], out[1]), MXFP8Quantized(out[2], out[3])


def mxfp8_quantize_2d(x: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn, *, scale_mode: str = "rceil",
                      backend: Optional[str] = None) -> MXFP8Quantized:
    """One E8M0 scale per 32x32 tile of x (..., M, K), M and K multiples of 32: data of x's
    shape, scale (..., M/32, K/32). tile_scales_to_rowwise / _colwise expand the scale for a
    GEMM in either orientation."""
    if _eager(x):
        return MXFP8Quantized(*run_2d(x, dtype, scale_mode, backend))
    op = lambda: torch.ops.mxquant.quantize_2d(x, dtype, scale_mode, backend)  # noqa: E731
    return MXFP8Quantized(*dispatch(op, check_matrix, "mxfp8_quantize_2d", x, dtype, scale_mode, "linear", backend,
                                    m32=True, k32=True))


def mxfp8_quantize_grouped(x: torch.Tensor, group_ends: Optional[torch.Tensor],
                           dtype: torch.dtype = torch.float8_e4m3fn, *, scale_mode: str = "rceil",
                           backend: Optional[str] = None, axis: int = -1) -> MXFP8Quantized:
    """Scales in the per-group 128x4 layout grouped GEMMs read.
    axis=-1 (default), row-wise data:
      3-D expert weights (E, N, K) with group_ends=None: scale (E, round_up(N,128)*round_up(K/32,4));
      token-sorted (T, K) with group_ends (int32 cumulative ends, one per group, on x's device):
      scale 1-D of (T + 128*G) * round_up(K/32, 4) bytes, each group padded to 128 rows, in order.
    axis=-2, K-groups (MoE weight gradient): token-sorted (T, N), every end a multiple of 32:
      data (N, T) as mxfp8_quantize(x, axis=-2); scale 1-D of round_up(N,128) * (T/32 + 4*G)
      bytes, each group's (N, tokens/32) scales swizzled on their own, columns padded to 4."""
    if is_colwise(x, axis, dtype, scale_mode, "swizzled", backend):
        if _eager(x) and _eager(group_ends):
            return MXFP8Quantized(*run_grouped_colwise(x, group_ends, dtype, scale_mode, backend))
        op = lambda: torch.ops.mxquant.quantize_grouped_colwise(x, group_ends, dtype, scale_mode, backend)  # noqa: E731
        return MXFP8Quantized(*dispatch(op, check_grouped_colwise, x, group_ends, dtype, scale_mode, backend))
    if _eager(x) and (group_ends is None or _eager(group_ends)):
        return MXFP8Quantized(*run_grouped(x, group_ends, dtype, scale_mode, backend))
    op = lambda: torch.ops.mxquant.quantize_grouped(x, group_ends, dtype, scale_mode, backend)  # noqa: E731
    return MXFP8Quantized(*dispatch(op, check_grouped, x, group_ends, dtype, scale_mode, backend))


def quantize_colwise_call(x, dtype, scale_mode, scale_layout, backend) -> MXFP8Quantized:
    """mxfp8_quantize(..., axis=-2) (ops.py hands it here)."""
    if _eager(x):
        return MXFP8Quantized(*run_colwise(x, dtype, scale_mode, scale_layout, backend))
    op = lambda: torch.ops.mxquant.quantize_colwise(x, dtype, scale_mode, scale_layout, backend)  # noqa: E731
    return MXFP8Quantized(*dispatch(op, check_matrix, "mxfp8_quantize(axis=-2)", x, dtype, scale_mode, scale_layout,
                                    backend, m32=True, k32=False))


# ---- run_*: checks, resolution, the backend, its outputs checked ------------------------------

def transposed_shape(shape: tuple) -> tuple:
    return (*shape[:-2], shape[-1], shape[-2])


def run_colwise(x, dtype, scale_mode, scale_layout, backend):
    want = checked_outputs(
        "quantize_colwise", x, dtype, scale_mode, scale_layout, backend,
        lambda: check_matrix("mxfp8_quantize(axis=-2)", x, dtype, scale_mode, scale_layout, backend,
                             m32=True, k32=False),
        lambda: _outputs(("data", "scale"), transposed_shape(tuple(x.shape)), dtype, scale_layout))
    data, scale = _call("quantize_colwise", x, dtype, scale_mode, scale_layout, backend, want)
    return data, to_public(scale, scale_layout)


def run_rowcol(x, dtype, scale_mode, scale_layout, backend):
    want = checked_outputs(
        "quantize_rowcol", x, dtype, scale_mode, scale_layout, backend,
        lambda: check_matrix("mxfp8_quantize_rowcol", x, dtype, scale_mode, scale_layout, backend,
                             m32=True, k32=True),
        lambda: (_outputs(("row data", "row scale"), tuple(x.shape), dtype, scale_layout)
                 + _outputs(("column data", "column scale"), transposed_shape(tuple(x.shape)), dtype, scale_layout)))
    rd, rs, cd, cs = _call("quantize_rowcol", x, dtype, scale_mode, scale_layout, backend, want)
    return rd, to_public(rs, scale_layout), cd, to_public(cs, scale_layout)


def run_2d(x, dtype, scale_mode, backend):
    want = checked_outputs(
        "quantize_2d", x, dtype, scale_mode, "linear", backend,
        lambda: check_matrix("mxfp8_quantize_2d", x, dtype, scale_mode, "linear", backend, m32=True, k32=True),
        lambda: [("data", tuple(x.shape), dtype), ("scale", tile_scale_shape(tuple(x.shape)), _E8M0)])
    return _call("quantize_2d", x, dtype, scale_mode, "linear", backend, want)


def run_grouped(x, group_ends, dtype, scale_mode, backend):
    check_grouped(x, group_ends, dtype, scale_mode, backend)  # at every call: group_ends is a tensor
    if group_ends is not None:
        check_group_end_values(group_ends, x.shape[0])
    shape = tuple(x.shape)
    want = [("data", torch.Size(shape), dtype), ("scale", torch.Size(grouped_shape(shape, group_ends)), _E8M0)]
    return _call("quantize_grouped", x, dtype, scale_mode, "swizzled", backend, want, extra=(group_ends,))


def run_grouped_colwise(x, group_ends, dtype, scale_mode, backend):
    check_grouped_colwise(x, group_ends, dtype, scale_mode, backend)  # at every call: group_ends is a tensor
    check_group_end_values(group_ends, x.shape[0], colwise=True)
    want = [("data", torch.Size(transposed_shape(tuple(x.shape))), dtype),
            ("scale", torch.Size(kgroup_scale_shape(x.shape[0], x.shape[1], group_ends.shape[0])), _E8M0)]
    return _call("quantize_grouped_colwise", x, dtype, scale_mode, "swizzled", backend, want, extra=(group_ends,))


def _outputs(names: tuple, shape: tuple, dtype, scale_layout) -> list:
    """[(name, shape, dtype)] of a row-wise (data, scale) pair for data of `shape`."""
    return [(names[0], shape, dtype), (names[1], scale_shape(shape, scale_layout), _E8M0)]


def tile_scale_shape(shape: tuple) -> tuple:
    return (*shape[:-2], shape[-2] // BLOCK, shape[-1] // BLOCK)


def grouped_shape(shape: tuple, group_ends) -> tuple:
    if group_ends is None:
        return expert_scale_shape(shape)
    return grouped_scale_shape(shape[0], shape[1], group_ends.shape[0])


def _call(op, x, dtype, scale_mode, scale_layout, backend, want, extra=()):
    key = (op, x.device, x.dtype, dtype, scale_mode, scale_layout, backend, *overrides())
    fn = get_registry().lookup(*key)
    args = (x, *extra, dtype, scale_mode) + ((scale_layout,) if op in ("quantize_colwise", "quantize_rowcol") else ())
    inputs = tuple(a for a in args if isinstance(a, torch.Tensor))  # x, and group_ends
    before = input_versions(inputs)
    try:
        out = fn(*args)
    except CALL_ERRORS as exc:
        raise _raised(fn, exc, PUBLIC_NAMES[op], x.device, before, input_versions(inputs))
    problem = output_problem(out, want, inputs, before, is_own(fn))
    if problem:
        name, origin = owner(fn)
        call = public_call(op, f"{describe_dtype(x.dtype)} {tuple(x.shape)} -> {describe_dtype(dtype)}, {scale_mode}")
        raise BackendOutputError(name, origin, call, problem)
    return tuple(out)
