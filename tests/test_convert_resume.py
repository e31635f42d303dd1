"""Crash safety, --resume, and two torch.distributed processes (gloo, via torchrun) giving
the same bytes as one process.

The failure tests are contract tests: they inject a fault (a patched quantize_tensor that
raises on its n-th call) to stand in for a crash at a chosen point.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("safetensors")

from convert_ckpt import listing, llama_like, save_checkpoint, without_manifest  # noqa: E402

from mxquant.checkpoint import convert, driver, manifest  # noqa: E402


def _ckpt(tmp_path, shards=4):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=3), shards=shards, extra_files={"tokenizer.json": "{}"})
    return src


def _inject(monkeypatch, fail_on_call, exc=KeyboardInterrupt):
    real, calls = driver.quantize_tensor, [0]

    def flaky(*a, **k):
        calls[0] += 1
        if calls[0] == fail_on_call:
            raise exc("injected fault")
        return real(*a, **k)

    monkeypatch.setattr(driver, "quantize_tensor", flaky)


def test_contract_failure_in_fresh_run_leaves_nothing(tmp_path, monkeypatch):
    src = _ckpt(tmp_path)
    _inject(monkeypatch, 9)
    with pytest.raises(KeyboardInterrupt):
        convert(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_contract_resume_after_failure_matches_clean_run(tmp_path, monkeypatch):
    src = _ckpt(tmp_path)
    clean = convert(src, tmp_path / "clean")
    dst = tmp_path / "dst"
    _inject(monkeypatch, 9, OSError)  # fails inside the 2nd or later shard
    with pytest.raises(OSError):
        convert(src, dst, resume=True)
    left = listing(dst)
    assert not any(n.endswith(".tmp") for n in left)  # no half-written shard
    assert "config.json" not in left  # not loadable as a checkpoint until finished
    finished = [n for n in left if n.endswith(".safetensors")]
    assert finished and all(manifest.part_rel(n) in left for n in finished)
    monkeypatch.undo()
    r = convert(src, dst, resume=True)
    assert r.shards_resumed == len(finished) and r.shards_done == 4 - len(finished)
    assert without_manifest(listing(dst)) == without_manifest(listing(tmp_path / "clean"))
    assert len(clean.tensors) == len(r.tensors)


def test_resume_after_kill_redoes_damaged_shards(tmp_path):
    """The state a SIGKILL can leave: a stray .tmp, a renamed shard whose part manifest was not
    written yet, a shard damaged after its record. --resume must redo exactly those."""
    src = _ckpt(tmp_path)
    dst = tmp_path / "dst"
    convert(src, dst)
    want = listing(dst)
    man = json.loads(want[manifest.MANIFEST])
    files = [s["file"] for s in man["shards"]]
    os.remove(dst / "config.json")
    os.remove(dst / "model.safetensors.index.json")
    (dst / (files[0] + ".tmp")).write_bytes(b"half")
    os.remove(dst / files[0])
    raw = bytearray((dst / files[1]).read_bytes())
    raw[-1] ^= 1
    (dst / files[1]).write_bytes(bytes(raw))
    r = convert(src, dst, resume=True)
    assert r.shards_resumed == 2 and r.shards_done == 2
    assert without_manifest(listing(dst)) == without_manifest(want)


def test_resume_with_other_options_converts_again(tmp_path):
    src = _ckpt(tmp_path, shards=2)
    dst = tmp_path / "dst"
    convert(src, dst)
    r = convert(src, dst, resume=True, scale_mode="rceil")
    assert r.shards_resumed == 0 and r.shards_done == 2


@pytest.mark.parametrize("before,after", [(4, 1), (4, 2), (1, 3)])
def test_resume_over_another_sharding_leaves_what_a_clean_run_writes(tmp_path, before, after):
    """Review of the ninth session: --resume into a DST converted from the same weights in 4
    shards, from a source of 1 shard, kept the 4 old shards and their index beside the new
    model.safetensors; loaders that read the index loaded the old files. Now DST ends up as a
    clean run's output (the oracle: a conversion into an empty folder), with a note."""
    tensors = llama_like(layers=3)
    for name, n in (("old", before), ("new", after)):
        save_checkpoint(tmp_path / name, tensors, shards=n, extra_files={"tokenizer.json": "{}"})
    convert(tmp_path / "old", tmp_path / "dst")
    r = convert(tmp_path / "new", tmp_path / "dst", resume=True)
    convert(tmp_path / "new", tmp_path / "clean")
    got, want = listing(tmp_path / "dst"), listing(tmp_path / "clean")
    assert without_manifest(got) == without_manifest(want)
    stale_notes = [n for n in r.notes if "does not write" in n]
    assert len(stale_notes) == 1 and "safetensors" in stale_notes[0], r.notes
    assert stale_notes[0] in json.loads(got[manifest.MANIFEST])["notes"]


def test_two_processes_match_one(tmp_path):
    src = _ckpt(tmp_path, shards=3)
    convert(src, tmp_path / "one")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "mxquant", "convert", str(src), str(tmp_path / "two"), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    rank0 = json.loads(p.stdout[p.stdout.index("{"):])  # only rank 0 prints, the counts of the whole run
    assert (rank0["shards_converted"], rank0["shards_resumed"]) == (3, 0)  # not rank 0's share alone
    one, two = listing(tmp_path / "one"), listing(tmp_path / "two")
    m1, m2 = json.loads(one.pop(manifest.MANIFEST)), json.loads(two.pop(manifest.MANIFEST))
    assert one == two
    strip = lambda m: [{k: v for k, v in s.items() if k != "seconds"} for s in m["shards"]]  # noqa: E731
    assert strip(m1) == strip(m2)
