"""`mxquant convert` on checkpoints downloaded from anywhere, the SRC side (issue 19): paths
from the index never leave SRC or DST, `./` names do not un-quantize the output, symlinks and
special files are refused before any work, a malformed or incomplete index is refused.

Oracles: the bytes of files the run must not touch (read before and after), a clean
conversion of the same weights (for outputs that must equal it), the safetensors package as
reader.
"""

import json
import os

import pytest
import torch

pytest.importorskip("safetensors")

from convert_ckpt import listing, llama_like, read_folder, refuse, retarget, save_checkpoint, without_manifest  # noqa: E402

from mxquant.checkpoint import convert  # noqa: E402

INDEX = "model.safetensors.index.json"


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
    refuse(capsys, [src, tmp_path / "dst"], "absolute path")
    assert listing(victim) == before
    assert not (tmp_path / "dst").exists()


def test_dotdot_shard_name_cannot_overwrite_src(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    before = listing(src)
    retarget(src, {"model-00001-of-00002.safetensors": "../src/model-00001-of-00002.safetensors"})
    before = listing(src)
    refuse(capsys, [src, tmp_path / "dst"], "'..'")
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
    retarget(src, {"model-00001-of-00002.safetensors": "lnk/../../../X/f.safetensors"})
    dst = tmp_path / "out" / "dst"
    dst.parent.mkdir()
    refuse(capsys, [src, dst], "'..'")
    assert sorted(os.listdir(tmp_path)) == ["out", "src"] and os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("name, phrase", [
    ("shard\\..\\x.safetensors", "backslash"), ("model.bin", "not a *.safetensors"),
    (".mxquant-convert/a.safetensors", "keeps for itself"), ("", "not a file name"), (7, "not a file name"),
    ("x\ud800.safetensors", "not valid Unicode"),  # no path the OS can be asked for (UnicodeEncodeError)
])
def test_odd_shard_names_are_refused(tmp_path, capsys, name, phrase):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    retarget(src, {"model-00001-of-00002.safetensors": name})
    refuse(capsys, [src, tmp_path / "dst"], phrase)
    assert not (tmp_path / "dst").exists()


def test_a_lone_surrogate_tensor_name_in_the_index_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    index = json.loads((src / INDEX).read_text())
    index["weight_map"]["x\ud800.weight"] = "model-00001-of-00002.safetensors"
    (src / INDEX).write_text(json.dumps(index))  # ensure_ascii: the \ud800 escape
    refuse(capsys, [src, tmp_path / "dst"], "not valid Unicode")
    assert not (tmp_path / "dst").exists()


def test_symlinks_out_of_src_are_neither_read_nor_copied(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("private key")
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    os.symlink(secret, src / "tokenizer.json")
    refuse(capsys, [src, tmp_path / "dst"], "outside the checkpoint")
    os.remove(src / "tokenizer.json")
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(src / "model.safetensors", outside)
    os.symlink(outside, src / "model.safetensors")
    refuse(capsys, [src, tmp_path / "dst"], "outside the checkpoint")
    assert not (tmp_path / "dst").exists()


def _hub_snapshot(tmp_path, shards=1):
    """A Hugging Face cache entry: the snapshot's files are symlinks into ../../blobs."""
    plain = tmp_path / "plain"
    save_checkpoint(plain, llama_like(layers=1), shards=shards, extra_files={"tokenizer.json": "{}"})
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, name in enumerate(sorted(os.listdir(plain))):
        os.replace(plain / name, repo / "blobs" / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", snap / name)
    return repo, snap


def test_hugging_face_cache_snapshot_converts(tmp_path):
    """A cache snapshot's files are symlinks into ../../blobs: inside the cache entry, so allowed."""
    _, snap = _hub_snapshot(tmp_path, shards=2)
    convert(snap, tmp_path / "dst")
    want = tmp_path / "want"
    for name in os.listdir(snap):  # the same checkpoint as plain files
        want.mkdir(exist_ok=True)
        (want / name).write_bytes((snap / name).read_bytes())
    convert(want, tmp_path / "dst2")
    assert without_manifest(listing(tmp_path / "dst")) == without_manifest(listing(tmp_path / "dst2"))


@pytest.mark.parametrize("where", ["blobs", "repo", "repo/refs", "hub"])
@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_dst_overlapping_the_cache_repository_is_refused_before_anything_is_emptied(tmp_path, capsys, where, flag):
    """Review of the ninth session: DST = the repository's blobs/ with --overwrite emptied it (every
    source file of the snapshot) and then failed; the check compared DST with the snapshot folder
    only, not with the repository folder its files are read from."""
    repo, snap = _hub_snapshot(tmp_path)
    dst = {"blobs": repo / "blobs", "repo": repo, "repo/refs": repo / "refs", "hub": tmp_path / "hub"}[where]
    dst.mkdir(exist_ok=True)
    before = listing(tmp_path / "hub")
    phrase = "is inside DST" if where in ("repo", "hub") else "the Hugging Face cache repository"
    refuse(capsys, [snap, dst, flag], phrase)
    assert listing(tmp_path / "hub") == before


def test_dot_slash_names_give_the_same_quantized_output(tmp_path):
    tensors = llama_like(layers=2)
    a, b = tmp_path / "a", tmp_path / "b"
    save_checkpoint(a, tensors, shards=2, extra_files={"tokenizer.json": "{}"})
    save_checkpoint(b, tensors, shards=2, extra_files={"tokenizer.json": "{}"})
    retarget(b, {f: "./" + f for f in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")})
    convert(a, tmp_path / "a-out")
    convert(b, tmp_path / "b-out")
    got, want = listing(tmp_path / "b-out"), listing(tmp_path / "a-out")
    assert without_manifest(got) == without_manifest(want)  # index included: no "./" in it
    out = read_folder(tmp_path / "b-out")
    assert out["model.layers.0.mlp.up_proj.weight"].dtype == torch.float8_e4m3fn
    index = json.loads(got[INDEX])
    assert set(index["weight_map"]) == set(out)


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
    refuse(capsys, [src, tmp_path / "dst"], "tokenizer.model")
    assert not (tmp_path / "dst").exists()


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
    refuse(capsys, [src, tmp_path / "dst"], phrase)
    assert not (tmp_path / "dst").exists()


def test_deeply_nested_json_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    (src / INDEX).write_text("[" * 100_000 + "]" * 100_000)
    refuse(capsys, [src, tmp_path / "dst"], "not valid JSON")
    save_checkpoint(src, llama_like(layers=1))
    os.remove(src / INDEX)
    for name in os.listdir(src):
        if name.startswith("model-"):
            os.remove(src / name)
    (src / "config.json").write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    refuse(capsys, [src, tmp_path / "dst"], "not valid JSON")


def test_index_must_cover_every_tensor_and_shard(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    index = json.loads((src / INDEX).read_text())
    dropped = sorted(index["weight_map"])[0]
    del index["weight_map"][dropped]
    (src / INDEX).write_text(json.dumps(index))
    refuse(capsys, [src, tmp_path / "dst"], f"does not list tensor {dropped}")
    src2 = tmp_path / "src2"
    save_checkpoint(src2, llama_like(layers=1), shards=2)
    (src2 / "consolidated.safetensors").write_bytes((src2 / "model-00001-of-00002.safetensors").read_bytes())
    refuse(capsys, [src2, tmp_path / "dst"], "consolidated.safetensors is a safetensors file")
    assert not (tmp_path / "dst").exists()


def test_weights_of_other_formats_are_not_copied_and_a_note_names_them(tmp_path, capsys):
    """pytorch_model.bin, Meta's original/consolidated.00.pth and the like hold the unconverted
    weights (here the same tensors, saved by torch.save); the other files are still copied, a
    model's own .pt asset (Qwen2.5-Omni's spk_dict.pt, say) among them."""
    from mxquant.cli import main

    src, tensors = tmp_path / "src", llama_like(layers=1)
    save_checkpoint(src, tensors, extra_files={"tokenizer.json": "{}", "original/params.json": "{}",
                                               "pytorch_model.bin.index.json": "{}", "spk_dict.pt": "{}"})
    torch.save(tensors, src / "pytorch_model.bin")
    torch.save(tensors, src / "original" / "consolidated.00.pth")
    (src / "tf_model.h5").write_bytes(b"\x89HDF")
    assert main(["convert", str(src), str(tmp_path / "dst"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert ("note: not copied: 4 weight file(s) of another format" in out and "original/consolidated.00.pth, "
            "pytorch_model.bin, pytorch_model.bin.index.json, tf_model.h5" in out), out
    assert sorted(listing(tmp_path / "dst")) == ["config.json", "model.safetensors", "mxquant-manifest.json",
                                                 "original/params.json", "spk_dict.pt", "tokenizer.json"]


def test_source_tensor_named_like_an_output_scale_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    fused = "model.layers.0.mlp.experts.gate_proj"
    save_checkpoint(src, {fused: torch.zeros(2, 64, 64, dtype=torch.bfloat16),
                          fused + "_scale": torch.zeros(2, 64, 2, dtype=torch.bfloat16)},
                    config={"model_type": "qwen3_moe", "hidden_size": 64})
    refuse(capsys, [src, tmp_path / "dst", "--no-verify"], "written twice")
    assert not (tmp_path / "dst").exists()


def test_string_quantization_config_is_refused(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), config={"model_type": "llama", "quantization_config": "fp8"})
    refuse(capsys, [src, tmp_path / "dst"], "already quantized")


@pytest.mark.parametrize("name", ["config.json.tmp", "mxquant-manifest.json.tmp", INDEX + ".tmp",
                                  "tokenizer.json.tmp", "model.safetensors.tmp"])
def test_a_source_file_named_like_a_temporary_of_the_output_is_refused(tmp_path, capsys, name):
    """Review of the ninth session: SRC/config.json.tmp was copied, then deleted when config.json
    was written through that name (exit 0, the file silently missing from DST)."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), extra_files={"tokenizer.json": "{}", name: "left over"})
    refuse(capsys, [src, tmp_path / "dst"], f"SRC/{name}: mxquant convert writes DST/{name[:-4]} by way of this name")
    assert not (tmp_path / "dst").exists()


def test_other_tmp_names_are_copied(tmp_path):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), extra_files={"notes.tmp": "mine"})
    convert(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "notes.tmp").read_text() == "mine"


@pytest.mark.parametrize("shard,phrase", [("a" * 300 + ".safetensors", "File name too long"),
                                          ("config.json/x.safetensors", "Not a directory")])
def test_an_unreadable_shard_name_is_a_refusal_not_a_failure(tmp_path, capsys, shard, phrase):
    """Review of the ninth session: these came out as "failed: [Errno 36] ..." with exit 1 (a
    write failure, by the CLI's own codes) though the checkpoint's index caused them."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1), shards=2)
    index = json.loads((src / INDEX).read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = shard
    (src / INDEX).write_text(json.dumps(index))
    err = refuse(capsys, [src, tmp_path / "dst"], phrase)
    assert len(err) < 400
    assert not (tmp_path / "dst").exists()
