"""`mxquant convert` on checkpoints downloaded from anywhere: the audit's hostile cases
(issue 19) as a regression suite. Paths from the index never leave SRC or DST, `./` names do
not un-quantize the output, --resume never keeps a stale shard, the last stage is under the
same cleanup and "complete" is one atomic step, two runs on one DST cannot both write.

Oracles: the bytes of files the run must not touch (read before and after), a clean
conversion of the same weights (for outputs that must equal it), the safetensors package as
reader. Tests that inject a fault (a full disk, a failing write) are contract tests and say so.
"""

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("safetensors")

from convert_ckpt import listing, llama_like, read_folder, save_checkpoint  # noqa: E402
from subproc import child_env  # noqa: E402

from mxquant.checkpoint import CheckpointError, convert, driver, manifest  # noqa: E402
from mxquant.cli import main  # noqa: E402

INDEX = "model.safetensors.index.json"


def _refuse(capsys, argv, phrase):
    assert main(["convert", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and phrase in err, err
    return err


def _retarget(src, mapping):
    """Rewrite SRC's index so that every tensor of shard file `old` names `new` instead."""
    path = src / INDEX
    index = json.loads(path.read_text())
    index["weight_map"] = {k: mapping.get(v, v) for k, v in index["weight_map"].items()}
    path.write_text(json.dumps(index))


def _without_manifest(files):
    return {k: v for k, v in files.items() if k != manifest.MANIFEST}


# 1. path traversal through the index -------------------------------------------------------

def test_absolute_shard_name_cannot_overwrite_another_model(tmp_path, capsys):
    victim = tmp_path / "other-model"
    save_checkpoint(victim, llama_like(layers=1, seed=1))
    before = listing(victim)
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1, seed=1), shards=2)
    # the hostile index: shard 1's tensors live in another model's file, by absolute path
    # (that file holds them all, so a reader that follows the name finds what it expects)
    index = json.loads((src / INDEX).read_text())
    index["weight_map"] = {k: str(victim / "model.safetensors") for k in index["weight_map"]}
    (src / INDEX).write_text(json.dumps(index))
    _refuse(capsys, [src, tmp_path / "dst"], "absolute path")
    assert listing(victim) == before
    assert not (tmp_path / "dst").exists()


def test_dotdot_shard_name_cannot_overwrite_src(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    before = listing(src)
    _retarget(src, {"model-00001-of-00002.safetensors": "../src/model-00001-of-00002.safetensors"})
    before = listing(src)
    _refuse(capsys, [src, tmp_path / "dst"], "'..'")
    assert listing(src) == before
    assert not (tmp_path / "dst").exists()


def test_symlinked_folder_climb_cannot_escape_dst(tmp_path, capsys):
    """SRC/lnk -> d1/d2/d3, shard `lnk/../../../X/f.safetensors`: the read resolves inside SRC,
    the write would climb out of DST."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    (src / "d1" / "d2" / "d3").mkdir(parents=True)
    os.symlink("d1/d2/d3", src / "lnk")
    (src / "X").mkdir()
    os.replace(src / "model-00001-of-00002.safetensors", src / "X" / "f.safetensors")
    _retarget(src, {"model-00001-of-00002.safetensors": "lnk/../../../X/f.safetensors"})
    dst = tmp_path / "out" / "dst"
    dst.parent.mkdir()
    _refuse(capsys, [src, dst], "'..'")
    assert sorted(os.listdir(tmp_path)) == ["out", "src"] and os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("name, phrase", [
    ("shard\\..\\x.safetensors", "backslash"), ("model.bin", "not a *.safetensors"),
    (".mxquant-convert/a.safetensors", "keeps for itself"), ("", "not a file name"), (7, "not a file name"),
])
def test_odd_shard_names_are_refused(tmp_path, capsys, name, phrase):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    _retarget(src, {"model-00001-of-00002.safetensors": name})
    _refuse(capsys, [src, tmp_path / "dst"], phrase)
    assert not (tmp_path / "dst").exists()


def test_symlinks_out_of_src_are_neither_read_nor_copied(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    os.symlink(secret, src / "tokenizer.json")
    _refuse(capsys, [src, tmp_path / "dst"], "outside the checkpoint")
    os.remove(src / "tokenizer.json")
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(src / "model.safetensors", outside)
    os.symlink(outside, src / "model.safetensors")
    _refuse(capsys, [src, tmp_path / "dst"], "outside the checkpoint")
    assert not (tmp_path / "dst").exists()


def test_hugging_face_cache_snapshot_converts(tmp_path):
    """A cache snapshot's files are symlinks into ../../blobs: inside the cache entry, so allowed."""
    plain = tmp_path / "plain"
    save_checkpoint(plain, llama_like(layers=1), shards=2, extra_files={"tokenizer.json": "{}"})
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, name in enumerate(sorted(os.listdir(plain))):
        os.replace(plain / name, repo / "blobs" / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", snap / name)
    convert(snap, tmp_path / "dst")
    want = tmp_path / "want"
    for name in os.listdir(snap):  # the same checkpoint as plain files
        want.mkdir(exist_ok=True)
        (want / name).write_bytes((snap / name).read_bytes())
    convert(want, tmp_path / "dst2")
    assert _without_manifest(listing(tmp_path / "dst")) == _without_manifest(listing(tmp_path / "dst2"))


# 2. `./` shard names ------------------------------------------------------------------------

def test_dot_slash_names_give_the_same_quantized_output(tmp_path):
    tensors = llama_like(layers=2)
    a, b = tmp_path / "a", tmp_path / "b"
    save_checkpoint(a, tensors, shards=2, extra_files={"tokenizer.json": "{}"})
    save_checkpoint(b, tensors, shards=2, extra_files={"tokenizer.json": "{}"})
    _retarget(b, {f: "./" + f for f in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")})
    convert(a, tmp_path / "a-out")
    convert(b, tmp_path / "b-out")
    got, want = listing(tmp_path / "b-out"), listing(tmp_path / "a-out")
    assert _without_manifest(got) == _without_manifest(want)  # index included: no "./" in it
    out = read_folder(tmp_path / "b-out")
    assert out["model.layers.0.mlp.up_proj.weight"].dtype == torch.float8_e4m3fn
    index = json.loads(got[INDEX])
    assert set(index["weight_map"]) == set(out)


# 3. --resume and stale shards ----------------------------------------------------------------

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
    assert _without_manifest(listing(dst)) == _without_manifest(listing(tmp_path / "clean"))


def test_resume_repairs_a_corrupt_part_file_or_manifest(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=3), shards=4)
    convert(src, tmp_path / "clean")
    want = _without_manifest(listing(tmp_path / "clean"))
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
    assert _without_manifest(listing(dst)) == want
    (dst / manifest.MANIFEST).write_text("[1, 2")  # a complete DST whose manifest is damaged
    r = convert(src, dst, resume=True)
    assert (r.shards_done, r.shards_resumed) == (4, 0)
    assert _without_manifest(listing(dst)) == want


# 4. the final stage under cleanup; "complete" is atomic ---------------------------------------

@pytest.mark.parametrize("kind", ["dangling", "fifo", "socket", "folder-link"])
def test_special_files_in_src_are_refused_before_any_work(tmp_path, capsys, kind):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    odd = src / "tokenizer.model"
    if kind == "dangling":
        os.symlink(tmp_path / "gone", odd)
    elif kind == "fifo":
        os.mkfifo(odd)
    elif kind == "socket":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(odd))
        s.close()
    else:
        (tmp_path / "folder").mkdir()
        os.symlink(tmp_path / "folder", odd)
    _refuse(capsys, [src, tmp_path / "dst"], "tokenizer.model")
    assert not (tmp_path / "dst").exists()


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
    assert _without_manifest(listing(dst)) == _without_manifest(listing(tmp_path / "clean"))


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


# 5. one run per DST --------------------------------------------------------------------------

def test_a_locked_dst_is_refused_before_anything_is_written(tmp_path, capsys):
    import fcntl

    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1))
    dst.mkdir()
    fd = os.open(dst, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        _refuse(capsys, [src, dst, "--overwrite"], "in use by another mxquant convert")
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
    assert _without_manifest(listing(dst)) == _without_manifest(listing(tmp_path / "clean"))


# 8. refusals: one line, exit 2, before any work ------------------------------------------------

@pytest.mark.parametrize("index, phrase", [
    ({"weight_map": ["a"]}, "weight_map must be"),
    ({"weight_map": {}}, "weight_map must be"),
    ({"weight_map": {"model.norm.weight": 3}}, "not a file name"),
    ({"metadata": "x", "weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}, "metadata must be"),
    ([1, 2], "not a JSON object"),
])
def test_malformed_index_is_refused(tmp_path, capsys, index, phrase):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    (src / INDEX).write_text(json.dumps(index))
    _refuse(capsys, [src, tmp_path / "dst"], phrase)
    assert not (tmp_path / "dst").exists()


def test_deeply_nested_json_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    (src / INDEX).write_text("[" * 100_000 + "]" * 100_000)
    _refuse(capsys, [src, tmp_path / "dst"], "not valid JSON")
    save_checkpoint(src, llama_like(layers=1))
    os.remove(src / INDEX)
    for name in os.listdir(src):
        if name.startswith("model-"):
            os.remove(src / name)
    (src / "config.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    _refuse(capsys, [src, tmp_path / "dst"], "not valid JSON")


def test_index_must_cover_every_tensor_and_shard(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    index = json.loads((src / INDEX).read_text())
    dropped = sorted(index["weight_map"])[0]
    del index["weight_map"][dropped]
    (src / INDEX).write_text(json.dumps(index))
    _refuse(capsys, [src, tmp_path / "dst"], f"does not list tensor {dropped}")
    src2 = tmp_path / "src2"
    save_checkpoint(src2, llama_like(layers=1), shards=2)
    (src2 / "consolidated.safetensors").write_bytes((src2 / "model-00001-of-00002.safetensors").read_bytes())
    _refuse(capsys, [src2, tmp_path / "dst"], "consolidated.safetensors is a safetensors file")
    assert not (tmp_path / "dst").exists()


def test_source_tensor_named_like_an_output_scale_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    fused = "model.layers.0.mlp.experts.gate_proj"
    save_checkpoint(src, {fused: torch.zeros(2, 64, 64, dtype=torch.bfloat16),
                          fused + "_scale": torch.zeros(2, 64, 2, dtype=torch.bfloat16)},
                    config={"model_type": "qwen3_moe", "hidden_size": 64})
    _refuse(capsys, [src, tmp_path / "dst", "--no-verify"], "written twice")
    assert not (tmp_path / "dst").exists()


def test_string_quantization_config_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), config={"model_type": "llama", "quantization_config": "fp8"})
    _refuse(capsys, [src, tmp_path / "dst"], "already quantized")


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
    assert _without_manifest(listing(real)) == _without_manifest(listing(tmp_path / "clean"))


@pytest.mark.parametrize("mode", ["resume", "overwrite"])
def test_dst_that_is_a_hard_link_copy_of_src(tmp_path, mode):
    """`cp -al SRC DST`: every DST file shares its inode with SRC's; no write may reach SRC."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2, extra_files={"tokenizer.json": "{}"})
    before = listing(src)
    for name in os.listdir(src):
        dst.mkdir(exist_ok=True)
        os.link(src / name, dst / name)
    convert(src, dst, **{mode: True})
    assert listing(src) == before
    convert(src, tmp_path / "clean")
    assert _without_manifest(listing(dst)) == _without_manifest(listing(tmp_path / "clean"))


def test_symlink_planted_in_dst_is_not_written_through(tmp_path):
    """A symlink where the shard's .tmp goes (and one for a copied file) in a DST taken with
    --resume: replaced, never written through; the file it points to stays as it was."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), extra_files={"tokenizer.json": "{}"})
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    dst.mkdir()
    for name in ("model.safetensors.tmp", "tokenizer.json.tmp"):
        os.symlink(victim, dst / name)
    convert(src, dst, resume=True)
    assert victim.read_bytes() == b"precious"
    convert(src, tmp_path / "clean")
    assert _without_manifest(listing(dst)) == _without_manifest(listing(tmp_path / "clean"))


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
    _refuse(capsys, [src, dst], "is not writable")
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


# interruption and a forced backend, as a new user met them (issue 20, item 5) ----------------

@pytest.mark.parametrize("resume", [False, True])
def test_contract_ctrl_c_says_in_one_line_what_is_left(tmp_path, monkeypatch, capsys, resume):
    """Contract: the interrupt is injected inside the second shard's conversion."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=2), shards=2)
    real, calls = driver.quantize_tensor, [0]

    def interrupted(*a, **k):
        calls[0] += 1
        if calls[0] == 8:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(driver, "quantize_tensor", interrupted)
    assert main(["convert", str(src), str(dst), "--quiet"] + (["--resume"] if resume else [])) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mxquant convert: interrupted;"), err
    if resume:
        assert "--resume to continue" in err and (dst / "model-00001-of-00002.safetensors").exists()
    else:
        assert "DST was removed" in err and not dst.exists()


def test_a_forced_backend_that_cannot_run_is_refused_before_any_work(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1))
    p = subprocess.run([sys.executable, "-m", "mxquant", "convert", str(src), str(dst), "--device", "cpu"],
                       env=child_env(MXQUANT_BACKEND="triton"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert err.count("\n") == 0 and "backend 'triton'" in err and "before any work" in err, err
    assert not dst.exists()


def test_a_resumed_finished_run_reports_no_speed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the summary table unwrapped
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    first = convert(src, dst)
    assert first.bytes_converted == first.bytes_in and first.gb_per_s > 0
    assert main(["convert", str(src), str(dst), "--resume", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["shards_converted"], out["shards_resumed"], out["bytes_converted"]) == (0, 2, 0)
    assert out["gb_per_s"] is None
    assert main(["convert", str(src), str(dst), "--resume"]) == 0
    assert "nothing converted: every shard was finished by an earlier run" in capsys.readouterr().out


def test_a_refusal_with_the_progress_bar_on_is_one_line(tmp_path):
    """Without --quiet the bar is made, but starts only after every refusal: stderr is the
    error line alone (it was preceded by the bar's blank line)."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    _retarget(src, {"model-00001-of-00002.safetensors": "/abs.safetensors"})
    p = subprocess.run([sys.executable, "-m", "mxquant", "convert", str(src), str(tmp_path / "dst")],
                       env=child_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert p.stderr.startswith("mxquant convert: error:") and p.stderr.count("\n") == 1, repr(p.stderr)
