"""One tensor converted, streamed in chunks bounded by elements: read, quantize on the chosen
device through the public API, hand to the writer (which writes and hashes on its own thread),
accumulate the error of the dequantized result; the next chunk is read on a thread meanwhile.
Manifest entries get their sha256 from the writer.

Memory is a chunk of at most `chunk_elems` elements, never a tensor or a whole row: a tensor
kept as is is copied in byte ranges; a quantized one [..., K] goes in whole rows [r, K] when a
row fits the chunk, else each row in pieces [1, P] of whole 32-element blocks along K. Blocks
never straddle a chunk, so the bytes are those of quantizing the tensor at once, and the data
and scale bytes of consecutive chunks are consecutive in the file. Only the scales of the
tensor being converted (1/32 of its elements, one byte each) are held whole.
"""

from __future__ import annotations

import math

import torch

import mxquant

from ..formats import BLOCK
from ..layouts import scale_shape
from . import fmt
from .stio import DTYPES, TensorInfo, tensor_bytes


def _read(f, offset: int, nbytes: int) -> torch.Tensor:
    buf = torch.empty(nbytes, dtype=torch.uint8)
    f.seek(offset)
    if nbytes and f.readinto(tensor_bytes(buf)) != nbytes:
        raise OSError(f"short read at byte {offset}")
    return buf


_reader = None


def _prefetched(f, ranges):
    """The (offset, nbytes) byte ranges of `f` as uint8 tensors, the next one read on a thread
    while the caller works on this one (file reads release the GIL)."""
    global _reader
    if _reader is None:
        from concurrent.futures import ThreadPoolExecutor

        _reader = ThreadPoolExecutor(1, thread_name_prefix="mxquant-read")
    ranges = iter(ranges)
    nxt = next(ranges, None)
    pending = _reader.submit(_read, f, *nxt) if nxt is not None else None
    try:
        while pending is not None:
            buf = pending.result()
            pending = None
            nxt = next(ranges, None)
            if nxt is not None:
                pending = _reader.submit(_read, f, *nxt)
            yield buf
    finally:
        if pending is not None:  # the file is not touched by two threads at once
            pending.exception()


def _native_error_sums():
    """cpu-native's one-pass error sums, or None where its library is not built."""
    from ..backends import _native_lib, cpu_native

    return cpu_native.error_sums if _native_lib.load()[0] is not None else None


def _error_sums(x: torch.Tensor, q) -> tuple[float, float]:
    """(sum(x^2), sum((x - dq)^2)) of a chunk and its MXFP8 result, dq the exact dequantization:
    on the CPU in one pass of cpu-native's C kernel where it is built (the torch ops below
    took 5x the quantization's time there), elsewhere by the public dequantize and fp32 dot
    products (ample for an SQNR in dB)."""
    if x.device.type == "cpu" and (native := _native_error_sums()) is not None:
        return native(x, q.data, q.scale)
    err = mxquant.mxfp8_dequantize(q.data, q.scale, out_dtype=torch.float32).reshape(-1)
    xf = x.reshape(-1).to(torch.float32)
    err.sub_(xf)  # in place: dequantized - original, one fp32 chunk less held
    return float(torch.dot(xf, xf)), float(torch.dot(err, err))


def _pieces(info: TensorInfo, chunk_elems: int):
    """(first element, chunk shape) covering a [..., K] tensor in file order: [r, K] row chunks
    of at most chunk_elems elements, or, for rows longer than that, [1, P] pieces of each row
    with P a multiple of BLOCK (K is one, so the last piece of a row is too)."""
    k = info.shape[-1]
    rows = math.prod(info.shape[:-1])
    if k <= chunk_elems:
        step = chunk_elems // k
        for r0 in range(0, rows, step):
            yield r0 * k, (min(step, rows - r0), k)
        return
    step = max(BLOCK, chunk_elems // BLOCK * BLOCK)
    for r in range(rows):
        for c0 in range(0, k, step):
            yield r * k + c0, (1, min(step, k - c0))


def copy_tensor(f, info: TensorInfo, data_start: int, writer, chunk_elems: int, progress) -> dict:
    """A tensor kept as is: its bytes copied in ranges of chunk_elems elements' worth. Returns
    its manifest entry."""
    begin, nbytes = data_start + info.begin, info.end - info.begin
    step = max(1, chunk_elems) * DTYPES[info.dtype].itemsize
    writer.begin(info.name)
    for part in _prefetched(f, ((begin + o, min(step, nbytes - o)) for o in range(0, nbytes, step))):
        writer.write_part(tensor_bytes(part))
        progress(part.numel())
    writer.end()
    return {"name": info.name, "shape": list(info.shape), "dtype": info.dtype, "quantized": False}


def quantize_tensor(f, info: TensorInfo, data_start: int, writer, *, device, scale_mode: str,
                    chunk_elems: int, progress) -> list[dict]:
    """A tensor converted to MXFP8 (data, then its scale). Returns the two manifest entries; the
    data's entry carries the SQNR and relative error of dequantized vs original."""
    dtype = DTYPES[info.dtype]
    item = dtype.itemsize
    pieces = list(_pieces(info, chunk_elems))
    ranges = ((data_start + info.begin + e0 * item, math.prod(shape) * item) for e0, shape in pieces)
    scale = torch.empty(math.prod(info.shape) // BLOCK, dtype=torch.uint8)  # flat, in file order
    signal = noise = 0.0
    writer.begin(info.name)
    for (e0, shape), raw in zip(pieces, _prefetched(f, ranges)):
        progress(raw.numel())
        xd = raw.view(dtype).reshape(shape).to(device, non_blocking=True)
        q = mxquant.mxfp8_quantize(xd, torch.float8_e4m3fn, scale_mode=scale_mode, scale_layout="linear")
        s, n = _error_sums(xd, q)
        signal += s
        noise += n
        scale[e0 // BLOCK:(e0 + xd.numel()) // BLOCK].copy_(q.scale.view(torch.uint8).reshape(-1))
        writer.write_part(tensor_bytes(q.data.cpu()))
    writer.end()
    sname = fmt.scale_name(info.name)
    writer.begin(sname)
    writer.write_part(tensor_bytes(scale))
    writer.end()
    # exact (noise 0): SQNR None; a non-finite input (NaN/Inf blocks): both None
    finite = math.isfinite(signal) and math.isfinite(noise)
    sqnr = 10 * math.log10(signal / noise) if finite and noise > 0 and signal > 0 else None
    rel = math.sqrt(noise / signal) if finite and signal > 0 else (0.0 if finite and noise == 0 else None)
    return [
        {"name": info.name, "shape": list(info.shape), "dtype": fmt.DATA_DTYPE,
         "quantized": True, "source_dtype": info.dtype,
         "sqnr_db": sqnr, "rel_error": rel},
        {"name": sname, "shape": list(scale_shape(tuple(info.shape), "linear")), "dtype": fmt.SCALE_DTYPE,
         "quantized": False, "scale_of": info.name},
    ]
