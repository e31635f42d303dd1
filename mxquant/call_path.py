"""What the call paths of ops.py, ops_training.py and ops_fp4.py share: the result type, the test
for the dispatcher-free eager path, what to raise when a backend mxquant does not own raises, and
the no-gradient autograd formula of their custom ops (custom_ops*.py)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .errors import BackendCallError
from .outputs import aliasing, disjoint, overlapping, owner, plain, tensor_problem


class MXFP8Quantized(NamedTuple):
    data: torch.Tensor
    """Elements: x's shape, dtype float8_e4m3fn or float8_e5m2."""
    scale: torch.Tensor
    """E8M0 scales (float8_e8m0fnu): (*x.shape[:-1], K // 32) for "linear"; for "swizzled" a
    1-D tensor of round_up(M, 128) * round_up(K // 32, 4) bytes, M = prod(x.shape[:-1]) (the
    flat 128x4 layout FlashInfer and torchao's to_blocked produce). The two shapes never
    coincide, so mxfp8_dequantize rejects a scale passed with the wrong scale_layout."""


def _eager(t) -> bool:
    # A non-tensor also takes the eager path, so that checks.py reports it (a TypeError naming
    # the argument) rather than the op schema's RuntimeError. A tensor that requires grad (an
    # nn.Parameter, say) goes through the custom op, whose autograd formula marks the outputs
    # non-differentiable (docs/semantics.md, "Autograd").
    if not isinstance(t, torch.Tensor):
        return True
    # Under torch.vmap / grad (functorch) the tensors are wrapped: the custom op, whose missing
    # vmap rule torch names, not a kernel reading a wrapper's data pointer.
    return (type(t) is torch.Tensor and not t.requires_grad and not t.is_meta and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active())


def dispatch(op_call, check, *args, **kwargs):
    """op_call(): a call through its custom op (x requires grad, is a tensor subclass or meta).
    Where the op's schema refuses an argument (a RuntimeError), check(*args, **kwargs), the
    argument checks, run first outside torch.compile, so a mistyped argument gets their
    TypeError / ValueError, as on the eager path; nothing is added to a call that succeeds."""
    if torch.compiler.is_compiling():
        return op_call()
    try:
        return op_call()
    except RuntimeError:
        check(*args, **kwargs)
        raise


CALL_ERRORS = (Exception, SystemExit, GeneratorExit)
"""What a backend's call may raise that mxquant wraps in BackendCallError (a SystemExit too: it
would end the program naming nobody); KeyboardInterrupt passes through."""


def _raised(fn, exc: BaseException, call: str, device, before=None, after=None) -> Exception:
    """What to raise for `exc` raised by a backend mxquant does not own (not in OWN_OUTPUTS): a
    BackendCallError naming it and its plugin, chained to `exc` (and saying so where the inputs'
    version counters moved from `before` to `after`: it wrote into an input first); a memory
    error unchanged."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return exc
    name, origin = owner(fn)
    error = BackendCallError(name, origin, f"{call} on {device}", exc, before is not None and before != after)
    error.__cause__ = exc
    return error


def _mark_non_differentiable(ctx, inputs, output):
    ctx.mark_non_differentiable(*(output if isinstance(output, tuple) else (output,)))


def no_gradient(*ops) -> None:
    """Give each (custom op, number of inputs) the autograd formula of quantized bytes: outputs
    marked non-differentiable, None for every input (for a gradient, use mxfp8_fake_quantize)."""
    for op, inputs in ops:
        op.register_autograd(lambda ctx, *grads, _n=inputs: (None,) * _n, setup_context=_mark_non_differentiable)


_CHECKED: dict = {}
"""(op, x's device, dtype, layout and shape, element dtype, mode, layout, backend name) -> the outputs the
call must return, for signatures whose argument checks passed; only for calls whose other
arguments are not tensors (a tensor's values or shape could differ under one signature)."""


def checked_outputs(op: str, x, dtype, scale_mode, scale_layout, backend, check, want) -> list:
    """[(what, torch.Size, dtype)] that a call of `op` must return. `check()` raises for bad
    arguments; it runs only for a signature not seen and passed before, since the signature pins
    everything it checks. `want()` lists the outputs with their shapes as tuples."""
    try:
        key = (op, x.device, x.dtype, x.layout, x.shape, dtype, scale_mode, scale_layout, backend)
        outputs = _CHECKED.get(key)
    except (AttributeError, TypeError, RuntimeError):  # not a tensor (a nested one has no shape): check() explains
        key = outputs = None
    if outputs is None:
        check()
        outputs = [(what, torch.Size(shape), dt) for what, shape, dt in want()]
        if key is not None:
            if len(_CHECKED) > 4096:
                _CHECKED.clear()
            _CHECKED[key] = outputs
    return outputs


def input_versions(inputs: tuple):
    """The version counters of a call's tensor inputs, or None where one is an inference tensor
    (it keeps none; asked first, as outputs.versions does)."""
    return None if any(t.is_inference() for t in inputs) else tuple(t._version for t in inputs)


def output_problem(out, want: list, inputs: tuple, before, own: bool = False) -> Optional[str]:
    """What is wrong with a backend's `out` against `want` ([(what, shape, dtype)], on the first
    input's device, contiguous; the tensor inputs' version counters still `before`, from
    input_versions), or None. The fast path reads a few attributes per output; only a violation
    (or a list for a tuple) takes the slow path."""
    x = inputs[0]
    try:
        if type(out) is tuple and len(out) == len(want) and (before is None or before == input_versions(inputs)):
            device = x.device
            for t, (_, shape, dtype) in zip(out, want):
                if not (t.dtype is dtype and t.shape == shape and t.device == device and t.is_contiguous() and plain(t)):
                    break
            else:  # an in-tree kernel (own) allocates its outputs: no view of an input to look for
                if own:
                    return None
                return aliasing(out, inputs) or (None if disjoint(out) else overlapping(out))
    except Exception:  # a non-tensor output: the slow path names it
        pass
    if not isinstance(out, (tuple, list)) or len(out) != len(want):
        return f"returned a {type(out).__name__}, expected a tuple of {len(want)} tensors"
    for t, (what, shape, dtype) in zip(out, want):
        problem = tensor_problem(what, t, torch.Size(shape), dtype, x.device)
        if problem:
            return problem
    shared = aliasing(out, inputs) or overlapping(out)
    if shared:
        return shared
    if before is not None and before != input_versions(inputs):
        return "it wrote into its input x (inputs are read-only)" if len(inputs) == 1 else \
            "it wrote into its inputs (inputs are read-only)"
    return None
