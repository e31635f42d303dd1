"""Constants of the MXFP8 format and the names the public API accepts.

Everything a backend needs to agree with the contract (docs/semantics.md) on *what* the
numbers are, with no arithmetic: element formats, scale modes, scale layouts and the shape
of the 128x4 swizzled scale layout.
"""

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

BASELINE_SCALE_MODES = ("rceil", "floor")
"""What a `Capabilities` that names no scale modes claims: the modes of mxquant 0.1, frozen.
A mode added to the contract later is claimed only by backends that list it."""

SWIZZLE_ROWS = 128
SWIZZLE_COLS = 4


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


def round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def swizzled_scale_shape(rows: int, k: int) -> tuple[int, int]:
    """Shape of the swizzled scale tensor for `rows` (leading dims flattened) by `k` elements."""
    return round_up(rows, SWIZZLE_ROWS), round_up(k // BLOCK, SWIZZLE_COLS)


def scale_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Shape of the scale tensor that mxfp8_quantize returns for an input of `shape`."""
    k = shape[-1]
    if layout == "linear":
        return (*shape[:-1], k // BLOCK)
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return swizzled_scale_shape(rows, k)


def describe_dtype(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
