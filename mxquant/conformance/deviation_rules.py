"""Which input blocks each known deviation code may explain (used by `mxquant verify`).

A backend declares its deviations from docs/semantics.md by code; verify accepts a differing
quantize block only if the rule of a declared code covers that block's input.
"""

from __future__ import annotations

from typing import Callable

import torch

_TINY = 2.0**-126  # smallest normal fp32


# ---- deviation rules: which input blocks a declared deviation code may explain ---------------

def _amax(blocks: torch.Tensor) -> torch.Tensor:
    inf = float("inf")
    return blocks.nan_to_num(nan=0.0, posinf=inf, neginf=-inf).abs().amax(dim=-1)


def _rule_nan(blocks, fmt):
    return blocks.isnan().any(dim=-1)


def _rule_inf(blocks, fmt):
    return blocks.isinf().any(dim=-1)


def _rule_tiny(blocks, fmt):
    subnormal = ((blocks != 0) & (blocks.abs() < _TINY)).any(dim=-1)
    return subnormal | (_amax(blocks) < fmt.max_finite * _TINY)


def _mantissa(value: float) -> int:
    return int(torch.tensor(value, dtype=torch.float32).view(torch.int32)) & 0x7FFFFF


def _rule_approx_scale(blocks, fmt):
    # amax / max_finite within 40 fp32 ulps of a power of two: amax's mantissa field near
    # max_finite's (0x600000 for the fp8 maxima, 1.75 * 2**emax; 0x400000 for e2m1's 6 = 1.5 * 4).
    # 40: a float log2 + ceil (the XPU kernel) was worked out to misplace amax up to ~39 ulps
    # above; an approximate reciprocal, ~2.
    amax = _amax(blocks)
    mant = amax.view(torch.int32) & 0x7FFFFF
    return amax.isfinite() & (amax > 0) & ((mant - _mantissa(fmt.max_finite)).abs() <= 40)


def _rule_zero(blocks, fmt):
    return (blocks == 0).all(dim=-1)


def _rule_min_scale(blocks, fmt):
    # A kernel whose scale has a floor of 2**e_min (e_min = ceil(log2(1 / (max_finite * 512))):
    # -17 for e4m3, -24 for e5m2) differs on blocks whose rceil exponent is below it:
    # amax <= max_finite * 2**(e_min - 1), which is 1.75 * 2**-10 for both formats.
    amax = _amax(blocks)
    return (amax > 0) & (amax <= 1.75 * 2.0**-10)


DEVIATION_RULES: dict[str, tuple[str, Callable]] = {
    "nan-ignored": ("blocks holding a NaN", _rule_nan),
    "inf-saturates": ("blocks holding an Inf", _rule_inf),
    "tiny-flush": ("blocks with a nonzero |x| < 2**-126, or amax < max_finite * 2**-126", _rule_tiny),
    "approx-scale": ("blocks whose amax / max_finite is within 40 fp32 ulps of a power of two", _rule_approx_scale),
    "zero-block-scale": ("all-zero blocks", _rule_zero),
    "min-scale": ("nonzero blocks with amax <= 1.75 * 2**-10", _rule_min_scale),
    "inf-elements": ("blocks holding an Inf", _rule_inf),
}
"""code -> (which blocks it may explain, rule(blocks fp32 (n, 32), ElementFormat) -> bool (n,)).
Rules apply to quantize; a dequantize difference is explained only by a code verify does not know.
A differing block is attributed to the first declared code, in this order, whose rule covers it
(a tiny block whose amax is 448 * 2**k counts for tiny-flush, not approx-scale), so a code with
no blocks attributed was not needed to explain anything."""
