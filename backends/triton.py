"""The `triton` backend: our own one-pass Triton kernel, for CUDA (compute capability 8.9+,
where fp8 conversion is in hardware) and declared for Intel XPU where Intel's Triton exists.

Nothing here imports triton at module import; the kernels (backends/_triton_kernels.py) load
on the first call. Inputs: any leading shape; a 2-D row-strided view is used as is, so
row-sliced and transposed-leading-dim tensors cost no copy; a tensor whose last dimension is
not contiguous (stride != 1), or whose leading dimensions cannot be merged into one stride,
is copied once with .contiguous() first.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch

from mxquant.backend import Backend, Capabilities
from mxquant.formats import BLOCK, ELEMENT_FORMATS, swizzled_scale_shape


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_kernels

    return _triton_kernels


def probe(device: torch.device) -> Optional[str]:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device (torch.cuda.is_available() is False)"
        if torch.version.hip:
            return "ROCm is not supported (the kernel uses NVIDIA fp8 conversions)"
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return f"compute capability {major}.{minor} < 8.9: Triton has no fp8e4nv conversion there"
    elif device.type == "xpu":
        if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            return "no Intel XPU device (torch.xpu.is_available() is False)"
    else:
        return f"serves cuda and xpu, not {device.type}"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"cannot import triton: {type(exc).__name__}: {exc}"
    return None


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """(M, K) view of `t` with unit stride along K; copies only when no such view exists."""
    k = t.shape[-1]
    if t.dim() > 1 and t.stride(-1) == 1:
        try:
            return t.view(-1, k)
        except RuntimeError:
            pass
    return t.contiguous().view(-1, k)


def quantize_config(m: int, k: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_K, num_warps), from the sweep in docs/performance.md."""
    block_m = min(32, triton_next_pow2(m))
    block_k = 128 if k <= 128 else 256
    return block_m, block_k, 4


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def quantize(x, dtype, scale_mode, scale_layout, config=None):
    k = x.shape[-1]
    x2 = as_rows(x)
    m = x2.shape[0]
    fmt = ELEMENT_FORMATS[dtype]
    data = torch.empty(x.shape, dtype=dtype, device=x.device)
    swizzled = scale_layout == "swizzled"
    if swizzled:
        scale_rows, scale_cols = swizzled_scale_shape(m, k)
        scale = torch.empty((scale_rows, scale_cols), dtype=torch.uint8, device=x.device)
    else:
        scale_rows, scale_cols = m, k // BLOCK
        scale = torch.empty((*x.shape[:-1], scale_cols), dtype=torch.uint8, device=x.device)
    if scale.numel():
        block_m, block_k, warps = config or quantize_config(m, k)
        grid = (triton_cdiv(scale_rows, block_m), triton_cdiv(scale_cols * BLOCK, block_k))
        _kernels().mxfp8_quantize_kernel[grid](
            x2, data.view(torch.uint8), scale,
            m, k, x2.stride(0), scale_rows, scale_cols,
            EMAX=fmt.emax, MAX_FINITE=fmt.max_finite, RCEIL=scale_mode == "rceil",
            E5M2=dtype == torch.float8_e5m2, SWIZZLED=swizzled,
            BLOCK_M=block_m, BLOCK_K=block_k,
            MASK_M=grid[0] * block_m != m, MASK_K=grid[1] * block_k != k,
            num_warps=warps,
        )
    return data, scale.view(torch.float8_e8m0fnu)


def dequantize(data, scale, scale_layout, out_dtype):
    k = data.shape[-1]
    d2 = as_rows(data)
    m = d2.shape[0]
    out = torch.empty(data.shape, dtype=out_dtype, device=data.device)
    swizzled = scale_layout == "swizzled"
    scale_cols = swizzled_scale_shape(m, k)[1] if swizzled else k // BLOCK
    if out.numel():
        block_m, block_k = min(32, triton_next_pow2(m)), 128
        grid = (triton_cdiv(m, block_m), triton_cdiv(k, block_k))
        _kernels().mxfp8_dequantize_kernel[grid](
            d2.view(torch.uint8), scale.contiguous().view(torch.uint8), out,
            m, k, d2.stride(0), scale_cols,
            E5M2=data.dtype == torch.float8_e5m2, SWIZZLED=swizzled, BLOCK_M=block_m, BLOCK_K=block_k,
            num_warps=4,
        )
    return out


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


backend = Backend(
    name="triton",
    capabilities=Capabilities(devices=frozenset({"cuda", "xpu"})),
    probe=probe,
    quantize=quantize,
    dequantize=dequantize,
    priority=50,
    description="one-pass Triton kernel (mxquant's own); bit-exact with the reference",
    install_hint="pip install 'mxquant[cuda]' (triton); on XPU, PyTorch's XPU wheels bring Intel's Triton",
)
