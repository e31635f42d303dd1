"""Inputs for the MXFP4 / NVFP4 calls (docs/semantics.md, "MXFP4 and NVFP4"): named blocks of 32
values that hit each rule (e2m1 ties, the rceil / compressed-tensors / floor boundaries at 6 * 2**k
and 1.75 * 2**k, NaN / Inf, zeros of both signs, tiny and fp32-subnormal blocks), the MXFP8
adversarial batch (cases.py) and random shapes. Used by `mxquant verify` and the tests; nothing
here computes an expected output."""

from __future__ import annotations

import functools

import torch

from .cases import FP32_MAX, FP32_MAX_SUBNORMAL, INF, NAN, _block, _next_down, _next_up, adversarial_batch
from .. import layouts, reference_fp4
from .inputs import _random


def fp4_special_blocks() -> dict[str, torch.Tensor]:
    """{name: 32 fp32 values}; for NVFP4 each is two groups of 16."""
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -5.0, 0.1, -0.1, -0.0, 5.5, 4.5, 2.75]
    return {
        "zero": _block(0.0),
        "signed_zero": torch.tensor([0.0, -0.0] * 16),
        "one_nan": _block(1.0, i3=-NAN, i20=2.0),
        "pos_inf": _block(1.0, i0=INF),
        "neg_inf_second_group": _block(1.0, i31=-INF),
        "all_nan": _block(NAN),
        "max": _block(1.0, i0=6.0, i1=-6.0, i16=6.0, i17=-6.0),
        "e2m1_ties": torch.tensor(ties * 2) * torch.tensor([1.0] * 16 + [2.0**-3] * 16),
        "rceil_boundary": _block(2.0**-10, i0=6.0 * 2.0**-10, i16=6.0 * 2.0**-10),
        "rceil_just_above": _block(2.0**-10, i0=_next_up(6.0 * 2.0**-10), i16=_next_up(6.0)),
        "rceil_just_below": _block(2.0**-10, i0=_next_down(6.0 * 2.0**-10), i16=_next_down(6.0)),
        "ct_tie_1.75": _block(0.5, i0=7.0, i1=-3.5, i16=-1.75 * 2.0**20),
        "ct_just_below_1.75": _block(0.5, i0=_next_down(7.0), i16=_next_down(1.75 * 2.0**-20)),
        "saturating_1.625": _block(1.0, i0=6.5, i1=-6.25, i16=1.625 * 2.0**7),
        "tiny_block": _block(0.0, i0=2.0**-120, i1=-1.5 * 2.0**-121, i2=2.0**-130, i17=-(2.0**-126)),
        "fp32_subnormals": _block(0.0, i0=2.0**-149, i1=-(2.0**-130), i2=2.0**-127, i3=FP32_MAX_SUBNORMAL),
        "fp32_max": _block(1.0, i0=FP32_MAX, i16=-FP32_MAX),
        "wide_group": _block(2.0**-30, i0=1000.0, i1=2.0**-20, i16=448.0 * 6.0, i17=1e-6),
        "signed_underflow": _block(0.0, i0=6.0, i1=-0.2, i2=-(2.0**-149), i3=0.2, i16=6.0, i17=-1e-30),
    }


def fp4_batch(input_dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """The named blocks (rows 0..), then the MXFP8 adversarial batch, as (N, 64) of input_dtype."""
    named = torch.stack(list(fp4_special_blocks().values())).to(input_dtype).reshape(-1)
    rest = adversarial_batch(input_dtype, seed).reshape(-1)
    flat = torch.cat([named, rest])
    return flat[: flat.numel() // 64 * 64].reshape(-1, 64)


RANDOM_SHAPES = [(32,), (1, 64), (3, 5, 64), (130, 96), (2, 3, 7, 32), (0, 64), (4, 0),
                 (200, 160)]  # the last: two row tiles and two or three column tiles of the 128x4 layout


@functools.lru_cache(maxsize=None)
def fp4_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor]]:
    """[(case, CPU tensor)]: the batch (finite rows only as a second case, so NVFP4's global
    scale is also tested on a tensor without NaN/Inf), random shapes, a transposed view."""
    gen = torch.Generator().manual_seed(seed)
    batch = fp4_batch(input_dtype, seed)
    finite = batch[batch.float().isfinite().all(dim=1)]
    out = [("fp4-adversarial", batch), ("fp4-adversarial-finite", finite)]
    out += [(f"random{shape}", _random(shape, gen, input_dtype)) for shape in RANDOM_SHAPES]
    out.append(("transposed(3, 64, 96)", _random((64, 3, 96), gen, input_dtype).transpose(0, 1)))
    return out


def nvfp4_given_scale_inputs(input_dtype: torch.dtype, seed: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """[(case, x, global scale given)] for nvfp4_quantize: a random tensor with its own scale, 1.0
    and a tiny one; the e2m1 ties (a tensor whose amax is 6, so g = 448 and the group scale of
    the groups with amax 6 is 448: x / 1 lands on every tie exactly) with the scale computed
    from it; and subnormal inputs under a global scale of their own size."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = _random((130, 96), gen, input_dtype)
    ties = torch.tensor([6, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5, -6])
    ties = torch.cat([ties, ties / 2, ties / 4, -ties]).repeat(4, 1)  # (4, 64): groups of amax 6, 3, 1.5, 6
    tiny = torch.cat([torch.full((16,), 2.0 ** -116),
                      torch.tensor([2.0 ** -130, 2.0 ** -127, -(2.0 ** -140), 0.0] * 4)]).repeat(2, 1)  # (2, 32)
    out = []
    for name, t in (("random(130, 96)", x), ("e2m1 ties", ties.to(input_dtype)), ("subnormals", tiny.to(input_dtype))):
        own = reference_fp4.nvfp4_global_scale(t)
        out.append((f"{name}, its own global scale given", t, own))
    out += [("random(130, 96), global scale 1.0 given", x, torch.ones(1)),
            ("random(130, 96), global scale 2^-100 given", x, torch.full((1,), 2.0 ** -100))]
    return out


def fp4_all_bytes(fmt: str, layout: str) -> list[tuple[str, tuple]]:
    """[(case, dequantize inputs)]: every data byte (rows of 256: every nibble pair) under every
    scale byte (row r: scale byte r), as MXFP8's all-bytes case; NVFP4 under global scales 2^24
    and 2^127 (fp16 / fp32 subnormal outputs, rounding at the output dtype's edges)."""
    block = 32 if fmt == "mxfp4" else 16
    data = torch.arange(256, dtype=torch.int32).to(torch.uint8).repeat(256, 1)
    scale = torch.arange(256, dtype=torch.int32).to(torch.uint8).unsqueeze(1).repeat(1, 512 // block)
    if layout == "swizzled":
        scale = layouts.swizzle(scale)
    scale = scale.view(torch.float8_e8m0fnu if fmt == "mxfp4" else torch.float8_e4m3fn)
    if fmt == "mxfp4":
        return [("all-bytes(256, 256)", (data, scale))]
    return [(f"all-bytes(256, 256), global scale 2^{e}", (data, scale, torch.full((1,), 2.0 ** e))) for e in (24, 127)]
