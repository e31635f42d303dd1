"""An independent MXFP4 / NVFP4 oracle, written from docs/semantics.md ("MXFP4 and NVFP4") and not
from mxquant.reference_fp4: NumPy float64, the scale rules as their definitions (comparisons with
6 * 2**s and 1.75 * 2**floor, no bit tricks on amax), rounding by numpy's round-half-even on each
format's grid (e2m1, e4m3), nibbles and bytes assembled from sign / exponent / mantissa fields,
roundings to bf16 done on fp32 bits, the swizzled layout from the flat-index formula
(mx_oracle.swizzle)."""

from __future__ import annotations

import math

import numpy as np
import torch

from mx_oracle import NAN_BITS, contract_nan, swizzle  # noqa: F401 (NAN_BITS: re-exported)

_HALF_MIN_SUB = {torch.float32: 2.0**-150, torch.bfloat16: 2.0**-134, torch.float16: 2.0**-25}


def _floor_log2(a: np.ndarray) -> np.ndarray:
    return np.frexp(a)[1].astype(np.int64) - 1


def round_grid(y: np.ndarray, p: int, emin: int) -> np.ndarray:
    """RNE of |y| onto a binary grid with p mantissa bits and subnormals below 2**emin; sign kept."""
    a = np.abs(y)
    e = np.maximum(_floor_log2(np.where(a > 0, a, 1.0)), emin)
    q = np.ldexp(1.0, (e - p).astype(np.int32))
    return np.copysign(np.round(a / q) * q, y)


def e2m1_nibble(q: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Nibble of e2m1 grid values q (|q| <= 6): 1 sign, 2 exponent (bias 1), 1 mantissa bit."""
    a = np.abs(q)
    normal = a >= 1.0
    e = _floor_log2(np.where(normal, a, 1.0))
    mant = (np.ldexp(np.where(normal, a, 1.0), (-e).astype(np.int32)) - 1.0) * 2
    bits = np.where(normal, ((e + 1) << 1) | mant.astype(np.int64), (a * 2).astype(np.int64))
    return (bits | (negative.astype(np.int64) << 3)).astype(np.uint8)


def e4m3_byte(p: np.ndarray) -> np.ndarray:
    """e4m3 bytes of non-negative grid values p <= 448 (bias 7, 3 mantissa bits, subnormal 2**-9)."""
    normal = p >= 2.0**-6
    e = _floor_log2(np.where(normal, p, 1.0))
    mant = (np.ldexp(np.where(normal, p, 1.0), (-e).astype(np.int32)) - 1.0) * 8
    return np.where(normal, ((e + 7) << 3) | mant.astype(np.int64), np.ldexp(p, 9).astype(np.int64)).astype(np.uint8)


def round_to(v: np.ndarray, dtype) -> np.ndarray:
    """v (float64) rounded to fp32, then to `dtype` (bf16: round-half-even on the fp32 bits)."""
    f = np.asarray(v, dtype=np.float64).astype(np.float32)
    if dtype == torch.float16:
        return f.astype(np.float16).astype(np.float64)
    if dtype == torch.bfloat16:
        bits = f.view(np.uint32).astype(np.uint64)
        keep = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        finite = np.isfinite(f)
        out = np.where(finite, keep << 16, bits).astype(np.uint32).view(np.float32)
        return out.astype(np.float64)
    return f.astype(np.float64)


def pack(nibbles: np.ndarray) -> np.ndarray:
    return (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)


def _values(x: torch.Tensor, block: int) -> np.ndarray:
    k = x.shape[-1]
    return x.detach().to(torch.float64).cpu().numpy().reshape(math.prod(x.shape[:-1]) * (k // block), block)


def _out(x, data, scale, block, layout):
    k, lead = x.shape[-1], tuple(x.shape[:-1])
    rows = math.prod(lead)
    data_t = torch.from_numpy(np.ascontiguousarray(data.reshape(*lead, k // 2)))
    s = torch.from_numpy(scale.reshape(rows, k // block))
    return data_t, (swizzle(s).reshape(-1) if layout == "swizzled" else s.reshape(*lead, k // block))


def mxfp4_quantize(x: torch.Tensor, mode: str = "rceil", layout: str = "linear"):
    """(data bytes (..., K/2), scale bytes: linear (..., K/32) or swizzled flat) as uint8."""
    v = _values(x, 32)
    special = ~np.isfinite(v).all(axis=1)
    fv = np.where(np.isfinite(v), v, 0.0)
    amax = np.where(special, 0.0, np.abs(fv).max(axis=1, initial=0.0))
    pos = amax > 0
    fl = _floor_log2(np.where(pos, amax, 1.0))
    if mode == "floor":
        s = fl - 2
    elif mode == "rceil":  # the smallest s with amax <= 6 * 2**s
        s = fl - 2 + (amax > np.ldexp(6.0, (fl - 2).astype(np.int32)))
    else:  # compressed-tensors: amax rounded up to a power of two when its significand >= 1.75
        s = fl - 2 + (amax >= np.ldexp(1.75, fl.astype(np.int32)))
    s = np.where(pos, np.clip(s, -127, 127), -127)
    y = np.clip(np.ldexp(fv, (-s)[:, None].astype(np.int32)), -6.0, 6.0)
    q = round_grid(y, 1, 0)
    if mode == "compressed-tensors":  # the sign of y as computed in x's dtype; zero inputs give +0
        negative = (y < 0) & (np.abs(y) > _HALF_MIN_SUB[x.dtype])
    else:
        negative = np.signbit(v)
    nib = np.where(special[:, None], 0, e2m1_nibble(q, negative)).astype(np.uint8)
    return _out(x, pack(nib.reshape(math.prod(x.shape[:-1]), x.shape[-1])), np.where(special, 0xFF, s + 127).astype(np.uint8), 32, layout)


def nvfp4_global_scale(x: torch.Tensor) -> float:
    v = x.detach().to(torch.float64).cpu().numpy().reshape(-1)
    amax = float(np.abs(v[np.isfinite(v)]).max(initial=0.0))
    with np.errstate(divide="ignore", over="ignore"):
        r = round_to(np.float64(1.0) / np.float64(amax) if amax else np.inf, x.dtype)
        g = float(round_to(r * 2688.0, x.dtype))
    return g if math.isfinite(g) else 1.0


def nvfp4_quantize(x: torch.Tensor, global_scale: float | None = None, layout: str = "linear"):
    """(data bytes, scale bytes (e4m3) linear or swizzled flat, g) as uint8 / uint8 / float."""
    g = nvfp4_global_scale(x) if global_scale is None else global_scale
    v = _values(x, 16)
    special = ~np.isfinite(v).all(axis=1)
    fv = np.where(np.isfinite(v), v, 0.0)
    amax = np.abs(fv).max(axis=1, initial=0.0)
    p = np.minimum(round_to(g * round_to(amax / 6.0, x.dtype), torch.float32), 448.0)
    s = round_grid(p, 3, -6)
    sbyte = np.where(s == 0, 0x20, e4m3_byte(s))
    s = np.where(s == 0, 0.125, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (s.astype(np.float32) / np.float32(g)).astype(np.float32)
        y = np.clip((fv.astype(np.float32) / d[:, None]).astype(np.float64), -6.0, 6.0)
    nib = np.where(special[:, None], 0, e2m1_nibble(round_grid(y, 1, 0), y < 0)).astype(np.uint8)
    data, scale = _out(x, pack(nib.reshape(math.prod(x.shape[:-1]), x.shape[-1])), np.where(special, 0x7F, sbyte).astype(np.uint8), 16,
                       layout)
    return data, scale, g


def e2m1_value(nibbles: np.ndarray) -> np.ndarray:
    n = nibbles.astype(np.int64)
    e, m = (n >> 1) & 3, n & 1
    mag = np.where(e == 0, m * 0.5, np.ldexp(1.0 + m / 2.0, (e - 1).astype(np.int32)))
    return np.where(n & 8, -mag, mag)


def unpack(data: torch.Tensor) -> np.ndarray:
    b = data.contiguous().numpy()
    out = np.empty((*b.shape[:-1], 2 * b.shape[-1]), dtype=np.uint8)
    out[..., 0::2], out[..., 1::2] = b & 0xF, b >> 4
    return out


def mxfp4_dequantize(data: torch.Tensor, scale_rows: np.ndarray, out_dtype) -> torch.Tensor:
    """data (uint8 packed) and linear scale bytes (rows, K/32) -> values rounded once to out_dtype
    (NaN as NAN_BITS)."""
    q = e2m1_value(unpack(data)).reshape(scale_rows.shape[0], scale_rows.shape[1], 32)
    sb = scale_rows.astype(np.int64)
    f = np.where(sb == 0xFF, np.nan, np.ldexp(1.0, (np.minimum(sb, 254) - 127).astype(np.int32)))
    shape = (*data.shape[:-1], 2 * data.shape[-1])
    with np.errstate(over="ignore"):  # beyond fp32 is Inf, as the contract says
        return contract_nan(torch.from_numpy((q * f[..., None]).reshape(shape).astype(np.float32)).to(out_dtype))


def nvfp4_dequantize(data: torch.Tensor, scale_rows: torch.Tensor, g: float, out_dtype) -> torch.Tensor:
    """data and linear e4m3 scales (rows, K/16) -> fp32(q * fp32(s / g)) rounded to out_dtype (NaN
    as NAN_BITS)."""
    s = scale_rows.view(torch.float8_e4m3fn).float().numpy()
    q = e2m1_value(unpack(data)).reshape(s.shape[0], s.shape[1], 16).astype(np.float32)
    v = (q * (s / np.float32(g)).astype(np.float32)[..., None]).astype(np.float32)
    shape = (*data.shape[:-1], 2 * data.shape[-1])
    return contract_nan(torch.from_numpy(v.reshape(shape)).to(out_dtype))
