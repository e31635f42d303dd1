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
MAX_HEADER = 100_000_000
"""The safetensors package's MAX_HEADER_SIZE: a longer header is refused by its readers, so by this
reader too, and never written (plan.py checks every output header against it)."""


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


class _DuplicateKey(Exception):
    pass


def _unique(pairs: list) -> dict:
    """json object_pairs_hook: an object, refusing a key given twice (json.loads would keep the last)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _is_index(v) -> bool:
    """A non-negative JSON integer that fits an int64 (bool, float and str are not)."""
    return type(v) is int and 0 <= v < 1 << 63


def _show(name: str) -> str:
    """A tensor name for a one-line message: as is when plain, else repr; cut when long."""
    s = name if name.isprintable() else repr(name)
    return s if len(s) <= 200 else s[:200] + "..."


def encodable(s: str) -> bool:
    """`s` is valid Unicode: it encodes as UTF-8. A JSON escape of a lone surrogate ("\\ud800")
    parses into a str that does not, and the safetensors package refuses such a header."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_LONE = "is not valid Unicode (a lone surrogate escape), which safetensors readers refuse"

_FIELDS = ("data_offsets", "dtype", "shape")
_MAX_COUNT = (1 << 64) - 1  # the safetensors package's limit on element counts and their bits (usize)


def _parse(base: str, blob: bytes) -> dict:
    try:
        header = json.loads(blob.decode("utf-8"), object_pairs_hook=_unique)
    except _DuplicateKey as e:
        raise CheckpointError(f"{base}: corrupt safetensors header (key {_show(str(e.args[0]))} appears twice)") from None
    except RecursionError:
        raise CheckpointError(f"{base}: corrupt safetensors header (nested too deeply)") from None
    except ValueError as e:  # bad JSON, bad UTF-8, an integer of too many digits
        raise CheckpointError(f"{base}: corrupt safetensors header ({_show(str(e))})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{base}: corrupt safetensors header (not an object)")
    return header


def _metadata(base: str, header: dict) -> dict:
    meta = header.pop("__metadata__", None)
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{base}: corrupt safetensors header (__metadata__ must be an object of strings)")
    bad = next((x for kv in meta.items() for x in kv if not encodable(x)), None)
    if bad is not None:
        raise CheckpointError(f"{base}: corrupt safetensors header (__metadata__ entry {_show(bad)} {_LONE})")
    return meta


def _tensor(base: str, name: str, h) -> TensorInfo:
    """One header entry, checked field by field (strict JSON types: a shape entry is a
    non-negative int, not a bool, float or string)."""
    what = f"{base}: corrupt safetensors header (tensor {_show(name)}"
    if not name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise CheckpointError(f"{base}: corrupt safetensors header (tensor name {name!r:.200} is empty "
                              "or has control characters)")
    if not encodable(name):
        raise CheckpointError(f"{base}: corrupt safetensors header (tensor name {_show(name)} {_LONE})")
    if not isinstance(h, dict) or tuple(sorted(h)) != _FIELDS:
        raise CheckpointError(f"{what}: an entry has exactly the fields dtype, shape, data_offsets)")
    dtype, shape, offsets = h["dtype"], h["shape"], h["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{base}: tensor {_show(name)} has unsupported dtype {_show(str(dtype))}")
    if not isinstance(shape, list) or not all(_is_index(d) for d in shape):
        raise CheckpointError(f"{what}: shape {_show(json.dumps(shape))} is not a list of non-negative integers)")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_index(o) for o in offsets)
            or offsets[0] > offsets[1]):
        raise CheckpointError(f"{what}: data_offsets {_show(json.dumps(offsets))} are not two ascending "
                              "non-negative integers)")
    n = 1
    for d in shape:  # the element count's running products, as the safetensors package checks them
        n *= d       # (a later 0 does not help), then the count's bits
        if n > _MAX_COUNT:
            break
    if n > _MAX_COUNT or n * 8 * itemsize(dtype) > _MAX_COUNT:
        raise CheckpointError(f"{what}: shape {_show(json.dumps(shape))} overflows a 64-bit count, "
                              "which safetensors readers refuse)")
    b, e = offsets
    if e - b != math.prod(shape) * itemsize(dtype):
        raise CheckpointError(f"{base}: corrupt safetensors (offsets of {_show(name)} do not match its shape)")
    return TensorInfo(name, dtype, tuple(shape), b, e)


def read_header(path: str) -> tuple[dict[str, TensorInfo], dict, int]:
    """(tensors by name in file order, __metadata__, offset of the data) of a safetensors file,
    checked: the header is one JSON object with no key twice; `__metadata__` maps strings to
    strings; every tensor has a non-empty name, a known dtype, a shape of non-negative ints and
    offsets that match it; the tensors' bytes are contiguous, without overlap, and end exactly
    at the end of the file (so a truncated or padded file is refused). Every refusal is a
    CheckpointError."""
    base = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{base}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER and 8 + n <= size:
            raise CheckpointError(f"{base}: safetensors header of {n:,} bytes, past the {MAX_HEADER:,} bytes "
                                  "safetensors readers accept")
        if 8 + n > size:
            raise CheckpointError(f"{base}: truncated or corrupt safetensors (header length {n}, file {size} bytes)")
        header = _parse(base, f.read(n))
    meta = _metadata(base, header)
    tensors = sorted((_tensor(base, name, h) for name, h in header.items()), key=lambda t: (t.begin, t.end))
    infos, end = {}, 0
    for t in tensors:
        if t.begin != end:
            raise CheckpointError(f"{base}: corrupt safetensors (offsets of {_show(t.name)} "
                                  f"{'overlap another tensor' if t.begin < end else 'leave a gap'})")
        infos[t.name] = t
        end = t.end
    data_start = 8 + n
    if data_start + end != size:
        raise CheckpointError(f"{base}: truncated or corrupt safetensors (header says {data_start + end} bytes, "
                              f"file has {size})")
    return infos, meta, data_start


def build_header(layout, metadata: dict | None) -> tuple[bytes, list[tuple[str, int]]]:
    """The header of a file of `layout` [(name, dtype, shape)] in that order, and `metadata`:
    (its bytes as written after the 8-byte length, padded with spaces to a multiple of 8;
    [(name, nbytes)] in file order). The writer writes it; the plan measures it."""
    header, sizes, offset = {}, [], 0
    for name, dtype, shape in layout:
        nbytes = math.prod(shape) * itemsize(dtype)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        sizes.append((name, nbytes))
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    return blob + b" " * (-len(blob) % 8), sizes


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