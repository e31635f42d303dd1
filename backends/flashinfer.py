"""The `flashinfer` backend: FlashInfer's MXFP8 and MXFP4 quantizers (TensorRT-LLM's kernels, the
ones vLLM uses) on Blackwell GPUs (SM100+). Quantize only; bf16/fp16 in, e4m3 (MXFP8) or e2m1
(`mxfp4_quantize`, backends/_flashinfer_fp4.py), rceil, both layouts. NVFP4 is not claimed.

Its kernels are compiled out below SM100 and there return uninitialised memory, silently, so
`probe` refuses every older GPU before importing flashinfer. Its four deviations from the
contract (NaN ignored, Inf saturating, tiny values flushed, approximate reciprocal) are the
same in both formats and declared below; docs/backends.md derives each from the kernels and
says what ran where. flashinfer is imported on first use only; it JIT-builds a kernel then
(about a minute).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from mxquant.backend import Backend, Capabilities, Deviation
from mxquant.formats import BLOCK
from mxquant.layouts import swizzled_scale_shape

from . import _flashinfer_fp4 as _fp4
from ._common import cuda_probe, device_guard

MIN_CAPABILITY = (10, 0)
ALIGNMENT = BLOCK
"""FlashInfer pads K up to a multiple of `alignment`; 32 makes that a no-op (K % 32 == 0)."""

DEVIATIONS = (
    Deviation("nan-ignored",
              "a NaN does not mark its block (scale 0xFF, elements 0x7F / MXFP4 nibbles 0): the block keeps "
              "the scale of its other values and each NaN element becomes +448 (0x7E; MXFP4: +6, nibble 0x7)"),
    Deviation("inf-saturates",
              "a block holding +-Inf gets scale 0xFE instead of 0xFF: finite elements become +-0 and "
              "Inf elements +448 (0x7E; MXFP4: +6, nibble 0x7) instead of 0x7F (MXFP4: 0)"),
    Deviation("tiny-flush",
              "bf16 input: values below 2**-126 read as zero, and blocks with amax / max_finite (448; "
              "MXFP4: 6) below 2**-126 get scale 0x00 and all-zero elements (the reference keeps them)"),
    Deviation("approx-scale",
              "the scale comes from amax * rcp.approx(448) (MXFP4: rcp.approx(6)): for amax = 448 * 2**k "
              "(MXFP4: 6 * 2**k) exactly it may be one above exact rceil (not yet measured on Blackwell)"),
)

INSTALL_HINT = "pip install flashinfer-python (or, from an mxquant checkout, pip install -e '.[cuda]'), on a Blackwell GPU (SM100+)"


def probe(device: torch.device) -> Optional[str]:
    """None on a CUDA device of compute capability >= 10.0 where flashinfer imports."""
    reason = cuda_probe(device, MIN_CAPABILITY, "its kernels are compiled out below SM100; they would return garbage")
    if reason:
        return reason
    try:
        import flashinfer
    except Exception as exc:  # ImportError, or a broken install (missing CUDA libraries, ...)
        return f"cannot import flashinfer: {type(exc).__name__}: {exc}"
    for fn in ("mxfp8_quantize", "fp4_quantize"):
        if not callable(getattr(flashinfer, fn, None)):
            version = getattr(flashinfer, "__version__", "?")
            return f"flashinfer {version} has no {fn} (needs flashinfer-python >= 0.7.2)"
    return None


def quantize(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str):
    """Arguments arrive validated and within the capabilities (bf16/fp16, e4m3, rceil)."""
    shape = tuple(x.shape)
    k = shape[-1]
    m = math.prod(shape[:-1])  # rows (leading dims flattened); from the shape, so K == 0 works too
    swizzled = scale_layout == "swizzled"
    scale_2d = swizzled_scale_shape(m, k) if swizzled else (m, k // BLOCK)
    if m == 0 or k == 0:  # nothing to quantize; swizzled scales may still have (zero) padding
        data = torch.empty(shape, dtype=dtype, device=x.device)
        scale = torch.zeros(scale_2d, dtype=torch.uint8, device=x.device)
        if not swizzled:
            scale = scale.reshape(*shape[:-1], k // BLOCK)
        return data, scale.view(torch.float8_e8m0fnu)

    guard = device_guard(x.device)
    if guard is not None:
        with guard:
            return quantize(x, dtype, scale_mode, scale_layout)

    import flashinfer

    rows = x.contiguous().view(m, k)  # rank-1 -> (1, K); FlashInfer needs contiguous rank >= 2
    data, scale = flashinfer.mxfp8_quantize(rows, is_sf_swizzled_layout=swizzled, alignment=ALIGNMENT)
    if tuple(data.shape) != (m, k) or scale.numel() != scale_2d[0] * scale_2d[1]:
        # padded_k == K for alignment 32; anything else means FlashInfer's API changed.
        raise RuntimeError(
            f"flashinfer.mxfp8_quantize returned data {tuple(data.shape)} and {scale.numel()} scale bytes for a "
            f"({m}, {k}) input; expected ({m}, {k}) and {scale_2d[0] * scale_2d[1]} (layout {scale_layout})")
    data = data.view(torch.uint8).view(shape).view(dtype)
    scale = scale.view(torch.uint8).view(scale_2d)
    if not swizzled:
        scale = scale.view(*shape[:-1], k // BLOCK)
    return data, scale.view(torch.float8_e8m0fnu)


backend = Backend(
    name="flashinfer",
    capabilities=Capabilities(
        devices=frozenset({"cuda"}),
        element_dtypes=frozenset({torch.float8_e4m3fn}),
        scale_modes=frozenset({"rceil"}),
        scale_layouts=frozenset({"linear", "swizzled"}),
        input_dtypes=frozenset({torch.bfloat16, torch.float16}),
        ops=frozenset({"mxfp4_quantize"}),
    ),
    probe=probe,
    quantize=quantize,
    dequantize=None,
    mxfp4_quantize=_fp4.mxfp4_quantize,
    priority=100,
    deviations=DEVIATIONS,
    description="FlashInfer's MXFP8 and MXFP4 kernels (TensorRT-LLM's, as vLLM uses them), Blackwell (SM100+) only",
    install_hint=INSTALL_HINT,
)
