"""The manifest: per output tensor name, shape, dtype, sha256 (and SQNR / relative error for
quantized ones); per shard the source it came from (its size and the sha256 of its bytes), so
`--resume` can tell a finished shard of this very source.

While converting, each finished shard gets a part file in DST/.mxquant-convert/; at the end
rank 0 merges them into DST/mxquant-manifest.json and removes the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading

from .dstdir import MANIFEST, PARTS, replace_from
from .srcfiles import is_inside
from .writer import drain


def file_sha256(path: str, block: int = 8 << 20) -> str:
    """sha256 of a whole file: a source shard's identity (its bytes, not only its header: a
    re-saved shard with new weights but the same names, shapes and dtypes is another source)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        buf = bytearray(block)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class HashingReader:
    """The source file as the conversion reads it (seek + readinto), hashing the bytes on the
    way when they are read front to back, as the converter does; `sha256()` is then the whole
    file's hash without a second read (or, if the reads were not in order, a fresh one).

    The hashing runs on a thread of its own (hashlib releases the GIL), so the reads that the
    quantization waits for are not held up by it: each buffer read is queued for it (at most
    HASH_QUEUE at a time) and must not be modified afterwards (the converter only reads them)."""

    HASH_QUEUE = 4

    def __init__(self, f, path: str):
        self._f, self._path, self._h = f, path, hashlib.sha256()
        self._hashed = self._at = 0
        self._in_order = True
        self._q: queue.Queue = queue.Queue(maxsize=self.HASH_QUEUE)
        self._errors: list[BaseException] = []  # the hashing thread's, raised by readinto / sha256
        self._thread = threading.Thread(target=drain, args=(self._q, lambda view: self._h.update(view), self._errors),
                                        daemon=True, name="mxquant-source-sha256")
        self._thread.start()

    def _put(self, item) -> None:
        if self._errors:
            raise self._errors[0]
        self._q.put(item)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._at = self._f.seek(offset, whence)
        return self._at

    def readinto(self, b) -> int:
        if self._in_order and self._at > self._hashed:  # a gap (the header): hash it from the file
            with open(self._path, "rb") as g:
                g.seek(self._hashed)
                gap = g.read(self._at - self._hashed)
            self._put(gap)
            self._hashed += len(gap)
        n = self._f.readinto(b) or 0
        if self._at == self._hashed and self._in_order:
            self._put(memoryview(b).cast("B")[:n])
            self._hashed += n
        else:
            self._in_order = False
        self._at += n
        return n

    def fileno(self) -> int:
        return self._f.fileno()

    def __getattr__(self, name):  # any other way of reading: no longer known to be in order
        self._in_order = False
        return getattr(self._f, name)

    def close(self) -> None:
        """Stop the hashing thread (idempotent); `sha256()` does it too."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()

    def sha256(self) -> str:
        self.close()
        if self._errors:
            raise self._errors[0]
        if self._in_order and self._hashed == os.fstat(self._f.fileno()).st_size:
            return self._h.hexdigest()
        return file_sha256(self._path)


def part_rel(shard_file: str) -> str:
    """A shard's record, relative to DST (written through Dst.target: never outside DST)."""
    return f"{PARTS}/{shard_file}.json"


def _inside(dst: str, rel: str) -> str:
    """DST/rel, refused (OSError) where it resolves outside DST: a record is never read through a
    symlink that leads elsewhere."""
    path = os.path.join(dst, rel)
    if not is_inside(os.path.realpath(path), os.path.realpath(dst)):
        raise OSError(f"DST/{rel} resolves outside DST")
    return path


def write_json_atomic(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    blob = json.dumps(obj, indent=1).encode()
    replace_from(path, lambda f: f.write(blob))


def shard_record(shard, options: dict, out_path: str, tensors: list[dict], seconds: float,
                 source_sha256: str) -> dict:
    return {
        "file": shard.file,
        "source": {"size": shard.size, "sha256": source_sha256},
        "options": options,
        "output": {"size": os.path.getsize(out_path)},
        "seconds": seconds,
        "tensors": tensors,
    }


def _recorded(dst: str, shard_file: str) -> dict | None:
    """A previous run's record of a shard: its part file, else its entry in the final manifest.
    An unreadable or malformed record is no record (that shard is converted again)."""
    try:
        path = _inside(dst, part_rel(shard_file))
        if os.path.isfile(path):
            with open(path) as f:
                rec = json.load(f)
        else:
            with open(_inside(dst, MANIFEST)) as f:
                rec = next((s for s in json.load(f)["shards"] if s["file"] == shard_file), None)
        ok = (isinstance(rec, dict) and isinstance(rec.get("source"), dict) and isinstance(rec.get("output"), dict)
              and isinstance(rec.get("tensors"), list) and all(isinstance(t, dict) for t in rec["tensors"]))
        return rec if ok else None
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError):
        return None


def finished_record(dst: str, shard, options: dict) -> dict | None:
    """The record of `shard` if a previous run finished it with these options from this very
    source (same size and sha256 of its bytes) and its output file is intact (same size; every
    tensor's name, dtype, shape and sha256 as recorded); else None."""
    rec = _recorded(dst, shard.file)
    if rec is None or rec.get("options") != options or rec["source"].get("size") != shard.size:
        return None
    out = os.path.join(dst, shard.file)
    if not os.path.isfile(out) or os.path.getsize(out) != rec["output"].get("size"):
        return None
    if rec["source"].get("sha256") != file_sha256(shard.path):
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
        with open(_inside(dst, part_rel(name))) as f:
            recs.append(json.load(f))
    return recs
