"""safetensors files read and written one tensor at a time.

Why our own reader and writer rather than `safetensors.torch.save_file`: a shard is written
while its tensors are produced (header first: every output shape and dtype is known from the
plan), so memory stays at one tensor; and a truncated or corrupt file is refused from its
header before anything is written. The format: 8-byte little-endian header length, a JSON
header {name: {dtype, shape, data_offsets}, "__metadata__": {...}} padded with spaces to a
multiple of 8, then the tensors' bytes back to back. The independent `safetensors` package
re-reads every output in verify.py.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
from dataclasses import dataclass

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.float8_e8m0fnu,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}
FLOAT_NAMES = ("F64", "F32", "F16", "BF16")
MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(Exception):
    """A checkpoint this converter refuses, or bad arguments: one line, exit code 2."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple
    begin: int
    end: int


def itemsize(dtype: str) -> int:
    return DTYPES[dtype].itemsize


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict, int]:
    """(tensors by name, __metadata__, offset of the data) of a safetensors file, checked:
    the header parses, every dtype is known, offsets match shapes, are contiguous and end
    exactly at the end of the file (so a truncated or padded file is refused)."""
    base = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{base}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{base}: truncated or corrupt safetensors (header length {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f"{base}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{base}: corrupt safetensors header (not an object)")
    meta = header.pop("__metadata__", None) or {}
    infos, end = {}, 0
    try:
        entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
        for name, h in entries:
            dtype, shape, (b, e) = h["dtype"], tuple(int(d) for d in h["shape"]), h["data_offsets"]
            if dtype not in DTYPES:
                raise CheckpointError(f"{base}: tensor {name} has unsupported dtype {dtype}")
            if b != end or e - b != math.prod(shape) * itemsize(dtype):
                raise CheckpointError(f"{base}: corrupt safetensors (offsets of {name} do not match its shape)")
            infos[name] = TensorInfo(name, dtype, shape, b, e)
            end = e
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{base}: corrupt safetensors header ({type(e).__name__}: {e})") from None
    data_start = 8 + n
    if data_start + end != size:
        raise CheckpointError(f"{base}: truncated or corrupt safetensors (header says {data_start + end} bytes, "
                              f"file has {size})")
    return infos, meta, data_start


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor as a writable memoryview, no copy and no
    numpy (torch does not depend on it); the view keeps the tensor alive."""
    t = t.contiguous()
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(bytearray())
    buf = (ctypes.c_char * n).from_address(t.data_ptr())
    buf.owner = t  # a memoryview holds its exporter, and the exporter holds the tensor
    return memoryview(buf).cast("B")