"""Argument validation shared by the public functions, the custom ops and their fakes.

Every check runs before any output is allocated, so bad input never leaves anything half
written. Errors name the argument and the accepted values.
"""

from __future__ import annotations

import math

import torch

from .formats import BLOCK, ELEMENT_FORMATS, INPUT_DTYPES, OUTPUT_DTYPES, SCALE_LAYOUTS, SCALE_MODES, describe_dtype
from .layouts import layout_of, public_scale_shape, swizzled_scale_shape

_NAMES_IN = ", ".join(describe_dtype(d) for d in INPUT_DTYPES)
_NAMES_ELEM = ", ".join(describe_dtype(d) for d in ELEMENT_FORMATS)


def _choice(name: str, value, accepted, call: str = "") -> None:
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{call + ': ' if call else ''}{name}={value!r} is not supported; accepted values: "
                         f"{', '.join(map(repr, accepted))}")


def check_dense(name: str, t: torch.Tensor, call: str = "") -> None:
    """A strided (dense) tensor: sparse, MKLDNN and nested tensors have no strides for the kernels
    to read, and torch's own errors for them differ from backend to backend."""
    if t.layout != torch.strided or t.is_nested:
        what = "a nested tensor" if t.is_nested else f"layout {t.layout}"
        fix = "" if t.is_nested else f" ({name}.to_dense() converts it)"
        raise TypeError(f"{call + ': ' if call else ''}{name} has {what}; mxquant takes dense "
                        f"(torch.strided) tensors{fix}")


def _check_backend_name(backend, call: str = "") -> None:
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"{call + ': ' if call else ''}backend must be a backend name (str) or None, "
                        f"got {type(backend).__name__}")


def check_quantize(x, dtype, scale_mode, scale_layout, backend=None, call: str = "mxfp8_quantize") -> None:
    """Errors begin with `call`, the public call they belong to."""
    _check_arguments(x, dtype, scale_mode, scale_layout, backend, call)
    if x.dim() == 0:
        raise ValueError(f"{call}: x must have at least one dimension (blocks run along the last one)")
    if x.shape[-1] % BLOCK:
        raise ValueError(f"{call}: x.shape[-1] = {x.shape[-1]} must be a multiple of {BLOCK} (x.shape = {tuple(x.shape)})")


def _check_arguments(x, dtype, scale_mode, scale_layout, backend, call: str = "mxfp8_quantize") -> None:
    """Everything of check_quantize but the shape; errors begin with `call`."""
    _check_backend_name(backend, call)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{call}: x must be a torch.Tensor, got {type(x).__name__}")
    check_dense("x", x, call)
    if x.dtype not in INPUT_DTYPES:
        raise TypeError(f"{call}: x has dtype {describe_dtype(x.dtype)}; accepted: {_NAMES_IN}")
    if dtype not in ELEMENT_FORMATS:
        raise TypeError(f"{call}: dtype={dtype!r} is not an MXFP8 element dtype; accepted: torch.{_NAMES_ELEM.replace(', ', ', torch.')}")
    _choice("scale_mode", scale_mode, SCALE_MODES, call)
    _choice("scale_layout", scale_layout, SCALE_LAYOUTS, call)


def check_dequantize(data, scale, scale_layout, out_dtype, backend=None, call: str = "mxfp8_dequantize") -> None:
    """Errors begin with `call`."""
    _check_backend_name(backend, call)
    for name, t in (("data", data), ("scale", scale)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{call}: {name} must be a torch.Tensor, got {type(t).__name__}")
        check_dense(name, t, call)
    if data.dtype not in ELEMENT_FORMATS:
        raise TypeError(f"{call}: data has dtype {describe_dtype(data.dtype)}; accepted: {_NAMES_ELEM}")
    if scale.dtype != torch.float8_e8m0fnu:
        hint = " (view uint8 scale bytes with .view(torch.float8_e8m0fnu))" if scale.dtype == torch.uint8 else ""
        raise TypeError(f"{call}: scale has dtype {describe_dtype(scale.dtype)}; it must be float8_e8m0fnu{hint}")
    if out_dtype not in OUTPUT_DTYPES:
        raise TypeError(f"{call}: out_dtype={out_dtype!r} is not supported; accepted: {_NAMES_IN}")
    _choice("scale_layout", scale_layout, SCALE_LAYOUTS, call)
    if data.device != scale.device:
        raise ValueError(f"{call}: data is on {data.device} but scale is on {scale.device}; they must be on one device")
    if data.dim() == 0 or data.shape[-1] % BLOCK:
        raise ValueError(f"{call}: data.shape = {tuple(data.shape)}: the last dimension must be a multiple of {BLOCK}")
    want = public_scale_shape(tuple(data.shape), scale_layout)
    if tuple(scale.shape) != want:
        raise ValueError(f"{call}: " + _scale_shape_error(tuple(scale.shape), tuple(data.shape), scale_layout, want))


def _scale_shape_error(got, shape, layout, want, block: int = BLOCK, call: str = "mxfp8_quantize", shown=None) -> str:
    """Says what was expected and which layout the scale looks like, but never recommends a fix
    that would dequantize wrong bytes silently: where the shape fits two readings (the 2-D
    swizzled form is the linear shape when M % 128 == 0 and (K // 32) % 4 == 0; a flattened
    linear scale then has the swizzled length), it says so and how to tell them apart. `shape`
    is the unpacked data shape; `shown` the one to name (packed FP4 data: half the last dim)."""
    shown = shape if shown is None else shown
    rows, cols = swizzled_scale_shape(math.prod(shape[:-1]), shape[-1], block)
    linear = public_scale_shape(shape, "linear", block)
    if layout == "linear":
        msg = f"scale.shape = {got} does not match data.shape = {shown}; linear layout needs {want}"
    else:
        msg = (f"scale.shape = {got} does not match data.shape = {shown}; the swizzled layout needs a 1-D "
               f"tensor of {want[0]} bytes (round_up(M, 128) * round_up(K // {block}, 4) = {rows} * {cols})")
    two_d = got == (rows, cols)
    if two_d and got == linear:  # only reachable with scale_layout="swizzled"
        return msg + (f"; {got} is ambiguous here: it is both the 2-D swizzled form backends use and the "
                      "linear layout's shape, so the shape cannot tell which layout the bytes are in: if they "
                      f"are swizzled (a backend's 2-D scale), pass scale.reshape(-1); if {call} returned "
                      "them with scale_layout='linear', pass scale_layout='linear' (the wrong one of the two "
                      "dequantizes wrong values without an error)")
    if two_d and got == (math.prod(shape[:-1]), shape[-1] // block):  # N-D data: its linear scale flattened
        swz = "scale.reshape(-1)" + ("" if layout == "swizzled" else " with scale_layout='swizzled'")
        lin = f"scale.reshape{linear}" + ("" if layout == "linear" else " with scale_layout='linear'")
        return msg + (f"; {got} is ambiguous here: it is both the 2-D swizzled form backends use and the "
                      "linear layout's shape for this data flattened to 2-D, so the shape cannot tell which "
                      f"layout the bytes are in: if they are swizzled (a backend's 2-D scale), pass {swz}; if "
                      f"{call} returned them with scale_layout='linear' for the 2-D data, pass {lin} (the wrong "
                      "one of the two dequantizes wrong values without an error)")
    other = layout_of(got, shape, block)
    if other == "swizzled" and math.prod(linear) == rows * cols:
        return msg + (f"; this scale has the swizzled layout's shape: pass scale_layout='swizzled' (unless it "
                      f"is a linear scale flattened by hand, which has the same length here: then pass "
                      f"scale.reshape{linear})")
    if other is not None:
        return msg + f"; this scale has the {other} layout's shape: pass scale_layout={other!r}"
    if two_d:
        fix = "scale.reshape(-1)" + ("" if layout == "swizzled" else " with scale_layout='swizzled'")
        return msg + f"; this is the 2-D swizzled form backends use: pass {fix}"
    return msg
