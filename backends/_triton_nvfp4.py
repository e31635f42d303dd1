"""Triton kernel of the `triton` backend's NVFP4 quantize for 2-byte input (bf16, fp16) on CUDA:
the contract's bytes (docs/semantics.md, "NVFP4") without an IEEE division per element. fp32
input, XPU, MXFP4, the global amax and dequantize stay in backends/_triton_fp4.py, whose helpers
this uses.

- Whole groups per thread: x is loaded as two (BLOCK_M, NB, 8) halves (the first and the last 8
  elements of every group of 16), one 16-byte load each, so a thread holds both halves of its
  groups: the group's amax, scale and flag are computed once per group, not in each of the two
  threads a group's 16 elements span when loaded as one row (which duplicated that work and
  shuffled the amax).
- Elements: y' = RN(x * r), r = RN(g / scale) per group (no division per element), exact where
  _nv_flag leaves a group unflagged. A flagged group, where y' could round to another nibble than
  y = RN(x / D), D = RN(scale / g), gets y itself from Markstein's quotient (_nv_quotient: per
  block of 8 elements D by div.rn.f32 and R = RN(1 / D) by rcp.rn.f32, or both read from the
  table where TABLE (below), per element q0 = RN(x * R),
  e = fma(-q0, D, x), y = fma(e, R, q0)), behind a branch that unflagged groups never take; the
  few flagged groups outside its range (MARKSTEIN_DMIN) are divided. y' + 0 turns -0 into +0, so
  y's sign bit is the nibble's (compressed-tensors: +0 for +-0), put in place per packed byte by
  multiplications as MXFP4's (the FMA pipe).
- No clamp per element: a group whose RN(amax * r) reaches Y_BOUND (6.5) takes the flagged path
  (Markstein's quotient, flag 5, or the division), which clamps y to [-6, 6] (the other flagged
  groups' Markstein quotient, flag 1, is not clamped: |y| < 7 there); everywhere else |y| < 6.5
  rounds to an e2m1 code <= 7 as it is, and the code is read from y itself, |y| only an operand
  modifier (backends/_triton_fp4.py's _e2m1_code, MXFP4's too): 21 instructions an element, 8.7
  of them on the ALU pipe, against 22 and 9.3 with min(|y|, 6) (sixteenth session,
  benchmarks/sass_mix.py; the ALU pipe is this kernel's busiest, Nsight Compute: 77%, though
  cutting its instructions further, below, showed them not to bound it where few groups are
  flagged). One H100, bf16,
  given g, old and new interleaved: 90.5 / 92.5% of copy linear (was 88.5 / 90.5), 85.3 / 86.7%
  swizzled (was 83.7 / 85.6) at 8192x8192 / 16384x8192.
- The group scale's RN_x(amax / 6) is RN_x(amax * RN(1 / 6)), exact for every bf16 / fp16 amax.
- A group's r and the flags that depend on its scale alone (_nv_flag's rule, Markstein's range)
  are functions of its scale byte for the launch's g: large calls
  (ops.NV_TABLE_MIN, NV_TABLE_LAYOUTS) read them from a table of 2 x 128 entries that
  nvfp4_table_kernel builds first (TABLE; the quantize kernel launched as its programmatic
  dependent), not computed per group (a division, _nv_flag's 20-odd instructions): 16.5
  instructions an element against 21.0 (sass_mix.py). One H100 (seventeenth session): 0.97-1.01x
  the per-group time where few warps take the flagged path, 0.94-0.95x where most do; the
  instructions cut bound the kernel only there. The table holds Markstein's D and R too, so a
  flagged block reads them instead of a div.rn.f32 and an rcp.rn.f32 of its own (eighteenth
  session): the flagged path's sm_90 SASS 18.5 instructions an element (8.3 on the ALU pipe)
  against 28.75 (11.7) with both and the clamp; one H100: 0.87-0.91x the seventeenth session's
  time where most warps are flagged (78-83% of copy linear then, 88-94% now; swizzled 74-79%,
  82.5-89%), as before elsewhere at >= 64M elements.

tests/test_nvfp4_reciprocal.py checks these identities on every x of both dtypes against IEEE
division (Markstein's with fp32 FMA emulated exactly); tests/test_triton_fp4.py and
tests/test_triton_nvfp4.py the kernel byte for byte against the NumPy oracle, where the paths
meet too.

Cost where groups are flagged (one H100, benchmarks/sweep_nvfp4_division_free.py, fourteenth
session): a warp takes the flagged path when any of its lanes does, so a tensor whose scales fall
in a flagged class (g with a short significand, g = 448, 480, 512; fp16's g = 1.0 below amax
~0.041) runs it nearly everywhere: 1.14-1.18x the unflagged time, still 0.81-0.94x the division
kernel's. With a division there (thirteenth session) it was 1.24-1.42x the division kernel's;
dividing only the elements near a midpoint (call D, 2026-12-06) was slower still.
"""

import triton
import triton.language as tl

try:  # grid dependency control (programmatic dependent launch): Triton 3.4 and later
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
    HAS_GDC = True
except ImportError:  # pragma: no cover - older Triton: the table path without PDL (ops._quantize)
    HAS_GDC = False

    @triton.jit
    def gdc_wait():
        pass

    @triton.jit
    def gdc_launch_dependents():
        pass

from ._triton_fp4 import _FP32_INF, _e2m1_code, _global_scale, _round_x, _store_scales, _tile_ids, _tile_rows
from ._triton_kernels import _amax_bits, _to_f32


@triton.jit
def _rn_x(v, X_KIND: tl.constexpr, INTERPRETED: tl.constexpr):
    """fp32 v rounded to x's dtype, RN_x: the hardware's conversion (cvt.rn, subnormals kept), or
    under the interpreter (whose bf16 cast flushes them) _round_x's from the bits."""
    if INTERPRETED:
        return _round_x(v, X_KIND)
    return v.to(tl.bfloat16 if X_KIND == 1 else tl.float16).to(tl.float32)


@triton.jit
def _e4m3_scale(per):
    """e4m3 of per (fp32, 0 <= per <= 448; anything for a NaN / Inf group, whose byte is replaced):
    (byte, value), rounded to nearest even in fp32 arithmetic: per + 2**(e + 20), e = max(per's
    exponent, -6), has the e4m3 step 2**(e - 3) as its ulp (below 2**-6 the subnormal step
    2**-9), and subtracting it back is exact; the byte is the bits of value * 2**-120 shifted by
    20 (an e4m3 normal's exponent field is its fp32 one - 120; a subnormal's mantissa lands on
    bits 20-22 of a subnormal fp32)."""
    e = tl.maximum(per.to(tl.int32, bitcast=True) & 0x7F800000, 121 << 23).to(tl.float32, bitcast=True)
    big = e * 1048576.0
    v = tl.minimum((per + big) - big, 448.0)
    return (v * 7.52316384526264e-37).to(tl.int32, bitcast=True) >> 20, v   # 2**-120


@triton.jit
def _nv_flag(d, X_KIND: tl.constexpr):
    """Groups whose y' = RN(x * r), r = RN(g / scale), may round to another nibble than the
    contract's y = RN(x / D), D = RN(scale / g); d is D within 3 fp32 steps (RN(scale * RN(1 / g))).
    With u = 2**-24: r * D is within 2u of 1, so y' is within 3 steps of y, and the nibbles can
    differ only where a rounding midpoint m (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5; m = k * 2**j / 4,
    k = 1, 3, 5, 7) lies between them or on one: x / D within 3.5 steps of m (steps of the binade
    above where m is a power of two), at most 7u * m relative, so x * 2**(2 - j) within 7u of
    k * D, and k * d's rounded product P within about 11u * P, 11 of P's fp32 steps, of the grid of
    the dtype's significand over every exponent (its subnormals are on that grid too). Flagged: P
    within 32 steps of that grid (the bits below the significand: 16 for bf16, 13 for fp16), a
    wide margin (tests/test_nvfp4_reciprocal.py checks the rule on every x of both dtypes; g
    built near the grid miss only within 2 steps), and d outside [2**-120, DMAX), where D may not
    be a normal fp32 (the bound takes its rounding error as relative) or r falls below 2**-13,
    short of where a nonzero x could give y' = 0 (bf16: r < 2**-17; fp16 far lower; bf16 groups
    whose scale / g reaches 2**13, group amaxes of about 49152 and up, are divided). A NaN d is
    not flagged here: Markstein's range check sends it to the division."""
    LOW: tl.constexpr = 0xFFFF if X_KIND == 1 else 0x1FFF  # (bits + 32) mod 2**16 (2**13) <= 64
    DMAX: tl.constexpr = 2.0**13 if X_KIND == 1 else 2.0**122
    t1 = (d.to(tl.int32, bitcast=True) + 32) & LOW
    t3 = ((d * 3.0).to(tl.int32, bitcast=True) + 32) & LOW
    t5 = ((d * 5.0).to(tl.int32, bitcast=True) + 32) & LOW
    t7 = ((d * 7.0).to(tl.int32, bitcast=True) + 32) & LOW
    return (tl.minimum(tl.minimum(t1, t3), tl.minimum(t5, t7)) <= 64) | (d < 2.0**-120) | (d >= DMAX)


MARKSTEIN_DMIN, MARKSTEIN_DMAX = tl.constexpr(2.0**-95), tl.constexpr(2.0**15)
"""Flagged groups take _nv_quotient's Markstein quotient where d lies in [DMIN, DMAX) (D is within
3 steps of d, so in [2**-96, 2**16)) and the group's scale is neither clamped to 448 nor 0 from an
amax / 6 that rounds to 0 in x's dtype (0.125 then: |x / D| unbounded); there every |x / D| < 16.
Otherwise (a NaN d too: a NaN g given on CUDA, which is not checked there) they are divided.
tests/test_nvfp4_reciprocal.py checks both claims, and the quotient on every x of both dtypes with
|x / D| < 16 for D in [2**-96, 2**16): its nibble and sign bit everywhere, RN(x / D) bit for bit
where |x / D| >= 2**-4 (below that, near D = 2**-95, the residual can underflow and the last bit
differ; the nibble is 0 there either way)."""


TABLE_HALF = tl.constexpr(128)
"""nvfp4_table_kernel's entries per half (one per e4m3 byte of a nonnegative scale): r and the
flags in the first half, D and R in the second (ops.NV_TABLE_ENTRIES is both halves)."""


Y_BOUND = tl.constexpr(6.5)
"""Groups whose RN(amax * r) reaches this take the flagged path, which clamps y to [-6, 6]
(Markstein's quotient, flag 5, where MARKSTEIN_DMIN's conditions hold, which bound |x / D| by 16;
else the division, flag 3); elsewhere every
|y| = |RN(x * r)| <= RN(amax * r) < 6.5, and Markstein's RN(x / D) <= RN(amax / D) with
r * D within 2**-22 of 1, so < 6.5 * (1 + 2**-22) < 7: codes <= 7 without a clamp. A group's
RN(amax * r) is about 6 * (g * amax / 6) / scale, 5.6-6.4 where its e4m3 scale is normal and
RN_x(amax / 6) is (the e4m3 and the dtype's rounding); only scales clamped to 448, subnormal
or rounded from a subnormal amax / 6 reach 6.5 (fp16 data of amax below ~0.041, whose g is 1.0,
has every scale subnormal and such groups at group amaxes of 0.0127-0.0176, 0.0254-0.0293 and
0.0381-0.041: Markstein's quotient keeps them as fast as the other flagged groups)."""


def _nv_quotient_ptx(n: int = 8, tabled: bool = False) -> str:
    """PTX for n elements ($0..: y; then x, r, a, b, flag, n of each; a, b = scale, g, or with
    tabled D = RN(scale / g), R = RN(1 / D) from nvfp4_table_kernel's table). Where no flag of
    the n is set: y = x * r + 0. Otherwise (a branch, which unflagged groups never take):
    - every flag 1 or 5 (_nv_flag's or Y_BOUND's groups, D in Markstein's range, |x / D| < 16)
      and every a the first's: D and R (per group: D by div.rn.f32, R by rcp.rn.f32, once a
      block), then per element Markstein's correctly rounded quotient q0 = RN(x * R),
      e = x - q0 * D (one FMA, exact), y = RN(q0 + e * R) = RN(x / D): three FMA-pipe
      instructions for a division (y is never -0: x = +-0 gives +0, a nonzero x a nonzero y);
      clamped to [-6, 6] only where a flag is 5 (Y_BOUND's groups: elsewhere |y| < 7, which
      _e2m1_code rounds to a code <= 7);
    - otherwise (flag 3: outside Markstein's range or |x / D| not bounded, see MARKSTEIN_DMIN; 2:
      a NaN / Inf group; blocks whose a differ) y = x / D + 0 (div.rn.f32; per group D = scale /
      g divided once for the elements whose scale is the first's) clamped to [-6, 6] where the
      flag is not 2, y = 0 where it is 2."""
    x, r, a, b, f = (lambda i, k=k: f"${n * (k + 1) + i}" for k in range(5))
    # every input is read before any output is written: LLVM may give an output the register of
    # an input (no early clobber), which an H100 run showed (call A, 2026-12-06: wrong bytes)
    lines = [".reg .pred p;", ".reg .b32 f, t;", f".reg .f32 d, d0, q, e, y<{n}>;"]
    lines += [f"or.b32 f, {f(0)}, {f(1)};" if n > 1 else f"mov.b32 f, {f(0)};"]
    lines += [f"or.b32 f, f, {f(i)};" for i in range(2, n)]
    lines += ["setp.ne.s32 p, f, 0;", "@p bra FLAGGED;"]
    lines += [f"fma.rn.f32 y{i}, {x(i)}, {r(i)}, 0f00000000;" for i in range(n)]
    lines += ["bra DONE;", "FLAGGED:", "and.b32 t, f, -5;", "setp.ne.s32 p, t, 1;"]
    lines += [f"setp.neu.or.f32 p, {a(i)}, {a(0)}, p;" for i in range(1, n)]
    lines += ["@p bra SLOW;"]
    lines += [f"mov.f32 d0, {a(0)};", f"mov.f32 d, {b(0)};"] if tabled else [
        f"div.rn.f32 d0, {a(0)}, {b(0)};", "rcp.rn.f32 d, d0;"]
    for i in range(n):
        lines += [f"mul.rn.f32 q, {x(i)}, d;", "neg.f32 e, q;", f"fma.rn.f32 e, e, d0, {x(i)};",
                  f"fma.rn.f32 y{i}, e, d, q;"]
    lines += ["setp.eq.s32 p, f, 1;", "@p bra DONE;"]
    for i in range(n):  # (Y_BOUND's groups: |y| to at most 6)
        lines += [f"min.f32 y{i}, y{i}, 0f40C00000;", f"max.f32 y{i}, y{i}, 0fC0C00000;"]
    lines += ["bra DONE;", "SLOW:"]
    if not tabled:
        lines += [f"div.rn.f32 d0, {a(0)}, {b(0)};"]
    for i in range(n):
        if tabled:
            lines += [f"div.rn.f32 d, {x(i)}, {a(i)};"]
        else:  # scale / g divided once where the block's elements share a scale (one group)
            lines += ["mov.f32 d, d0;", f"setp.neu.f32 p, {a(i)}, {a(0)};", f"@p div.rn.f32 d, {a(i)}, {b(i)};"] if i else []
            lines += [f"div.rn.f32 d, {x(i)}, {'d' if i else 'd0'};"]
        lines += ["add.rn.f32 d, d, 0f00000000;", "min.f32 d, d, 0f40C00000;", "max.f32 d, d, 0fC0C00000;",
                  f"setp.eq.s32 p, {f(i)}, 2;", f"selp.f32 y{i}, 0f00000000, d, p;"]
    lines += ["DONE:"]
    lines += [f"mov.b32 ${i}, y{i};" for i in range(n)]
    return "{\n" + "\n".join(lines) + "\n}"


def _constraints(n: int) -> str:
    return ",".join(["=f"] * n + ["f"] * (4 * n) + ["r"] * n)


NV_QUOTIENT8, NV_QUOTIENT4, NV_QUOTIENT2, NV_QUOTIENT1 = (tl.constexpr(_nv_quotient_ptx(n)) for n in (8, 4, 2, 1))
NV_QUOTIENT8T, NV_QUOTIENT4T, NV_QUOTIENT2T, NV_QUOTIENT1T = (tl.constexpr(_nv_quotient_ptx(n, True)) for n in (8, 4, 2, 1))
_NV_CONSTRAINTS8, _NV_CONSTRAINTS4, _NV_CONSTRAINTS2, _NV_CONSTRAINTS1 = (tl.constexpr(_constraints(n)) for n in (8, 4, 2, 1))


@triton.jit
def _nv_quotient(x, r, a, b, flag, PACK: tl.constexpr, INTERPRETED: tl.constexpr, TABLE: tl.constexpr):
    """y + 0, fp32 (-0 becomes +0), for NVFP4 elements x: y = RN(x * r), or where flag (int32) is
    1, 3 or 5 (_nv_flag's and Y_BOUND's groups) the contract's RN(x / D), D = RN(s / g), clamped
    to [-6, 6] where it is 3 or 5 (flag 1's |y| < 7 goes unclamped, as in the PTX), where it is 2
    (a NaN / Inf group, whose bytes are 0) 0; (a, b) = (s, g), or with
    TABLE (D, R = RN(1 / D)) read from the table. On a GPU PACK elements at a time in PTX
    (_nv_quotient_ptx: Markstein's quotient where the flags are 1 or 5, the division where 3),
    behind a branch that unflagged groups never take; under the interpreter by division."""
    if INTERPRETED:
        d = a if TABLE else tl.math.div_rn(a, b)
        y = tl.where(flag != 0, tl.math.div_rn(x, d) + 0.0, x * r + 0.0)
        y = tl.where((flag == 3) | (flag == 5), tl.minimum(tl.maximum(y, -6.0), 6.0), y)
        return tl.where(flag == 2, 0.0, y)
    args = [x, r, a, b if TABLE else tl.full(x.shape, 0.0, tl.float32) + b, flag]  # (g broadcast to x's shape)
    if PACK == 8:
        return tl.inline_asm_elementwise(NV_QUOTIENT8T if TABLE else NV_QUOTIENT8, _NV_CONSTRAINTS8, args, tl.float32,
                                         True, 8)
    elif PACK == 4:
        return tl.inline_asm_elementwise(NV_QUOTIENT4T if TABLE else NV_QUOTIENT4, _NV_CONSTRAINTS4, args, tl.float32,
                                         True, 4)
    elif PACK == 2:
        return tl.inline_asm_elementwise(NV_QUOTIENT2T if TABLE else NV_QUOTIENT2, _NV_CONSTRAINTS2, args, tl.float32,
                                         True, 2)
    else:
        return tl.inline_asm_elementwise(NV_QUOTIENT1T if TABLE else NV_QUOTIENT1, _NV_CONSTRAINTS1, args, tl.float32,
                                         True, 1)


@triton.jit
def _scale_flags(g, sval, X_KIND: tl.constexpr):
    """What a group's scale value sval decides under g, per group or per scale byte in
    nvfp4_table_kernel: (r = RN(g / scale), the flag of a group not Y_BOUND's, the flag of one
    that is). Flags: 1 where _nv_flag's rule flags (d = RN(scale * RN(1 / g)), D within 3 steps),
    5 for Y_BOUND's (Markstein's quotient clamped), 3 instead of either where d lies outside
    Markstein's range (a NaN d too: divided); else 0. The caller makes a flagged group of an
    unbounded scale 3 and a NaN / Inf group 2."""
    r2 = tl.math.div_rn(g, sval)
    d = sval * tl.math.div_rn(1.0, g)
    slow = ~((d >= MARKSTEIN_DMIN) & (d < MARKSTEIN_DMAX))
    f = tl.where(_nv_flag(d, X_KIND), tl.where(slow, 3, 1), 0)
    return r2, f, tl.where(slow, 3, 5)


@triton.jit
def _low_f32(v):
    """The fp32 whose bits are int64 v's low 32 (a table entry's half)."""
    return (v & 0xFFFFFFFF).to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _pair(lo, hi):
    """fp32 lo's bits in the low 32 of an int64, int32 hi's in the high 32: a table entry."""
    return (lo.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF) | (hi.to(tl.int64) << 32)


@triton.jit
def _pack_half(x, r, a, b, fl, BLOCK_M: tl.constexpr, NB: tl.constexpr, PACK: tl.constexpr,
               INTERPRETED: tl.constexpr, TABLE: tl.constexpr):
    """One half (BLOCK_M, NB, 8) of the groups, x, quantized to its 4 packed bytes a group, uint8
    (BLOCK_M, NB, 4): element 2j in the low nibble, the sign bits from y's by integer
    multiply-adds (the FMA pipe: umulhi(b, 2) is b >> 31); a NaN / Inf group's y are 0, so are
    its bytes. (a, b): _nv_quotient's."""
    y = _nv_quotient(x, r, a, b, fl, PACK, INTERPRETED, TABLE)
    lo, hi = tl.split(tl.reshape(_e2m1_code(y), (BLOCK_M, NB, 4, 2)))
    y_lo, y_hi = tl.split(tl.reshape(y.to(tl.uint32, bitcast=True), (BLOCK_M, NB, 4, 2)))
    return ((hi + tl.umulhi(y_hi, 2) * 8) * 16 + lo + tl.umulhi(y_lo, 2) * 8).to(tl.uint8)


@triton.jit
def nvfp4_quantize_kernel(
    x_ptr, data_ptr, scale_ptr, g_ptr, g_out_ptr, table_ptr,
    M, K, stride_xm, scale_rows, scale_cols, n_k,
    GIVEN: tl.constexpr, X_KIND: tl.constexpr, SWIZZLED: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr, MASK: tl.constexpr, EVICT: tl.constexpr, BIG: tl.constexpr, INTERPRETED: tl.constexpr,
    NK_SHIFT: tl.constexpr, PACK: tl.constexpr, SPREAD: tl.constexpr, TABLE: tl.constexpr, PDL: tl.constexpr,
):
    """NVFP4 of 2-byte x (X_KIND 1 bf16, 2 fp16): the global scale read from g_ptr when GIVEN,
    else derived from the amax bits at g_ptr (program 0 writes it to g_out_ptr); e4m3 scales per
    16, packed e2m1 bytes. The grid covers scale_rows x scale_cols * 16 (swizzled padding too).
    TABLE: each group's r, flags, D and R read from table_ptr at its scale byte
    (nvfp4_table_kernel's, for this launch's g), not computed per group or per flagged block
    (table_ptr is unused otherwise); PDL: launched as the table kernel's programmatic dependent
    (it may start before that kernel ends), so it waits for it (griddepcontrol.wait) before
    reading the table, after loading x."""
    NB: tl.constexpr = BLOCK_K // 16
    tile = tl.program_id(0)
    pid_m, pid_k = _tile_ids(tile, n_k, NK_SHIFT)
    rows = _tile_rows(pid_m, BLOCK_M, SPREAD)
    sblk = pid_k * NB + tl.arange(0, NB)
    r3 = rows[:, None, None]
    rb = r3.to(tl.int64) if BIG else r3
    c3 = (sblk * 16)[None, :, None] + tl.arange(0, 8)[None, None, :]   # each group's first 8 elements
    ptr = x_ptr + rb * stride_xm + c3
    if MASK:
        inside = (r3 < M) & (c3 < K)
        x0 = tl.load(ptr, mask=inside, other=0.0, eviction_policy=EVICT)
        x1 = tl.load(ptr + 8, mask=inside, other=0.0, eviction_policy=EVICT)
    else:
        x0 = tl.load(ptr, eviction_policy=EVICT)
        x1 = tl.load(ptr + 8, eviction_policy=EVICT)
    x0 = _to_f32(x0, INTERPRETED)
    x1 = _to_f32(x1, INTERPRETED)
    amax = tl.maximum(_amax_bits(x0, 2, INTERPRETED), _amax_bits(x1, 2, INTERPRETED))  # (BM, NB) bits
    special = amax >= _FP32_INF                                         # a NaN or an Inf in the group
    if GIVEN:
        g = tl.load(g_ptr)
    else:
        g = _global_scale(tl.load(g_ptr), X_KIND)
    tl.store(g_out_ptr, g, mask=tile == 0)
    # group scale: e4m3(min(g * RN_x(amax / 6), 448)), 0 -> 0.125 (0x20), NaN group -> 0x7F;
    # RN_x(amax * RN(1 / 6)) is RN_x(RN(amax / 6)) for every bf16 / fp16 amax
    per = g * _rn_x(amax.to(tl.float32, bitcast=True) * 0.1666666716337204, X_KIND, INTERPRETED)
    unbounded = (per > 448.0) | ((per == 0.0) & (amax != 0))  # (|x / D| may pass 16: see MARKSTEIN_DMIN)
    sbyte, sval = _e4m3_scale(tl.minimum(per, 448.0))
    sbyte = tl.where(special, 0x7F, tl.where(sbyte == 0, 0x20, sbyte))
    sval = tl.where(sval == 0.0, 0.125, sval)
    tbyte = sbyte  # (before the padding's zero bytes)
    if SWIZZLED:  # padding rows / columns: zero bytes (their zero groups would give 0x20)
        sbyte = tl.where((rows[:, None] < M) & (sblk[None, :] < K // 16), sbyte, 0)
    if TABLE:  # r, the flags, D and R of the group's scale byte (nvfp4_table_kernel), no work per group
        if PDL:
            gdc_wait()
        tb = table_ptr + (tbyte & 0x7F)  # (a negative g, unchecked on CUDA, stays inside)
        tv = tl.load(tb)
        dr = tl.load(tb + TABLE_HALF)  # (every group's: a flagged block's division reads the D of each)
        r2 = _low_f32(tv)
        big = amax.to(tl.float32, bitcast=True) * r2 >= Y_BOUND
        f = tl.where(big, (tv >> 35).to(tl.int32), (tv >> 32).to(tl.int32) & 7)
        a, b = _low_f32(dr)[:, :, None], _low_f32(dr >> 32)[:, :, None]  # D, R
    else:
        r2, f_scale, f_big = _scale_flags(g, sval, X_KIND)
        big = amax.to(tl.float32, bitcast=True) * r2 >= Y_BOUND                     # |y| may reach 7
        f = tl.where(big, f_big, f_scale)
        a, b = sval[:, :, None], g
    fl = tl.where(special, 2, tl.where(unbounded & (f != 0), 3, f))[:, :, None]
    r = r2[:, :, None]
    b0 = _pack_half(x0, r, a, b, fl, BLOCK_M, NB, PACK, INTERPRETED, TABLE)
    b1 = _pack_half(x1, r, a, b, fl, BLOCK_M, NB, PACK, INTERPRETED, TABLE)
    # a group's 8 bytes in one store a thread: consecutive lanes, consecutive 8 bytes (two 4-byte
    # stores, a half each, left every other 4 bytes of a warp's span to the second)
    packed = tl.reshape(tl.permute(tl.join(b0, b1), (0, 1, 3, 2)), (BLOCK_M, NB, 8))
    p3 = (sblk * 8)[None, :, None] + tl.max_contiguous(tl.arange(0, 8), 8)[None, None, :]
    offs = rb * (K // 2) + p3
    if MASK:
        tl.store(data_ptr + offs, packed, mask=(rb < M) & (p3 < K // 2))
    else:
        tl.store(data_ptr + offs, packed)
    _store_scales(sbyte, scale_ptr, rows[:, None], sblk, pid_k, M, scale_rows, scale_cols, SWIZZLED, BLOCK_M, NB)


@triton.jit
def nvfp4_table_kernel(g_ptr, table_ptr, GIVEN: tl.constexpr, X_KIND: tl.constexpr, PDL: tl.constexpr):
    """The per-scale-byte table nvfp4_quantize_kernel's TABLE reads, for one launch's g (read
    from g_ptr when GIVEN, else derived from the amax bits there, as the quantize kernel does):
    2 x 128 int64 entries, two per e4m3 byte b a group's scale can take (0x01-0x7E; 0 is replaced
    by 0x20 and 0x7F marks a NaN / Inf group, whose entries are 0). Entry b: r = RN(g / scale) in
    the low 32 bits and above them the group's flag without Y_BOUND (bits 32-34: _nv_flag's
    groups 1, or 3 where D lies outside Markstein's range; else 0) and with it (bits 35-37: 5 or
    3): _scale_flags, as the quantize kernel's per-group path computes them. Entry 128 + b:
    D = RN(scale / g) in the low 32 bits, R = RN(1 / D) in the high 32 (Markstein's operands,
    which the per-group path computes per flagged block). The quantize kernel adds what depends
    on the group's amax: Y_BOUND's test, an unbounded scale (3 where flagged) and a NaN / Inf
    group (2). One program of 128 lanes. PDL: lets the quantize kernel, its programmatic
    dependent, launch at once (it waits before reading)."""
    if PDL:
        gdc_launch_dependents()
    b = tl.arange(0, TABLE_HALF)
    if GIVEN:
        g = tl.load(g_ptr)
    else:
        g = _global_scale(tl.load(g_ptr), X_KIND)
    sval = (b << 20).to(tl.float32, bitcast=True) * 1.329227995784916e36          # 2**120: the byte's value
    sval = tl.where(b == 0, 0.125, sval)
    r2, f, f_big = _scale_flags(g, sval, X_KIND)
    d = tl.math.div_rn(sval, g)
    rd = tl.math.div_rn(1.0, d)
    tl.store(table_ptr + b, tl.where(b == 0x7F, 0, _pair(r2, f | (f_big << 3))))
    tl.store(table_ptr + TABLE_HALF + b, tl.where(b == 0x7F, 0, _pair(d, rd.to(tl.int32, bitcast=True))))
