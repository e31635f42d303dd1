"""One tensor converted, streamed in row chunks: read, quantize on the chosen device through
the public API, hand to the writer (which writes and hashes on its own thread), accumulate the
error of the dequantized result; the next chunk is read on a thread meanwhile. Manifest
entries get their sha256 from the writer.

Memory is a chunk (rows of the tensor flattened to [rows, K]), not the tensor: the data bytes
of consecutive row chunks are consecutive in the file, and so are their scales. Only the
scales of the tensor being converted (1/32 of its elements, one byte each) are held whole.
"""

from __future__ import annotations

import math

import torch

import mxquant

from ..formats import BLOCK
from ..layouts import scale_shape
from . import fmt
from .stio import DTYPES, TensorInfo, tensor_bytes


def _rows(info: TensorInfo) -> tuple[int, int]:
    k = info.shape[-1] if info.shape else 1
    return (math.prod(info.shape[:-1]) if info.shape else 1), k


def _read_rows(f, info: TensorInfo, data_start: int, r0: int, r1: int, k: int) -> torch.Tensor:
    dtype = DTYPES[info.dtype]
    item = dtype.itemsize
    nbytes = (r1 - r0) * k * item
    buf = torch.empty(nbytes, dtype=torch.uint8)
    f.seek(data_start + info.begin + r0 * k * item)
    if nbytes and f.readinto(tensor_bytes(buf)) != nbytes:
        raise OSError(f"short read in {info.name}")
    return buf.view(dtype).reshape(r1 - r0, k)


def _chunk_rows(k: int, chunk_elems: int) -> int:
    return max(1, chunk_elems // max(k, 1))


_reader = None


def _chunks(f, info: TensorInfo, data_start: int, chunk_elems: int):
    """The tensor's rows as [rows, K] chunks, the next one read on a thread while the caller
    works on this one (file reads release the GIL). At least one chunk, even when empty."""
    global _reader
    if _reader is None:
        from concurrent.futures import ThreadPoolExecutor

        _reader = ThreadPoolExecutor(1, thread_name_prefix="mxquant-read")
    rows, k = _rows(info)
    step = _chunk_rows(k, chunk_elems)
    starts = list(range(0, max(rows, 1), step))
    pending = _reader.submit(_read_rows, f, info, data_start, 0, min(rows, step), k)
    try:
        for i, r0 in enumerate(starts):
            chunk = pending.result()
            pending = None
            if i + 1 < len(starts):
                r1 = starts[i + 1]
                pending = _reader.submit(_read_rows, f, info, data_start, r1, min(rows, r1 + step), k)
            yield chunk
    finally:
        if pending is not None:  # the file is not touched by two threads at once
            pending.exception()


def copy_tensor(f, info: TensorInfo, data_start: int, writer, chunk_elems: int, progress) -> dict:
    """A tensor kept as is: its bytes copied in chunks. Returns its manifest entry."""
    writer.begin(info.name)
    for part in _chunks(f, info, data_start, chunk_elems):
        b = tensor_bytes(part)
        writer.write_part(b)
        progress(b.nbytes)
    writer.end()
    return {"name": info.name, "shape": list(info.shape), "dtype": info.dtype, "quantized": False}


def quantize_tensor(f, info: TensorInfo, data_start: int, writer, *, device, scale_mode: str,
                    chunk_elems: int, progress) -> list[dict]:
    """A tensor converted to MXFP8 (data, then its scale). Returns the two manifest entries; the
    data's entry carries the SQNR and relative error of dequantized vs original."""
    k = info.shape[-1]
    scales = []
    signal = noise = 0.0
    writer.begin(info.name)
    for x in _chunks(f, info, data_start, chunk_elems):
        progress(x.numel() * x.element_size())
        xd = x.to(device, non_blocking=True)
        q = mxquant.mxfp8_quantize(xd, torch.float8_e4m3fn, scale_mode=scale_mode, scale_layout="linear")
        deq = mxquant.mxfp8_dequantize(q.data, q.scale, out_dtype=torch.float32)
        xf = xd.reshape(-1).to(torch.float32)
        err = xf - deq.reshape(-1)
        signal += float(torch.dot(xf, xf))  # fp32 dot products: ample for an SQNR in dB
        noise += float(torch.dot(err, err))
        del deq, xf, err
        data = q.data.cpu()
        scales.append(q.scale.view(torch.uint8).cpu())
        writer.write_part(tensor_bytes(data))
    writer.end()
    scale = torch.cat(scales) if scales else torch.empty(0, k // BLOCK, dtype=torch.uint8)
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
