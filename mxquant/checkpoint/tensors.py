"""One tensor converted, streamed in chunks bounded by elements: read, quantize on the chosen
device for the conversion's scheme (quantizers.py), hand to the writer (which writes and hashes
on its own thread), accumulate the error of the dequantized result; the next chunk is read on a
thread meanwhile. Manifest entries get their sha256 from the writer.

Memory is a chunk of at most `chunk_elems` elements, never a tensor or a whole row: a tensor
kept as is is copied in byte ranges; a quantized one [..., K] goes in whole rows [r, K] when a
row fits the chunk, else each row in pieces [1, P] of whole 32-element blocks along K (fp8-block:
whole 128-row blocks, at least one). Blocks never straddle a chunk, so the bytes are those of
quantizing the tensor at once, and the data and scale bytes of consecutive chunks are
consecutive in the file. Only the scales of the tensor being converted (at most one byte per
16 elements) are held whole. NVFP4 reads each weight's fused set once more first, for the
global scale (fused.py).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading

import torch

from ..formats import BLOCK
from .quantizers import DEFAULT, Quant, error_sums, native_calls, quantize_chunk, quantize_with_sums
from .stio import DTYPES, TensorInfo, itemsize, tensor_bytes


class ReadBuffers:
    """Reusable buffers for the chunks read: a fresh 8-32 MB tensor per chunk costs the page
    faults and zeroing of every page it touches (about a tenth of a conversion's CPU time). A
    buffer is a bytearray lent out as a tensor (torch.frombuffer, which holds a reference to it
    until every tensor and view on it is gone, as do the writer's and the hasher's queued
    memoryviews through their tensors); it is lent again only when nothing but this pool refers
    to it, so a chunk still queued for writing or hashing is never overwritten. Small reads, and
    reads beyond `cap` buffers in use, get a fresh tensor."""

    MIN_BYTES = 1 << 20

    def __init__(self, cap: int = 10):
        self._bufs: list[bytearray] = []
        self._cap = cap
        self._lock = threading.Lock()
        # reference counts are an ownership test only with the GIL (not on free-threaded builds)
        self._enabled = getattr(sys, "_is_gil_enabled", lambda: True)()

    def get(self, nbytes: int) -> torch.Tensor:
        if nbytes >= self.MIN_BYTES and self._enabled:
            with self._lock:
                # what getrefcount says of a buffer only the list holds, read the same way as
                # below (not a constant: interpreters differ in the references they count)
                for probe in [bytearray()]:
                    free = sys.getrefcount(probe)
                small, i = None, -1
                for ba in self._bufs:  # the probe's shape: a list's item bound by `for`
                    i += 1
                    if sys.getrefcount(ba) <= free:  # any tensor or view on it adds one
                        if len(ba) >= nbytes:
                            return torch.frombuffer(ba, dtype=torch.uint8, count=nbytes)
                        small = i
                if len(self._bufs) < self._cap or small is not None:
                    if small is not None and len(self._bufs) >= self._cap:  # too small for this read
                        del self._bufs[small]
                    self._bufs.append(bytearray(nbytes))
                    return torch.frombuffer(self._bufs[-1], dtype=torch.uint8, count=nbytes)
        return torch.empty(nbytes, dtype=torch.uint8)

    def clear(self) -> None:
        """Drop the pool's references (buffers still lent out live on with their tensors)."""
        with self._lock:
            self._bufs.clear()


buffers = ReadBuffers()
"""The conversion's read buffers (driver.py clears them after each shard)."""


def read_range(f, offset: int, nbytes: int, pinned: bool = False) -> torch.Tensor:
    """The bytes [offset, offset + nbytes) of `f` as a uint8 tensor: from the pool of read
    buffers, or with `pinned` in page-locked memory (torch's caching host allocator), which a
    GPU copies from asynchronously and about 3x faster than from pageable memory."""
    buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True) if pinned else buffers.get(nbytes)
    f.seek(offset)
    if nbytes and f.readinto(tensor_bytes(buf)) != nbytes:
        raise OSError(f"short read at byte {offset}")
    return buf


_reader = None
_reader_lock = threading.Lock()


def _prefetched(f, ranges, pinned: bool = False):
    """The (offset, nbytes) byte ranges of `f` as uint8 tensors (read_range's, `pinned` as
    there), the next one read on a thread while the caller works on this one (file reads
    release the GIL). One read in flight per generator: the pool's threads (started as needed,
    up to 16) serve the shards converted at once (shardpool.py)."""
    global _reader
    if _reader is None:
        from concurrent.futures import ThreadPoolExecutor

        with _reader_lock:
            if _reader is None:
                _reader = ThreadPoolExecutor(16, thread_name_prefix="mxquant-read")
    ranges = iter(ranges)
    nxt = next(ranges, None)
    pending = _reader.submit(read_range, f, *nxt, pinned) if nxt is not None else None
    try:
        while pending is not None:
            buf = pending.result()
            pending = None
            nxt = next(ranges, None)
            if nxt is not None:
                pending = _reader.submit(read_range, f, *nxt, pinned)
            yield buf
    finally:
        if pending is not None:  # the file is not touched by two threads at once
            pending.exception()


def _pieces(info: TensorInfo, chunk_elems: int, row_block: int = 1):
    """(first element, chunk shape) covering a [..., K] tensor in file order: [r, K] row chunks
    of at most chunk_elems elements (r a multiple of row_block, at least row_block), or, for
    rows longer than that (row_block 1 only), [1, P] pieces of each row with P a multiple of
    BLOCK (K is one, so the last piece of a row is too)."""
    k = info.shape[-1]
    rows = math.prod(info.shape[:-1])
    if k <= chunk_elems or row_block > 1:
        step = max(row_block, chunk_elems // k // row_block * row_block)
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
    ranges = ((begin + o, min(step, nbytes - o)) for o in range(0, nbytes, step))
    with contextlib.closing(_prefetched(f, ranges)) as parts:  # closed (its read awaited) on an error too
        for part in parts:
            writer.write_part(tensor_bytes(part))
            progress(part.numel())
    writer.end()
    return {"name": info.name, "shape": list(info.shape), "dtype": info.dtype, "quantized": False}


def to_host(t: torch.Tensor) -> torch.Tensor:
    """A GPU tensor's bytes copied, asynchronously, into page-locked host memory (a uint8 tensor
    of torch's caching host allocator: reused once the writer and hasher let go of it, and never
    while a copy into it is in flight). Valid after the stream synchronizes."""
    src = t.contiguous().view(torch.uint8).reshape(-1)
    host = torch.empty(src.numel(), dtype=torch.uint8, pin_memory=True)
    host.copy_(src, non_blocking=True)
    return host


def quantize_tensor(f, info: TensorInfo, data_start: int, writer, *, device, scale_mode: str,
                    chunk_elems: int, progress, quant: Quant = DEFAULT) -> list[dict]:
    """A tensor converted for quant's scheme (its data, then its scale, then NVFP4's global scale).
    Returns the manifest entries; the data's entry carries the SQNR and relative error of
    dequantized vs original."""
    dtype = DTYPES[info.dtype]
    item = dtype.itemsize
    outputs = quant.scheme.outputs(info.name, info.dtype, info.shape)
    pieces = list(_pieces(info, chunk_elems, quant.scheme.row_block))
    ranges = ((data_start + info.begin + e0 * item, math.prod(shape) * item) for e0, shape in pieces)
    g = quant.global_scales(info.name, device) if quant.global_scales is not None else None
    scale = torch.empty(math.prod(outputs[1][2]) * itemsize(outputs[1][1]), dtype=torch.uint8)  # file order
    signal = noise = 0.0
    at = 0
    native = native_calls(quant)  # once per tensor, not per chunk
    gpu = torch.device(device).type == "cuda"
    writer.begin(outputs[0][0])
    with contextlib.closing(_prefetched(f, ranges, pinned=gpu)) as raws:
        for (e0, shape), raw in zip(pieces, raws):
            progress(raw.numel())
            xd = raw.view(dtype).reshape(shape).to(device, non_blocking=True)
            if gpu:
                data, sc = quantize_chunk(quant, xd, scale_mode, g)
                out = to_host(data)  # queued before the error sums, whose one read back waits for it too
                s, n = error_sums(quant, xd, data, sc, g)
                torch.cuda.current_stream(xd.device).synchronize()  # done already (the sums' read back): made explicit
            else:
                data, sc, s, n = quantize_with_sums(quant, xd, scale_mode, g, native)
                out = data.cpu()  # itself on the CPU; from an XPU, a copy
            signal += s
            noise += n
            sc = sc.contiguous().view(torch.uint8).reshape(-1)
            scale[at:at + sc.numel()].copy_(sc)
            at += sc.numel()
            writer.write_part(tensor_bytes(out))
    writer.end()
    extra = [scale] + ([g.cpu()] if g is not None else [])
    for (name, _, _), t in zip(outputs[1:], extra):
        writer.begin(name)
        writer.write_part(tensor_bytes(t))
        writer.end()
    # exact (noise 0): SQNR None; a non-finite input (NaN/Inf blocks): both None
    finite = math.isfinite(signal) and math.isfinite(noise)
    sqnr = 10 * math.log10(signal / noise) if finite and noise > 0 and signal > 0 else None
    rel = math.sqrt(noise / signal) if finite and signal > 0 else (0.0 if finite and noise == 0 else None)
    (name, dt, shape), rest = outputs[0], outputs[1:]
    entry = {"name": name, "shape": list(shape), "dtype": dt, "quantized": True, "source_dtype": info.dtype,
             "sqnr_db": sqnr, "rel_error": rel}
    if not finite:  # NaN or Inf in the input: its blocks are NaN in the output (the peers' bytes too)
        entry["nonfinite"] = True
    return [entry] + [
        {"name": n, "shape": list(sh), "dtype": d, "quantized": False, "scale_of": info.name} for n, d, sh in rest]
