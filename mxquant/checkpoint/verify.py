"""Re-read a written shard with an independent reader (the `safetensors` package) and check
every tensor's name, dtype, shape and sha256 against what the converter meant to write.

safetensors memory-maps the file, and the pages it touches count as resident until the map
is closed; so the file is opened afresh for every ~64 MB of rows, keeping the resident size
of verification at that, not at the shard's size."""

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
            row = math.prod(shape[1:]) * itemsize(dtype) if shape else 0
            step = max(1, chunk_bytes // max(row, 1))
            for r0 in range(0, max(shape[0], 1) if shape else 1, step):
                if budget <= 0:
                    handle.close()
                    f, budget = handle.enter_context(safe_open(path, framework="pt")), chunk_bytes
                part = f.get_slice(e["name"])[r0:r0 + step] if shape else f.get_tensor(e["name"])
                budget -= part.numel() * part.element_size()
                if NAMES[part.dtype] != e["dtype"]:
                    raise CheckpointError(f"verify {base}: {e['name']} reads back as {part.dtype}")
                h.update(tensor_bytes(part))
            if h.hexdigest() != e["sha256"]:
                raise CheckpointError(f"verify {base}: {e['name']} bytes differ from what was written")
