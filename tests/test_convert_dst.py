"""`mxquant convert`'s output folder under hostile or unlucky conditions (issue 19): --resume
never keeps a stale shard and repairs damaged records, the last stage is under the same
cleanup and "complete" is one atomic step, two runs on one DST cannot both write, a symlinked,
hard-linked or read-only DST, a symlink planted in DST, --overwrite killed while clearing, a
close failing on a full disk. What --resume continues and what is copied from SRC:
tests/test_convert_dst_resume.py.

Oracles: a clean conversion of the same checkpoint, the bytes of files that must not change.
Tests that inject a fault (a full disk, a crash, a denied write) are contract tests and say so.
"""

import errno
import os
import subprocess
import sys

import pytest

pytest.importorskip("safetensors")

from convert_ckpt import listing, llama_like, refuse, save_checkpoint, without_manifest  # noqa: E402
from subproc import child_env  # noqa: E402

from mxquant.checkpoint import CheckpointError, convert, driver, manifest  # noqa: E402
from mxquant.cli import main  # noqa: E402


def test_resume_redoes_a_source_shard_resaved_with_new_weights(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=2, seed=0), shards=3)
    convert(src, dst)
    # the same names, shapes and dtypes (so the same header), other weights
    from safetensors.torch import save_file

    new = llama_like(layers=2, seed=5)
    shard = "model-00002-of-00003.safetensors"
    names = list(new)[1::3]
    save_file({n: new[n] for n in names}, src / shard, metadata={"format": "pt"})
    r = convert(src, dst, resume=True)
    assert (r.shards_done, r.shards_resumed) == (1, 2)
    convert(src, tmp_path / "clean")
    assert without_manifest(listing(dst)) == without_manifest(listing(tmp_path / "clean"))


def test_resume_repairs_a_corrupt_part_file_or_manifest(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=3), shards=4)
    convert(src, tmp_path / "clean")
    want = without_manifest(listing(tmp_path / "clean"))
    real, calls = driver.quantize_tensor, [0]

    def flaky(*a, **k):  # contract: a crash inside the third shard
        calls[0] += 1
        if calls[0] == 12:
            raise OSError("injected")
        return real(*a, **k)

    monkeypatch.setattr(driver, "quantize_tensor", flaky)
    with pytest.raises(OSError):
        convert(src, dst, resume=True)
    monkeypatch.undo()
    parts = sorted(os.listdir(dst / manifest.PARTS))
    assert parts
    (dst / manifest.PARTS / parts[0]).write_text("{not json")
    if len(parts) > 1:
        (dst / manifest.PARTS / parts[1]).write_text('{"source": 3}')
    r = convert(src, dst, resume=True)
    assert r.shards_done >= min(len(parts), 2) + (4 - len(parts))
    assert without_manifest(listing(dst)) == want
    (dst / manifest.MANIFEST).write_text("[1, 2")  # a complete DST whose manifest is damaged
    r = convert(src, dst, resume=True)
    assert (r.shards_done, r.shards_resumed) == (4, 0)
    assert without_manifest(listing(dst)) == want


def _full_disk_on(monkeypatch, suffix):
    """Contract: writing the file whose name ends with `suffix` fails with ENOSPC."""
    real = driver.dstdir.replace_from

    def replace_from(path, write):
        if path.endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, write)

    monkeypatch.setattr(driver.dstdir, "replace_from", replace_from)
    monkeypatch.setattr(manifest, "replace_from", replace_from)


@pytest.mark.parametrize("suffix", ["tokenizer.json", manifest.MANIFEST, "config.json"])
def test_contract_full_disk_in_the_last_stage_leaves_no_dst(tmp_path, monkeypatch, capsys, suffix):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2, extra_files={"tokenizer.json": "{}"})
    _full_disk_on(monkeypatch, suffix)
    assert main(["convert", str(src), str(dst), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "No space left" in err, err
    assert not dst.exists()


@pytest.mark.parametrize("suffix", ["tokenizer.json", manifest.MANIFEST, "config.json"])
def test_contract_full_disk_in_the_last_stage_under_resume_is_not_complete(tmp_path, monkeypatch, suffix):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2, extra_files={"tokenizer.json": "{}"})
    convert(src, tmp_path / "clean")
    _full_disk_on(monkeypatch, suffix)
    with pytest.raises(OSError):
        convert(src, dst, resume=True)
    left = listing(dst)
    assert "config.json" not in left and manifest.MANIFEST not in left  # nothing says "complete"
    monkeypatch.undo()
    r = convert(src, dst, resume=True)
    assert r.shards_resumed == 2
    assert without_manifest(listing(dst)) == without_manifest(listing(tmp_path / "clean"))


def test_resume_over_a_complete_dst_unmarks_it_until_done(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    convert(src, dst)
    monkeypatch.setattr(driver, "quantize_tensor", lambda *a, **k: (_ for _ in ()).throw(OSError("injected")))
    (src / "model-00001-of-00002.safetensors").write_bytes(  # contract: a changed source, then a crash
        (src / "model-00001-of-00002.safetensors").read_bytes()[:-2] + b"\x01\x02")
    with pytest.raises(OSError):
        convert(src, dst, resume=True)
    assert not (dst / "config.json").exists()


def test_a_locked_dst_is_refused_before_anything_is_written(tmp_path, capsys):
    import fcntl

    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1))
    dst.mkdir()
    fd = os.open(dst, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        refuse(capsys, [src, dst, "--overwrite"], "in use by another mxquant convert")
        assert os.listdir(dst) == []
    finally:
        os.close(fd)
    assert main(["convert", str(src), str(dst), "--overwrite", "--quiet"]) == 0


def test_two_concurrent_runs_on_one_dst(tmp_path):
    """Two real processes, --overwrite --no-verify: each exits 0 or is refused (2), and what
    is left is exactly a clean conversion (before the lock, one could exit 0 with a shard whose
    first bytes were zeros)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=4, hidden=512, inter=1024), shards=2)
    convert(src, tmp_path / "clean")
    cmd = [sys.executable, "-m", "mxquant", "convert", str(src), str(dst), "--overwrite", "--no-verify", "--quiet",
           "--device", "cpu"]
    procs = [subprocess.Popen(cmd, env=child_env(), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code in (0, 2), err
        if code == 2:
            assert "in use by another mxquant convert" in err or "not empty" in err, err
    assert any(code == 0 for code, _ in results)
    assert without_manifest(listing(dst)) == without_manifest(listing(tmp_path / "clean"))


def test_overwrite_through_a_symlinked_dst(tmp_path):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    real = tmp_path / "real-out"
    real.mkdir()
    (real / "old.safetensors").write_bytes(b"old")
    os.symlink(real, tmp_path / "dst")
    convert(src, tmp_path / "dst", overwrite=True)
    convert(src, tmp_path / "clean")
    assert os.path.islink(tmp_path / "dst")
    assert without_manifest(listing(real)) == without_manifest(listing(tmp_path / "clean"))


@pytest.mark.parametrize("mode", ["resume", "overwrite"])
def test_dst_that_is_a_hard_link_copy_of_src(tmp_path, mode):
    """`cp -al SRC DST`: every DST file shares its inode with SRC's; no write may reach SRC."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2, extra_files={"tokenizer.json": "{}"})
    before = listing(src)
    for name in os.listdir(src):
        dst.mkdir(exist_ok=True)
        os.link(src / name, dst / name)
    if mode == "resume":  # --resume continues only a folder a conversion was writing into
        with pytest.raises(CheckpointError, match="holds no conversion by mxquant"):
            convert(src, dst, resume=True)
        (dst / manifest.PARTS).mkdir()  # as an interrupted run leaves it
    convert(src, dst, **{mode: True})
    assert listing(src) == before
    convert(src, tmp_path / "clean")
    assert without_manifest(listing(dst)) == without_manifest(listing(tmp_path / "clean"))


def test_symlink_planted_in_dst_is_not_written_through(tmp_path):
    """A symlink where the shard's .tmp goes (and one for a copied file) in a DST taken with
    --resume: replaced, never written through; the file it points to stays as it was."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), extra_files={"tokenizer.json": "{}"})
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    (dst / manifest.PARTS).mkdir(parents=True)  # a folder a conversion was writing into
    for name in ("model.safetensors.tmp", "tokenizer.json.tmp"):
        os.symlink(victim, dst / name)
    convert(src, dst, resume=True)
    assert victim.read_bytes() == b"precious"
    convert(src, tmp_path / "clean")
    assert without_manifest(listing(dst)) == without_manifest(listing(tmp_path / "clean"))


def test_contract_overwrite_clears_config_json_first(tmp_path, monkeypatch):
    """Contract (a kill injected after the first removal): --overwrite empties DST config.json
    first, so a run killed while clearing never leaves the old config.json beside only some of
    the old shards (a folder a loader would take for a whole checkpoint)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=3)
    convert(src, dst)
    real, removed = os.unlink, []

    def unlink(path, *a, **k):
        if os.path.basename(path).startswith(".mxquant-probe-"):  # the check that DST is writable
            return real(path, *a, **k)
        if removed:
            raise KeyboardInterrupt("killed while clearing")
        removed.append(os.path.basename(path))
        return real(path, *a, **k)

    monkeypatch.setattr(driver.dstdir.os, "unlink", unlink)
    with pytest.raises(KeyboardInterrupt):
        convert(src, dst, overwrite=True)
    monkeypatch.undo()
    assert removed == ["config.json"] and "config.json" not in listing(dst)


def test_contract_a_close_failing_on_a_full_disk_leaves_no_tmp(tmp_path, monkeypatch):
    """Contract (the fault injected: a file whose writes fail with ENOSPC once the shard's bytes
    reach the disk): the shard's write fails, and so does the close in the cleanup (its buffered
    bytes cannot be written either); no .tmp is left behind (the old cleanup stopped at the close),
    and the error reported is the disk's."""
    import io

    from mxquant.checkpoint import writer

    class FullDisk(io.FileIO):
        def write(self, b):
            if len(b) > 4096:  # the header goes through, the first tensor bytes do not
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    real = writer.open_new

    def open_new(path, read_back=False):
        f = real(path, read_back)
        raw = FullDisk(os.dup(f.fileno()), "r+b" if read_back else "wb")
        f.close()
        return io.BufferedWriter(raw, buffer_size=1 << 20)  # bytes stay buffered until flush / close

    monkeypatch.setattr(writer, "open_new", open_new)
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    with pytest.raises(OSError, match="No space left") as info:
        convert(src, dst, resume=True)
    assert info.value.errno == errno.ENOSPC
    assert not [n for n in listing(dst) if n.endswith(".tmp")]


def test_contract_read_only_dst_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """Contract: a DST where no file can be created (as root, permissions do not stop writes,
    so the probe's failure is injected; the real chmod case runs for other users)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1))
    dst.mkdir()
    if os.geteuid() == 0:
        def denied(*a, **k):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(driver.dstdir.tempfile, "mkstemp", denied)
    else:
        dst.chmod(0o555)
    refuse(capsys, [src, dst], "is not writable")
    assert os.listdir(dst) == []


def test_refusal_after_lock_does_not_remove_a_dst_another_run_made(tmp_path):
    from mxquant.checkpoint import dstdir

    dst = tmp_path / "dst"
    held = dstdir.prepare(str(dst), overwrite=False, resume=False)
    (dst / "model.safetensors.tmp").write_bytes(b"being written")
    with pytest.raises(CheckpointError, match="in use"):
        dstdir.prepare(str(dst), overwrite=True, resume=False)
    assert listing(dst) == {"model.safetensors.tmp": b"being written"}
    held.release()


@pytest.mark.skipif(not hasattr(__import__("fcntl"), "flock"), reason="needs flock")
def test_a_run_refused_by_the_lock_leaves_the_folder_to_its_holder(tmp_path, monkeypatch):
    """Two runs start on a DST that does not exist yet; the other takes the lock the moment the
    folder exists. This run is refused, and must not remove the (still empty) folder under the
    run that holds it: before, it did (`os.rmdir`), and that run failed with 'DST ... is not
    writable (No such file or directory)' (seen in test_two_concurrent_runs_on_one_dst)."""
    import fcntl

    from mxquant.checkpoint import dstdir

    dst, held, real_mkdir = tmp_path / "dst", [], os.mkdir

    def mkdir_then_lose_the_lock(path, *args, **kwargs):
        real_mkdir(path, *args, **kwargs)
        if os.fspath(path) == str(dst):  # the other run opens and locks it at once
            fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(fd)

    monkeypatch.setattr(os, "mkdir", mkdir_then_lose_the_lock)
    try:
        with pytest.raises(CheckpointError, match="in use by another mxquant convert"):
            dstdir.prepare(str(dst), overwrite=True, resume=False)
        assert dst.is_dir(), "the refused run removed the folder the other run holds"
    finally:
        for fd in held:
            os.close(fd)


def test_a_file_where_dst_needs_a_folder_is_named(tmp_path, capsys):
    """Review of the ninth session: `convert SRC afile/x` said "(File exists)"."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    (tmp_path / "afile").write_text("not a folder")
    refuse(capsys, [src, tmp_path / "afile" / "x" / "y"], f"({tmp_path / 'afile'} is a file, not a folder)")
    assert (tmp_path / "afile").read_text() == "not a folder"
