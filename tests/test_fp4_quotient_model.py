"""A model test of the NVFP4 Triton kernel's quotient on CUDA (backends/_triton_fp4.py,
`_nibble_quotient`): its arithmetic replayed in NumPy, with every FMA computed exactly (Python
fractions, one rounding to fp32), against the oracle's nibble of the IEEE quotient RN(x / d)
(tests/fp4_oracle.py). It checks the algorithm on cases built at every rounding threshold, not
the compiled kernel: that runs on the GPU (tests/test_triton_fp4.py, marked cuda), where the
interpreter's double-rounded fma cannot model it."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from fp4_oracle import e2m1_nibble, round_grid

F32 = np.float32


def _rn32(v: Fraction) -> F32:
    """v rounded once to fp32 (nearest, ties to even; subnormals; overflow to Inf)."""
    if v == 0:
        return F32(0.0)
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    q = Fraction(2) ** (max(e, -126) - 23)
    n = a / q
    whole = n.numerator // n.denominator
    rest = n - whole
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2):
        whole += 1
    val = whole * q
    if val >= Fraction(2) ** 128:
        return F32(np.inf if v > 0 else -np.inf)
    return F32(float(val) if v > 0 else -float(val))


def _fma(a: F32, b: F32, c: F32) -> F32:
    return _rn32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _model(x: F32, d: F32):
    """The kernel's _nibble_quotient for one element: (y, negative)."""
    r = F32(1.0) / d                                    # IEEE division, once per group
    with np.errstate(over="ignore"):
        q0 = F32(x * r)
    if abs(q0) >= 8.0:
        y = q0
    else:
        q1 = _fma(r, _fma(-d, q0, x), q0)
        y = _fma(r, _fma(-d, q1, x), q1)
    ax = abs(x)
    tiny = ax < F32(2.0**-90)
    negative = bool(x < 0) and (not tiny or F32(ax * F32(2.0**100)) > F32(d * F32(2.0**-50)))
    return y, negative


def _nibble(y: np.ndarray, negative: np.ndarray) -> np.ndarray:
    yc = np.clip(y.astype(np.float64), -6.0, 6.0)
    return e2m1_nibble(round_grid(yc, 1, 0), negative)


def _steps(v: F32, k: int) -> list:
    out, up, down = [v], v, v
    for _ in range(k):
        up, down = np.nextafter(up, F32(np.inf)), np.nextafter(down, F32(-np.inf))
        out += [up, down]
    return out


def _cases(seed: int):
    """(x, d) pairs: d = RN(s / g) for e4m3 scales s and 2**-20 <= g <= 2**20 (the range the
    kernel takes this path for); x at and next to every e2m1 rounding threshold times d, where
    x / d overflows, where RN(x / d) turns from 0 to the smallest subnormal, subnormal and random."""
    rng = np.random.default_rng(seed)
    e4m3 = [F32(m * 2.0**-9) for m in range(1, 8)] + [F32((8 + m) * 2.0 ** (e - 10)) for e in range(1, 16)
                                                       for m in range(8) if (8 + m) * 2.0 ** (e - 10) <= 448]
    gs = [F32(2.0**-20), F32(2.0**20), F32(1.0), F32(2688.0 / 3.7)] + [F32(2.0 ** rng.uniform(-20, 20)) for _ in range(36)]
    pairs = []
    for g in gs:
        for s in rng.choice(np.array(e4m3, dtype=F32), 4, replace=False).tolist() + [F32(2.0**-9), F32(448.0)]:
            d = F32(F32(s) / g)
            xs = []
            for t in (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, 8.0):
                xs += _steps(F32(t * float(d)), 3)
            with np.errstate(over="ignore", under="ignore"):
                xs += _steps(F32(2.0**-150 * float(d)), 2) + _steps(F32(2.0**-90), 1)
                xs += [F32(3.4e38), F32(1e-45), F32(0.0), F32(2.0**-126), F32(float(d) * 1e30)]
            xs += [F32(v) for v in rng.uniform(-8, 8, 8) * float(d)]
            for x in xs:
                pairs += [(F32(x), d), (F32(-x), d)]
    return pairs


@pytest.mark.parametrize("seed", [0, 1])
def test_nvfp4_fast_quotient_gives_the_ieee_quotients_nibble(seed):
    pairs = _cases(seed)
    assert len(pairs) > 5000
    got_y, got_neg = zip(*(_model(x, d) for x, d in pairs))
    x = np.array([p[0] for p in pairs], dtype=F32)
    d = np.array([p[1] for p in pairs], dtype=F32)
    with np.errstate(over="ignore", under="ignore"):
        want_y = x / d                                   # IEEE fp32 division: the contract's y
    want = _nibble(want_y, want_y < 0)
    got = _nibble(np.array(got_y, dtype=F32), np.array(got_neg))
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(float(x[i]), float(d[i]), int(got[i]), int(want[i])) for i in bad[:5]]
    # the cases reach what they are for: ties at the thresholds, quotients that round to 0 and
    # to the smallest subnormal with a sign, and overflow
    assert (np.abs(want_y) == F32(2.0**-149)).any() and ((want_y == 0) & (x != 0)).any()
    assert np.isinf(want_y).any() and (np.isin(np.abs(want_y), [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])).any()
