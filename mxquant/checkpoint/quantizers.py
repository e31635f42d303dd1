"""One chunk of a weight quantized for a scheme (schemes.py) through the public calls
(mxfp8_quantize, mxfp4_quantize, nvfp4_quantize) or fp8block.py, and the error sums of its
exact dequantization. A chunk is whole rows [r, K] (fp8-block: whole 128-row blocks) or, for
the per-row schemes, a piece of one row made of whole blocks. On the CPU, where cpu-native is
built, its C kernel does MXFP8's error sums and FP8 block's quantization with its error sums in
one pass each (`native_calls`); fp8block.py stays the oracle of the latter's bytes."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

import mxquant

from . import fp8block
from .schemes import SCHEMES, Scheme


@dataclass(frozen=True)
class Quant:
    """What quantize_tensor needs for one conversion: the scheme, and for NVFP4 the global scale
    of each weight (fused.GlobalScales: shared by the fused q/k/v and gate/up sets)."""
    scheme: Scheme
    global_scales: object = None


DEFAULT = Quant(SCHEMES["mxfp8"])


def quantize_chunk(quant: Quant, x: torch.Tensor, scale_mode: str, g: torch.Tensor | None):
    """(data, scale) of a chunk: data (the streamed tensor: F8_E4M3 or packed U8) and the scale
    bytes in file order."""
    name = quant.scheme.name
    if name == "mxfp8":
        q = mxquant.mxfp8_quantize(x, torch.float8_e4m3fn, scale_mode=scale_mode, scale_layout="linear")
        return q.data, q.scale
    if name == "mxfp4":
        q = mxquant.mxfp4_quantize(x, scale_mode=scale_mode, scale_layout="linear")
        return q.data, q.scale
    if name == "nvfp4a16":
        q = mxquant.nvfp4_quantize(x, g, scale_mode="compressed-tensors", scale_layout="linear")
        return q.data, q.scale
    return fp8block.quantize(x)


def native_calls(quant: Quant):
    """cpu-native's one-pass call for this scheme on the CPU, or None (another scheme, or the library
    not built): MXFP8's error_sums, FP8 block's fp8block_quantize (quantization and error sums)."""
    if quant.scheme.name not in ("mxfp8", "fp8-block"):
        return None
    from ..backends import _native_lib, cpu_native

    if _native_lib.load()[0] is None:
        return None
    return cpu_native.error_sums if quant.scheme.name == "mxfp8" else cpu_native.fp8block_quantize


def quantize_with_sums(quant: Quant, x: torch.Tensor, scale_mode: str, g: torch.Tensor | None,
                       native=None) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(data, scale, sum(x^2), sum((x - dq)^2)) of a chunk: quantize_chunk and error_sums, or for
    FP8 block on the CPU cpu-native's one pass (`native`: native_calls' answer, or None) where x's
    dtype is one it reads (bf16, fp16, fp32)."""
    if (quant.scheme.name == "fp8-block" and native is not None and x.device.type == "cpu"
            and x.dtype in (torch.bfloat16, torch.float16, torch.float32)):
        data, scale, (s, n) = native(x)
        return data, scale, s, n
    data, scale = quantize_chunk(quant, x, scale_mode, g)
    s, n = error_sums(quant, x, data, scale, g, native if quant.scheme.name == "mxfp8" else None)
    return data, scale, s, n


def error_sums(quant: Quant, x: torch.Tensor, data: torch.Tensor, scale: torch.Tensor,
               g: torch.Tensor | None, native=None) -> tuple[float, float]:
    """(sum(x^2), sum((x - dq)^2)) of a chunk, dq the exact dequantization: for MXFP8 on the CPU
    in one pass of cpu-native's C kernel where it is built (`native`: its error_sums, or None;
    the torch ops took 5x the quantization's time there); otherwise the public dequantize
    (fp8block's for fp8-block) and fp32 dot products (ample for an SQNR in dB)."""
    name = quant.scheme.name
    if name == "mxfp8" and x.device.type == "cpu" and native is not None:
        return native(x, data, scale)
    if name == "mxfp8":
        dq = mxquant.mxfp8_dequantize(data, scale, out_dtype=torch.float32)
    elif name == "mxfp4":
        dq = mxquant.mxfp4_dequantize(data, scale, out_dtype=torch.float32)
    elif name == "nvfp4a16":
        dq = mxquant.nvfp4_dequantize(data, scale, g, out_dtype=torch.float32)
    else:
        dq = fp8block.dequantize(data, scale)
    err = dq.reshape(-1)
    xf = _as_float32(x.reshape(-1))
    err.sub_(xf)  # in place: dequantized - original, one fp32 chunk less held
    if x.device.type == "cpu":
        return float(torch.dot(xf, xf)), float(torch.dot(err, err))
    s, n = torch.stack([torch.dot(xf, xf), torch.dot(err, err)]).tolist()  # on a GPU: one read back, one sync
    return s, n


_scratch = threading.local()


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    """x (1-D) in float32: itself if it is, else on the CPU a copy into this thread's reused
    buffer (a fresh 16 MB tensor per chunk cost 5 ms of page faults, 6x the copy), else x.float().
    Valid until the next call."""
    if x.dtype == torch.float32 or x.device.type != "cpu":
        return x.to(torch.float32)
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < x.numel():
        buf = _scratch.buf = torch.empty(x.numel(), dtype=torch.float32)
    return buf[: x.numel()].copy_(x)


def check_calls(quant: Quant, dtype: torch.dtype, device: str, scale_mode: str) -> None:
    """The scheme's quantize and dequantize made once on a 1x128 block of `dtype` on `device`
    (raises the backend's error where it cannot serve them)."""
    x = torch.zeros(1, 128, dtype=dtype, device=device)
    g = torch.ones(1, dtype=torch.float32, device=device) if quant.scheme.name == "nvfp4a16" else None
    quantize_with_sums(quant, x, scale_mode, g, native_calls(quant))
