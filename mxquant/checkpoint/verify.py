"""Re-read a written shard with an independent reader (the `safetensors` package) and check
every tensor's name, dtype, shape and sha256 against what the converter meant to write."""

from __future__ import annotations

import hashlib
import os

from .stio import CheckpointError, NAMES, tensor_bytes


def verify_shard(path: str, entries: list[dict], chunk_rows: int = 4096) -> None:
    """Raises CheckpointError naming the first tensor that differs (bytes, dtype, shape, or a
    tensor missing / unexpected)."""
    from safetensors import safe_open

    base = os.path.basename(path)
    with safe_open(path, framework="pt") as f:
        names = set(f.keys())
        want = {e["name"] for e in entries}
        if names != want:
            extra, missing = sorted(names - want), sorted(want - names)
            raise CheckpointError(f"verify {base}: unexpected {extra[:3]} missing {missing[:3]}")
        for e in entries:
            sl = f.get_slice(e["name"])
            shape = list(sl.get_shape())
            if shape != e["shape"] or sl.get_dtype() != e["dtype"]:
                raise CheckpointError(f"verify {base}: {e['name']} is {sl.get_dtype()} {shape}, "
                                      f"meant {e['dtype']} {e['shape']}")
            h = hashlib.sha256()
            if not shape:
                t = f.get_tensor(e["name"])
                h.update(tensor_bytes(t))
            else:
                for r0 in range(0, max(shape[0], 1), chunk_rows):
                    part = sl[r0:r0 + chunk_rows]
                    if NAMES[part.dtype] != e["dtype"]:
                        raise CheckpointError(f"verify {base}: {e['name']} reads back as {part.dtype}")
                    h.update(tensor_bytes(part))
            if h.hexdigest() != e["sha256"]:
                raise CheckpointError(f"verify {base}: {e['name']} bytes differ from what was written")
