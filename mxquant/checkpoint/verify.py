"""Check a written shard with an independent reader (the `safetensors` package).

- `check_written`, right after a shard is converted: the converter's writer has already read
  every chunk back from the file and compared it byte for byte with what it meant to write
  (writer.py); here the package opens the renamed file, and every tensor's name, dtype, shape
  and first and last bytes (at the offsets the package reads from the header) must be those
  written. No second pass over the data: the bytes were compared as they were written.
- `verify_shard`, for a shard an earlier run finished (--resume) or any file with a manifest:
  every tensor's name, dtype, shape and the sha256 of all its bytes, read through the package.

safetensors memory-maps the file, and the pages it touches count as resident until the map
is closed; so the file is opened afresh for every ~64 MB read, keeping the resident size of
verification at that, not at the shard's size. A tensor is read in pieces of at most that
size too: whole rows, or parts of a row along its last dimension when one row is larger."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os

from .stio import NAMES, CheckpointError, itemsize, tensor_bytes


@contextlib.contextmanager
def _refused_as(base: str):
    """What the safetensors package raises on a file it refuses (its SafetensorError) as this
    module's one-line CheckpointError; anything else (a failing disk, a bug) stays what it is."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(f"verify {base}: the safetensors package refuses it ({type(e).__name__}: {first})") \
            from None


def _open_checked(f, base: str, entries: list[dict]) -> dict:
    """{name: shape} of the open file, refused unless its names, shapes and dtypes are exactly
    those of `entries`."""
    names = set(f.keys())
    want = {e["name"] for e in entries}
    if names != want:
        extra, missing = sorted(names - want), sorted(want - names)
        raise CheckpointError(f"verify {base}: unexpected {extra[:3]} missing {missing[:3]}")
    shapes = {}
    for e in entries:
        s = f.get_slice(e["name"])
        shape, dtype = list(s.get_shape()), s.get_dtype()
        if shape != e["shape"] or dtype != e["dtype"]:
            raise CheckpointError(f"verify {base}: {e['name']} is {dtype} {shape}, meant {e['dtype']} {e['shape']}")
        shapes[e["name"]] = shape
    return shapes


def _edge_index(shape: list, m: int, last: bool) -> tuple:
    """The index of a tensor's first (or last) m elements in file order, m <= shape[-1]."""
    lead = tuple(slice(d - 1, d) if last else slice(0, 1) for d in shape[:-1])
    k = shape[-1]
    return (*lead, slice(k - m, k) if last else slice(0, m))


def check_written(path: str, entries: list[dict], edges: dict[str, tuple[bytes, bytes]]) -> None:
    """The file as the safetensors package reads it: exactly the tensors of `entries` with
    their dtypes and shapes, and each tensor's first and last bytes equal to `edges[name]`
    (what the writer wrote there). Raises CheckpointError naming the first difference."""
    from safetensors import safe_open

    base = os.path.basename(path)
    with _refused_as(base), safe_open(path, framework="pt") as f:
        shapes = _open_checked(f, base, entries)
        for e in entries:
            shape, item = shapes[e["name"]], itemsize(e["dtype"])
            head, tail = edges[e["name"]]
            if not shape:
                got = (tensor_bytes(f.get_tensor(e["name"])),) * 2
            elif math.prod(shape) == 0:
                continue
            else:
                m = min(shape[-1], max(1, len(head) // item))
                s = f.get_slice(e["name"])
                got = tuple(tensor_bytes(s[_edge_index(shape, m, last)]) for last in (False, True))
            if bytes(got[0]) != head[:got[0].nbytes] or bytes(got[1]) != tail[len(tail) - got[1].nbytes:]:
                raise CheckpointError(f"verify {base}: {e['name']} bytes differ from what was written")


def verify_shard(path: str, entries: list[dict], chunk_bytes: int = 64 << 20) -> None:
    """Raises CheckpointError naming the first tensor that differs (bytes, dtype, shape, or a
    tensor missing / unexpected)."""
    from safetensors import safe_open

    base = os.path.basename(path)
    with _refused_as(base), contextlib.ExitStack() as handle:  # one open file, reopened after each chunk_bytes read
        f = handle.enter_context(safe_open(path, framework="pt"))  # through it (bounds the mapped pages)
        shapes = _open_checked(f, base, entries)
        budget = chunk_bytes
        for e in entries:
            shape, dtype = shapes[e["name"]], e["dtype"]
            h = hashlib.sha256()
            for index in _pieces(shape, itemsize(dtype), chunk_bytes):
                if budget <= 0:
                    handle.close()
                    f, budget = handle.enter_context(safe_open(path, framework="pt")), chunk_bytes
                part = f.get_slice(e["name"])[index] if shape else f.get_tensor(e["name"])
                budget -= part.numel() * part.element_size()
                if NAMES[part.dtype] != e["dtype"]:
                    raise CheckpointError(f"verify {base}: {e['name']} reads back as {part.dtype}")
                h.update(tensor_bytes(part))
            if h.hexdigest() != e["sha256"]:
                raise CheckpointError(f"verify {base}: {e['name']} bytes differ from what was written")


def _pieces(shape: list, item: int, chunk_bytes: int):
    """Index tuples (of slices) that cover a tensor of `shape` in file order, each at most
    chunk_bytes (or one element): runs of whole sub-tensors along the first dimension where one
    fits, else each of them split the same way along the next dimension. () for a 0-d tensor."""
    if not shape:
        yield ()
        return
    if math.prod(shape) == 0:  # nothing to read (however long its other dimensions)
        return
    inner = math.prod(shape[1:]) * item
    if inner <= chunk_bytes or len(shape) == 1:
        step = max(1, chunk_bytes // max(inner, 1))
        for r0 in range(0, shape[0], step):
            yield (slice(r0, r0 + step),)
        return
    for r in range(shape[0]):
        for rest in _pieces(shape[1:], item, chunk_bytes):
            yield (slice(r, r + 1), *rest)
