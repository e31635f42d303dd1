"""The MXFP4 and NVFP4 calls (docs/semantics.md, "MXFP4 and NVFP4"): mxfp4_quantize /
mxfp4_dequantize and nvfp4_quantize / nvfp4_dequantize.

The same path as ops.py: public function -> custom op (`mxquant::mxfp4_quantize`, ..., defined
in custom_ops_fp4.py and registered on first lookup, lazy_ops.py) and its fake -> argument
checks (checks_fp4.py; a repeated signature skips those it pins, call_path.checked_outputs) ->
the backend the registry resolves for the op (only one that claims it in Capabilities.ops,
backend.FP4_OPS) -> its outputs checked against the contract's shapes (every backend: no kernel
is exempted) -> swizzled scales flattened."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .call_path import CALL_ERRORS, _eager, _raised, dispatch, checked_outputs, input_versions, output_problem
from .checks_fp4 import check_dequantize, check_global_scale, check_quantize
from .errors import BackendOutputError
from .formats import MXFP4_BLOCK, NVFP4_BLOCK, describe_dtype
from .layouts import scale_shape, to_backend, to_public
from .outputs import is_own, owner
from .registry import get_registry
from .selection import overrides

_E2M1 = torch.float4_e2m1fn_x2  # the element dtype in the registry's call key (the data is uint8)
_E8M0, _E4M3, _U8, _F32 = torch.float8_e8m0fnu, torch.float8_e4m3fn, torch.uint8, torch.float32


class MXFP4Quantized(NamedTuple):
    data: torch.Tensor
    """uint8 (*x.shape[:-1], K // 2): two e2m1 values a byte, element 2j in the low nibble
    (`.view(torch.float4_e2m1fn_x2)` is the same bytes)."""
    scale: torch.Tensor
    """E8M0 (float8_e8m0fnu), one per 32 elements: linear (*x.shape[:-1], K // 32), or swizzled: 1-D
    of round_up(M, 128) * round_up(K // 32, 4) bytes (the shapes never coincide)."""


class NVFP4Quantized(NamedTuple):
    data: torch.Tensor
    """uint8 (*x.shape[:-1], K // 2), packed as MXFP4Quantized.data."""
    scale: torch.Tensor
    """float8_e4m3fn, one per 16 elements: linear (*x.shape[:-1], K // 16), or swizzled: 1-D of
    round_up(M, 128) * round_up(K // 16, 4) bytes."""
    global_scale: torch.Tensor
    """float32 (1,): the per-tensor scale g; an element's value is e2m1 * (scale / g)."""


def mxfp4_quantize(x: torch.Tensor, *, scale_mode: str = "rceil", scale_layout: str = "linear",
                   backend: Optional[str] = None) -> MXFP4Quantized:
    """MXFP4: e2m1 elements, one E8M0 scale per 32 along the last dimension.
    scale_mode: "rceil" (default, never saturates), "floor" (OCP MX v1.0) or "compressed-tensors"
    (llm-compressor's MXFP4 checkpoints); scale_layout: "linear" or "swizzled" (128x4)."""
    if _eager(x):
        return MXFP4Quantized(*run_mxfp4_quantize(x, scale_mode, scale_layout, backend))
    op = lambda: torch.ops.mxquant.mxfp4_quantize(x, scale_mode, scale_layout, backend)  # noqa: E731
    return MXFP4Quantized(*dispatch(op, check_quantize, "mxfp4", x, scale_mode, scale_layout, backend))


def mxfp4_dequantize(data: torch.Tensor, scale: torch.Tensor, *, scale_layout: str = "linear",
                     out_dtype: torch.dtype = torch.bfloat16, backend: Optional[str] = None) -> torch.Tensor:
    """e2m1 * 2**(scale - 127) per block of 32, rounded once to out_dtype; NaN where the scale is 0xFF."""
    if _eager(data) and _eager(scale):
        return run_mxfp4_dequantize(data, scale, scale_layout, out_dtype, backend)
    op = lambda: torch.ops.mxquant.mxfp4_dequantize(data, scale, scale_layout, out_dtype, backend)  # noqa: E731
    return dispatch(op, check_dequantize, "mxfp4", data, scale, scale_layout, out_dtype, backend)


def nvfp4_quantize(x: torch.Tensor, global_scale: Optional[torch.Tensor] = None, *,
                   scale_mode: str = "compressed-tensors", scale_layout: str = "linear",
                   backend: Optional[str] = None) -> NVFP4Quantized:
    """NVFP4: e2m1 elements, one float8_e4m3fn scale per 16 along the last dimension, and a float32
    per-tensor global scale g. global_scale None: g = 448 * 6 / amax(x) as compressed-tensors
    computes it; or pass one (float32, one element; e.g. shared by fused q/k/v weights)."""
    if _eager(x) and (global_scale is None or _eager(global_scale)):
        return NVFP4Quantized(*run_nvfp4_quantize(x, global_scale, scale_mode, scale_layout, backend))
    op = lambda: torch.ops.mxquant.nvfp4_quantize(x, global_scale, scale_mode, scale_layout, backend)  # noqa: E731
    return NVFP4Quantized(*dispatch(op, check_quantize, "nvfp4", x, scale_mode, scale_layout, backend, global_scale))


def nvfp4_dequantize(data: torch.Tensor, scale: torch.Tensor, global_scale: torch.Tensor, *,
                     scale_layout: str = "linear", out_dtype: torch.dtype = torch.bfloat16,
                     backend: Optional[str] = None) -> torch.Tensor:
    """e2m1 * (scale / global_scale) per group of 16 (quotient and product in fp32), rounded to out_dtype."""
    if _eager(data) and _eager(scale) and _eager(global_scale):
        return run_nvfp4_dequantize(data, scale, global_scale, scale_layout, out_dtype, backend)
    args = (data, scale, global_scale, scale_layout, out_dtype, backend)
    return dispatch(lambda: torch.ops.mxquant.nvfp4_dequantize(*args),
                    check_dequantize, "nvfp4", data, scale, scale_layout, out_dtype, backend, global_scale)


# ---- run_*: checks, resolution, the backend, its outputs checked ------------------------------

def packed_shape(shape: tuple) -> tuple:
    return (*shape[:-1], shape[-1] // 2)


def unpacked_shape(shape: tuple) -> tuple:
    return (*shape[:-1], 2 * shape[-1])


def run_mxfp4_quantize(x, scale_mode, scale_layout, backend):
    want = checked_outputs("mxfp4_quantize", x, _E2M1, scale_mode, scale_layout, backend,
                           lambda: check_quantize("mxfp4", x, scale_mode, scale_layout, backend),
                           lambda: _outputs(tuple(x.shape), scale_layout, MXFP4_BLOCK, _E8M0))
    data, scale = _call("mxfp4_quantize", x, x.dtype, scale_mode, scale_layout, backend, want,
                        (x, scale_mode, scale_layout))
    return data, to_public(scale, scale_layout)


def run_nvfp4_quantize(x, global_scale, scale_mode, scale_layout, backend):
    want = checked_outputs("nvfp4_quantize", x, _E2M1, scale_mode, scale_layout, backend,
                           lambda: check_quantize("nvfp4", x, scale_mode, scale_layout, backend),
                           lambda: _outputs(tuple(x.shape), scale_layout, NVFP4_BLOCK, _E4M3)
                           + [("global_scale", (1,), _F32)])
    if global_scale is not None:  # a tensor argument (its value read on the CPU): checked at every call
        check_global_scale("nvfp4_quantize", global_scale, x.device)
    data, scale, g = _call("nvfp4_quantize", x, x.dtype, scale_mode, scale_layout, backend, want,
                           (x, global_scale, scale_mode, scale_layout))
    return data, to_public(scale, scale_layout), g


def _outputs(shape: tuple, scale_layout: str, block: int, scale_dtype) -> list:
    return [("data", packed_shape(shape), _U8), ("scale", scale_shape(shape, scale_layout, block), scale_dtype)]


def run_mxfp4_dequantize(data, scale, scale_layout, out_dtype, backend):
    check_dequantize("mxfp4", data, scale, scale_layout, out_dtype, backend)
    shape = unpacked_shape(tuple(data.shape))
    scale = to_backend(scale, shape, scale_layout, MXFP4_BLOCK)
    return _call("mxfp4_dequantize", data, out_dtype, None, scale_layout, backend, [("output", shape, out_dtype)],
                 (data, scale, scale_layout, out_dtype))[0]


def run_nvfp4_dequantize(data, scale, global_scale, scale_layout, out_dtype, backend):
    check_dequantize("nvfp4", data, scale, scale_layout, out_dtype, backend, global_scale)
    shape = unpacked_shape(tuple(data.shape))
    scale = to_backend(scale, shape, scale_layout, NVFP4_BLOCK)
    return _call("nvfp4_dequantize", data, out_dtype, None, scale_layout, backend, [("output", shape, out_dtype)],
                 (data, scale, global_scale, scale_layout, out_dtype))[0]


def _call(op, x, hp, scale_mode, scale_layout, backend, want, args):
    key = (op, x.device, hp, _E2M1, scale_mode, scale_layout, backend, *overrides())
    fn = get_registry().lookup(*key)
    inputs = tuple(a for a in args if isinstance(a, torch.Tensor))  # data, scale, global_scale too
    before = input_versions(inputs)
    try:
        out = fn(*args)
    except CALL_ERRORS as exc:
        raise _raised(fn, exc, op, x.device, before, input_versions(inputs))
    if len(want) == 1 and isinstance(out, torch.Tensor):
        out = (out,)
    problem = output_problem(out, want, inputs, before, is_own(fn))
    if problem:
        name, origin = owner(fn)
        raise BackendOutputError(name, origin, f"{op}({describe_dtype(x.dtype)} {tuple(x.shape)})", problem)
    return tuple(out)
