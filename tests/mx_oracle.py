"""An independent MXFP8 oracle, written from docs/semantics.md and not from mxquant.reference:
NumPy float64 (exact for every value involved), the scale rules as their definitions
(comparisons with M * 2**s, no fp32 bit tricks), rounding by numpy's round-half-even on the
format's grid, bytes assembled from sign / exponent / mantissa fields, and the swizzled layout
from the flat-index formula of the contract. Tests compare mxquant's backends with this; it
covers the training calls too: column-wise (NumPy's transpose) and 32x32 tiles."""

from __future__ import annotations

import math

import numpy as np
import torch

# dtype -> (bias, mantissa bits p, emin, emax, M)
FORMATS = {torch.float8_e4m3fn: (7, 3, -6, 8, 448.0), torch.float8_e5m2: (15, 2, -14, 15, 57344.0)}


def _floor_log2(a: np.ndarray) -> np.ndarray:
    """floor(log2(a)) for a > 0, exact (frexp: a = m * 2**e with m in [0.5, 1))."""
    return np.frexp(a)[1].astype(np.int64) - 1


def scale_exponents(amax: np.ndarray, dtype, mode: str) -> np.ndarray:
    """s per block from the definitions; amax: float64 (>= 0, finite)."""
    _, _, _, emax, m = FORMATS[dtype]
    pos = amax > 0
    fl = np.where(pos, _floor_log2(np.where(pos, amax, 1.0)), 0)
    s = fl - emax  # floor: floor(log2 amax) - emax
    if mode != "floor":  # rceil: the smallest s with 2**s >= amax / M, i.e. amax <= M * 2**s
        bound = np.ldexp(m, s.astype(np.int32))  # M * 2**(floor - emax), exact
        s = s + (amax > bound if mode == "rceil" else amax >= bound)  # compressed-tensors: the tie goes up
    return np.where(pos, np.clip(s, -127, 127), -127)


def encode(q: np.ndarray, dtype) -> np.ndarray:
    """Bytes of element values `q` (already on the format's grid, |q| <= M; signed zeros kept)."""
    bias, p, emin, _, _ = FORMATS[dtype]
    sign = np.signbit(q).astype(np.int64) << 7
    a = np.abs(q)
    normal = a >= 2.0**emin
    e = _floor_log2(np.where(normal, a, 1.0))
    mant_normal = np.ldexp(a, (-e).astype(np.int32)) - 1.0  # in [0, 1)
    normal_bits = ((e + bias) << p) | (mant_normal * 2**p).astype(np.int64)
    sub_bits = np.ldexp(a, -(emin - p)).astype(np.int64)  # k * 2**(emin - p)
    return (sign | np.where(normal, normal_bits, sub_bits)).astype(np.uint8)


def round_to_format(y: np.ndarray, dtype) -> np.ndarray:
    """RNE(clamp(y, -M, M)) on the element grid, with subnormals; signs of zeros kept."""
    _, p, emin, _, m = FORMATS[dtype]
    y = np.clip(y, -m, m)
    a = np.abs(y)
    e = np.maximum(_floor_log2(np.where(a > 0, a, 1.0)), emin)
    quantum = np.ldexp(1.0, (e - p).astype(np.int32))
    return np.copysign(np.round(a / quantum) * quantum, y)


def quantize_blocks(v: np.ndarray, dtype, mode: str):
    """(data bytes, scale bytes) of blocks `v` (n, B) float64, one shared scale per row of B values."""
    special = ~np.isfinite(v).all(axis=1)
    amax = np.where(special, 0.0, np.abs(np.where(np.isfinite(v), v, 0.0)).max(axis=1, initial=0.0))
    s = scale_exponents(amax, dtype, mode)
    y = np.ldexp(np.where(np.isfinite(v), v, 0.0), (-s)[:, None].astype(np.int32))  # exact
    data = encode(round_to_format(y, dtype), dtype)
    data[special] = 0x7F
    return data, np.where(special, 0xFF, s + 127).astype(np.uint8)


def quantize(x: torch.Tensor, dtype, mode: str = "rceil", layout: str = "linear"):
    """(data bytes uint8 of x's shape, scale bytes uint8): linear (*lead, K/32) or swizzled 2-D."""
    k = x.shape[-1]
    rows, nb = math.prod(x.shape[:-1]), k // 32
    v = x.detach().to(torch.float64).cpu().numpy().reshape(rows * nb, 32)
    data, scale = quantize_blocks(v, dtype, mode)
    data_t = torch.from_numpy(data.reshape(x.shape))
    if layout == "linear":
        return data_t, torch.from_numpy(scale.reshape(*x.shape[:-1], nb))
    return data_t, swizzle(torch.from_numpy(scale.reshape(rows, nb)))


def quantize_colwise(x: torch.Tensor, dtype, mode: str = "rceil", layout: str = "linear"):
    """Blocks of 32 along dim -2 of x (..., M, K), from NumPy's own transpose of the values:
    data (..., K, M) and the scale as `quantize` lays it out for that shape."""
    v = x.detach().to(torch.float64).cpu().numpy()
    return quantize(torch.from_numpy(np.ascontiguousarray(np.swapaxes(v, -1, -2))), dtype, mode, layout)


def quantize_tiles(x: torch.Tensor, dtype, mode: str = "rceil"):
    """One scale per 32x32 tile of x (..., M, K): (data bytes of x's shape, scale (..., M/32, K/32))."""
    *lead, m, k = x.shape
    n = math.prod(lead)
    v = x.detach().to(torch.float64).cpu().numpy().reshape(n, m // 32, 32, k // 32, 32)
    tiles = v.transpose(0, 1, 3, 2, 4).reshape(-1, 1024)  # (tile, its 1024 values)
    data, scale = quantize_blocks(tiles, dtype, mode)
    data = data.reshape(n, m // 32, k // 32, 32, 32).transpose(0, 1, 3, 2, 4).reshape(x.shape)
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(scale.reshape(*lead, m // 32, k // 32))


def quantize_grouped(x: torch.Tensor, ends, dtype, mode: str = "rceil"):
    """(data, scale) from the NumPy oracle: row-wise data; scales swizzled per expert, or per
    group at padded row P_g of (T + 128 G) rows (round_up(K/32, 4) bytes each), zeros elsewhere."""
    data, linear = quantize(x.cpu(), dtype, mode, "linear")
    if ends is None:
        e, n, c = linear.shape
        per = swizzle(torch.zeros(n, c, dtype=torch.uint8)).numel()
        return data, torch.stack([swizzle(linear[i]).reshape(-1) for i in range(e)]) if e else \
            torch.zeros(0, per, dtype=torch.uint8)
    t, c = linear.shape
    pcol = -(-c // 4) * 4
    out = torch.zeros((t + 128 * ends.numel()) * pcol, dtype=torch.uint8)
    start = padded = 0
    for end in ends.tolist():
        if end > start:
            block = swizzle(linear[start:end]).reshape(-1)
            out[padded * pcol:padded * pcol + block.numel()] = block
            padded += -(-(end - start) // 128) * 128
        start = end
    return data, out


def public(scale: torch.Tensor, layout: str) -> torch.Tensor:
    """The scale as mxfp8_quantize returns it (docs/semantics.md): swizzled flat, 1-D."""
    return scale.reshape(-1) if layout == "swizzled" else scale


def _flat_index(rows: int, c: int) -> tuple[torch.Tensor, int, int]:
    """The contract's flat byte index of scale (row, col), and the padded shape."""
    prow, pcol = -(-rows // 128) * 128, -(-c // 4) * 4
    r = torch.arange(rows).unsqueeze(1)
    col = torch.arange(c).unsqueeze(0)
    index = ((r // 128) * (pcol // 4) + col // 4) * 512 + (r % 32) * 16 + ((r // 32) % 4) * 4 + col % 4
    return index.reshape(-1), prow, pcol


def swizzle(scale_rows: torch.Tensor) -> torch.Tensor:
    """(rows, C) bytes -> (round_up(rows, 128), round_up(C, 4)), padding zero."""
    index, prow, pcol = _flat_index(*scale_rows.shape)
    flat = torch.zeros(prow * pcol, dtype=torch.uint8)
    flat[index] = scale_rows.reshape(-1)
    return flat.reshape(prow, pcol)


def unswizzle(swizzled: torch.Tensor, rows: int, c: int) -> torch.Tensor:
    """The swizzled bytes (2-D or flat) -> (rows, C)."""
    index, _, _ = _flat_index(rows, c)
    return swizzled.reshape(-1)[index].reshape(rows, c)


def decode(data_bytes: np.ndarray, dtype) -> np.ndarray:
    """Element bytes -> float64 values (NaN and, in e5m2, Inf by the format's rules)."""
    bias, p, emin, _, _ = FORMATS[dtype]
    b = data_bytes.astype(np.int64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e = (b >> p) & ((0x7F >> p))
    mant = b & ((1 << p) - 1)
    value = np.where(e == 0, np.ldexp(mant.astype(np.float64), emin - p),
                     np.ldexp(1.0 + mant / 2**p, (e - bias).astype(np.int32)))
    top = 0x7F >> p
    if dtype == torch.float8_e4m3fn:
        value = np.where((e == top) & (mant == (1 << p) - 1), np.nan, value)
    else:
        value = np.where(e == top, np.where(mant == 0, np.inf, np.nan), value)
    return sign * value


# Dequantize's NaN, the contract's explicit rule (docs/semantics.md, "Dequantize"; MXFP8, MXFP4
# and NVFP4): whatever NaN the arithmetic gives, the output holds this one (bits per out_dtype).
NAN_BITS = {torch.float32: (torch.int32, 0x7FC00000), torch.bfloat16: (torch.int16, -1),
            torch.float16: (torch.int16, 0x7E00)}


def contract_nan(y: torch.Tensor) -> torch.Tensor:
    """y with every NaN written as NAN_BITS[y.dtype]."""
    ints, bits = NAN_BITS[y.dtype]
    out = y.view(ints).clone()
    out[y.isnan()] = bits
    return out.view(y.dtype)


def dequantize(data: torch.Tensor, scale_rows: torch.Tensor, out_dtype) -> torch.Tensor:
    """data (fp8) and its linear scale bytes (rows, K/32) -> values rounded once to out_dtype
    (NaN as NAN_BITS)."""
    k = data.shape[-1]
    rows, nb = math.prod(data.shape[:-1]), k // 32
    q = decode(data.contiguous().view(torch.uint8).numpy().reshape(rows, nb, 32), data.dtype)
    sb = scale_rows.view(torch.uint8).numpy().reshape(rows, nb).astype(np.int64)
    factor = np.where(sb == 0xFF, np.nan, np.ldexp(1.0, (np.minimum(sb, 254) - 127).astype(np.int32)))
    return contract_nan(torch.from_numpy(q * factor[..., None]).reshape(data.shape).to(out_dtype))


def assert_same_values(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Dequantized values (MXFP8, MXFP4, NVFP4): want's dtype, shape and bits exactly, NaN included
    (the contract's one NaN per out_dtype, which the oracles write: NAN_BITS); got contiguous."""
    assert got.shape == want.shape and got.dtype == want.dtype and got.is_contiguous(), what
    ints = {2: torch.int16, 4: torch.int32}[got.element_size()]
    diff = (got.view(ints) != want.view(ints)).nonzero()
    if diff.numel():
        at = tuple(diff[0].tolist())
        mask = (1 << 8 * got.element_size()) - 1
        raise AssertionError(f"{what}: {diff.shape[0]} values differ in their bits, first at {at}: "
                             f"{int(got.view(ints)[at]) & mask:#x}, expected {int(want.view(ints)[at]) & mask:#x}")


def backend_quantize(x: torch.Tensor, dtype, mode: str, layout: str):
    """quantize in a backend's form (mxquant.Backend.quantize): data viewed as `dtype`, the
    scale as float8_e8m0fnu (2-D for swizzled), so the oracle can be registered as a backend."""
    data, scale = quantize(x, dtype, mode, layout)
    return data.view(dtype), scale.view(torch.float8_e8m0fnu)


def backend_dequantize(data: torch.Tensor, scale: torch.Tensor, layout: str, out_dtype) -> torch.Tensor:
    """dequantize in a backend's form (mxquant.Backend.dequantize)."""
    rows, cols = math.prod(data.shape[:-1]), data.shape[-1] // 32
    lin = scale.view(torch.uint8)
    lin = unswizzle(lin, rows, cols) if layout == "swizzled" else lin.reshape(rows, cols)
    return dequantize(data, lin, out_dtype)
