"""Argument validation of the training and MoE calls (docs/semantics.md, "Training and MoE
calls"), shared by their public functions, custom ops and fakes: one-line errors, raised before
anything is allocated. The common checks (dtypes, mode, layout, backend name) are checks.py's."""

from __future__ import annotations

import operator

import torch

from .checks import _check_arguments, check_dense
from .formats import BLOCK


def normalize_axis(x, axis) -> int:
    """-1 or -2 for an `axis` naming x's last or second-to-last dimension, else ValueError
    (TypeError for a non-integer: a bool or a float too)."""
    try:
        if isinstance(axis, bool):
            raise TypeError
        axis = operator.index(axis)  # ints, numpy's included
    except TypeError:
        raise TypeError(f"axis must be an int (-1: row-wise, -2: column-wise), got {type(axis).__name__}") from None
    if not isinstance(x, torch.Tensor) and axis in (-1, -2):
        return axis  # the argument checks then say what x is
    ndim = x.dim() if isinstance(x, torch.Tensor) else 0
    for name in (-1, -2):
        if ndim + name >= 0 and axis in (name, ndim + name):
            return name
    raise ValueError(f"axis={axis} is not supported for x of {ndim} dimensions: blocks run along the last "
                     "dimension (axis=-1) or the second-to-last (axis=-2, column-wise)")


def is_colwise(x, axis, dtype, scale_mode, scale_layout, backend) -> bool:
    """Whether `axis` asks for the column-wise call (-2, or x.dim() - 2); -1 (an int) is the
    row-wise call without a look at x; anything else is normalize_axis's to accept or refuse,
    after the argument checks (docs/semantics.md: they come first), which raise where they fail."""
    if type(axis) is int and axis == -1:
        return False
    try:
        return normalize_axis(x, axis) == -2
    except (TypeError, ValueError):
        _check_arguments(x, dtype, scale_mode, scale_layout, backend)
        raise


def check_matrix(call: str, x, dtype, scale_mode, scale_layout, backend, *, m32: bool, k32: bool) -> None:
    """x (..., M, K) for `call`: M (dim -2) and/or K (dim -1) multiples of 32 as required."""
    _check_arguments(x, dtype, scale_mode, scale_layout, backend, call)
    shape = tuple(x.shape)
    if x.dim() < 2:
        raise ValueError(f"{call}: x must have at least two dimensions (..., M, K), got shape {shape}")
    if m32 and shape[-2] % BLOCK:
        raise ValueError(f"{call}: x.shape[-2] = {shape[-2]} (M) must be a multiple of {BLOCK} (x.shape = {shape})")
    if k32 and shape[-1] % BLOCK:
        raise ValueError(f"{call}: x.shape[-1] = {shape[-1]} (K) must be a multiple of {BLOCK} (x.shape = {shape})")


def check_grouped(x, group_ends, dtype, scale_mode, backend) -> None:
    """Shapes, dtypes and devices of mxfp8_quantize_grouped's arguments (never their values)."""
    call = "mxfp8_quantize_grouped"
    _check_arguments(x, dtype, scale_mode, "swizzled", backend, call)
    shape = tuple(x.shape)
    if x.dim() == 3:
        if group_ends is not None:
            raise ValueError(f"{call}: 3-D x {shape} is expert weights (E, N, K): pass group_ends=None")
    elif x.dim() == 2:
        if group_ends is None:
            raise ValueError(f"{call}: 2-D x {shape} is token-sorted activations (T, K): group_ends "
                             "(int32 cumulative ends, one per group) is required")
        _check_ends_tensor(call, x, group_ends)
    else:
        raise ValueError(f"{call}: x must be 3-D expert weights (E, N, K) or 2-D activations (T, K), got shape {shape}")
    if shape[-1] % BLOCK:
        raise ValueError(f"{call}: x.shape[-1] = {shape[-1]} (K) must be a multiple of {BLOCK} (x.shape = {shape})")


def check_grouped_colwise(x, group_ends, dtype, scale_mode, backend) -> None:
    """mxfp8_quantize_grouped(axis=-2), K-groups: x (T, N) token-sorted, T a multiple of 32,
    group_ends required (shapes, dtypes and devices; never the values)."""
    call = "mxfp8_quantize_grouped(axis=-2)"
    _check_arguments(x, dtype, scale_mode, "swizzled", backend, call)
    shape = tuple(x.shape)
    if x.dim() != 2:
        raise ValueError(f"{call}: x must be 2-D token-sorted (T, N), blocks of 32 along T per group; "
                         f"got shape {shape}")
    if group_ends is None:
        raise ValueError(f"{call}: group_ends (int32 cumulative ends over T = x.shape[0], one per group) is required")
    _check_ends_tensor(call, x, group_ends)
    if shape[0] % BLOCK:
        raise ValueError(f"{call}: x.shape[0] = {shape[0]} (T) must be a multiple of {BLOCK} (x.shape = {shape})")


def _check_ends_tensor(call: str, x, group_ends) -> None:
    if not isinstance(group_ends, torch.Tensor):
        raise TypeError(f"{call}: group_ends must be a torch.Tensor (int32), got {type(group_ends).__name__}")
    check_dense("group_ends", group_ends, call)
    if group_ends.dtype != torch.int32:
        raise TypeError(f"{call}: group_ends has dtype {str(group_ends.dtype).replace('torch.', '')}; it must be int32")
    if group_ends.dim() != 1 or group_ends.shape[0] == 0:
        raise ValueError(f"{call}: group_ends must be 1-D with one end per group (at least one), "
                         f"got shape {tuple(group_ends.shape)}")
    if group_ends.device != x.device:
        raise ValueError(f"{call}: group_ends is on {group_ends.device} but x is on {x.device}; "
                         "they must be on one device")


def check_group_end_values(group_ends: torch.Tensor, rows: int, colwise: bool = False) -> None:
    """Non-negative, non-decreasing, last == T (and, column-wise, each a multiple of 32): checked
    on the CPU only, where reading the values costs no device synchronisation (docs/semantics.md)."""
    if group_ends.device.type != "cpu":
        return
    ends = group_ends.tolist()
    call = "mxfp8_quantize_grouped(axis=-2)" if colwise else "mxfp8_quantize_grouped"
    if ends[0] < 0:
        raise ValueError(f"{call}: group_ends[0] = {ends[0]} is negative")
    bad = next((g for g, e in enumerate(ends) if e % BLOCK), None) if colwise else None
    if bad is not None:
        raise ValueError(f"{call}: group_ends[{bad}] = {ends[bad]} is not a multiple of "
                         f"{BLOCK}: column-wise blocks of 32 tokens must not straddle groups (pad each group to a "
                         "multiple of 32 tokens first, as torchao's pad_token_groups does)")
    for g in range(1, len(ends)):
        if ends[g] < ends[g - 1]:
            raise ValueError(f"{call}: group_ends must be non-decreasing, but group_ends[{g}] = "
                             f"{ends[g]} < group_ends[{g - 1}] = {ends[g - 1]}")
    if ends[-1] != rows:
        raise ValueError(f"{call}: group_ends[-1] = {ends[-1]} must equal the number of rows "
                         f"T = x.shape[0] = {rows}")
