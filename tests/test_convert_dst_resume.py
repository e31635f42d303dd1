"""`mxquant convert`'s output folder, continued from tests/test_convert_dst.py: what `--resume`
continues (a folder a conversion was writing into or finished, never someone's own files), its
record folder (never followed out of DST, written or read), a failed run into a folder found
empty, and what a conversion copies from SRC (permission bits, never setuid bits; unreadable files
and folders refused in the plan).

Oracles: a clean conversion of the same checkpoint, the bytes of files that must not change.
Tests that inject a fault (a crash, a denied read) are contract tests and say so.
"""

import errno
import json
import os

import pytest

pytest.importorskip("safetensors")

from convert_ckpt import listing, llama_like, refuse, save_checkpoint, without_manifest  # noqa: E402

from mxquant.checkpoint import CheckpointError, convert, driver, manifest  # noqa: E402
from mxquant.cli import main  # noqa: E402


def test_a_symlinked_record_folder_is_refused_under_resume(tmp_path, capsys):
    """DST/.mxquant-convert (the converter's own folder of shard records) planted as a symlink to
    another folder: --resume refuses before anything in DST changes, and the folder it points to
    (here holding a file of a record's name) stays as it was; nothing is read through it either."""
    src, dst, victim = tmp_path / "src", tmp_path / "dst", tmp_path / "victim"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    convert(src, dst)
    victim.mkdir()
    (victim / "model-00001-of-00002.safetensors.json").write_text("precious")
    os.symlink(victim, dst / manifest.PARTS)
    before = listing(dst)
    refuse(capsys, [src, dst, "--resume", "--quiet"], f"DST/{manifest.PARTS} is a symlink")
    assert listing(victim) == {"model-00001-of-00002.safetensors.json": b"precious"}
    assert listing(dst) == before and os.path.islink(dst / manifest.PARTS)
    # a record folder that is a file: refused alike
    os.unlink(dst / manifest.PARTS)
    (dst / manifest.PARTS).write_text("x")
    refuse(capsys, [src, dst, "--resume", "--quiet"], f"DST/{manifest.PARTS} is not a folder")


def test_resume_refuses_a_folder_no_conversion_wrote(tmp_path, capsys):
    """`--resume` into a folder of someone's own files (a model folder, say): it would remove the
    folder's config.json and every weight file the conversion does not write, so it is refused,
    nothing touched. A folder an interrupted run left (its record folder is made when the run
    takes DST, before any shard) and a finished conversion (its manifest) are continued."""
    src, dst = tmp_path / "src", tmp_path / "mine"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    dst.mkdir()
    (dst / "config.json").write_text("{}")
    (dst / "other-model.safetensors").write_bytes(b"weights")
    before = listing(dst)
    refuse(capsys, [src, dst, "--resume", "--quiet"], "holds no conversion by mxquant")
    assert listing(dst) == before
    # with --overwrite as well, replacing the folder is consented to
    assert main(["convert", str(src), str(dst), "--resume", "--overwrite", "--quiet"]) == 0
    assert "other-model.safetensors" not in listing(dst)
    # a finished conversion, then one interrupted before any shard finished: continued
    assert main(["convert", str(src), str(dst), "--resume", "--quiet"]) == 0
    fresh = tmp_path / "fresh"
    from mxquant.checkpoint import dstdir
    dstdir.prepare(str(fresh), overwrite=False, resume=False).release()  # a run killed right after taking DST
    assert os.listdir(fresh) == [manifest.PARTS]
    (fresh / "model-00001-of-00002.safetensors.tmp").write_bytes(b"half")
    assert main(["convert", str(src), str(fresh), "--resume", "--quiet"]) == 0
    convert(src, tmp_path / "clean")
    assert without_manifest(listing(fresh)) == without_manifest(listing(tmp_path / "clean"))


def test_copied_files_keep_their_permission_bits_but_never_setuid(tmp_path):
    """A file of SRC (a tokenizer, a script) is copied with its permission bits and times, but a
    setuid / setgid / sticky bit a checkpoint from anywhere carries is not (the copy belongs to
    the user who converts: a setuid file of root's, converted as root, would be a hole)."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), extra_files={"run.sh": "#!/bin/sh\n", "tokenizer.json": "{}"})
    os.chmod(src / "run.sh", 0o6755)
    os.chmod(src / "tokenizer.json", 0o640)
    os.utime(src / "tokenizer.json", ns=(1_000_000_000, 2_000_000_000))
    convert(src, tmp_path / "dst")
    assert oct((tmp_path / "dst" / "run.sh").stat().st_mode & 0o7777) == oct(0o755)
    copied = (tmp_path / "dst" / "tokenizer.json").stat()
    assert oct(copied.st_mode & 0o7777) == oct(0o640) and copied.st_mtime_ns == 2_000_000_000


def test_contract_an_unreadable_file_to_copy_is_refused_in_the_plan(tmp_path, capsys, monkeypatch):
    """Contract (the denial injected: as root every file is readable): a file of SRC that would be
    copied but cannot be read is refused before any shard is converted, not after all of them."""
    from mxquant.checkpoint import srcfiles

    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), extra_files={"tokenizer.json": "{}"})
    real = os.access
    monkeypatch.setattr(srcfiles.os, "access", lambda p, mode, **kw: not str(p).endswith("tokenizer.json") and real(p, mode, **kw))
    refuse(capsys, [src, tmp_path / "dst"], "SRC/tokenizer.json cannot be read")
    assert not (tmp_path / "dst").exists()


def test_contract_a_failed_run_into_an_empty_folder_leaves_it_empty(tmp_path, monkeypatch):
    """Contract (a crash injected at the first quantized tensor): a DST that existed empty is left
    empty, the folder kept, so the same command runs again without --overwrite."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    dst.mkdir()

    def crash(*a, **k):
        raise KeyboardInterrupt("injected")

    monkeypatch.setattr(driver, "quantize_tensor", crash)
    with pytest.raises(KeyboardInterrupt):
        convert(src, dst)
    assert dst.is_dir() and os.listdir(dst) == []
    monkeypatch.undo()
    convert(src, dst)
    convert(src, tmp_path / "clean")
    assert without_manifest(listing(dst)) == without_manifest(listing(tmp_path / "clean"))


def test_an_unlistable_folder_in_src_is_refused_in_the_plan(tmp_path, capsys, monkeypatch):
    """A folder of SRC that cannot be listed (os.walk would skip it silently, and its files would
    be missing from DST) is refused in the plan. Contract where the test runs as root (whom no
    mode stops): the listing's failure is injected; as another user the folder's mode does it."""
    from mxquant.checkpoint import srcfiles

    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), extra_files={"tokenizer.json": "{}"})
    (src / "extra").mkdir()
    (src / "extra" / "notes.txt").write_text("x")
    os.chmod(src / "extra", 0o300)
    real_walk = os.walk
    if os.geteuid() == 0:
        def walk(top, onerror=None, **kw):
            for here, dirs, names in real_walk(top, onerror=onerror, **kw):
                if here.endswith("extra"):
                    onerror(PermissionError(errno.EACCES, "Permission denied", here))
                    continue
                yield here, dirs, names
        monkeypatch.setattr(srcfiles.os, "walk", walk)
    try:
        refuse(capsys, [src, tmp_path / "dst"], "SRC/extra cannot be read")
    finally:
        os.chmod(src / "extra", 0o700)
    assert not (tmp_path / "dst").exists()


def test_a_record_is_never_written_or_read_outside_dst(tmp_path):
    """Below the refusal above: a shard record's folder that resolves outside DST is refused by
    the same check as a shard's (Dst.target), and a record read through a link leading outside
    DST is no record."""
    dst, victim = tmp_path / "dst", tmp_path / "victim"
    dst.mkdir()
    victim.mkdir()
    os.symlink(victim, dst / manifest.PARTS)
    with pytest.raises(CheckpointError, match="resolves outside DST"):
        driver.dstdir.Dst(str(dst), -1, False).target(manifest.part_rel("model.safetensors"))
    record = '{"source": {}, "output": {}, "tensors": []}'  # well-formed: read if it were inside DST
    (victim / "model.safetensors.json").write_text(record)
    assert manifest._recorded(str(dst), "model.safetensors") is None
    assert os.listdir(victim) == ["model.safetensors.json"]
    # the final manifest alike, and a symlinked one is no sign of a conversion for --resume
    os.unlink(dst / manifest.PARTS)
    (victim / "m.json").write_text('{"shards": [{"file": "model.safetensors", "source": {}, "output": {}, "tensors": []}]}')
    os.symlink(victim / "m.json", dst / manifest.MANIFEST)
    assert manifest._recorded(str(dst), "model.safetensors") is None
    with pytest.raises(CheckpointError, match="holds no conversion by mxquant"):
        driver.dstdir.check_resumable(str(dst))
    (dst / manifest.PARTS).mkdir()
    (dst / manifest.PARTS / "model.safetensors.json").write_text(record)  # the same record inside DST: read
    assert manifest._recorded(str(dst), "model.safetensors") == json.loads(record)
