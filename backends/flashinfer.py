"""The `flashinfer` backend: FlashInfer's MXFP8 quantizer (TensorRT-LLM's kernel) on NVIDIA
Blackwell GPUs (compute capability 10.0 and up). It is the kernel vLLM uses there.

Nothing here imports flashinfer at module import; `probe` and `quantize` import it on use.
The kernel is JIT-built by FlashInfer on its first call (about a minute, then cached on disk).

Gating. FlashInfer's kernel body is compiled only for ``__CUDA_ARCH__ >= 1000``. On an older
GPU (an H100 is SM90) FlashInfer still builds and launches it, the launch does nothing, and
the call returns the uninitialized ``torch.empty`` buffers it allocated: garbage, silently
(on an H100, with the allocator's free memory filled with 0xAB first, every scale byte came
back 0xAB: the kernel wrote nothing). So `probe` answers "unavailable" for every
device below SM100 *before* it imports flashinfer, and a forced ``backend="flashinfer"``
there is a strict error, never a call.

What it supports: bf16/fp16 input (FlashInfer's CUDA kernel takes no fp32), e4m3 elements
only, the rceil scale rule only, linear and swizzled (128x4) scale layouts. Quantize only:
FlashInfer's ``mxfp8_dequantize_host`` runs on the CPU, so dequantize is left to the other
backends (the registry routes it). ``dequantize=None``.

Translation to mxquant's contract (docs/semantics.md): FlashInfer wants a contiguous CUDA
tensor of rank >= 2 and returns the elements as (*x.shape[:-1], padded_k) with padded_k =
round_up(K, alignment), and the scales as a 1-D uint8 tensor. We pass a contiguous (M, K)
view (rank-1 inputs become (1, K)) and alignment=32, so padded_k == K (K % 32 == 0 is already
checked); the elements are reshaped to x's shape, the scale bytes are viewed as
float8_e8m0fnu and shaped (*x.shape[:-1], K // 32) for "linear" or (round_up(M, 128),
round_up(K // 32, 4)) for "swizzled" (FlashInfer's 128x4 bytes are exactly our swizzled
layout, padding written as zero by the kernel). Empty inputs (M == 0 or K == 0) never reach
the kernel.

Deviations from the reference. Derived by reading the kernel (flashinfer-python 0.7.2.post1,
csrc/nv_internal/tensorrt_llm/kernels/quantization_utils.cuh, ``cvt_warp_fp16_to_mxfp8``,
built with ``-use_fast_math``, so every fp32 multiply and compare flushes subnormals to
zero). Per block of 32:

    amax     = |x| reduced with __hmax2 (a NaN operand is ignored: the other one wins), the
               even and odd lanes then joined with ``(a > b) ? a : b`` (a NaN b wins), so
               amax is NaN only when all 16 odd-indexed elements are NaN
    P        = amax * rcp.approx.ftz(448)                  (mul.ftz: P < 2**-126 becomes 0)
    scale    = cvt.rp.satfinite.ue8m0(P)                   (NaN -> 0xFF, Inf -> 0xFE, 0 -> 0x00)
    factor   = rcp.approx.ftz(2**(scale-127)) if that is not 0 (ftz compare) else 0
    element  = e4m3_rn(fmaxf(fminf(x * factor, 448), -448))   (fminf(NaN, 448) = 448)

Against the reference (a NaN or Inf anywhere: scale 0xFF and every element 0x7F; scales
clamped at 2**-127, values never flushed) this gives four codes, declared below:

- ``nan-ignored``: a NaN does not mark its block. The block keeps the scale of its other
  values and each NaN element becomes +448 (0x7E); when all odd-indexed elements are NaN
  the scale is 0xFF but every element is 0x7E, not 0x7F. (+448 is an ordinary value, so a
  NaN is lost without trace.)
- ``inf-saturates``: a block holding +-Inf (and not NaN-scaled) gets scale 0xFE (2**127):
  the factor rcp(2**127) = 2**-127 is flushed to 0, finite elements become +-0 and the Inf
  elements (Inf * 0 = NaN, clamped) +448 (0x7E).
- ``tiny-flush`` (bf16 input only; fp16 has no values this small): bf16 values below
  2**-126 in magnitude (fp32 subnormals) read as zero, and a block whose amax / 448 is
  below 2**-126 (amax < 1.75 * 2**-118, about 5.3e-36) gets scale 0x00 with every element
  +-0, where the reference keeps them (scale 2**-127 or 2**-126, elements scaled up).
- ``approx-scale``: the scale comes from amax * rcp.approx(448), not from amax's bits. For
  bf16/fp16 input the only amax whose ratio to 448 lies within a few fp32 ulps of a power
  of two is 448 * 2**k itself, so the rule can differ from exact rceil only there (by one,
  upwards, if rcp.approx(448) is above 1/448 enough to round 448 * rcp up). On an H100,
  rcp.approx.ftz.f32(448) returned RN(1/448) (0x3B124925) and 448 * that is exactly 1.0, so
  Hopper's arithmetic never shows this; Blackwell's was not measured. Declared until
  `mxquant verify` on an SM100 GPU attributes no block to it.

The four were checked twice without a Blackwell GPU: a PyTorch model of the arithmetic above
(tests/test_flashinfer_contract.py) and a CUDA transcription of the kernel function built
with fast math and run on an H100 (benchmarks/check_flashinfer_h100.py, section f) both
differ from the reference only in blocks these rules cover.

None is fixed in this wrapper: seeing a NaN or Inf needs a second pass over the input (an
``isfinite`` reduction reads x again, about doubling the memory traffic of a memory-bound
kernel, and acting on it from the host needs a sync), and the flushed values leave no trace
in the output. Because of these deviations the registry never picks `flashinfer`
automatically unless the user allows them (MXQUANT_ALLOW_DEVIATIONS=flashinfer or
``mxquant.allow_deviations("flashinfer")``); then, on SM100+, it outranks `triton`
(priority 100 vs 50). ``backend="flashinfer"`` always uses it where it can run.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from mxquant.backend import Backend, Capabilities, Deviation
from mxquant.formats import BLOCK
from mxquant.layouts import swizzled_scale_shape

MIN_CAPABILITY = (10, 0)
ALIGNMENT = BLOCK
"""FlashInfer pads K up to a multiple of `alignment`; 32 makes that a no-op (K % 32 == 0)."""

DEVIATIONS = (
    Deviation("nan-ignored",
              "a NaN does not mark its block (scale 0xFF, elements 0x7F): the block keeps the scale of "
              "its other values and each NaN element becomes +448 (0x7E)"),
    Deviation("inf-saturates",
              "a block holding +-Inf gets scale 0xFE instead of 0xFF: finite elements become +-0 and "
              "Inf elements +448 (0x7E) instead of 0x7F"),
    Deviation("tiny-flush",
              "bf16 input: values below 2**-126 read as zero, and blocks with amax/448 below 2**-126 "
              "get scale 0x00 and all-zero elements (the reference keeps them)"),
    Deviation("approx-scale",
              "the scale comes from amax * rcp.approx(448): for amax = 448 * 2**k exactly it may be one "
              "above exact rceil (exact on an H100's rcp.approx; not yet measured on Blackwell)"),
)

INSTALL_HINT = "pip install flashinfer-python (or, from an mxquant checkout, pip install -e '.[cuda]'), on a Blackwell GPU (SM100+)"


def probe(device: torch.device) -> Optional[str]:
    """None on a CUDA device of compute capability >= 10.0 where flashinfer imports."""
    if device.type != "cuda":
        return f"serves cuda only, not {device.type}"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if torch.version.hip:
        return "ROCm is not supported (FlashInfer's MXFP8 kernel is CUDA-only)"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < MIN_CAPABILITY:
        return (f"compute capability {major}.{minor} < 10.0: its MXFP8 kernel is compiled out below SM100; "
                "it would return garbage")
    try:
        import flashinfer
    except Exception as exc:  # ImportError, or a broken install (missing CUDA libraries, ...)
        return f"cannot import flashinfer: {type(exc).__name__}: {exc}"
    if not callable(getattr(flashinfer, "mxfp8_quantize", None)):
        version = getattr(flashinfer, "__version__", "?")
        return f"flashinfer {version} has no mxfp8_quantize (needs flashinfer-python >= 0.7.2)"
    return None


def _device_guard(device: torch.device):
    if device.type != "cuda" or device.index is None or device.index == torch.cuda.current_device():
        return None
    return torch.cuda.device(device)


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

    guard = _device_guard(x.device)
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
    ),
    probe=probe,
    quantize=quantize,
    dequantize=None,
    priority=100,
    deviations=DEVIATIONS,
    description="FlashInfer's MXFP8 kernel (TensorRT-LLM's, as vLLM uses it), Blackwell (SM100+) only",
    install_hint=INSTALL_HINT,
)
