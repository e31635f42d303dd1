"""One output safetensors file written tensor by tensor, its writes and hashing on a
background thread so they overlap the next chunk's read and quantization.

The header goes first (every output shape and dtype is known from the plan); then each
tensor's bytes, in layout order. The file lives under `path + ".tmp"` until `close()` has
flushed, fsync'd and renamed it, so a file under its final name is always complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import struct
import threading

from .dstdir import open_new
from .stio import itemsize


class ShardWriter:
    def __init__(self, path: str, layout: list[tuple[str, str, tuple]], metadata: dict | None = None):
        self.path, self.tmp = path, path + ".tmp"
        header, offset = {}, 0
        for name, dtype, shape in layout:
            nbytes = math.prod(shape) * itemsize(dtype)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        if metadata:
            header["__metadata__"] = metadata
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._expected = [(name, header[name]["data_offsets"][1] - header[name]["data_offsets"][0])
                          for name, _, _ in layout]
        self._next, self._left = 0, 0
        self.digests: dict[str, str] = {}
        """sha256 of each tensor's bytes as written (complete after close())."""
        self._f = open_new(self.tmp)  # never through a file or symlink already there
        self._f.write(struct.pack("<Q", len(blob)) + blob)
        self._q: queue.Queue = queue.Queue(maxsize=3)  # bounds memory: a few chunks in flight
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        h = None
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is not None:
                continue
            kind, value = item
            try:
                if kind == "begin":
                    h = hashlib.sha256()
                elif kind == "data":
                    h.update(value)
                    self._f.write(value)
                else:
                    self.digests[value] = h.hexdigest()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = e

    def _put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def begin(self, name: str) -> None:
        want, self._left = self._expected[self._next]
        if name != want:
            raise RuntimeError(f"internal: writing {name}, the layout expects {want}")
        self._put(("begin", name))

    def write_part(self, data: memoryview) -> None:
        """Queue `data` (its owner must not be modified afterwards; it is kept alive by the view)."""
        self._left -= data.nbytes
        if self._left < 0:
            raise RuntimeError(f"internal: {self._expected[self._next][0]} overruns its layout size")
        self._put(("data", data))

    def end(self) -> None:
        name = self._expected[self._next][0]
        if self._left:
            raise RuntimeError(f"internal: {name} is {self._left} bytes short")
        self._put(("end", name))
        self._next += 1

    def _join(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()

    def close(self) -> None:
        if self._next != len(self._expected):
            raise RuntimeError(f"internal: {self.path} closed after {self._next} of {len(self._expected)} tensors")
        self._join()
        if self._error is not None:
            raise self._error
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._join()
        if not self._f.closed:
            self._f.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
