"""convert's reusable read buffers (mxquant/checkpoint/tensors.py ReadBuffers): a buffer is lent
again only when no tensor, view or queued memoryview refers to it any more, so a chunk waiting
to be written or hashed is never overwritten; the bytes read are the file's."""

import torch

from mxquant.checkpoint.stio import tensor_bytes
from mxquant.checkpoint.tensors import ReadBuffers, buffers, read_range

MB = 1 << 20


def test_a_buffer_in_use_is_never_lent_again():
    pool = ReadBuffers(cap=3)
    a = pool.get(2 * MB)
    a.fill_(1)
    view = a.view(torch.bfloat16).reshape(1024, -1)  # the quantizer's view of the chunk
    ptr = a.data_ptr()
    del a
    b = pool.get(2 * MB)
    assert b.data_ptr() != ptr
    b.fill_(2)
    assert bool((view.view(torch.uint8) == 1).all())  # untouched
    del view
    c = pool.get(2 * MB)
    assert c.data_ptr() == ptr  # free again: reused, no new pages
    queued = tensor_bytes(c)  # what the writer / hasher queue holds
    del c
    d = pool.get(2 * MB)
    assert d.data_ptr() not in (ptr, b.data_ptr())
    assert bytes(queued[:4]) == b"\x01" * 4


def test_small_reads_and_reads_past_the_cap_get_fresh_tensors():
    pool = ReadBuffers(cap=1)
    held = pool.get(MB)
    other = pool.get(MB)  # the cap is reached: a plain tensor
    small = pool.get(100)
    assert len({held.data_ptr(), other.data_ptr(), small.data_ptr()}) == 3
    assert small.numel() == 100 and other.numel() == MB


def test_read_range_reads_the_file_bytes(tmp_path):
    data = torch.randint(0, 256, (3 * MB,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "blob"
    path.write_bytes(bytes(tensor_bytes(data)))
    buffers.clear()  # the conversion's pool: start empty
    with open(path, "rb") as f:
        first = read_range(f, 5, 2 * MB)
        assert torch.equal(first, data[5:5 + 2 * MB])
        ptr = first.data_ptr()
        del first
        again = read_range(f, MB, 2 * MB - 7)  # the same buffer, other bytes
        assert again.data_ptr() == ptr and torch.equal(again, data[MB:3 * MB - 7])


def test_at_the_cap_a_free_buffer_too_small_is_replaced():
    pool = ReadBuffers(cap=2)
    a, b = pool.get(MB), pool.get(MB)
    del a
    big = pool.get(3 * MB)  # the free 1 MB buffer makes way: pooled, not a one-off tensor
    del big
    again = pool.get(3 * MB)
    assert again.numel() == 3 * MB
    ptr = again.data_ptr()
    del again
    assert pool.get(2 * MB).data_ptr() == ptr  # the 3 MB buffer is in the pool
    assert b.numel() == MB


def test_a_failing_source_hash_is_raised_not_hung(tmp_path):
    """The source sha256 runs on its own thread (manifest.HashingReader): when it fails, the
    reads go on without blocking on its queue and the error comes back to the caller."""
    import threading

    import pytest

    from mxquant.checkpoint.manifest import HashingReader

    path = tmp_path / "blob"
    path.write_bytes(b"x" * (64 * 1024))

    class Broken:
        def update(self, _):
            raise MemoryError("hash failed")

    with open(path, "rb") as raw:
        reader = HashingReader(raw, str(path))
        reader._h = Broken()
        done, errors = threading.Event(), []

        def read_all():
            buf = bytearray(1024)
            try:
                for _ in range(64):
                    reader.readinto(buf)
            except MemoryError as e:
                errors.append(e)
            done.set()

        threading.Thread(target=read_all, daemon=True).start()
        assert done.wait(10), "the reader blocked on the hashing queue"
        assert errors and "hash failed" in str(errors[0])
        with pytest.raises(MemoryError, match="hash failed"):
            reader.sha256()
