"""FP8 e4m3 with one scale per 128x128 block of a [N, K] weight, as compressed-tensors computes
llm-compressor's `FP8_BLOCK` scheme (its block observer, calculate_qparams and naive float
compressor), every step in the weight's dtype as torch evaluates it:

    amax  = max |x| over the block (rows past N count as 0: compressed-tensors pads with zeros)
    scale = RN_x(amax / 448), in x's dtype; a scale of 0 becomes finfo(x's dtype).eps
    q     = e4m3_RNE(clamp(RN_x(x / scale), -448, 448))

The scale tensor is [ceil(N/128), K/128] in the weight's dtype. K must be a multiple of 128
(llm-compressor cannot write a partial column block: its truncated output is not contiguous and
safetensors refuses it); a partial last row block is padded as compressed-tensors pads it.
"""

from __future__ import annotations

import torch

BLOCK = 128
E4M3_MAX = 448.0


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [R, K] (K % 128 == 0; R a multiple of 128 except for a tensor's last rows) -> (float8_e4m3fn
    [R, K], scale [ceil(R/128), K/128] in x.dtype)."""
    r, k = x.shape
    rb = -(-r // BLOCK)
    xp = torch.nn.functional.pad(x, (0, 0, 0, rb * BLOCK - r)) if r % BLOCK else x
    blocks = xp.reshape(rb, BLOCK, k // BLOCK, BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)) / E4M3_MAX
    scale = torch.where(scale == 0, torch.finfo(x.dtype).eps, scale).to(x.dtype)
    q = (blocks / scale[:, None, :, None]).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q.reshape(rb * BLOCK, k)[:r], scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 values of quantize's output: element times its block's scale."""
    s = scale.float().repeat_interleave(BLOCK, 0)[: q.shape[0]].repeat_interleave(BLOCK, 1)
    return q.float() * s
