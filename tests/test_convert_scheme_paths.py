"""The faster paths behind `mxquant convert --scheme nvfp4a16 | fp8-block | mxfp4` against plain
torch statements of the same rules (the oracles), on adversarial inputs:

- NVFP4's global-scale amax (fused.finite_amax: one aminmax pass, a masked pass only where a
  non-finite element is present) against "largest |x| over the finite elements";
- FP8 block dequantization (fp8block.dequantize: elements through mxfp8_dequantize with unit
  scales, the block scales multiplied in place) against torch's own fp8 -> fp32 cast times the
  block scale repeated, and fp8block.quantize's two-step block maximum against one reduction
  (its bytes against compressed-tensors: tests/test_convert_schemes.py);
- the FP4 / FP8-block error sums (quantizers.error_sums, float32 x in a reused buffer) against a
  float64 sum from the public dequantization, chunk after chunk (the buffer reused)."""

from __future__ import annotations

import math

import pytest
import torch

import mxquant
from mxquant.checkpoint import fp8block
from mxquant.checkpoint.fused import finite_amax
from mxquant.checkpoint.quantizers import Quant, error_sums, quantize_chunk
from mxquant.checkpoint.schemes import SCHEMES

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
NAN, INF = float("nan"), float("inf")


def _finite_amax_oracle(x):
    return torch.where(x.isfinite(), x, 0).abs().amax()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["normal", "nan", "inf", "-inf", "all nan", "all -0", "zeros", "negative",
                                  "subnormal", "nan and inf"])
def test_finite_amax_is_the_largest_finite_magnitude(dtype, case):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4096, generator=g).to(dtype)
    if case == "nan":
        x[17] = NAN
    elif case == "inf":
        x[5] = INF
    elif case == "-inf":
        x[-1] = -INF
    elif case == "all nan":
        x[:] = NAN
    elif case == "all -0":
        x[:] = -0.0
    elif case == "zeros":
        x[:] = 0
    elif case == "negative":
        x = -x.abs() * 1e3
    elif case == "subnormal":
        x = x * torch.finfo(dtype).tiny / 8
    elif case == "nan and inf":
        x[1], x[2] = NAN, -INF
    got, want = finite_amax(x), _finite_amax_oracle(x)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want) and math.copysign(1, got.item()) == 1, (got, want)


def _fp8_block_input(dtype, rows, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=g) * torch.logspace(-3, 3, rows).unsqueeze(1)
    x = x.to(dtype)
    x[:64, :128] = 0  # a zero block (scale: eps)
    x[-1, -1] = 448 * 3  # a value past the element max
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [128, 200, 300, 64])
def test_fp8_block_dequantize_is_element_times_block_scale(dtype, rows):
    x = _fp8_block_input(dtype, rows, 384)
    x[7, 9] = NAN
    x[rows - 2, 200] = -INF
    q, s = fp8block.quantize(x)
    want = q.float() * s.float().repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)
    got = fp8block.dequantize(q, s)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp8_block_scales_are_one_reduction_over_each_block(dtype):
    x = _fp8_block_input(dtype, 300, 256)
    x[130, 5] = NAN
    x[10, 250] = INF
    _, s = fp8block.quantize(x)
    xp = torch.nn.functional.pad(x, (0, 0, 0, 384 - 300)).reshape(3, 128, 2, 128)
    want = xp.abs().amax(dim=(1, 3)) / 448.0
    want = torch.where(want == 0, torch.finfo(dtype).eps, want).to(dtype)
    assert torch.equal(s.isnan(), want.isnan()) and torch.equal(torch.nan_to_num(s), torch.nan_to_num(want))


def _dequantize64(name, data, scale, g):
    """The public dequantization in float32 (exact for these formats), widened."""
    if name == "mxfp4":
        return mxquant.mxfp4_dequantize(data, scale, out_dtype=torch.float32).double()
    if name == "nvfp4a16":
        return mxquant.nvfp4_dequantize(data, scale, g, out_dtype=torch.float32).double()
    return (torch.as_tensor(data).float() * scale.float().repeat_interleave(128, 0)[: data.shape[0]]
            .repeat_interleave(128, 1)).double()


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4a16", "fp8-block"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_error_sums_match_a_float64_sum_chunk_after_chunk(name, dtype):
    quant = Quant(SCHEMES[name])
    for seed, (rows, k) in enumerate(((256, 512), (128, 256), (384, 512))):  # the float32 buffer shrinks, grows
        x = _fp8_block_input(dtype, rows, k, seed)
        g = mxquant.nvfp4_quantize(x).global_scale if name == "nvfp4a16" else None
        data, scale = quantize_chunk(quant, x, "compressed-tensors", g)
        got = error_sums(quant, x, data, scale, g)
        xd, dq = x.double(), _dequantize64(name, data, scale, g)
        want = float((xd * xd).sum()), float(((xd - dq) ** 2).sum())
        assert got == pytest.approx(want, rel=1e-5), (seed, got, want)  # float32 dot products


def test_fp8_block_needs_no_mxquant_backend(monkeypatch):
    """FP8 block quantization is torch's; its faster dequantization borrows mxfp8_dequantize, and
    where a forced backend cannot serve the CPU it uses torch's cast instead: the same values, no
    refusal naming a call the user never asked for."""
    x = _fp8_block_input(torch.bfloat16, 200, 256)
    q, s = fp8block.quantize(x)
    want = fp8block.dequantize(q, s)
    monkeypatch.setenv("MXQUANT_BACKEND", "triton")
    with pytest.raises(mxquant.errors.BackendError):
        mxquant.mxfp8_dequantize(q, torch.full((200, 8), 127, dtype=torch.uint8).view(torch.float8_e8m0fnu))
    assert torch.equal(fp8block.dequantize(q, s), want)
