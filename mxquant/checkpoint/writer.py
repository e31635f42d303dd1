"""One output safetensors file written tensor by tensor: writes and read-back on one background
thread, sha256 on another, so they overlap each other and the next chunk's read and quantization.

The header goes first (every output shape and dtype is known from the plan); then each
tensor's bytes, in layout order. The file lives under `path + ".tmp"` until `close()` has
flushed, fsync'd and renamed it, so a file under its final name is always complete.

With `verify`, every chunk is read back from the file right after it is written and compared
byte for byte with what was meant (still in memory): one read and a memcmp instead of hashing
the file a second time; the first and last bytes of each tensor are kept for verify.check_written,
which opens the renamed file with the safetensors package. Every `WRITEBACK` bytes the kernel is
asked to start writing the file out (Linux sync_file_range), so the fsync at close waits for
the tail only, not for the whole shard.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading

from .dstdir import open_new
from .stio import CheckpointError, build_header

EDGE = 128
"""Bytes kept of each tensor's start and end for the check through the safetensors package."""
READ_BACK = 1 << 20
"""Read-back piece: a chunk is re-read and compared this many bytes at a time."""
WRITEBACK = 64 << 20


def _start_writeback():
    """sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE) where libc has it (Linux):
    starts writing the range out without waiting; None elsewhere."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd, offset, nbytes: fn(fd, offset, nbytes, 2)  # advisory: the fsync at close decides


_writeback = _start_writeback()


def drain(q: queue.Queue, handle, errors: list) -> None:
    """A background thread's loop: `handle(item)` for each item of `q` until None. The first
    error goes to `errors` (a list the caller's thread checks and re-raises; threads that share
    it all stop handling then) and the rest of the items are only drained, so a producer never
    blocks on a full queue."""
    while (item := q.get()) is not None:
        if not errors:
            try:
                handle(item)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(e)


class ShardWriter:
    def __init__(self, path: str, layout: list[tuple[str, str, tuple]], metadata: dict | None = None, *,
                 verify: bool = False):
        self.path, self.tmp = path, path + ".tmp"
        blob, self._expected = build_header(layout, metadata)
        self._next, self._left = 0, 0
        self.digests: dict[str, str] = {}
        """sha256 of each tensor's bytes as written (complete after close())."""
        self.edges: dict[str, tuple[bytes, bytes]] = {}
        """With verify: each tensor's first and last EDGE bytes as written (complete after close())."""
        self._verify, self._every = verify, WRITEBACK
        self._scratch = bytearray(READ_BACK) if verify else None
        self._f = open_new(self.tmp, read_back=verify)  # never through a file or symlink already there
        self._f.write(struct.pack("<Q", len(blob)) + blob)
        self._pos = self._kicked = 8 + len(blob)
        self._name, self._head, self._tail, self._h = None, b"", b"", None  # per tensor, set at "begin"
        self._q: queue.Queue = queue.Queue(maxsize=3)  # bounds memory: a few chunks in flight
        self._hq: queue.Queue = queue.Queue(maxsize=3)
        self._errors: list[BaseException] = []  # the first error of either thread
        self._threads = [threading.Thread(target=drain, args=(q, lambda item, fn=fn: fn(*item), self._errors),
                                          daemon=True) for q, fn in ((self._q, self._write), (self._hq, self._hash))]
        for t in self._threads:
            t.start()

    def _write(self, kind: str, value) -> None:
        """The writing thread: each chunk written, read back (verify), its edges kept."""
        if kind == "begin":
            self._name, self._head, self._tail = value, b"", b""
        elif kind == "data":
            self._f.write(value)
            if self._verify:
                self._f.flush()
                self._read_back(self._name, value)
                if len(self._head) < EDGE:
                    self._head += bytes(value[:EDGE - len(self._head)])
                self._tail = (self._tail + bytes(value[-EDGE:]))[-EDGE:]
            self._pos += value.nbytes
            if _writeback is not None and self._pos - self._kicked >= self._every:
                self._f.flush()
                _writeback(self._f.fileno(), self._kicked, self._pos - self._kicked)
                self._kicked = self._pos
        elif self._verify:
            self.edges[value] = (self._head, self._tail)

    def _hash(self, kind: str, value) -> None:
        """The hashing thread: sha256 of each tensor's chunks (hashlib releases the GIL, so it
        runs beside the writing thread, the reader and the quantization)."""
        if kind == "begin":
            self._h = hashlib.sha256()
        elif kind == "data":
            self._h.update(value)
        else:
            self.digests[value] = self._h.hexdigest()

    def _read_back(self, name: str, data: memoryview) -> None:
        """The bytes just written at self._pos, read from the file and compared with `data`."""
        fd, scratch = self._f.fileno(), self._scratch
        view = memoryview(scratch)
        for o in range(0, data.nbytes, len(scratch)):
            k = min(len(scratch), data.nbytes - o)
            got = 0
            while got < k and (n := os.preadv(fd, [view[got:k]], self._pos + o + got)):
                got += n
            same = (scratch == data[o:o + k]) if k == len(scratch) else (bytearray(view[:k]) == data[o:o + k])
            if got != k or not same:
                raise CheckpointError(f"verify {os.path.basename(self.path)}: {name} bytes differ from what was "
                                      f"written (read back at byte {self._pos + o})")

    def _put(self, item) -> None:
        if self._errors:
            raise self._errors[0]
        self._q.put(item)
        self._hq.put(item)

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
        for q, t in zip((self._q, self._hq), self._threads):
            if t.is_alive():
                q.put(None)
                t.join()

    def close(self) -> None:
        if self._next != len(self._expected):
            raise RuntimeError(f"internal: {self.path} closed after {self._next} of {len(self._expected)} tensors")
        self._join()
        if self._errors:
            raise self._errors[0]
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """After a failure: the threads stopped, the file closed and the .tmp removed. A close
        that fails (its buffered bytes cannot be written: a full disk) still closes the file; it
        is not raised, so the error being handled stays the one reported."""
        try:
            self._join()
        finally:
            try:
                if not self._f.closed:
                    self._f.close()
            except OSError:
                pass
            if os.path.lexists(self.tmp):
                os.remove(self.tmp)
