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
import math
from typing import Optional

import torch

from mxquant.backend import Backend, Capabilities
from mxquant.formats import BLOCK, ELEMENT_FORMATS
from mxquant.layouts import swizzled_scale_shape


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
        try:
            from triton.runtime import driver

            target = driver.active.get_current_target().backend
        except Exception as exc:
            return f"cannot import Intel's Triton (triton-xpu): {type(exc).__name__}: {exc}"
        if target != "xpu":
            return f"the installed Triton targets '{target}', not Intel XPU (install triton-xpu)"
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
    if t.numel() == 0:  # nothing to read (M == 0 or K == 0); view(-1, 0) would be ambiguous
        return t.new_empty((math.prod(t.shape[:-1]), k))
    if t.dim() > 1 and t.stride(-1) == 1:
        try:
            return t.view(-1, k)
        except RuntimeError:
            pass
    return t.contiguous().view(-1, k)


@functools.lru_cache(maxsize=4096)
def quantize_config(m: int, k: int, swizzled: bool = False) -> tuple[int, int, int, str]:
    """(BLOCK_M, BLOCK_K, num_warps, load eviction policy), from the sweeps in
    docs/performance.md (H100): programs of 2048 elements, 4 warps, input loads marked
    evict_last (2-7% faster than the default policy from 2048x4096 up, neutral below; a cache
    hint only). Linear: one row-chunk of 2048 per program was fastest from 8192x8192 up and
    within noise of the best below; shorter rows stack several per program. Swizzled: 4 rows x
    512 (16 bytes of each 128x4 scale tile per program) beat 1 x 2048 by 1.5-3% at 8192x8192 and
    up; the grid covers the padded 128-row tiles anyway (BLOCK_M divides 128)."""
    if swizzled:  # the scale store packs 4 blocks: BLOCK_K >= 128
        block_k = min(512, max(128, next_pow2(k)))
        return 2048 // block_k, block_k, 4, "evict_last"
    block_k = min(2048, max(32, next_pow2(k)))
    block_m = max(1, min(next_pow2(m), 2048 // block_k))
    elems = block_m * block_k
    return block_m, block_k, max(1, min(4, elems // 512)), "evict_last"


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


_FAST_LAUNCH = [None]  # decided on the first CUDA call: Triton 3.6, no launch hooks installed
_PLANS: dict = {}  # launch plans of the quantize kernel, per call signature (bounded below)


def _fast_launch_ok() -> bool:
    import triton

    return (triton.__version__.split(".")[:2] == ["3", "6"] and triton.knobs.runtime.launch_enter_hook is None
            and triton.knobs.runtime.launch_exit_hook is None)


class _Plan:
    """Everything a launch needs but the tensors, for one call signature. The first launch goes
    through Triton's normal path, which compiles and returns the compiled kernel; later ones
    (CUDA, Triton 3.6) call that compiled kernel directly, skipping Triton's per-call argument
    binding, which is most of a small call's host time. The signature includes what Triton
    specializes on: the input's 16-byte alignment and every integer argument's exact value
    (outputs come from torch's allocator, always aligned)."""

    __slots__ = ("kernel", "grid", "ints", "constexprs", "num_warps", "compiled")

    def __init__(self, kernel, grid, ints, constexprs, num_warps):
        self.kernel, self.grid, self.ints, self.constexprs, self.num_warps = kernel, grid, ints, constexprs, num_warps
        self.compiled = None

    def launch(self, device: torch.device, *tensors) -> None:
        if self.compiled is not None:
            stream = torch._C._cuda_getCurrentRawStream(device.index)
            c = self.compiled
            c.run(self.grid, 1, 1, stream, c.function, c.packed_metadata, None, None, None,
                  *tensors, *self.ints, *self.constexprs.values())
            return
        compiled = self.kernel[(self.grid,)](*tensors, *self.ints, **self.constexprs, num_warps=self.num_warps)
        if device.type == "cuda" and _FAST_LAUNCH[0]:
            self.compiled = compiled


def _plan(key, make) -> _Plan:
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 4096:
            _PLANS.clear()
        plan = _PLANS[key] = make()
    return plan


def _on_device(device: torch.device):
    """Kernels launch on the current device: make it `device` when it is not already."""
    if device.type == "cuda":
        if _FAST_LAUNCH[0] is None:
            _FAST_LAUNCH[0] = _fast_launch_ok()
        if device.index is not None and device.index != torch.cuda.current_device():
            return torch.cuda.device(device)
    elif device.type == "xpu" and device.index is not None and device.index != torch.xpu.current_device():
        return torch.xpu.device(device)
    return None


def _quantize_plan(m, k, stride, dtype, scale_mode, swizzled, scale_rows, scale_cols, config):
    fmt = ELEMENT_FORMATS[dtype]
    block_m, block_k, warps, evict = config or quantize_config(m, k, swizzled)
    assert not swizzled or block_k >= 128, "the swizzled scale store packs 4 blocks: BLOCK_K >= 128"
    n_m, n_k = cdiv(scale_rows, block_m), cdiv(scale_cols * BLOCK, block_k)
    constexprs = dict(
        EMAX=fmt.emax, MAX_FINITE=fmt.max_finite, RCEIL=scale_mode == "rceil",
        TIE_UP=scale_mode == "compressed-tensors",
        E5M2=dtype == torch.float8_e5m2, SWIZZLED=swizzled, BLOCK_M=block_m, BLOCK_K=block_k,
        MASK_M=n_m * block_m != m, MASK_K=n_k * block_k != k, EVICT=evict,
    )
    ints = (m, k, stride, scale_rows, scale_cols, n_k)
    return _Plan(_kernels().mxfp8_quantize_kernel, n_m * n_k, ints, constexprs, warps)


def quantize(x, dtype, scale_mode, scale_layout, config=None):
    device = x.device
    guard = _on_device(device)
    if guard is not None:
        with guard:
            return quantize(x, dtype, scale_mode, scale_layout, config)
    k = x.shape[-1]
    x2 = as_rows(x)
    m = x2.shape[0]
    swizzled = scale_layout == "swizzled"
    if swizzled:
        scale_rows, scale_cols = swizzled_scale_shape(m, k)
        scale_shape = (scale_rows, scale_cols)
    else:
        scale_rows, scale_cols = m, k // BLOCK
        scale_shape = (*x.shape[:-1], scale_cols)
    data = torch.empty(x.shape, dtype=dtype, device=device)
    scale = torch.empty(scale_shape, dtype=torch.uint8, device=device)
    if scale_rows and scale_cols:
        stride = x2.stride(0)
        key = (m, k, stride, x.dtype, dtype, scale_mode, swizzled, x2.data_ptr() % 16 == 0, device, config)
        plan = _plan(key, lambda: _quantize_plan(m, k, stride, dtype, scale_mode, swizzled, scale_rows, scale_cols, config))
        plan.launch(device, x2, data, scale)
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
        stride = d2.stride(0)

        def make():
            block_m, block_k, warps, _ = quantize_config(m, k)
            n_m, n_k = cdiv(m, block_m), cdiv(k, block_k)
            constexprs = dict(E5M2=data.dtype == torch.float8_e5m2, SWIZZLED=swizzled, BLOCK_M=block_m, BLOCK_K=block_k)
            return _Plan(_kernels().mxfp8_dequantize_kernel, n_m * n_k, (m, k, stride, scale_cols, n_k), constexprs, warps)

        scale_bytes = scale.contiguous().view(torch.uint8)
        key = ("dq", m, k, stride, data.dtype, out_dtype, swizzled, d2.data_ptr() % 16 == 0,
               scale_bytes.data_ptr() % 16 == 0, data.device)
        _plan(key, make).launch(data.device, d2.view(torch.uint8), scale_bytes, out)
    return out


backend = Backend(
    name="triton",
    capabilities=Capabilities(devices=frozenset({"cuda", "xpu"}),
                              scale_modes=frozenset({"rceil", "floor", "compressed-tensors"})),
    probe=probe,
    quantize=quantize,
    dequantize=dequantize,
    priority=50,
    description="one-pass Triton kernel (mxquant's own); bit-exact with the reference",
    install_hint="pip install triton (or, from an mxquant checkout, pip install -e '.[cuda]'); on XPU, PyTorch's XPU wheels bring Intel's Triton",
)
