"""Constants of the MXFP8 contract (docs/semantics.md) and the names the public API accepts:
element formats, scale modes, scale layouts. No arithmetic; layout shapes are in layouts.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK = 32
"""Elements per scale block, along the last dimension (OCP MX v1.0)."""

E8M0_BIAS = 127
E8M0_NAN = 0xFF
"""Scale byte of a block that holds a NaN or an Inf."""

ELEMENT_NAN = 0x7F
"""Element byte written for every element of a NaN/Inf block (a NaN in both e4m3fn and e5m2)."""

SCALE_MODES = ("rceil", "floor", "compressed-tensors")
SCALE_LAYOUTS = ("linear", "swizzled")
INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
OUTPUT_DTYPES = INPUT_DTYPES

# What a `Capabilities` that names none claims: mxquant 0.1's contract, frozen. Whatever the
# contract gains later is claimed only by backends that list it.
BASELINE_SCALE_MODES = ("rceil", "floor")
BASELINE_SCALE_LAYOUTS = ("linear", "swizzled")
BASELINE_INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BASELINE_ELEMENT_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

@dataclass(frozen=True)
class ElementFormat:
    dtype: torch.dtype
    name: str
    emax: int
    """Exponent of the largest power of two in the format: max_finite = 1.75 * 2**emax."""
    max_finite: float


ELEMENT_FORMATS = {
    torch.float8_e4m3fn: ElementFormat(torch.float8_e4m3fn, "e4m3", 8, 448.0),
    torch.float8_e5m2: ElementFormat(torch.float8_e5m2, "e5m2", 15, 57344.0),
}

# Both maxima are 1.75 * 2**emax: amax > max * 2**k exactly when amax's fp32 mantissa field
# exceeds that of 1.75 (0x600000) at the same exponent. The rceil rule uses this.
RCEIL_MANTISSA_THRESHOLD = 0x600000


def describe_dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---- FP4 (docs/semantics.md, "MXFP4 and NVFP4") ----------------------------------------------

E2M1_MAX = 6.0
"""Largest e2m1 value, 1.5 * 2**2. The grid: 0, 0.5, 1, 1.5, 2, 3, 4, 6 (and negatives)."""
E2M1_EMAX = 2
E2M1 = ElementFormat(torch.float4_e2m1fn_x2, "e2m1", E2M1_EMAX, E2M1_MAX)
"""For `mxquant verify`'s deviation rules (conformance/deviation_rules.py): 6 = 1.5 * 2**2, not
1.75 * 2**emax as the fp8 formats (the rules read max_finite, not emax)."""
MXFP4_BLOCK = 32
NVFP4_BLOCK = 16
MXFP4_SCALE_MODES = SCALE_MODES
NVFP4_SCALE_MODES = ("compressed-tensors",)
"""NVFP4 has one rule today: the one compressed-tensors / llm-compressor checkpoints hold."""
BASELINE_NVFP4_SCALE_MODES = ("compressed-tensors",)
"""The NVFP4 modes that claiming nvfp4_quantize claims (frozen, as BASELINE_*: a mode added to
NVFP4_SCALE_MODES later is claimed only by a backend that lists it in scale_modes)."""
E4M3_MAX = 448.0
E4M3_NAN = 0x7F
"""NVFP4 scale byte of a group holding a NaN or an Inf (the e4m3 NaN)."""
NVFP4_ZERO_SCALE = 0x20
"""NVFP4 scale byte (e4m3 0.125) of a group whose scale rounds to zero (compressed-tensors' eps)."""
