"""FP8 e4m3 with one scale per 128x128 block of a [N, K] weight, as compressed-tensors computes
llm-compressor's `FP8_BLOCK` scheme (its block observer, calculate_qparams and naive float
compressor), every step in the weight's dtype as torch evaluates it:

    amax  = max |x| over the block (rows past N count as 0: compressed-tensors pads with zeros)
    scale = RN_x(amax / 448), in x's dtype; a scale of 0 becomes finfo(x's dtype).eps
    q     = e4m3_RNE(clamp(RN_x(x / scale), -448, 448))

The scale tensor is [ceil(N/128), K/128] in the weight's dtype. K must be a multiple of 128
(llm-compressor cannot write a partial column block: its truncated output is not contiguous and
safetensors refuses it); a partial last row block is padded as compressed-tensors pads it.

NaN and Inf are mxquant's own fixed rule (compressed-tensors' bytes there are not stable: the sign
and payload of a NaN depend on torch's vector path, i.e. on the tensor's width and on the thread
count, and on the hardware's default NaN):

    a block holding a NaN  -> scale = the dtype's positive quiet NaN (bf16 0x7FC0, fp16 0x7E00,
                              fp32 0x7FC00000); every element 0x7F (e4m3's positive NaN)
    a block whose amax is Inf (no NaN) -> scale = +Inf; a finite x -> x / Inf = +-0 (0x00 / 0x80,
                              x's sign); an +-Inf x -> Inf / Inf = NaN -> 0x7F

i.e. every NaN the steps above produce (scale or element) is written as the positive quiet NaN.
Finite blocks are untouched by this.
"""

from __future__ import annotations

import torch

BLOCK = 128
E4M3_MAX = 448.0
_BITS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
# the positive quiet NaN's bits as the signed integer of the dtype's width (view(dtype) gives the NaN)
_CANONICAL_NAN = {torch.bfloat16: 0x7FC0, torch.float16: 0x7E00, torch.float32: 0x7FC00000}


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [R, K] (K % 128 == 0; R a multiple of 128 except for a tensor's last rows) -> (float8_e4m3fn
    [R, K], scale [ceil(R/128), K/128] in x.dtype)."""
    r, k = x.shape
    rb = -(-r // BLOCK)
    xp = torch.nn.functional.pad(x, (0, 0, 0, rb * BLOCK - r)) if r % BLOCK else x
    blocks = xp.reshape(rb, BLOCK, k // BLOCK, BLOCK)
    # max |x| over each block, found in float32 (exact: the largest |x| is one of x's values;
    # torch's bf16 / fp16 reductions are 5x slower), along the contiguous 128 first, then over
    # the block's rows (the same maxima as one reduction over both, NaN propagating alike)
    a = blocks.abs() if x.dtype == torch.float32 else blocks.float().abs_()
    scale = a.amax(dim=3).amax(dim=1).to(x.dtype) / E4M3_MAX
    scale = torch.where(scale == 0, torch.finfo(x.dtype).eps, scale).to(x.dtype)
    q = (blocks / scale[:, None, :, None]).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    # the NaN rule (module docstring): whatever NaN torch's path wrote, the positive quiet one
    bits = scale.view(_BITS[x.dtype])
    scale = torch.where(scale.isnan(), torch.tensor(_CANONICAL_NAN[x.dtype], dtype=bits.dtype), bits).view(x.dtype)
    qb = q.view(torch.uint8)
    qb.masked_fill_(qb & 0x7F == 0x7F, 0x7F)  # e4m3's NaNs are 0x7F and 0xFF
    return q.reshape(rb * BLOCK, k)[:r], scale


def fp8_values(q: torch.Tensor) -> torch.Tensor:
    """float32 values of float8_e4m3fn elements [..., K] (K % 32 == 0). On the CPU through
    mxfp8_dequantize with unit scales (E8M0 127 = 2^0: the element values exactly, in one
    vectorised pass; torch's own fp8 -> fp32 cast is element by element there, 12x slower),
    torch's cast where a forced backend (MXQUANT_BACKEND) cannot serve the CPU."""
    if q.device.type != "cpu":
        return q.float()
    import mxquant
    from mxquant.errors import BackendError

    ones = torch.full((*q.shape[:-1], q.shape[-1] // 32), 127, dtype=torch.uint8)
    try:
        return mxquant.mxfp8_dequantize(q, ones.view(torch.float8_e8m0fnu), out_dtype=torch.float32)
    except BackendError:  # a forced backend that cannot run here (FP8 block needs none): the same values
        return q.float()


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 values of quantize's output: element times its block's scale (exact in float32:
    4 significant bits times at most 11)."""
    r, k = q.shape
    out = fp8_values(q)
    s = scale.float()[:, None, :, None]
    full = r // BLOCK
    if full:
        out[: full * BLOCK].view(full, BLOCK, k // BLOCK, BLOCK).mul_(s[:full])
    if r % BLOCK:
        out[full * BLOCK:].view(1, r % BLOCK, k // BLOCK, BLOCK).mul_(s[full:full + 1])
    return out
