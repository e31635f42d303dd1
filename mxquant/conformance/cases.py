"""Named adversarial inputs for MXFP8 quantizers: the blocks every backend must get right.

Used by the golden tests (tests/test_golden.py holds their hand-derived expected bytes), by
GPU tests and by `mxquant verify`. Nothing here computes expected outputs; it only builds inputs.

    special_blocks(dtype)            {name: fp32 tensor of 32 values}, per element dtype
    representable_in(blocks, dt)     names whose values survive conversion to `dt` unchanged
    adversarial_batch(dt, seed)      every special block plus random hard blocks, (N, 32*m) in dt
"""

from __future__ import annotations

import math

import torch

from ..formats import BLOCK, ELEMENT_FORMATS

NAN, INF = float("nan"), float("inf")
FP32_MAX = torch.finfo(torch.float32).max  # (2 - 2**-23) * 2**127, bits 0x7F7FFFFF
FP32_MAX_SUBNORMAL = torch.tensor(0x007FFFFF, dtype=torch.int32).view(torch.float32).item()  # (1 - 2**-23) * 2**-126


def _block(fill: float = 0.0, **at: float) -> torch.Tensor:
    """32 fp32 values equal to `fill`, except at indices given as keyword i<index>=value."""
    out = torch.full((BLOCK,), fill, dtype=torch.float32)
    for key, value in at.items():
        out[int(key[1:])] = value
    return out


def _next_up(v: float) -> float:
    """The next fp32 above the positive fp32 value v."""
    bits = torch.tensor([v], dtype=torch.float32).view(torch.int32) + 1
    return bits.view(torch.float32).item()


def _next_down(v: float) -> float:
    bits = torch.tensor([v], dtype=torch.float32).view(torch.int32) - 1
    return bits.view(torch.float32).item()


def special_blocks(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The named special blocks for element dtype `dtype` (float8_e4m3fn or float8_e5m2).

    Each value is a float32 tensor of 32 values. Names are the same for both element dtypes;
    the values that depend on the format (its largest finite M, subnormal steps) differ.
    """
    fmt = ELEMENT_FORMATS[dtype]
    m = fmt.max_finite                      # 448 or 57344 = 1.75 * 2**emax
    ulp = 2.0 ** (fmt.emax - (3 if dtype == torch.float8_e4m3fn else 2))  # step just below M: 32 / 8192
    sub = 2.0 ** (-9 if dtype == torch.float8_e4m3fn else -16)            # smallest subnormal element
    boundary = m * 2.0**-10                 # amax = M * 2**-10: rceil and floor agree on s = -10
    cases = {
        "zero": _block(0.0),
        "signed_zero": torch.tensor([0.0, -0.0] * (BLOCK // 2)),
        "one_nan": _block(1.0, i3=-NAN),
        "pos_inf": _block(1.0, i0=INF),
        "neg_inf": _block(1.0, i31=-INF),
        "all_nan": _block(NAN),
        "max": _block(1.0, i0=m, i1=-m),
        "max_half_ulp_above": _block(1.0, i0=m + ulp / 2),   # 464 / 61440: midpoint M .. M+ulp
        "max_ulp_above": _block(1.0, i0=-(m + ulp)),          # -480 / -65536
        "floor_saturates": _block(1.0, i0=1.984375 * 2.0**fmt.emax),  # 508 / 65024
        "rceil_boundary": _block(2.0**-10, i0=boundary),
        "rceil_just_above": _block(2.0**-10, i0=_next_up(boundary)),
        "rceil_just_below": _block(2.0**-10, i0=_next_down(boundary)),
        # amax / M lies just above 2**-127, where an fp32 quotient is subnormal and can round
        # down onto 2**-127: the exact rule gives s = -126 (rceil), not -127.
        "rceil_min_scale": _block(0.0, i0=_next_up(m * 2.0**-127)),
        "smallest_normal": _block(0.0, i0=2.0**-126, i1=-(2.0**-126)),
        "fp32_max": _block(1.0, i0=FP32_MAX),
        "fp32_subnormals": _block(0.0, i0=2.0**-149, i1=-(2.0**-130), i2=2.0**-127, i3=FP32_MAX_SUBNORMAL),
        "tiny_block": _block(0.0, i0=2.0**-120, i1=-1.5 * 2.0**-121, i2=2.0**-130),
        "worked_example": _block(0.0, i0=1000.0, i1=1.0, i2=-2.5, i3=math.pi),
    }
    if dtype == torch.float8_e4m3fn:
        cases["subnormal_outputs"] = _block(0.0, i0=m, i1=sub, i2=3 * sub, i3=7 * sub, i4=2.0**-6,
                                            i5=0.75 * sub, i6=-sub, i7=1.25 * sub)
        cases["element_ties"] = _block(0.0, i0=m, i1=1.0625, i2=1.1875, i3=1.9375, i4=-1.0625,
                                       i5=sub / 2, i6=1.5 * sub, i7=2.5 * sub)
    else:
        cases["subnormal_outputs"] = _block(0.0, i0=m, i1=sub, i2=3 * sub, i3=2.0**-14,
                                            i4=0.75 * sub, i5=-sub, i6=1.25 * sub)
        cases["element_ties"] = _block(0.0, i0=m, i1=1.125, i2=1.375, i3=1.875, i4=-1.125,
                                       i5=sub / 2, i6=1.5 * sub, i7=2.5 * sub)
    cases["signed_underflow"] = _block(0.0, i0=m, i1=-sub / 8, i2=sub / 8, i3=-sub / 2, i4=-(2.0**-149))
    return cases


def representable_in(blocks: dict[str, torch.Tensor], input_dtype: torch.dtype) -> set[str]:
    """Names of the blocks whose every value converts to `input_dtype` and back unchanged
    (NaNs count as unchanged; the sign of zero must be kept)."""
    out = set()
    for name, b in blocks.items():
        back = b.to(input_dtype).to(torch.float32)
        same = (back.view(torch.int32) == b.view(torch.int32)) | (back.isnan() & b.isnan())
        if bool(same.all()):
            out.add(name)
    return out


def _bump(t: torch.Tensor, steps: int) -> torch.Tensor:
    """Move each positive finite value `steps` units in the last place (in its own dtype)."""
    int_dtype = torch.int32 if t.dtype == torch.float32 else torch.int16
    return (t.view(int_dtype) + steps).view(t.dtype)


def adversarial_batch(input_dtype: torch.dtype = torch.float32, seed: int = 0, blocks_per_row: int = 4) -> torch.Tensor:
    """All special blocks (both element dtypes) plus random hard blocks, as one (N, 32*m)
    tensor of `input_dtype` (m = blocks_per_row; N > 128 so the swizzled layout pads and tiles).

    Random blocks: amax exactly at M * 2**k for both maxima (448, 57344) and many k, and one
    unit in the last place above and below it (in input_dtype); blocks of input_dtype
    subnormals; blocks mixing magnitudes 2**-40 .. 2**40; blocks spanning the whole range.
    """
    g = torch.Generator().manual_seed(seed)
    fin = torch.finfo(input_dtype)
    rows = []
    for dtype in ELEMENT_FORMATS:
        rows += [b.to(input_dtype) for b in special_blocks(dtype).values()]

    def random_block(amax: torch.Tensor) -> torch.Tensor:
        # values in [-amax, amax] (rounded to input_dtype), then |amax| planted at a random index
        b = ((torch.rand(BLOCK, generator=g) * 2 - 1) * amax.float()).to(input_dtype)
        b = torch.maximum(torch.minimum(b, amax), -amax)
        sign = 1 if torch.rand(1, generator=g).item() < 0.5 else -1
        b[torch.randint(BLOCK, (1,), generator=g)] = sign * amax
        return b

    for fmt in ELEMENT_FORMATS.values():
        for k in (-140, -130, -127, -126, -120, -100, -64, -20, -9, -1, 0, 1, 2, 7, 20, 64, 100, 110, 112, 119):
            amax = torch.tensor(fmt.max_finite * 2.0**k, dtype=torch.float32).to(input_dtype)
            if not (0 < amax.float().item() <= fin.max) or amax.float().item() != fmt.max_finite * 2.0**k:
                continue  # M * 2**k not exactly representable in input_dtype
            for steps in (0, 1, -1):
                candidate = _bump(amax.reshape(1), steps)[0]
                if math.isfinite(candidate.float().item()):
                    rows.append(random_block(candidate))

    sub_lo = fin.smallest_normal * fin.eps  # smallest subnormal of input_dtype
    for _ in range(8):  # subnormal inputs (all of the block subnormal, some mixed with zeros)
        mant = torch.randint(0, int(1 / fin.eps), (BLOCK,), generator=g).float()
        rows.append((mant * sub_lo * torch.randn(BLOCK, generator=g).sign()).to(input_dtype))
    for _ in range(16):  # mixed magnitudes inside one block: most elements far below amax
        e = torch.randint(-40, 41, (BLOCK,), generator=g).float()
        rows.append((torch.randn(BLOCK, generator=g) * torch.exp2(e)).clamp(-fin.max, fin.max).to(input_dtype))
    lo, hi = math.log2(sub_lo), math.log2(fin.max)
    while len(rows) % blocks_per_row or len(rows) < 129 * blocks_per_row:  # the whole range
        e = lo + (hi - lo) * torch.rand(1, generator=g).item()
        rows.append((torch.randn(BLOCK, generator=g) * 2.0 ** (e - 2)).clamp(-fin.max, fin.max).to(input_dtype))
    return torch.stack(rows).reshape(-1, BLOCK * blocks_per_row)
