"""MXFP4 / NVFP4 against the peers' own code (docs/semantics.md, "MXFP4 and NVFP4", "Where the
peers disagree"):

- compressed-tensors, as llm-compressor's model_free_ptq runs it on one weight (its
  initialize_quantized_linear + calibrate_weight, then compressed-tensors' compress_module:
  schemes NVFP4A16 and MXFP4): weight_packed, weight_scale and weight_global_scale byte for byte
  with nvfp4_quantize() and mxfp4_quantize(scale_mode="compressed-tensors"); its decompressor
  against our dequantize. Found and asserted: identical for bf16 and fp32 weights; fp16 NVFP4
  identical; fp16 MXFP4 identical except blocks with amax < 2**-14 (fp16-subnormal amax, zero
  blocks included) or amax >= 1.75 * 2**15, where its power-of-two rounding in fp16 underflows or
  overflows (as for MXFP8; bf16 / fp32 overflow there only from amax >= 1.75 * 2**127).
- torchao 0.18's pure-PyTorch to_mx (FLOOR, RCEIL, and EVEN = the compressed-tensors rule) for
  bf16 / fp32 on finite blocks with amax >= 2**-100 (torchao clamps the scale's float to the
  smallest normal, so s = -127 blocks differ), its to_blocked swizzle, and its e2m1 cast and
  nibble packing (f32_to_f4_unpacked, pack_uint4) on a sweep of values.
"""

from __future__ import annotations

import math

import pytest
import torch

import mxquant
from mxquant.conformance.fp4_inputs import fp4_batch

pytest.importorskip("compressed_tensors", reason="compressed-tensors not installed (extra convert-test)")
pytest.importorskip("llmcompressor", reason="llm-compressor not installed (extra convert-test)")

from compressed_tensors.compressors import compress_module  # noqa: E402
from compressed_tensors.quantization import preset_name_to_scheme  # noqa: E402
from llmcompressor.entrypoints.model_free.lifecycle import calibrate_weight, initialize_quantized_linear  # noqa: E402


def ct_compress(w: torch.Tensor, preset: str) -> dict:
    module = initialize_quantized_linear(w.clone(), preset_name_to_scheme(preset, ["Linear"]), "cpu")
    calibrate_weight(module)
    compress_module(module)
    return module.state_dict()


def weights(dtype, seed=0) -> list[torch.Tensor]:
    """Checkpoint-like weights (Gaussian at several scales, heavy tails, outlier channels, zero
    rows and groups, -0.0, the 1.75 * 2**k and 6 * 2**k boundaries) and the finite rows of the
    FP4 adversarial batch."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for std in (1e-3, 0.02, 0.5, 30.0):
        out.append(torch.randn(32, 256, generator=g) * std)
    w = torch.distributions.StudentT(2.0).sample((32, 256)) * 0.01
    w[:, 7] *= 200
    w[3] = 0
    w[5, 64:96] = 0
    w[6, 3] = -0.0
    w[9] *= 1e-3
    w[11, :32] = 0.4375
    w[12, :32] = 0.375
    w[13, 32:64] = -0.75 * 2.0**-3
    out.append(w)
    out = [t.to(dtype) for t in out]
    batch = fp4_batch(dtype)[:264].reshape(-1, 128)
    out.append(batch[batch.float().isfinite().all(dim=1) & (batch.float().abs().amax(dim=1) < 1e30)][:64])
    return out


def u8(t):
    return t.contiguous().view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_nvfp4_identical_to_compressed_tensors(dtype):
    for i, w in enumerate(weights(dtype)):
        sd, q = ct_compress(w, "NVFP4A16"), mxquant.nvfp4_quantize(w)
        assert torch.equal(sd["weight_global_scale"], q.global_scale), (i, sd["weight_global_scale"], q.global_scale)
        assert torch.equal(u8(sd["weight_scale"]), u8(q.scale)), i
        assert torch.equal(sd["weight_packed"], q.data), i
        # its decompressor (bf16 values) against our dequantize
        from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor

        back = NVFP4PackedCompressor.decompress(dict(sd), preset_name_to_scheme("NVFP4A16", ["Linear"]))["weight"]
        ours = mxquant.nvfp4_dequantize(q.data, q.scale, q.global_scale, out_dtype=back.dtype)
        assert torch.equal(back, ours), i


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_mxfp4_identical_to_compressed_tensors(dtype):
    for i, w in enumerate(weights(dtype)):
        sd, q = ct_compress(w, "MXFP4"), mxquant.mxfp4_quantize(w, scale_mode="compressed-tensors")
        rows, nb = w.shape[0], w.shape[1] // 32
        differ = (sd["weight_scale"] != u8(q.scale)) | (sd["weight_packed"].reshape(rows, nb, 16) != q.data.reshape(rows, nb, 16)).any(-1)
        if dtype == torch.float16:  # only blocks whose amax is an fp16 subnormal (or zero) or rounds up to 2**16
            amax = w.float().abs().reshape(rows, nb, 32).amax(-1)
            assert bool(((amax[differ] < 2.0**-14) | (amax[differ] >= 57344.0)).all()), i
        else:
            assert not differ.any(), (i, differ.nonzero()[:3])
    rc = mxquant.mxfp4_quantize(weights(torch.bfloat16)[4], scale_mode="rceil").scale
    assert not torch.equal(u8(rc), ct_compress(weights(torch.bfloat16)[4], "MXFP4")["weight_scale"])  # 0.4375, 0.375 rows


torchao_mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor", reason="torchao not installed (extra test)")
from torchao.prototype.mx_formats.config import ScaleCalculationMode  # noqa: E402
from torchao.prototype.mx_formats.kernels import f32_to_f4_unpacked, pack_uint4  # noqa: E402

MODES = {"floor": ScaleCalculationMode.FLOOR, "rceil": ScaleCalculationMode.RCEIL,
         "compressed-tensors": ScaleCalculationMode.EVEN}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", ["linear", "swizzled"])
def test_mxfp4_identical_to_torchao(dtype, mode, layout):
    for w in weights(dtype):
        keep = (w.float().abs().reshape(w.shape[0], -1, 32).amax(-1) >= 2.0**-100).all(-1)
        w = w[keep].contiguous()
        if mode == "compressed-tensors":  # torchao's EVEN keeps -0.0's sign; compressed-tensors does not
            w = torch.where(w == 0, torch.zeros_like(w), w)
        scale, data = torchao_mx.to_mx(w, torch.float4_e2m1fn_x2, 32, MODES[mode], is_swizzled_scales=layout == "swizzled")
        q = mxquant.mxfp4_quantize(w, scale_mode=mode, scale_layout=layout)
        assert torch.equal(u8(data), q.data)
        assert torch.equal(u8(scale).reshape(-1), u8(q.scale).reshape(-1))


def test_e2m1_cast_and_packing_identical_to_torchao():
    """Every fp32 value of a dense sweep over [-7, 7] (all ties included) plus signed zeros:
    x * 2**0 with amax 6 (MXFP4 floor: s = 0) gives torchao's nibbles, packed in its order."""
    sweep = torch.cat([torch.arange(-7 * 64, 7 * 64 + 1) / 64.0, torch.tensor([-0.0, 0.0, -1e-30, 1e-30])])
    sweep = torch.cat([sweep, torch.zeros((-sweep.numel()) % 32)])
    x = sweep.reshape(-1, 32).clone()
    x[:, 31] = 6.0
    want = pack_uint4(f32_to_f4_unpacked(x.clamp(-6, 6)))
    assert torch.equal(mxquant.mxfp4_quantize(x, scale_mode="floor").data, want)
    assert math.prod(want.shape) * 2 == x.numel()
