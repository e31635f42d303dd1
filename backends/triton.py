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


@functools.lru_cache(maxsize=4096)
def quantize_config(m: int, k: int) -> tuple[int, int, int, str]:
    """(BLOCK_M, BLOCK_K, num_warps, load eviction policy), from the block-shape sweep in
    docs/performance.md: programs of 2048 elements (one row-chunk, 4 warps) were fastest from
    8192x8192 up and within noise of the best below; shorter rows stack several per program."""
    block_k = min(2048, next_pow2(k))
    block_m = max(1, min(next_pow2(m), 2048 // block_k))
    elems = block_m * block_k
    return block_m, block_k, max(1, min(4, elems // 512)), ""


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


_LAUNCHERS: dict = {}
_FAST_LAUNCH = [None]  # decided on the first CUDA call: Triton 3.6, no launch hooks installed


def _fast_launch_ok() -> bool:
    import triton

    return triton.__version__.split(".")[:2] == ["3", "6"]


def _int_key(v: int):
    # What Triton 3.6 specializes an integer argument on: == 1, divisibility by 16, int32 range.
    return v == 1, v % 16 == 0, v < 2**31


def launch(kernel, grid: int, tensors: tuple, ints: tuple, constexprs: dict, num_warps: int, device) -> None:
    """kernel[(grid,)](*tensors, *ints, **constexprs), the argument order of our kernels.

    On CUDA with Triton 3.6 the compiled kernel is cached per specialization (tensor dtypes
    and 16-byte alignment, the integers' == 1 / % 16 / int32 properties, the constexprs) and
    launched directly, skipping Triton's per-call argument binding: most of a small call's
    host time. Elsewhere, or with Triton launch hooks installed, Triton's normal launch runs."""
    if not _FAST_LAUNCH[0]:
        kernel[(grid,)](*tensors, *ints, **constexprs, num_warps=num_warps)
        return
    key = (kernel, device.index, num_warps, *constexprs.values(),
           *[(t.dtype, t.data_ptr() % 16 == 0) for t in tensors], *map(_int_key, ints))
    compiled = _LAUNCHERS.get(key)
    if compiled is None:
        _LAUNCHERS[key] = kernel[(grid,)](*tensors, *ints, **constexprs, num_warps=num_warps)
        return
    stream = torch._C._cuda_getCurrentRawStream(device.index)
    compiled.run(grid, 1, 1, stream, compiled.function, compiled.packed_metadata, None, None, None,
                 *tensors, *ints, *constexprs.values())


def _on_device(device: torch.device):
    """Kernels launch on the current device: make it `device` when it is not already."""
    if _FAST_LAUNCH[0] is None and device.type == "cuda":
        import triton

        _FAST_LAUNCH[0] = (_fast_launch_ok() and triton.knobs.runtime.launch_enter_hook is None
                           and triton.knobs.runtime.launch_exit_hook is None)
    if device.type not in ("cuda", "xpu") or device.index is None:
        return None
    mod = torch.cuda if device.type == "cuda" else torch.xpu
    return None if device.index == mod.current_device() else mod.device(device)


def quantize(x, dtype, scale_mode, scale_layout, config=None):
    guard = _on_device(x.device)
    if guard is not None:
        with guard:
            return quantize(x, dtype, scale_mode, scale_layout, config)
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
        block_m, block_k, warps, evict = config or quantize_config(m, k)
        n_m, n_k = cdiv(scale_rows, block_m), cdiv(scale_cols * BLOCK, block_k)
        constexprs = dict(
            EMAX=fmt.emax, MAX_FINITE=fmt.max_finite, RCEIL=scale_mode == "rceil",
            E5M2=dtype == torch.float8_e5m2, SWIZZLED=swizzled, BLOCK_M=block_m, BLOCK_K=block_k,
            MASK_M=n_m * block_m != m, MASK_K=n_k * block_k != k, EVICT=evict,
        )
        launch(_kernels().mxfp8_quantize_kernel, n_m * n_k, (x2, data.view(torch.uint8), scale),
               (m, k, x2.stride(0), scale_rows, scale_cols, n_k), constexprs, warps, x.device)
    return data, scale.view(torch.float8_e8m0fnu)


def dequantize(data, scale, scale_layout, out_dtype):
    guard = _on_device(data.device)
    if guard is not None:
        with guard:
            return dequantize(data, scale, scale_layout, out_dtype)
    k = data.shape[-1]
    d2 = as_rows(data)
    m = d2.shape[0]
    out = torch.empty(data.shape, dtype=out_dtype, device=data.device)
    swizzled = scale_layout == "swizzled"
    scale_cols = swizzled_scale_shape(m, k)[1] if swizzled else k // BLOCK
    if out.numel():
        block_m, block_k, warps, _ = quantize_config(m, k)
        n_m, n_k = cdiv(m, block_m), cdiv(k, block_k)
        constexprs = dict(E5M2=data.dtype == torch.float8_e5m2, SWIZZLED=swizzled, BLOCK_M=block_m, BLOCK_K=block_k)
        launch(_kernels().mxfp8_dequantize_kernel, n_m * n_k,
               (d2.view(torch.uint8), scale.contiguous().view(torch.uint8), out),
               (m, k, d2.stride(0), scale_cols, n_k), constexprs, warps, data.device)
    return out


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
