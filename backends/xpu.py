"""The `xpu` backend: Intel's native SYCL kernel for Intel GPUs, from vllm-xpu-kernels.

The kernel is `torch.ops._C.per_token_group_fp8_quant`, which `import vllm_xpu_kernels._C`
registers (with an XPU implementation only). vLLM calls it with group_size=32 and
scale_ue8m0=True for MXFP8 on XPU; so does this backend. Its float32 power-of-two scales are
turned into E8M0 bytes here from their fp32 bit patterns (a small elementwise pass over the
scales only; never `.to(torch.float8_e8m0fnu)`), and the swizzled layout is built from them
with mxquant.layouts.swizzle (another pass over the scales only).

The kernel's rules differ from docs/semantics.md on special blocks; the differences are the
`deviations` below (docs/backends.md, section xpu, derives each from the kernel's source).
None of them can be repaired from the scales alone: each needs a second pass over the data,
which would cost more than the kernel saves, so they are declared instead, and automatic
selection picks this backend only where the caller allows them.

Nothing here imports Intel's packages at module import: the probe and the first call do.
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Optional

import torch

from mxquant import layouts
from mxquant.backend import Backend, Capabilities, Deviation
from mxquant.formats import BLOCK, ELEMENT_FORMATS, INPUT_DTYPES

from ._common import device_guard

KERNELS_MODULE = "vllm_xpu_kernels._C"
OP_NAME = "per_token_group_fp8_quant"
EPS = 1e-10
"""What vLLM passes; the kernel ignores eps for group sizes divisible by 4 (its vectorized
absmax starts at 0), so it has no effect for blocks of 32."""

MAX_GROUPS_PER_CALL = 2**31 - 1
"""The kernel indexes groups with a C int; larger inputs are quantized in row chunks."""

_KNOWN_ARITIES = (8, 10)
"""(input, output_q, output_s, group_size, eps, fp8_min, fp8_max, scale_ue8m0) and newer
builds' two trailing dummy bools (dummy_is_scale_transposed, dummy_is_tma_aligned)."""


def import_kernels() -> None:
    """Import vllm_xpu_kernels._C, which registers torch.ops._C.* (raises if it cannot)."""
    importlib.import_module(KERNELS_MODULE)


def lookup_op():
    """torch.ops._C.per_token_group_fp8_quant, or None where no library registered it."""
    try:
        return getattr(torch.ops._C, OP_NAME)
    except (AttributeError, RuntimeError):
        return None


def arity(op) -> int:
    return len(op.default._schema.arguments)


@functools.lru_cache(maxsize=None)
def _kernel():
    """(op, number of schema arguments), resolved once; tests clear this cache."""
    import_kernels()
    op = lookup_op()
    if op is None:
        raise RuntimeError(f"torch.ops._C.{OP_NAME} is not registered")
    return op, arity(op)


def probe(device: torch.device) -> Optional[str]:
    if device.type != "xpu":
        return f"serves xpu only, not {device.type}"
    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return "no Intel XPU device (torch.xpu.is_available() is False)"
    if device.index is not None and device.index >= torch.xpu.device_count():
        return f"no device {device}: torch.xpu.device_count() is {torch.xpu.device_count()}"
    try:
        import_kernels()
    except Exception as exc:  # ImportError, or a wheel built for another torch (undefined symbol)
        return (f"cannot import {KERNELS_MODULE}: {type(exc).__name__}: {exc} (vllm-xpu-kernels is built "
                "against one torch XPU release; its version must match the installed torch)")
    op = lookup_op()
    if op is None:
        return (f"{KERNELS_MODULE} was imported but torch.ops._C.{OP_NAME} is not registered "
                "(a vllm-xpu-kernels build without it)")
    n = arity(op)
    if n not in _KNOWN_ARITIES:
        return f"torch.ops._C.{OP_NAME} has an unknown schema ({n} arguments): {op.default._schema}"
    if not torch._C._dispatch_has_kernel_for_dispatch_key(op.default.name(), "XPU"):
        return f"torch.ops._C.{OP_NAME} is registered without an XPU kernel (by another library?)"
    return None


def e8m0_bytes(scale_fp32: torch.Tensor) -> torch.Tensor:
    """E8M0 bytes of the kernel's float32 scales, from their bits (never `.to(float8_e8m0fnu)`).

    The kernel's scales are exp2(integer) in [2**-24, 2**120], or +Inf for a block holding an
    Inf. The byte is the fp32 exponent field, rounded by the top mantissa bit: for an exact
    power of two that is the exponent field itself; the rounding only matters if a device's
    exp2 were a few ulps off, where truncating 2**s * (1 - eps) would give s - 1 and halve the
    block on dequantization. +Inf and NaN (either sign) give 0xFF. (Domain: normal fp32, Inf,
    NaN; a few elementwise ops on the small scale tensor.)"""
    top9 = (scale_fp32.view(torch.int32) & 0x7FFFFFFF) >> 22  # exponent field, top mantissa bit
    return ((top9 + 1) >> 1).clamp_(max=0xFF).to(torch.uint8)


def quantize(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, scale_layout: str):
    guard = device_guard(x.device)  # the kernel launches on the current XPU device
    if guard is not None:
        with guard:
            return quantize(x, dtype, scale_mode, scale_layout)
    shape = x.shape
    k = shape[-1]
    rows = math.prod(shape[:-1])
    cols = k // BLOCK
    x = x.contiguous()  # the kernel requires it (TORCH_CHECK(input.is_contiguous()))
    if x.data_ptr() % 16:
        # Its absmax loop reads 4 elements at a time through a vector pointer with no alignment
        # check (thread_max_vec): a contiguous view starting mid-row (x.view(-1)[1:65]) is copied.
        x = x.clone()
    data = torch.empty(shape, dtype=dtype, device=x.device)
    if rows * cols == 0:
        scale_bytes = torch.empty((rows, cols), dtype=torch.uint8, device=x.device)
    else:
        op, nargs = _kernel()
        # 2-D row-major scales: the kernel writes group g's scale at flat index g (it checks
        # output_s.dim() == 2 and would write column-major if stride(0) < stride(1)).
        scale_fp32 = torch.empty((rows, cols), dtype=torch.float32, device=x.device)
        fin = torch.finfo(dtype)
        extra = [False, False] if nargs == 10 else []  # dummy_is_scale_transposed, dummy_is_tma_aligned
        if rows * cols <= MAX_GROUPS_PER_CALL:
            op(x, data, scale_fp32, BLOCK, EPS, fin.min, fin.max, True, *extra)
        else:  # the kernel counts groups in a C int: row chunks (contiguous views)
            x2, d2 = x.view(rows, k), data.view(rows, k)
            step = max(1, MAX_GROUPS_PER_CALL // cols)
            for r in range(0, rows, step):
                op(x2[r:r + step], d2[r:r + step], scale_fp32[r:r + step], BLOCK, EPS, fin.min, fin.max, True, *extra)
        scale_bytes = e8m0_bytes(scale_fp32)
    if scale_layout == "swizzled":
        scale = layouts.swizzle(scale_bytes)
    else:
        scale = scale_bytes.reshape(*shape[:-1], cols)
    return data, scale.view(torch.float8_e8m0fnu)


DEVIATIONS = (
    Deviation("zero-block-scale",
              "an all-zero block gets the kernel's minimum scale, 2**-17 for e4m3 (byte 110) or 2**-24 for "
              "e5m2 (byte 103), instead of byte 0; its elements are still +-0, so it dequantizes to the "
              "same zeros"),
    Deviation("min-scale",
              "the scale never goes below 2**-17 (e4m3) / 2**-24 (e5m2): a nonzero block whose largest "
              "magnitude is at most 1.75 * 2**-10 (about 0.0017) gets that scale instead of its rceil "
              "one, so its elements keep fewer significant bits and the smallest flush to zero"),
    Deviation("approx-scale",
              "the exponent is ceil(log2(amax / M)) in fp32 arithmetic, not read from amax's bits: for "
              "fp32 input whose amax lies up to about 40 ulps above M * 2**k (|k| >= 4), log2 rounds to "
              "k and the block gets scale 2**k instead of 2**(k+1); its largest element then saturates "
              "to +-M and the others keep one more bit"),
    Deviation("nan-ignored",
              "a NaN does not make the block's scale 0xFF: the scale comes from the block's other values "
              "and each NaN element becomes +M (0x7E e4m3, 0x7B e5m2), whatever its sign"),
    Deviation("inf-elements",
              "a block holding an Inf gets scale byte 0xFF as the contract says, but its elements are "
              "+-0 for finite values and +M for the Infs rather than 0x7F; dequantization still gives "
              "NaN for the whole block"),
)


backend = Backend(
    name="xpu",
    capabilities=Capabilities(
        devices=frozenset({"xpu"}),
        element_dtypes=frozenset(ELEMENT_FORMATS),
        scale_modes=frozenset({"rceil"}),
        scale_layouts=frozenset({"linear", "swizzled"}),
        input_dtypes=frozenset(INPUT_DTYPES),
    ),
    probe=probe,
    quantize=quantize,
    dequantize=None,
    # Above triton (50): the vendor's native SYCL kernel. With its deviations it is chosen
    # automatically only where the caller allows them (MXQUANT_ALLOW_DEVIATIONS=xpu), and
    # allowing them is read as asking for it; otherwise the bit-exact triton backend serves XPU.
    priority=80,
    deviations=DEVIATIONS,
    description=("Intel's SYCL kernel per_token_group_fp8_quant from vllm-xpu-kernels (what vLLM uses "
                 "for MXFP8 on XPU); rceil only; differs from the contract on special blocks"),
    install_hint="pip install vllm-xpu-kernels (built against one torch XPU release; or, from an mxquant checkout, pip install -e '.[xpu]')",
)
