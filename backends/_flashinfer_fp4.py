"""The `flashinfer` backend's MXFP4 call (backend.FP4_OPS: `mxfp4_quantize`): FlashInfer's
`fp4_quantize` with UE8M0 scales per 32 (`sf_vec_size=32, sf_use_ue8m0=True`, what its
`mxfp4_quantize` passes), TensorRT-LLM's `cvt_warp_fp16_to_fp4` kernel. Blackwell (SM100+) only,
gated by flashinfer.probe; bf16/fp16 in, `rceil` only, linear or 128x4 scales.

Its arithmetic differs from the contract exactly where MXFP8's does (the same four codes of
flashinfer.DEVIATIONS, derived in docs/backends.md from the 0.7.2.post1 source). NVFP4 is not
claimed: its kernel rounds the group scale from amax * rcp.approx(6) in fp32 where the contract
(compressed-tensors) rounds amax / 6 to the input dtype first, so it differs on ordinary finite
data, not only on special values (docs/backends.md says how often and why).
"""

from __future__ import annotations

import math

import torch

from mxquant.formats import MXFP4_BLOCK
from mxquant.layouts import scale_shape

from ._common import device_guard

SF_VEC_SIZE = MXFP4_BLOCK


def fp4_rows(x: torch.Tensor) -> torch.Tensor:
    """x as a contiguous (M, K) tensor with row-major strides. FlashInfer's fp4_quantize takes an
    input with stride(-2) == 1 for a column-major one and transposes it, which a contiguous
    (1, K) tensor can have (a size-1 dimension's stride is free); viewing the flat tensor fixes it."""
    k = x.shape[-1]
    return x.contiguous().view(-1).view(math.prod(x.shape[:-1]), k)


def mxfp4_quantize(x: torch.Tensor, scale_mode: str, scale_layout: str):
    """(data uint8 (..., K/2), scale e8m0 linear (..., K/32) or 2-D 128x4). Arguments arrive
    validated and within the capabilities (bf16/fp16, rceil, K % 32 == 0)."""
    shape = tuple(x.shape)
    k = shape[-1]
    m = math.prod(shape[:-1])
    swizzled = scale_layout == "swizzled"
    want_data = (*shape[:-1], k // 2)
    want_scale = scale_shape(shape, scale_layout, MXFP4_BLOCK)
    if m == 0 or k == 0:  # nothing to quantize; swizzled scales may still have (zero) padding
        data = torch.empty(want_data, dtype=torch.uint8, device=x.device)
        return data, torch.zeros(want_scale, dtype=torch.uint8, device=x.device).view(torch.float8_e8m0fnu)

    guard = device_guard(x.device)
    if guard is not None:
        with guard:
            return mxfp4_quantize(x, scale_mode, scale_layout)

    import flashinfer

    data, scale = flashinfer.fp4_quantize(fp4_rows(x), global_scale=None, sf_vec_size=SF_VEC_SIZE, sf_use_ue8m0=True,
                                          is_sf_swizzled_layout=swizzled, is_sf_8x4_layout=False, backend="cuda")
    if tuple(data.shape) != (m, k // 2) or scale.numel() != math.prod(want_scale):
        raise RuntimeError(
            f"flashinfer.fp4_quantize returned data {tuple(data.shape)} and {scale.numel()} scale bytes for a "
            f"({m}, {k}) input; expected ({m}, {k // 2}) and {math.prod(want_scale)} (layout {scale_layout})")
    data = data.view(torch.uint8).reshape(want_data)
    return data, scale.view(torch.uint8).reshape(want_scale).view(torch.float8_e8m0fnu)
