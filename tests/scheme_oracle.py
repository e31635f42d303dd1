"""Independent dequantization of `mxquant convert --scheme` outputs and round trips of the
schemes' input activations, for the tests that load or evaluate them: the NumPy oracle
(tests/fp4_oracle.py) for MXFP4 and NVFP4, FP8 block as float64 arithmetic rounded once."""

from __future__ import annotations

import fp4_oracle
import numpy as np
import torch


def fp8_block_dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """e4m3 element times its 128x128 block's scale, in float64, rounded once to bf16."""
    s = scale.double().repeat_interleave(128, 0)[: q.shape[0]].repeat_interleave(128, 1)
    return torch.from_numpy(fp4_oracle.round_to((q.double() * s).numpy(), torch.bfloat16)).to(torch.bfloat16)


def dequantized(scheme: str, files: dict, module: str) -> torch.Tensor:
    """The bf16 weight of `module` from a converted folder's tensors (`files`), by the oracle."""
    p = module + "."
    if scheme == "mxfp4":
        return fp4_oracle.mxfp4_dequantize(files[p + "weight_packed"], files[p + "weight_scale"].numpy(),
                                           torch.bfloat16)
    if scheme == "nvfp4a16":
        g = float(files[p + "weight_global_scale"])
        return fp4_oracle.nvfp4_dequantize(files[p + "weight_packed"], files[p + "weight_scale"].view(torch.uint8), g,
                                           torch.bfloat16)
    assert scheme == "fp8-block", scheme
    return fp8_block_dequantize(files[p + "weight"], files[p + "weight_scale"])


def quantized_modules(files: dict) -> list[str]:
    """Modules with a `weight_scale` in a converted folder's tensors (every scheme writes one)."""
    return sorted(k[: -len(".weight_scale")] for k in files if k.endswith(".weight_scale"))


def mxfp4_round_trip(x: torch.Tensor, mode: str) -> torch.Tensor:
    data, scale = fp4_oracle.mxfp4_quantize(x, mode)
    return fp4_oracle.mxfp4_dequantize(data, scale.reshape(-1, x.shape[-1] // 32).numpy(), x.dtype)


def fp8_groups_vllm(x: torch.Tensor) -> torch.Tensor:
    """vLLM's dynamic FP8 activation groups of 128 per token (QuantFP8._quantize_group_native), in
    float64 steps: scale = fp32(amax / 448), at least fp32(1 / (448 * 512)); element
    e4m3_RNE(clamp(fp32(x / scale), +-448)); value fp32(element * scale) rounded to x's dtype."""
    v = x.double().numpy().reshape(-1, 128)
    f32 = fp4_oracle.round_to
    floor = f32(np.float64(1 / (448 * 512)), torch.float32)
    scale = np.maximum(f32(np.abs(v).max(axis=1) / 448.0, torch.float32), floor)
    y = np.clip(f32(v / scale[:, None], torch.float32), -448.0, 448.0)
    q = fp4_oracle.round_grid(y, 3, -6)
    out = fp4_oracle.round_to(f32(q * scale[:, None], torch.float32), x.dtype)
    return torch.from_numpy(out.reshape(x.shape)).to(x.dtype)


def save_qwen2_moe(folder, seed: int, sizes: dict) -> None:
    """A tiny per-expert Qwen2-MoE (transformers 5 fuses its experts in memory) saved in bf16:
    one layer of `sizes` at hidden 128, four experts of 128, every Linear whole 128x128 blocks."""
    import transformers

    cfg = transformers.Qwen2MoeConfig(**{**sizes, "hidden_size": 128, "num_hidden_layers": 1},
                                      moe_intermediate_size=128, shared_expert_intermediate_size=128, num_experts=4,
                                      num_experts_per_tok=2)
    torch.manual_seed(seed)
    transformers.Qwen2MoeForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder)
