"""What the `cpu-native` and `cpu-eager` backends share: their (full) capabilities."""

from __future__ import annotations

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
