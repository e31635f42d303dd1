"""Backends' outputs against the backend contract, before they reach the caller.

ops.run_quantize / run_dequantize call `check_outputs` right after every backend but the
in-tree kernels of OWN_OUTPUTS (below), whose outputs tests/test_own_outputs.py checks instead: quantize must
return a tuple (data, scale) with data of x's shape and the element dtype, scale of
`layouts.scale_shape(x.shape, layout)` (the backend form: 2-D for "swizzled") in
float8_e8m0fnu; dequantize one tensor of data's shape in out_dtype. Every output lies on the
input's device, is contiguous, and the inputs are not written (their version counters did not
move; a write outside torch's view, e.g. by a raw kernel, is for `mxquant verify`, which
compares copies). The fast path is a few attribute reads; only a violation builds a message.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .errors import BackendOutputError
from .formats import describe_dtype
from .layouts import scale_shape

_E8M0 = torch.float8_e8m0fnu
OWN_OUTPUTS: dict = {}
"""id -> quantize / dequantize (and training / FP4 op) function of the in-tree backends that
allocate their outputs themselves (by id: a plugin's callable need not be hashable)
(triton, cpu-native, cpu-eager, cpu): ops.py skips the per-call check for them, since their
outputs are fixed by their own code and pinned by the test suite (every output of the
conformance cases is checked by tests/test_backend_outputs.py). Outputs that come from
another library (the flashinfer and xpu backends) or from a plugin are checked on every call."""


def own_outputs(backend):
    """Mark an in-tree Backend as allocating its own outputs (see OWN_OUTPUTS); returns it."""
    from .backend import CLAIMABLE_OPS

    fns = (backend.quantize, backend.dequantize, *(getattr(backend, op) for op in CLAIMABLE_OPS))
    OWN_OUTPUTS.update((id(fn), fn) for fn in fns if fn is not None)
    return backend


def is_own(fn) -> bool:
    """`fn` is an in-tree kernel that allocates its own outputs (OWN_OUTPUTS)."""
    return OWN_OUTPUTS.get(id(fn)) is fn


def aliasing(outs, inputs) -> Optional[str]:
    """What an output shares memory with, if any is a view of an input's storage (inputs are
    read-only, and an output must not change when the caller later writes its input)."""
    held = {}
    for i, t in enumerate(inputs):
        if isinstance(t, torch.Tensor) and t.numel():
            held[t.untyped_storage().data_ptr()] = i
    for o in outs:
        if isinstance(o, torch.Tensor) and o.numel():
            i = held.get(o.untyped_storage().data_ptr())
            if i is not None:
                return f"an output shares memory with input {i} (a view of it; outputs must be new tensors)"
    return None


def byte_span(t: torch.Tensor) -> tuple[int, int]:
    """[start, end) of the bytes a tensor's elements occupy."""
    start = t.data_ptr()
    last = sum((n - 1) * st for n, st in zip(t.shape, t.stride()) if n > 0)
    return start, start + (last + 1) * t.element_size()


def disjoint(outs) -> bool:
    """The fast path's test for contiguous outputs: no two share a byte (a few reads each)."""
    if len(outs) == 2:
        a, b = outs
        a0, b0 = a.data_ptr(), b.data_ptr()
        return a0 + a.nbytes <= b0 or b0 + b.nbytes <= a0 or not a.nbytes or not b.nbytes
    return overlapping(outs) is None


def overlapping(outs) -> Optional[str]:
    """Which two outputs of one call share bytes, if any (each must be a tensor of its own)."""
    spans = [(i, byte_span(o)) for i, o in enumerate(outs) if isinstance(o, torch.Tensor) and o.numel()]
    for n, (i, (a0, a1)) in enumerate(spans):
        for j, (b0, b1) in spans[n + 1:]:
            if a0 < b1 and b0 < a1:
                return f"outputs {i} and {j} share memory (each output must be a tensor of its own)"
    return None


_SCALE_SHAPES: dict = {}
"""(x.shape, layout) -> expected scale shape, so a repeated shape costs one dict lookup."""


def versions(x: torch.Tensor, scale: Optional[torch.Tensor] = None):
    """The inputs' version counters; None for inference tensors, which keep none (asked first:
    reading one raises, and a caught exception would cost ~100 times the read)."""
    if scale is None:
        return None if x.is_inference() else x._version
    return None if x.is_inference() or scale.is_inference() else (x._version, scale._version)


def _scale_shape(shape: torch.Size, layout: str) -> torch.Size:
    key = (shape, layout)
    want = _SCALE_SHAPES.get(key)
    if want is None:
        if len(_SCALE_SHAPES) > 4096:
            _SCALE_SHAPES.clear()
        want = _SCALE_SHAPES[key] = torch.Size(scale_shape(tuple(shape), layout))
    return want


def check_outputs(fn: Callable, out, inputs: tuple, before, dtype: torch.dtype, layout: str):
    """`out` if it honours the contract, else BackendOutputError naming the backend behind
    `fn` and what is wrong. inputs: (x,) for quantize (dtype: the element dtype), (data,
    scale) for dequantize (dtype: out_dtype); before: `versions(*inputs)` taken before the call."""
    x = inputs[0]
    shape, device = x.shape, x.device
    try:  # the fast path: attribute reads and one dict lookup, no call (each costs on every call)
        if len(inputs) == 1:
            data, scale = out if type(out) is tuple else ((), ())
            if (data.dtype is dtype and scale.dtype is _E8M0 and data.shape == shape and plain(data) and plain(scale)
                    and scale.shape == _SCALE_SHAPES[shape, layout] and data.device == device
                    and scale.device == device and data.is_contiguous() and scale.is_contiguous()
                    and (before is None or before == x._version) and aliasing(out, inputs) is None
                    and disjoint(out)):
                return out
        elif (out.dtype is dtype and out.shape == shape and out.device == device and out.is_contiguous() and plain(out)
              and (before is None or before == versions(*inputs)) and aliasing((out,), inputs) is None):
            return out
    except Exception:  # a non-tensor, a shape not yet in _SCALE_SHAPES, ...: the slow path below decides
        pass
    problem = _problem(out, inputs, before, dtype, layout)
    if problem is None:  # conforming after all: a shape seen first, a list for a tuple, ...
        return tuple(out) if len(inputs) == 1 else out
    name, origin = owner(fn)
    what = "quantize" if len(inputs) == 1 else "dequantize"
    call = f"mxfp8_{what}({describe_dtype(x.dtype)} {tuple(shape)} -> {describe_dtype(dtype)}, {layout})"
    raise BackendOutputError(name, origin, call, problem)


def _problem(out, inputs, before, dtype, layout) -> Optional[str]:
    x = inputs[0]
    if len(inputs) == 1:
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            size = f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""
            return f"quantize returned a {type(out).__name__}{size}, expected a tuple (data, scale)"
        problem = (tensor_problem("data", out[0], x.shape, dtype, x.device)
                   or tensor_problem("scale", out[1], _scale_shape(x.shape, layout), _E8M0, x.device))
    else:
        problem = tensor_problem("the output", out, x.shape, dtype, x.device)
    problem = problem or aliasing(out if len(inputs) == 1 else (out,), inputs) or (
        overlapping(out) if len(inputs) == 1 else None)
    if problem or before is None or before == versions(*inputs):
        return problem
    after = versions(*inputs)
    changed = ["x"] if len(inputs) == 1 else [n for n, b, a in zip(("data", "scale"), before, after) if b != a]
    return f"it wrote into its input {' and '.join(changed)} (inputs are read-only)"


def plain(t: torch.Tensor) -> bool:
    """No gradient, not an inference tensor (the fast path's test; tensor_problem says which)."""
    return not t.requires_grad and (not t.is_inference() or torch.is_inference_mode_enabled())


def tensor_problem(what: str, t, shape, dtype, device) -> Optional[str]:
    if not isinstance(t, torch.Tensor):
        return f"{what} is a {type(t).__name__}, not a torch.Tensor"
    if t.dtype is not dtype:
        return f"{what} has dtype {describe_dtype(t.dtype)}, expected {describe_dtype(dtype)}"
    if t.shape != shape:
        return f"{what} has shape {tuple(t.shape)}, expected {tuple(shape)}"
    if t.device != device:
        return f"{what} is on device {t.device}, expected {device} (the input's)"
    if not t.is_contiguous():
        return f"{what} is not contiguous (strides {t.stride()} for shape {tuple(t.shape)})"
    if t.requires_grad:
        return f"{what} requires grad (mxquant's outputs carry no gradient: return it detached)"
    if t.is_inference() and not torch.is_inference_mode_enabled():
        return (f"{what} is an inference tensor, made under torch.inference_mode() though the call was not "
                "(autograd cannot save it for backward)")
    return None


def owner(fn) -> tuple[str, str]:
    """(name, origin) of the registered backend whose quantize or dequantize `fn` is."""
    from .registry import get_registry

    from .backend import CLAIMABLE_OPS

    for entry in get_registry().entries():
        b = entry.backend
        if b is not None and any(getattr(b, op) is fn for op in ("quantize", "dequantize", *CLAIMABLE_OPS)):
            return entry.name, entry.origin
    return getattr(fn, "__qualname__", repr(fn)), "not a registered backend"
