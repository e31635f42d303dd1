"""Re-read a written shard with an independent reader (the `safetensors` package) and check
every tensor's name, dtype, shape and sha256 against what the converter meant to write.

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


def verify_shard(path: str, entries: list[dict], chunk_bytes: int = 64 << 20) -> None:
    """Raises CheckpointError naming the first tensor that differs (bytes, dtype, shape, or a
    tensor missing / unexpected)."""
    from safetensors import safe_open

    base = os.path.basename(path)
    with contextlib.ExitStack() as handle:  # one open file, reopened after each chunk_bytes read
        f = handle.enter_context(safe_open(path, framework="pt"))  # through it (bounds the mapped pages)
        names = set(f.keys())
        slices = {n: f.get_slice(n) for n in names}
        shapes = {n: (list(s.get_shape()), s.get_dtype()) for n, s in slices.items()}
        want = {e["name"] for e in entries}
        if names != want:
            extra, missing = sorted(names - want), sorted(want - names)
            raise CheckpointError(f"verify {base}: unexpected {extra[:3]} missing {missing[:3]}")
        budget = chunk_bytes
        for e in entries:
            shape, dtype = shapes[e["name"]]
            if shape != e["shape"] or dtype != e["dtype"]:
                raise CheckpointError(f"verify {base}: {e['name']} is {dtype} {shape}, meant {e['dtype']} {e['shape']}")
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
