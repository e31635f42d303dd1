"""The call path: public functions -> custom ops (`mxquant::quantize`, `mxquant::dequantize`,
defined in custom_ops.py and registered on first lookup, lazy_ops.py) -> their fakes -> run_*
-> the backend the registry resolves.

Plain eager tensors that do not require grad skip the dispatcher (several microseconds);
fake, meta and subclass tensors, tensors that require grad and torch.compile go through the
custom ops, whose fakes return empty tensors of exactly the public dtypes, shapes and
contiguous strides, and whose autograd formula gives no gradient. Backends return the
swizzled scale 2-D; the public functions hand it out flat (layouts.to_public / to_backend).
"""

from __future__ import annotations

from typing import Optional

import torch

from .call_path import CALL_ERRORS, MXFP8Quantized, _eager, _raised, dispatch
from .checks import check_dequantize, check_quantize
from .checks_training import is_colwise
from .formats import BLOCK
from .layouts import to_backend, to_public
from .ops_training import quantize_colwise_call
from .outputs import check_outputs, is_own, versions
from .registry import get_registry
from .selection import overrides

_E8M0 = torch.float8_e8m0fnu


def mxfp8_quantize(
    x: torch.Tensor,
    dtype: torch.dtype = torch.float8_e4m3fn,
    *,
    scale_mode: str = "rceil",
    scale_layout: str = "linear",
    axis: int = -1,
    backend: Optional[str] = None,
) -> MXFP8Quantized:
    """Quantize `x` to MXFP8: blocks of 32 along the last dimension share one E8M0 scale.

    x: float32, bfloat16 or float16, any leading shape, last dimension a multiple of 32.
    dtype: torch.float8_e4m3fn (default) or torch.float8_e5m2.
    scale_mode: "rceil" (default; NVIDIA's rule, never saturates), "floor" (OCP MX v1.0) or
        "compressed-tensors" (llm-compressor's rule); docs/semantics.md.
    scale_layout: "linear" or "swizzled" (the 128x4 layout cuBLAS and FlashInfer use).
    axis: -1 (default) or -2: column-wise, blocks of 32 along dim -2 of x (..., M, K), M a
        multiple of 32; the result is byte-identical to mxfp8_quantize(x.mT.contiguous(), ...):
        data (..., K, M) (docs/semantics.md, "Column-wise").
    backend: force a backend by name (strict: an error, never a fallback, if it cannot run),
        as use_backend() and MXQUANT_BACKEND do (docs/env.md).
    """
    if is_colwise(x, axis, dtype, scale_mode, scale_layout, backend):
        return quantize_colwise_call(x, dtype, scale_mode, scale_layout, backend)
    if _eager(x):
        return _result(MXFP8Quantized, run_quantize(x, dtype, scale_mode, scale_layout, backend))
    data, scale = dispatch(lambda: torch.ops.mxquant.quantize(x, dtype, scale_mode, scale_layout, backend),
                           check_quantize, x, dtype, scale_mode, scale_layout, backend)
    return MXFP8Quantized(data, scale)


def mxfp8_dequantize(
    data: torch.Tensor,
    scale: torch.Tensor,
    *,
    scale_layout: str = "linear",
    out_dtype: torch.dtype = torch.bfloat16,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """data * 2**(scale - 127) per block, rounded once to `out_dtype`; NaN where the scale is 0xFF.

    scale: as mxfp8_quantize returned it for this `scale_layout` (swizzled: flat). A scale of
    the other layout's shape, or any other shape, is a ValueError saying which it looks like.
    backend: as for mxfp8_quantize; forcing a quantize-only backend leaves dequantize to
    automatic choice (for `backend=`, use_backend() and MXQUANT_BACKEND alike).
    """
    if _eager(data) and _eager(scale):
        return run_dequantize(data, scale, scale_layout, out_dtype, backend)
    return dispatch(lambda: torch.ops.mxquant.dequantize(data, scale, scale_layout, out_dtype, backend),
                    check_dequantize, data, scale, scale_layout, out_dtype, backend)


_STRIDED = torch.strided  # the cached paths take dense tensors only (checks.check_dense)
_result = tuple.__new__  # MXFP8Quantized from the (data, scale) pair: what its __new__ does, without the call (0.3 µs)


def run_quantize(x, dtype, scale_mode, scale_layout, backend):
    """Validated call through the registry. A cached signature was fully validated when it was
    resolved (dtypes, mode, layout, backend name), so a cache hit only checks the shape. Where
    an in-tree backend prepared a call for x's exact signature (its quantize's `prepare`: shape,
    strides, dtype, device, alignment), one key and one lookup lead to it (issue 22's eager
    small-M host time)."""
    registry = get_registry()
    prepared = ov = None
    if registry.prepared:  # only where an in-tree backend prepared calls (a CUDA process, say)
        try:
            ov = overrides()
            prepared = registry.cache.get(_prepared_key(x, dtype, scale_mode, scale_layout, backend, ov))
        except (AttributeError, TypeError, RuntimeError):  # not a tensor (a nested one has no strides), unhashable
            ov = None
        if prepared is not None:  # (x has strides: a strided tensor; sparse, mkldnn and nested ones have none)
            out = prepared(x)  # None: declined now (another current device), or always (_DECLINED)
            if out is not None:
                return out
    try:
        key = ("quantize", x.device, x.dtype, dtype, scale_mode, scale_layout, backend, *(ov or overrides()))
        fn = registry.cache.get(key)
    except (AttributeError, TypeError):  # not a tensor, or an unhashable argument: checks explain
        key = fn = None
    if fn is None or x.layout is not _STRIDED or x.is_nested or not x.dim() or x.shape[-1] % BLOCK:
        check_quantize(x, dtype, scale_mode, scale_layout, backend)
        fn = registry.lookup(*key)
    if is_own(fn):  # an in-tree kernel's own allocations (outputs.OWN_OUTPUTS)
        data, scale = fn(x, dtype, scale_mode, scale_layout)
        prepare = getattr(fn, "prepare", None)
        if prepare is not None and prepared is None:  # (one that declined this call stays)
            _prepare(registry, prepare, x, dtype, scale_mode, scale_layout, backend, key, fn)
    else:
        before = versions(x)
        try:
            out = fn(x, dtype, scale_mode, scale_layout)
        except CALL_ERRORS as exc:
            raise _raised(fn, exc, "mxfp8_quantize", x.device, before, versions(x))
        data, scale = check_outputs(fn, out, (x,), before, dtype, scale_layout)
    return data, to_public(scale, scale_layout)


_PREPARED = "prepared quantize"  # the first item of a prepared call's key in the registry's cache


def _prepared_key(x, dtype, scale_mode, scale_layout, backend, ov: tuple) -> tuple:
    """A prepared call's key: x's signature (shape, strides, device, dtype, 16-byte alignment),
    the call's arguments and the overrides (selection.overrides())."""
    return (_PREPARED, x.shape, x.stride(), x.device, x.dtype, x.data_ptr() % 16 == 0, dtype, scale_mode,
            scale_layout, backend, *ov)


def _DECLINED(x):
    """Cached where the backend prepared no call for a signature: the full call serves it, and it
    is not asked again at every call (Triton without the raw launch, an input copied first)."""
    return None


def _prepare(registry, prepare, x, dtype, scale_mode, scale_layout, backend, key, fn) -> None:
    """Cache the backend's prepared call for x's signature, if it offers one."""
    try:
        pkey = _prepared_key(x, dtype, scale_mode, scale_layout, backend, key[7:])
    except (AttributeError, TypeError, RuntimeError):
        return
    call = prepare(x, dtype, scale_mode, scale_layout)
    registry.remember_derived(pkey, _DECLINED if call is None else call, key, fn)


_VALID_SCALE_SHAPES: dict = {}
"""(data.shape, scale_layout) -> the public scale shape, for data shapes check_dequantize passed."""


def run_dequantize(data, scale, scale_layout, out_dtype, backend):
    """Validated call through the registry. As for run_quantize, a cached signature (data's dtype
    and device, out_dtype, layout, backend name) was fully validated when it was resolved, so a
    cache hit checks only what can differ per call: scale's dtype, device and shape against data's."""
    try:
        key = ("dequantize", data.device, out_dtype, data.dtype, None, scale_layout, backend, *overrides())
        fn = get_registry().cache.get(key)
        valid = (fn is not None and scale.dtype is _E8M0 and scale.device == data.device
                 and data.layout is _STRIDED and scale.layout is _STRIDED and not (data.is_nested or scale.is_nested)
                 and scale.shape == _VALID_SCALE_SHAPES.get((data.shape, scale_layout)))
    except (AttributeError, TypeError, RuntimeError):  # not tensors (a nested one has no shape): checks explain
        valid = False
    if not valid:
        check_dequantize(data, scale, scale_layout, out_dtype, backend)
        if len(_VALID_SCALE_SHAPES) > 4096:
            _VALID_SCALE_SHAPES.clear()
        _VALID_SCALE_SHAPES[data.shape, scale_layout] = scale.shape
        fn = None
    return dequantize_checked(data, scale, scale_layout, out_dtype, backend, fn)


def dequantize_checked(data, scale, scale_layout, out_dtype, backend, fn=None):
    """run_dequantize after its argument checks (mxfp8_fake_quantize's second half: its
    arguments are run_quantize's outputs); `fn`: the backend function, where already resolved."""
    if fn is None:
        key = ("dequantize", data.device, out_dtype, data.dtype, None, scale_layout, backend, *overrides())
        fn = get_registry().lookup(*key)
    scale = to_backend(scale, tuple(data.shape), scale_layout)  # backends take swizzled 2-D
    if is_own(fn):
        return fn(data, scale, scale_layout, out_dtype)
    before = versions(data, scale)
    try:
        out = fn(data, scale, scale_layout, out_dtype)
    except CALL_ERRORS as exc:
        raise _raised(fn, exc, "mxfp8_dequantize", data.device, before, versions(data, scale))
    return check_outputs(fn, out, (data, scale), before, out_dtype, scale_layout)
