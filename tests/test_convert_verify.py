"""Verification of a freshly written shard (issue 22): the writer reads every chunk back from
the file and compares it byte for byte with what it meant to write; verify.check_written then
opens the renamed file with the safetensors package (an independent reader) and checks every
tensor's name, dtype, shape and first and last bytes. The faults are injected where a real
one arises: between the bytes meant and the bytes the file holds."""

import os

import pytest
import torch

pytest.importorskip("safetensors")

from convert_ckpt import listing, llama_like, save_checkpoint  # noqa: E402

from mxquant.checkpoint import convert  # noqa: E402
from mxquant.checkpoint import writer as writer_mod  # noqa: E402
from mxquant.checkpoint.stio import NAMES, CheckpointError, tensor_bytes  # noqa: E402
from mxquant.checkpoint.verify import check_written  # noqa: E402

# chunks of 2^12 elements: the 96x64 MLP weights and the 200x64 embedding take several writes
CHUNK = 1 << 12


class _FlipsABit:
    """The writer's file, except that its `nth` write lands with one bit flipped in the middle
    (a faulty write path, or another process writing into the file)."""

    def __init__(self, f, nth: int):
        self._f, self._nth, self.calls = f, nth, 0

    def write(self, b):
        self.calls += 1
        if self.calls == self._nth:
            b = bytearray(b)
            b[len(b) // 2] ^= 0x10
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)


_OPEN_NEW = writer_mod.open_new


def _corrupt_nth_write(monkeypatch, nth: int) -> list:
    made = []

    def opened(path, **kw):
        made.append(_FlipsABit(_OPEN_NEW(path, **kw), nth))
        return made[-1]

    monkeypatch.setattr(writer_mod, "open_new", opened)
    return made


@pytest.fixture
def src(tmp_path):
    save_checkpoint(tmp_path / "src", llama_like(layers=2))
    return tmp_path / "src"


# write 1 is the header; then (at CHUNK) 3: a chunk of the kept embedding, 8: a quantized chunk of
# down_proj, 12: gate_proj's scales, 46: the last tensor (model.norm, 128 bytes)
@pytest.mark.parametrize("nth", [3, 8, 12, 46])
@pytest.mark.parametrize("piece", [None, 100])  # read back in 1 MiB pieces, or in 100-byte ones
def test_a_bit_flipped_on_its_way_to_the_file_fails_the_run(tmp_path, src, monkeypatch, nth, piece):
    if piece:
        monkeypatch.setattr(writer_mod, "READ_BACK", piece)
    clean = listing(convert(src, tmp_path / "clean", chunk_elems=CHUNK).dst)
    made = _corrupt_nth_write(monkeypatch, nth)
    with pytest.raises(CheckpointError, match=r"verify model\.safetensors: .* bytes differ from what was written"):
        convert(src, tmp_path / "dst", chunk_elems=CHUNK)
    assert made[0].calls >= nth  # the fault was injected
    assert not os.path.exists(tmp_path / "dst")  # a fresh DST is removed whole
    # without verification the same fault goes into the output unnoticed: the check is what caught it
    _corrupt_nth_write(monkeypatch, nth)
    unverified = listing(convert(src, tmp_path / "unverified", chunk_elems=CHUNK, verify=False).dst)
    assert unverified["model.safetensors"] != clean["model.safetensors"]


def test_read_back_and_early_writeback_leave_the_bytes_alone(tmp_path, src, monkeypatch):
    """In 100-byte read-back pieces and with the kernel asked to write out after every chunk,
    the output is the default run's, and the ranges handed to writeback follow one another
    from the end of the header to within the file."""
    default = listing(convert(src, tmp_path / "default", chunk_elems=CHUNK).dst)
    kicks = []
    real = writer_mod._writeback
    monkeypatch.setattr(writer_mod, "READ_BACK", 100)
    monkeypatch.setattr(writer_mod, "WRITEBACK", 1)
    monkeypatch.setattr(writer_mod, "_writeback", lambda fd, off, n: (kicks.append((off, n)), real and real(fd, off, n)))
    small = listing(convert(src, tmp_path / "small", chunk_elems=CHUNK).dst)
    assert {k: v for k, v in small.items() if k != "mxquant-manifest.json"} == \
        {k: v for k, v in default.items() if k != "mxquant-manifest.json"}
    data = small["model.safetensors"]
    assert kicks[0][0] == 8 + int.from_bytes(data[:8], "little")
    assert all(a + n == b for (a, n), (b, _) in zip(kicks, kicks[1:]))
    assert len(kicks) > 10 and kicks[-1][0] + kicks[-1][1] == len(data)


def _saved(tmp_path, tensors: dict) -> tuple[str, list, dict]:
    """A file written by the safetensors package, its entries and the edges of each tensor's
    bytes taken from the tensors themselves."""
    from safetensors.torch import save_file

    path = str(tmp_path / "t.safetensors")
    save_file(tensors, path)
    entries = [{"name": k, "dtype": NAMES[v.dtype], "shape": list(v.shape)} for k, v in tensors.items()]
    edges = {}
    for k, v in tensors.items():
        raw = bytes(tensor_bytes(v))
        edges[k] = (raw[:writer_mod.EDGE], raw[-writer_mod.EDGE:] if raw else b"")
    return path, entries, edges


def test_check_written_reads_each_tensors_edges_through_safetensors(tmp_path):
    g = torch.Generator().manual_seed(3)
    t = {
        "scalar": torch.tensor(1.5),
        "short": torch.randn(5, generator=g).bfloat16(),
        "narrow": torch.randn(7, 3, generator=g),
        "wide": torch.randn(4, 320, generator=g).bfloat16(),
        "cube": torch.randn(3, 4, 64, generator=g).to(torch.float8_e4m3fn),
        "bytes": torch.randint(0, 256, (6, 50), generator=g, dtype=torch.uint8),
        "twin": torch.randn(4, 320, generator=g).bfloat16(),
        "no_rows": torch.empty(0, 64), "no_cols": torch.empty(3, 0, dtype=torch.bfloat16),
    }
    path, entries, edges = _saved(tmp_path, t)
    check_written(path, entries, edges)
    swapped = dict(edges, wide=edges["twin"], twin=edges["wide"])  # same shape: only the bytes tell
    with pytest.raises(CheckpointError, match="twin bytes differ|wide bytes differ"):
        check_written(path, entries, swapped)
    for name, i in (("short", 1), ("cube", 0), ("scalar", 0)):  # first bytes, last bytes, a 0-d tensor
        head, tail = edges[name]
        bad = (head, tail[:-1] + bytes([tail[-1] ^ 1])) if i else (bytes([head[0] ^ 1]) + head[1:], tail)
        with pytest.raises(CheckpointError, match=f"{name} bytes differ"):
            check_written(path, entries, dict(edges, **{name: bad}))
    wrong_shape = [dict(e, shape=[5, 64]) if e["name"] == "cube" else e for e in entries]
    with pytest.raises(CheckpointError, match="cube is F8_E4M3"):
        check_written(path, wrong_shape, edges)
    with pytest.raises(CheckpointError, match="missing"):
        check_written(path, entries + [{"name": "extra", "dtype": "U8", "shape": [1]}], edges)
