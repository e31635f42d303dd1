"""Argument validation of the MXFP4 / NVFP4 calls (docs/semantics.md, "MXFP4 and NVFP4"), shared by
their public functions, custom ops and fakes: one-line errors, raised before anything is
allocated. Scale-shape errors say which layout a scale looks like, as for MXFP8 (checks.py)."""

from __future__ import annotations

import torch

from .checks import _check_backend_name, _choice, _scale_shape_error, check_dense
from .formats import (INPUT_DTYPES, MXFP4_BLOCK, MXFP4_SCALE_MODES, NVFP4_BLOCK, NVFP4_SCALE_MODES, OUTPUT_DTYPES,
                      SCALE_LAYOUTS, describe_dtype)
from .layouts import public_scale_shape

_NAMES_IN = ", ".join(describe_dtype(d) for d in INPUT_DTYPES)
FORMATS = {"mxfp4": (MXFP4_BLOCK, MXFP4_SCALE_MODES, torch.float8_e8m0fnu),
           "nvfp4": (NVFP4_BLOCK, NVFP4_SCALE_MODES, torch.float8_e4m3fn)}
"""format -> (elements per scale, scale modes, scale dtype)."""


def check_quantize(fmt: str, x, scale_mode, scale_layout, backend, global_scale=None) -> None:
    block, modes, _ = FORMATS[fmt]
    call = f"{fmt}_quantize"
    _check_backend_name(backend, call)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{call}: x must be a torch.Tensor, got {type(x).__name__}")
    check_dense("x", x, call)
    if x.dtype not in INPUT_DTYPES:
        raise TypeError(f"{call}: x has dtype {describe_dtype(x.dtype)}; accepted: {_NAMES_IN}")
    _choice("scale_mode", scale_mode, modes, call)
    _choice("scale_layout", scale_layout, SCALE_LAYOUTS, call)
    if x.dim() == 0:
        raise ValueError(f"{call}: x must have at least one dimension (blocks run along the last one)")
    if x.shape[-1] % block:
        raise ValueError(f"{call}: x.shape[-1] = {x.shape[-1]} must be a multiple of {block} (x.shape = {tuple(x.shape)})")
    if global_scale is not None:
        check_global_scale(call, global_scale, x.device)


def check_global_scale(call: str, g, device) -> None:
    """A float32 tensor of one element on `device`; its value (finite, > 0) is read only on the
    CPU, where that costs no synchronisation."""
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{call}: global_scale must be a float32 torch.Tensor of one element, got {type(g).__name__}")
    check_dense("global_scale", g, call)
    if g.dtype != torch.float32:
        raise TypeError(f"{call}: global_scale has dtype {describe_dtype(g.dtype)}; it must be float32")
    if g.numel() != 1 or g.dim() > 1:
        raise ValueError(f"{call}: global_scale must hold one value (shape (1,) or ()), got shape {tuple(g.shape)}")
    if g.device != device:
        raise ValueError(f"{call}: global_scale is on {g.device} but the data is on {device}; they must be on one device")
    if device.type == "cpu" and not g.is_meta and not _fake(g):
        v = float(g.reshape(()))
        if not (v > 0 and v != float("inf")):
            raise ValueError(f"{call}: global_scale = {v} must be finite and positive")


def _fake(t) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(t)


def check_dequantize(fmt: str, data, scale, scale_layout, out_dtype, backend, global_scale=None) -> None:
    block, _, scale_dtype = FORMATS[fmt]
    call = f"{fmt}_dequantize"
    _check_backend_name(backend, call)
    for name, t in (("data", data), ("scale", scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{call}: {name} must be a torch.Tensor, got {type(t).__name__}")
        check_dense(name, t, call)
    if data.dtype != torch.uint8:
        hint = " (view float4_e2m1fn_x2 data with .view(torch.uint8))" if data.dtype == torch.float4_e2m1fn_x2 else ""
        raise TypeError(f"{call}: data has dtype {describe_dtype(data.dtype)}; it must be uint8, two e2m1 "
                        f"values a byte{hint}")
    if scale.dtype != scale_dtype:
        hint = f" (view uint8 scale bytes with .view(torch.{describe_dtype(scale_dtype)}))" if scale.dtype == torch.uint8 else ""
        raise TypeError(f"{call}: scale has dtype {describe_dtype(scale.dtype)}; it must be "
                        f"{describe_dtype(scale_dtype)}{hint}")
    if out_dtype not in OUTPUT_DTYPES:
        raise TypeError(f"{call}: out_dtype={out_dtype!r} is not supported; accepted: {_NAMES_IN}")
    _choice("scale_layout", scale_layout, SCALE_LAYOUTS, call)
    if data.device != scale.device:
        raise ValueError(f"{call}: data is on {data.device} but scale is on {scale.device}; they must be on one device")
    if data.dim() == 0 or (2 * data.shape[-1]) % block:
        raise ValueError(f"{call}: data.shape = {tuple(data.shape)}: the last dimension (packed, two values a "
                         f"byte) must be a multiple of {block // 2}")
    shape = (*data.shape[:-1], 2 * data.shape[-1])
    want = public_scale_shape(shape, scale_layout, block)
    if tuple(scale.shape) != want:
        raise ValueError(f"{call}: " + _scale_shape_error(tuple(scale.shape), shape, scale_layout, want, block,
                                                          f"{fmt}_quantize", tuple(data.shape)))
    if fmt == "nvfp4":
        if global_scale is None:
            raise TypeError(f"{call}: global_scale is required (the one nvfp4_quantize returned)")
        check_global_scale(call, global_scale, data.device)
