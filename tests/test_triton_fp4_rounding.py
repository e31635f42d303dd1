"""The Triton FP4 kernel's e2m1 rounding and nibble signs, exhaustively where it can be: every
bf16 / fp16 bit pattern and fp32 values at and beside every tie, through the MXFP4 quantize kernel
byte for byte against the NumPy oracle (tests/fp4_oracle.py), in each scale mode and layout. The
rounding is fp32 arithmetic (|y| + 2**(e + 22) from 1 up, |y| + 2**22 below) and MXFP4's sign bits
come from y's bits per packed byte (backends/_triton_fp4.py, twelfth session). Under Triton's
interpreter on CPU tensors (tests/test_triton_interpreter.py runs this module with
tests/test_triton_fp4.py in CI) and on CUDA at the shipped tile."""

from __future__ import annotations

import itertools

import pytest
import torch

from test_triton_fp4 import _name, check_mxfp4
from test_triton_training import DEVS, poisoned_outputs  # noqa: F401  (autouse fixture)
from training_helpers import LAYOUTS, MODES


def _led_by_six(values: torch.Tensor) -> torch.Tensor:
    """values (1-D, |v| <= 6) in groups of 32, each led by +-6 (amax 6: scale 2**0 in every mode,
    y = x), padded with zeros to rows of 128."""
    body = values.reshape(-1)
    body = torch.cat([body, body.new_zeros(-body.numel() % 31)]).reshape(-1, 31)
    six = torch.where(torch.arange(body.shape[0]) % 2 == 0, 6.0, -6.0).to(body.dtype)[:, None]
    rows = torch.cat([six, body], 1).reshape(-1)
    return torch.cat([rows, rows.new_zeros(-rows.numel() % 128)]).reshape(-1, 128)


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", [torch.bfloat16, torch.float16], ids=_name)
def test_mxfp4_every_half_pattern(dev, hp):
    """Every bf16 / fp16 bit pattern: those with |x| <= 6 shuffled into groups of 32 led by +-6
    (amax 6, so y = x lands on every step and tie of e2m1's grid and beside it), and all of them in
    bit order (NaN / Inf groups, zero and subnormal groups, large ones), in each scale mode and
    layout: the kernel's e2m1 rounding (an fp32 magic-number add from 1 up, 2**22 below) and its
    sign bits from y's bits, byte for byte against the NumPy oracle."""
    from test_cpu_native_fp4_exhaustive import every_pattern

    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(hp)
    small = every[every.isfinite() & (every.abs() <= 6)]
    small = small[torch.randperm(small.numel(), generator=torch.Generator().manual_seed(11))]
    for x in (_led_by_six(small), every_pattern(hp, "bit order")):
        x = x.to(dev)
        for mode, layout in itertools.product(MODES, LAYOUTS):
            check_mxfp4(x, mode, layout, name=f"{_name(hp)} {mode} {layout}")


@pytest.mark.parametrize("dev", DEVS)
def test_mxfp4_fp32_beside_every_tie(dev):
    """fp32 y (= x: groups led by +-6) at and 1-3 steps either side of every e2m1 tie and grid
    point, either sign, with the smallest subnormal and normal, +-0 and the step above 6, in each
    scale mode and layout, against the NumPy oracle (a review of the fp32-add rounding, twelfth
    session: fp32 inputs near ties were reached only through NVFP4's tests before)."""
    pts = torch.tensor([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0])
    bits = pts.view(torch.int32)[:, None] + torch.arange(-3, 4, dtype=torch.int32)[None, :]
    vals = bits.reshape(-1).view(torch.float32)
    edge = torch.tensor([2.0**-149, 2.0**-126, 0.0, -0.0, 6.000000476837158])
    vals = torch.cat([vals, -vals, edge, -edge])
    x = _led_by_six(vals).to(dev)
    for mode, layout in itertools.product(MODES, LAYOUTS):
        check_mxfp4(x, mode, layout, name=f"fp32 {mode} {layout}")
