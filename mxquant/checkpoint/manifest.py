"""The manifest: per output tensor name, shape, dtype, sha256 (and SQNR / relative error for
quantized ones); per shard the source it came from, so `--resume` can tell a finished shard.

While converting, each finished shard gets a part file in DST/.mxquant-convert/; at the end
rank 0 merges them into DST/mxquant-manifest.json and removes the folder.
"""

from __future__ import annotations

import hashlib
import json
import os

PARTS = ".mxquant-convert"
MANIFEST = "mxquant-manifest.json"


def header_sha256(path: str, data_start: int) -> str:
    """Identity of a source shard that is cheap to check: the hash of its header (names, dtypes,
    shapes, offsets) plus its size (recorded beside it)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(data_start)).hexdigest()


def part_path(dst: str, shard_file: str) -> str:
    return os.path.join(dst, PARTS, shard_file + ".json")


def write_json_atomic(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_record(shard, options: dict, out_path: str, tensors: list[dict], seconds: float) -> dict:
    return {
        "file": shard.file,
        "source": {"size": shard.size, "header_sha256": header_sha256(shard.path, shard.data_start)},
        "options": options,
        "output": {"size": os.path.getsize(out_path)},
        "seconds": seconds,
        "tensors": tensors,
    }


def finished_record(dst: str, shard, options: dict) -> dict | None:
    """The record of `shard` if a previous run finished it with these options and its output
    file is intact (same size; every tensor's name, dtype, shape and sha256 as recorded); else None."""
    path = part_path(dst, shard.file)
    final = os.path.join(dst, MANIFEST)
    rec = None
    if os.path.isfile(path):
        with open(path) as f:
            rec = json.load(f)
    elif os.path.isfile(final):
        with open(final) as f:
            rec = next((s for s in json.load(f).get("shards", []) if s["file"] == shard.file), None)
    if not rec or rec.get("options") != options:
        return None
    if rec["source"] != {"size": shard.size, "header_sha256": header_sha256(shard.path, shard.data_start)}:
        return None
    out = os.path.join(dst, shard.file)
    if not os.path.isfile(out) or os.path.getsize(out) != rec["output"]["size"]:
        return None
    from .verify import verify_shard

    try:
        verify_shard(out, rec["tensors"])
    except Exception:  # noqa: BLE001 - unreadable (any reader error) or different: convert it again
        return None
    return rec


def load_parts(dst: str, files: list[str]) -> list[dict]:
    recs = []
    for name in files:
        with open(part_path(dst, name)) as f:
            recs.append(json.load(f))
    return recs
