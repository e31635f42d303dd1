"""`mxfp8_fake_quantize`: quantize and dequantize back to x's dtype in one call, with a
straight-through gradient, for quantization-aware training (docs/semantics.md, "Autograd").

A custom op of its own (`mxquant::fake_quantize`) so that its gradient is one registered
formula that torch.compile(fullgraph=True) traces like any other."""

from __future__ import annotations

from typing import Optional

import torch

from .checks import check_quantize
from .call_path import dispatch
from .ops import _eager, dequantize_checked, run_quantize


def mxfp8_fake_quantize(
    x: torch.Tensor,
    dtype: torch.dtype = torch.float8_e4m3fn,
    *,
    scale_mode: str = "rceil",
    backend: Optional[str] = None,
) -> torch.Tensor:
    """x rounded to MXFP8 and back: x's dtype and shape, the bytes of
    `mxfp8_dequantize(*mxfp8_quantize(x, dtype, scale_mode=scale_mode), out_dtype=x.dtype)`.
    The gradient is straight-through: d(loss)/dx = d(loss)/d(output), unchanged.

    backend forces both steps, as use_backend() and MXQUANT_BACKEND do (a quantize-only
    backend forces the quantize step; the dequantize step is then chosen as usual).
    """
    if _eager(x):  # no gradient wanted: no dispatcher
        _check(x, dtype, scale_mode, "linear", backend)  # (errors name this call, not mxfp8_quantize)
        return _round_trip(x, dtype, scale_mode, backend)
    return dispatch(lambda: torch.ops.mxquant.fake_quantize(x, dtype, scale_mode, backend),
                    _check, x, dtype, scale_mode, "linear", backend)


def _check(x, dtype, scale_mode, scale_layout, backend) -> None:
    check_quantize(x, dtype, scale_mode, scale_layout, backend, call="mxfp8_fake_quantize")


def _round_trip(x, dtype, scale_mode, backend):
    data, scale = run_quantize(x, dtype, scale_mode, "linear", backend)
    return dequantize_checked(data, scale, "linear", x.dtype, backend)  # our own outputs: checked already


@torch.library.custom_op("mxquant::fake_quantize", mutates_args=())
def fake_quantize(x: torch.Tensor, dtype: torch.dtype, scale_mode: str, backend: Optional[str] = None) -> torch.Tensor:
    _check(x, dtype, scale_mode, "linear", backend)
    return _round_trip(x, dtype, scale_mode, backend)


@fake_quantize.register_fake
def _fake_quantize_fake(x, dtype, scale_mode, backend=None):
    _check(x, dtype, scale_mode, "linear", backend)
    return x.new_empty(x.shape)


def _straight_through(ctx, grad):
    return grad, None, None, None


fake_quantize.register_autograd(_straight_through)
