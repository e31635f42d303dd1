"""The arithmetic of the `triton` backend's NVFP4 kernel for 2-byte input
(backends/_triton_nvfp4.py), checked in NumPy against the contract's IEEE divisions, on every
finite x of bf16 and fp16, independently of the kernel's code:

- RN_x(amax * RN(1 / 6)) equals the contract's RN_x(RN(amax / 6)) for every amax of the dtype;
- y' = RN(x * RN(g / s)) gives the same e2m1 nibble (from a threshold table written from
  docs/semantics.md, not the kernel's bit formula) as the contract's y = RN(x / RN(s / g)) for
  every x, in every group that _nv_flag's rule (restated here) leaves unflagged: every e4m3 scale
  s, for global scales g across the fp32 range and as compressed-tensors derives them;
- the rule flags few scales for a g of real data, and every scale whose quotients hit or come
  within a step of the rounding midpoints (g = 1 and g built for it); without its window the rule
  misses elements on those inputs, so the x reach the cases it is for;
- in flagged groups, Markstein's quotient (R = RN(1 / D), q0 = RN(x * R), e = fma(-q0, D, x),
  q1 = fma(e, R, q0); fp32 FMA emulated exactly, checked against `fractions`) has the nibble and
  sign bit of RN(x / D) for every x with |x / D| < 16, and is RN(x / D) bit for bit where
  |x / D| >= 2**-4, for D in [2**-96, 2**16) (those of 21 global scales and random ones at the
  range's ends and with significands near 1 and 2); and an unclamped group's elements are all
  within |x / D| < 16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

F32, U32 = np.float32, np.uint32
E4M3 = np.array([(1 + m / 8) * 2.0 ** (e - 7) if e else m * 2.0**-9 for e in range(16) for m in range(8)
                 if (e, m) not in ((0, 0), (15, 7))], dtype=F32)  # every positive finite e4m3 value
GRID = {"bf16": (torch.bfloat16, 16, 2.0**13), "fp16": (torch.float16, 19, 2.0**122)}  # dtype, bits below its significand, DMAX
NEAR = [float(F32(1) / (F32(1.25) * F32(1 + i * 2.0**-23))) for i in (-1, 1)]
"""g whose d = s / g lie one fp32 step from 1.25 * s: every x = m * s of the dtype then divides to
one step beside a rounding midpoint (what the rule is for; a rule without a window misses there)."""
G_VALUES = [1.0, 2688.0 / 3.7, 2688.0 / 0.051, 2688.0 / 11.3, 0.37, 2.0**-20 * 1.3, 2.0**20 * 0.77, 1e-30, 3e25,
            2688.0 / 448.0 * 1.001, 5.5e-3, 123.4567, *NEAR]


def finite(kind: str) -> np.ndarray:
    """Every finite value of the dtype that is > 0, as fp32."""
    dtype = GRID[kind][0]
    v = torch.arange(1, 1 << 15, dtype=torch.int32).to(torch.int16).view(dtype).float().numpy()
    return v[np.isfinite(v)]


def nibble(v: np.ndarray) -> np.ndarray:
    """e2m1 nibbles of fp32 v from the contract's thresholds (0.25 -> 0, 0.75 -> 1, 1.25 -> 1,
    1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4, above 5 -> 6), sign 8 where v < 0."""
    a = np.abs(v.astype(np.float64))
    code = np.select([a <= 0.25, a < 0.75, a <= 1.25, a < 1.75, a <= 2.5, a < 3.5, a <= 5.0], [0, 1, 2, 3, 4, 5, 6], 7)
    return code | np.where(v < 0, 8, 0)


def flagged(s: np.ndarray, g: float, kind: str, window: int = 32) -> np.ndarray:
    """The kernel's rule (_nv_flag) for scales s under g: on d = RN(s * RN(1 / g))."""
    return flagged_d(s * (F32(1) / F32(g)), kind, window)


def flagged_d(d: np.ndarray, kind: str, window: int = 32) -> np.ndarray:
    """k * d (k = 1, 3, 5, 7) within `window` fp32 steps of the dtype's significand grid, or d
    outside [2**-120, DMAX)."""
    _, sh, dmax = GRID[kind]
    near = np.zeros(d.shape, bool)
    for k in (1, 3, 5, 7):
        t = ((F32(k) * d).view(U32).astype(np.uint64) + window) % (1 << (32 - sh))
        near |= t <= 2 * window
    return near | (d < 2.0**-120) | (d >= dmax)


def misses(g: float, kind: str, window: int = 32) -> tuple[int, int]:
    """(elements whose nibble differs between y' and y in unflagged groups, unflagged scales) over
    every positive e4m3 scale and every positive finite x (y' and y are odd in x)."""
    x = finite(kind)
    g32 = F32(g)
    bad = 0
    keep = ~flagged(E4M3, g, kind, window)
    with np.errstate(all="ignore"):
        for s in E4M3[keep]:
            r = g32 / s
            y_fast = x * r
            y = x / (s / g32)
            bad += int(np.count_nonzero(nibble(y_fast) != nibble(y)))
    return bad, int(keep.sum())


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_amax_over_six_by_a_reciprocal(kind):
    dtype = GRID[kind][0]
    a = finite(kind)
    want = torch.from_numpy((a / F32(6)).astype(F32)).to(dtype).float()
    got = torch.from_numpy((a * (F32(1) / F32(6))).astype(F32)).to(dtype).float()
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
@pytest.mark.parametrize("g", G_VALUES)
def test_reciprocal_quotient_matches_division_where_unflagged(kind, g):
    bad, kept = misses(g, kind)
    assert bad == 0, f"{bad} elements differ in unflagged groups (g {g}, {kind})"
    if g == 1.0 or g in NEAR:  # d's multiples on (or a step from) the grid: every scale divided
        assert kept == 0


def contract_g(amax: torch.Tensor, dtype) -> np.ndarray:
    """compressed-tensors' g for amaxes of the dtype: RN_x(RN_x(1 / amax) * 2688), 1.0 where that
    is not finite (docs/semantics.md, NVFP4, step 1)."""
    g = ((1 / amax.to(dtype).float()).to(dtype).float() * 2688).to(dtype).float().numpy()
    return np.where(np.isfinite(g), g, 1.0)


@pytest.mark.parametrize("kind, most", [("bf16", 0.10), ("fp16", 0.10)])
def test_flagged_share_under_compressed_tensors_global_scales(kind, most):
    """compressed-tensors' g for 400 amaxes of the dtype log-uniform over 2**-8..2**8: on average
    at most `most` of the e4m3 scales are flagged (bf16 7.6% on 2026-12-06; a whole class where g
    has a short significand), except where g = 1.0: every scale flagged. fp16's g overflows below
    amax 2688 / 65504, so small-amax fp16 tensors are all flagged (what flagging costs on a GPU,
    with Markstein's quotient 1.14-1.18x the unflagged time: backends/_triton_nvfp4.py)."""
    dtype = GRID[kind][0]
    amax = torch.from_numpy(2.0 ** np.random.default_rng(5).uniform(-8, 8, 400))
    g = contract_g(amax, dtype)
    share = np.array([flagged(E4M3, float(v), kind).mean() for v in g])
    assert share[g == 1.0].min(initial=1.0) == 1.0
    assert share[g != 1.0].mean() < most, share[g != 1.0].mean()
    if kind == "fp16":
        assert (g == 1.0).mean() > 0.2  # amax below 2688 / 65504 ~ 0.041: 2**-8..2**-4.6 of the range


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_a_rule_without_its_window_misses_elements(kind):
    """Without the near-grid window (only k * d exactly on the grid flagged), y' rounds some x to
    another nibble than y: the exhaustive x reach the cases the rule is for."""
    assert sum(misses(g, kind, window=0)[0] for g in NEAR) > 0


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """fp32 fma(a, b, c) with one rounding: a * b is exact in float64 (48 bits), the sum's error
    exact by TwoSum, and where the float64 sum lies on an fp32 rounding midpoint the error decides
    the side (NumPy's cast would round that tie to even). Subnormal results are rounded once by
    the cast (the float64 sum is exact there). One case is wrong and out of the ranges used here:
    a sum that rounds in float64 to 2**128 - 2**103 with a negative error gives inf, not FLT_MAX."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    v = s - p
    err = (p - (s - v)) + (c64 - v)                          # p + c = s + err exactly
    r = s.astype(F32)
    up, down = np.nextafter(r, F32(np.inf)), np.nextafter(r, F32(-np.inf))
    r = np.where((s == (r.astype(np.float64) + up) / 2) & (err > 0), up, r)
    return np.where((s == (r.astype(np.float64) + down) / 2) & (err < 0), down, r)


def test_fma_emulation_rounds_once():
    """fma32 against exact rational arithmetic, on products that nearly cancel the addend (the
    Markstein residual's case), on sums that land on an fp32 midpoint in float64 while the exact
    one lies beside it (the error term decides: without it some of these come out wrong), and on
    subnormal results."""
    from fractions import Fraction

    rng = np.random.default_rng(1)
    a = (rng.standard_normal(1500) * 3).astype(F32)
    b = rng.standard_normal(1500).astype(F32)
    c = (-(a * b) + rng.standard_normal(1500).astype(F32) * F32(1e-6)).astype(F32)
    ties_a = (F32(1) + rng.integers(1, 1 << 10, 500).astype(F32) * F32(2.0**-12)).astype(F32)
    ties_c = rng.choice([F32(2.0**-70), F32(-(2.0**-70))], 500).astype(F32)
    sub_a = (rng.standard_normal(200) * 2.0**-70).astype(F32)
    sub_b = (rng.standard_normal(200) * 2.0**-60).astype(F32)
    sub_c = (rng.standard_normal(200) * 2.0**-128).astype(F32)
    a = np.concatenate([a, ties_a, sub_a])
    b = np.concatenate([b, np.full(500, F32(1 + 2.0**-12)), sub_b])
    c = np.concatenate([c, ties_c, sub_c])
    got = fma32(a, b, c)
    naive = (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(F32)
    assert (naive[1500:2000].view(U32) != got[1500:2000].view(U32)).sum() > 10  # (ties the error term settles)
    assert (np.abs(got[2000:]) < 2.0**-126).sum() > 100  # (subnormal results)
    for i in range(a.size):
        v = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        f = F32(float(v))
        near = [np.nextafter(f, F32(-np.inf)), f, np.nextafter(f, F32(np.inf))]
        want = min(near, key=lambda z: (abs(Fraction(float(z)) - v), int(np.array(z).view(U32)) & 1))
        assert got[i].view(U32) == want.view(U32), (a[i], b[i], c[i])


MARKSTEIN_G = [*G_VALUES, 448.0, 480.0, 512.0, 2.0**100 * 1.37, 2.0**-14 * 0.91, 2.0**95, 2.0**-16 * 448]


def markstein_divisors(rng) -> np.ndarray:
    """D = RN(s / g) of every e4m3 scale under MARKSTEIN_G inside [2**-96, 2**16), and 96 more:
    random in the binades at both ends of that range, and with significands within 2**-20 of 1
    and of 2 (a review found last-bit differences of the quotient near 2**-95 that the first set
    never reached)."""
    with np.errstate(all="ignore"):
        d = np.array([F32(s) / F32(g) for g in MARKSTEIN_G for s in E4M3], dtype=F32)
    ends = [2.0**e * rng.uniform(1, 2, 16) for e in (-96, -95, 14, 15)]
    edges = [2.0 ** rng.integers(-96, 16, 16) * (1 + rng.uniform(0, 2.0**-20, 16)),
             2.0 ** rng.integers(-97, 15, 16) * (2 - rng.uniform(2.0**-23, 2.0**-20, 16))]
    d = np.concatenate([d, *(np.asarray(v).astype(F32) for v in ends + edges)])
    return np.unique(d[(d >= 2.0**-96) & (d < 2.0**16)])


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_markstein_quotient_is_the_division(kind):
    """The flagged groups' quotient in backends/_triton_nvfp4.py, every x of the dtype (either
    sign, +-0) with |x / D| < 16, for D of markstein_divisors (the kernel takes the quotient for
    d in [2**-95, 2**15), D within 3 steps of d): its nibble and sign bit always the contract's,
    its bits RN(x / D)'s where |x / D| >= 2**-4."""
    xp = finite(kind)
    x = np.concatenate([xp, -xp, F32([0.0, -0.0])])
    checked = exact = 0
    ds = markstein_divisors(np.random.default_rng(9))
    assert ds.min() < 2.0**-95 and ds.max() >= 2.0**15
    for d in ds:
        with np.errstate(all="ignore"):
            r = F32(1) / d
            v = x[np.abs(x) < F32(16) * d]
            q0 = v * r
            q1 = fma32(fma32(-q0, np.full_like(v, d), v), np.full_like(v, r), q0)
            y = v / d + F32(0)
        big = np.abs(y) >= 2.0**-4
        assert np.array_equal(q1[big].view(U32), y[big].view(U32)), (kind, d)
        assert np.array_equal(nibble(q1), nibble(y)) and np.array_equal(np.signbit(q1), np.signbit(y)), (kind, d)
        checked += v.size
        exact += int(big.sum())
    assert checked > 2e7 and exact > 2e6, (checked, exact)


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_unclamped_groups_divide_below_16_and_in_range(kind):
    """For every amax of the dtype under g across the range: where the group scale is neither
    clamped (g * RN_x(amax / 6) > 448) nor 0 from an amax / 6 that RN_x rounds to 0 (then s = 0.125
    and amax / D can be anything), amax / D < 16, so Markstein's bound holds for every element of
    the group (fp4_oracle's e4m3 rounding, 0 -> 0.125); the kernel divides the two others. And d =
    RN(s * RN(1 / g)) in [2**-95, 2**15) puts D in [2**-96, 2**16)."""
    from fp4_oracle import round_grid, round_to

    dtype = GRID[kind][0]
    amax = finite(kind).astype(np.float64)
    underflow = False
    for g in MARKSTEIN_G:
        g32 = F32(g)
        with np.errstate(all="ignore"):
            per = round_to(float(g32) * round_to(amax / 6.0, dtype), torch.float32)
            keep = (per <= 448.0) & (per > 0)
            underflow |= (round_to(amax / 6.0, dtype) == 0).any()
            s = round_grid(per[keep], 3, -6)
            s = np.where(s == 0, 0.125, s).astype(F32)
            d_exact = (s / g32).astype(F32)
            ratio = amax[keep] / d_exact.astype(np.float64)
            d = (s * (F32(1) / g32)).astype(F32)
        assert (ratio[np.isfinite(ratio) & (d_exact > 0)] < 16).all(), (kind, g)
        inside = (d >= 2.0**-95) & (d < 2.0**15)
        assert ((d_exact[inside] >= 2.0**-96) & (d_exact[inside] < 2.0**16)).all(), (kind, g)
    assert keep.any() and underflow  # (the smallest subnormals' amax / 6 rounds to 0 in both dtypes)
