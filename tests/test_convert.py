"""`mxquant convert` end to end on synthetic checkpoints written by the safetensors package.

Oracles: mxquant.reference.quantize for the bytes of every quantized tensor (the converter
goes through the public API and its registry, chunked; the reference quantizes the whole
tensor at once), the source bytes for every tensor kept, the safetensors package as reader.
"""

import json
import os

import pytest
import torch

pytest.importorskip("safetensors")

from convert_ckpt import assert_same_tensors, listing, llama_like, read_folder, refuse, save_checkpoint  # noqa: E402
from hidden_modules import hide  # noqa: E402

from mxquant import reference  # noqa: E402
from mxquant.checkpoint import convert  # noqa: E402
from mxquant.cli import main  # noqa: E402

MODE = "compressed-tensors"


def _expected(tensors, quantized, mode=MODE):
    out = {}
    for name, t in tensors.items():
        if name in quantized:
            data, scale = reference.quantize(t, torch.float8_e4m3fn, mode, "linear")
            out[name] = data
            out[name + "_scale"] = scale.view(torch.uint8)
        else:
            out[name] = t
    return out


@pytest.mark.parametrize("shards", [1, 3])
def test_bytes_match_reference_and_files_are_complete(tmp_path, shards):
    src, dst = tmp_path / "src", tmp_path / "dst"
    tensors = llama_like()
    save_checkpoint(src, tensors, shards=shards, extra_files={"tokenizer.json": "{}", "sub/notes.txt": "x"})
    before = listing(src)
    r = convert(src, dst, chunk_elems=1000)  # small chunks: many row chunks per tensor
    assert listing(src) == before  # SRC untouched
    linear = {n for n in tensors if n.endswith("proj.weight")}
    assert set(r.quantized) == linear
    assert r.skipped["model.embed_tokens.weight"] == "embedding"
    assert r.skipped["model.norm.weight"] == "norm"
    assert r.skipped["model.layers.0.self_attn.q_proj.bias"] == "bias"
    assert_same_tensors(read_folder(dst), _expected(tensors, linear))
    files = listing(dst)
    assert files["tokenizer.json"] == b"{}" and files["sub/notes.txt"] == b"x"
    cfg = json.loads(files["config.json"])
    assert cfg["model_type"] == "llama"
    q = cfg["quantization_config"]
    assert q["format"] == "mxfp8-quantized" and q["quant_method"] == "compressed-tensors"
    assert q["ignore"] == ["lm_head"]
    assert q["config_groups"]["group_0"]["weights"]["group_size"] == 32
    assert not any(n.endswith(".tmp") for n in files) and ".mxquant-convert" not in str(list(files))
    if shards > 1:
        index = json.loads(files["model.safetensors.index.json"])
        on_disk = {}
        for f in (n for n in files if n.endswith(".safetensors")):
            from safetensors import safe_open

            with safe_open(dst / f, "pt") as h:
                on_disk.update({k: f for k in h.keys()})
        assert index["weight_map"] == on_disk
        out = read_folder(dst)
        assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in out.values())
    man = json.loads(files["mxquant-manifest.json"])
    entries = {t["name"]: t for s in man["shards"] for t in s["tensors"]}
    assert set(entries) == set(read_folder(dst))
    e = entries["model.layers.0.mlp.up_proj.weight"]
    assert 25 < e["sqnr_db"] < 40 and 0 < e["rel_error"] < 0.06  # MXFP8 e4m3 on Gaussian weights: ~31 dB


def test_rceil_mode_and_float32_and_lm_head_options(tmp_path):
    src = tmp_path / "src"
    tensors = llama_like(layers=1, dtype=torch.float32, tied=False)
    tensors["model.layers.0.mlp.up_proj.weight"][0, :32] = 448.0  # the tie where the modes differ
    save_checkpoint(src, tensors)
    r = convert(src, tmp_path / "a", scale_mode="rceil", quantize_lm_head=True)
    assert "lm_head.weight" in r.quantized and "lm_head" not in r.ignore
    assert_same_tensors(read_folder(tmp_path / "a"), _expected(tensors, set(r.quantized), "rceil"))
    r = convert(src, tmp_path / "b")
    assert r.skipped["lm_head.weight"] == "lm_head" and r.ignore == ["lm_head"]
    a, b = read_folder(tmp_path / "a"), read_folder(tmp_path / "b")
    n = "model.layers.0.mlp.up_proj.weight_scale"
    assert a[n][0, 0].item() == 127 and b[n][0, 0].item() == 128


def test_ignore_gates_odd_dims_and_fused_experts(tmp_path):
    src = tmp_path / "src"
    g = torch.Generator().manual_seed(1)
    tensors = {
        "model.layers.0.mlp.gate.weight": torch.randn(8, 64, generator=g).bfloat16(),
        "model.layers.0.mlp.shared_expert_gate.weight": torch.randn(1, 64, generator=g).bfloat16(),
        "model.layers.0.mlp.experts.0.up_proj.weight": torch.randn(64, 64, generator=g).bfloat16(),
        "model.layers.0.mlp.experts.gate_up_proj": torch.randn(4, 128, 64, generator=g).bfloat16(),
        "model.layers.0.self_attn.o_proj.weight": torch.randn(64, 48, generator=g).bfloat16(),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 64, generator=g).bfloat16(),
        "vision.blocks.0.fc.weight": torch.randn(64, 64, generator=g).bfloat16(),
    }
    save_checkpoint(src, tensors, config={"model_type": "qwen2_moe", "hidden_size": 64})
    r = convert(src, tmp_path / "dst", ignore=["re:vision\\..*", "model.layers.0.self_attn.q_proj"])
    assert sorted(r.quantized) == ["model.layers.0.mlp.experts.0.up_proj.weight",
                                   "model.layers.0.mlp.experts.gate_up_proj"]
    assert r.skipped["model.layers.0.mlp.gate.weight"] == "router gate"
    assert "not a multiple of 32" in r.skipped["model.layers.0.self_attn.o_proj.weight"]
    assert r.ignore == ["lm_head", "model.layers.0.mlp.gate", "model.layers.0.mlp.shared_expert_gate",
                        "model.layers.0.self_attn.o_proj", "re:vision\\..*", "model.layers.0.self_attn.q_proj"]
    out = read_folder(tmp_path / "dst")
    assert out["model.layers.0.mlp.experts.gate_up_proj_scale"].shape == (4, 128, 2)
    assert_same_tensors(out, _expected(tensors, set(r.quantized)))


def test_cli_json_and_python_module(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    assert main(["convert", str(src), str(tmp_path / "dst"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shards_converted"] == 1 and len(out["quantized"]) == 7 and out["bytes_out"] < out["bytes_in"]


def test_cli_summary_table_and_quiet(tmp_path, capsys):
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    assert main(["convert", str(src), str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "quantized tensors" in out and "kept: embedding" in out and "lowest SQNR" in out
    assert "model.layers.0.mlp" in out or "model.layers.0.self_attn" in out
    assert main(["convert", str(src), str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_refusals_leave_nothing(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1))
    refuse(capsys, [tmp_path / "nope", dst], "is not a directory")
    (tmp_path / "empty").mkdir()
    refuse(capsys, [tmp_path / "empty", dst], "not a Hugging Face safetensors checkpoint")
    refuse(capsys, [src, src / "out"], "inside SRC")
    refuse(capsys, [src, src], "inside SRC")
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    refuse(capsys, [src, dst], "not empty")
    assert listing(dst) == {"keep.txt": b"mine"}
    # truncated, corrupt header, corrupt offsets
    for name, damage in (("trunc", lambda b: b[:-10]), ("header", lambda b: b[:8] + b"{bad json" + b[17:]),
                         ("len", lambda b: (10**9).to_bytes(8, "little") + b[8:])):
        bad = tmp_path / name
        save_checkpoint(bad, llama_like(layers=1))
        p = bad / "model.safetensors"
        p.write_bytes(damage(p.read_bytes()))
        refuse(capsys, [bad, tmp_path / (name + "_out")], "safetensors")
        assert not (tmp_path / (name + "_out")).exists()
    # already quantized: by config, by tensor names, by an fp8 weight; a non-float weight
    q = tmp_path / "q"
    convert(src, q)
    refuse(capsys, [q, tmp_path / "q2"], "already quantized")
    for name, t in (("fp8", torch.zeros(32, 64).to(torch.float8_e4m3fn)), ("int", torch.zeros(32, 64, dtype=torch.int32))):
        bad = tmp_path / name
        save_checkpoint(bad, {"model.layers.0.mlp.up_proj.weight": t})
        refuse(capsys, [bad, tmp_path / (name + "_out")], "already" if name == "fp8" else "non-float")
        assert not (tmp_path / (name + "_out")).exists()
    bad = tmp_path / "scales"
    save_checkpoint(bad, {"a.weight": torch.zeros(32, 64), "a.weight_scale": torch.zeros(32, 2)})
    refuse(capsys, [bad, tmp_path / "scales_out"], "already quantized")
    refuse(capsys, [src, tmp_path / "x", "--ignore", "re:("], "bad --ignore pattern")
    refuse(capsys, [src, tmp_path / "x", "--device", "tpu"], "is not one of cpu, cuda")
    if not torch.cuda.is_available():
        refuse(capsys, [src, tmp_path / "x", "--device", "cuda"], "not available")
    assert not (tmp_path / "x").exists()


def test_overwrite_replaces(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    save_checkpoint(src, llama_like(layers=1))
    dst.mkdir()
    (dst / "stale.safetensors").write_bytes(b"old")
    convert(src, dst, overwrite=True)
    assert "stale.safetensors" not in os.listdir(dst)
    assert "model.safetensors" in os.listdir(dst)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["compressed-tensors", "rceil"])
def test_cuda_device_gives_the_cpu_bytes(tmp_path, mode):
    src = tmp_path / "src"
    tensors = llama_like(layers=2, hidden=256, inter=512, vocab=512)
    tensors["model.layers.0.mlp.up_proj.weight"][0, :32] = 448.0  # the tie where the modes differ
    save_checkpoint(src, tensors, shards=2)
    cpu = convert(src, tmp_path / "cpu", scale_mode=mode)
    gpu = convert(src, tmp_path / "gpu", scale_mode=mode, device="cuda")
    assert listing(tmp_path / "cpu").keys() == listing(tmp_path / "gpu").keys()
    assert_same_tensors(read_folder(tmp_path / "gpu"), read_folder(tmp_path / "cpu"))
    for a, b in zip(cpu.tensors, gpu.tensors):  # SQNR computed on the GPU agrees
        assert a["sha256"] == b["sha256"]
        if a.get("sqnr_db") is not None:
            assert abs(a["sqnr_db"] - b["sqnr_db"]) < 1e-3


NO_NUMPY = hide("numpy") + """
from mxquant.cli import main
sys.exit(main(["convert", sys.argv[1], sys.argv[2], "--quiet", "--device", "cpu"]))
"""


def test_convert_needs_no_numpy(tmp_path):
    """torch and safetensors install without numpy; so must the converter run (it once handed
    file reads and writes numpy views, which fail there with "Numpy is not available")."""
    import subprocess
    import sys

    tensors = llama_like(layers=1)
    save_checkpoint(tmp_path / "src", tensors)
    done = subprocess.run([sys.executable, "-c", NO_NUMPY, str(tmp_path / "src"), str(tmp_path / "dst")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    linear = {n for n in tensors if n.endswith("proj.weight")}
    assert_same_tensors(read_folder(tmp_path / "dst"), _expected(tensors, linear))


def test_an_ignore_pattern_that_matches_nothing_gets_a_note(tmp_path):
    """Review of the ninth session: --ignore model.layers.0.mlp.up_proj.weight (a tensor name:
    the rule matches module names) silently quantized that weight all the same."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    w = "model.layers.0.mlp.up_proj.weight"
    r = convert(src, tmp_path / "dst", ignore=[w, "model.layers.0.mlp.down_proj", "re:nothing\\..*"])
    assert w in r.quantized and "model.layers.0.mlp.down_proj.weight" not in r.quantized
    notes = [n for n in r.notes if "matches no module" in n]
    assert notes == [f"--ignore {w!r} matches no module of the checkpoint (patterns match module names: "
                     "'model.layers.0.mlp.up_proj'?)",
                     "--ignore 're:nothing\\\\..*' matches no module of the checkpoint"], notes


def test_the_tied_lm_head_note_only_when_the_checkpoint_has_no_lm_head(tmp_path):
    """With an lm_head weight kept by --ignore, --quantize-lm-head must not claim the checkpoint
    has none (the note is for tied embeddings only)."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1, tied=False))
    r = convert(src, tmp_path / "dst", quantize_lm_head=True, ignore=["lm_head"])
    assert "lm_head.weight" not in r.quantized and "lm_head" in r.ignore
    assert not [n for n in r.notes if "lm_head" in n], r.notes
