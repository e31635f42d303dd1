"""What the `cpu-native` and `cpu-eager` backends share: their (full) capabilities, and
addressing an input as rows without copying it where its strides allow."""

from __future__ import annotations

import math

import torch

from mxquant.backend import Capabilities
from mxquant.formats import ELEMENT_FORMATS, INPUT_DTYPES, SCALE_LAYOUTS

CPU_CAPABILITIES = Capabilities(
    devices=frozenset({"cpu"}),
    element_dtypes=frozenset(ELEMENT_FORMATS),
    # listed by name, not SCALE_MODES: a mode the contract gains later is not claimed unheard
    scale_modes=frozenset({"rceil", "floor", "compressed-tensors"}),
    scale_layouts=frozenset(SCALE_LAYOUTS),
    input_dtypes=frozenset(INPUT_DTYPES),
)


def rows_view(t: torch.Tensor) -> torch.Tensor:
    """`t` as (rows, K) with unit stride along K: a view where the leading dimensions merge
    into one row stride (row slices, expanded rows), else a contiguous copy (transposes)."""
    k = t.shape[-1]
    rows = math.prod(t.shape[:-1])
    if t.stride(-1) != 1 and k > 1:
        t = t.contiguous()
    try:
        return t.view(rows, k)
    except RuntimeError:  # leading dimensions whose strides do not merge
        return t.contiguous().view(rows, k)
