"""`mxquant convert --scheme mxfp4 | nvfp4a16 | fp8-block` against llm-compressor's own
`model_free_ptq` (extra `convert-test`; skipped when absent): tiny models saved by transformers,
converted by both with the same ignore list, must give the same tensors (names, dtypes, shapes,
bytes), in the same shard files, and config.json's quantization_config equal as JSON (less
`version`, which llm-compressor takes from the installed compressed-tensors).

Models: a dense Llama (untied lm_head, 4 shards), a per-expert Qwen2-MoE (shared expert, router
gates), and for NVFP4 a Mixtral (w1/w3: llm-compressor gives them one global scale, as it does
q/k/v and a dense MLP's gate/up; one file, since llm-compressor 0.14 fails on a Mixtral whose w1
and w3 sit in different shards). fp8-block models have 128-multiple shapes. One llm-compressor
run per (scheme, model), shared by the module.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed (extra convert-test)")
pytest.importorskip("llmcompressor", reason="llm-compressor not installed (extra convert-test)")

from convert_ckpt import assert_same_tensors, fuse_experts, read_folder, refuse  # noqa: E402

from mxquant.checkpoint import convert  # noqa: E402

IGNORE = ["lm_head", "model.embed_tokens", "re:.*mlp\\.gate$", "re:.*shared_expert_gate$"]
SMALL = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
WIDE = dict(SMALL, hidden_size=256, intermediate_size=384, num_attention_heads=2, num_key_value_heads=1, head_dim=128,
            num_hidden_layers=1)  # every Linear a whole number of 128x128 blocks


def _build(kind: str, sizes: dict):
    torch.manual_seed(len(kind))
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes, tie_word_embeddings=False))
    if kind == "qwen2_moe":
        inter = sizes["intermediate_size"] // 3 * 2 if sizes is SMALL else 128
        cfg = transformers.Qwen2MoeConfig(**{**sizes, "num_hidden_layers": 1}, moe_intermediate_size=inter,
                                          shared_expert_intermediate_size=inter, num_experts=4, num_experts_per_tok=2)
        return transformers.Qwen2MoeForCausalLM(cfg)
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(**{**sizes, "num_hidden_layers": 1},
                                                                      num_local_experts=4, num_experts_per_tok=2))


CASES = [("mxfp4", "llama"), ("mxfp4", "qwen2_moe"), ("nvfp4a16", "llama"), ("nvfp4a16", "qwen2_moe"),
         ("nvfp4a16", "mixtral"), ("fp8-block", "llama"), ("fp8-block", "qwen2_moe")]
PRESET = {"mxfp4": "MXFP4", "nvfp4a16": "NVFP4A16", "fp8-block": "FP8_BLOCK"}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """(scheme, model) -> (ours dir, llm-compressor's dir, ConvertResult), built on first use."""
    from llmcompressor import model_free_ptq

    made = {}

    def get(scheme, kind):
        if (scheme, kind) not in made:
            root = tmp_path_factory.mktemp(f"{scheme}-{kind}")
            src = root / "src"
            shard = None if kind == "mixtral" else "60KB"
            _build(kind, WIDE if scheme == "fp8-block" else SMALL).to(torch.bfloat16).save_pretrained(
                src, **({"max_shard_size": shard} if shard else {}))
            r = convert(src, root / "ours", scheme=scheme, ignore=IGNORE, device="cpu")
            # the same ignore list for both: ours (the name rule's router gates named, then the user's)
            model_free_ptq(str(src), str(root / "llmc"), scheme=PRESET[scheme], ignore=r.ignore, device="cpu")
            made[scheme, kind] = root / "ours", root / "llmc", r
        return made[scheme, kind]

    return get


def _index(folder) -> dict:
    p = folder / "model.safetensors.index.json"
    return json.loads(p.read_text())["weight_map"] if p.exists() else {}


@pytest.mark.parametrize("scheme,kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_same_bytes_and_config_as_model_free_ptq(pairs, scheme, kind):
    ours, theirs, r = pairs(scheme, kind)
    a, b = read_folder(ours), read_folder(theirs)
    assert_same_tensors(a, b)
    if (ours.parent / "src" / "model.safetensors.index.json").exists():
        assert _index(ours) == _index(theirs)  # every tensor in the same shard file
    else:  # llm-compressor adds an index to a one-file checkpoint; mxquant keeps it one file, no index
        assert set(_index(theirs).values()) == {"model.safetensors"} and not _index(ours)
    qa, qb = (json.loads((d / "config.json").read_text())["quantization_config"] for d in (ours, theirs))
    qa.pop("version"), qb.pop("version")
    assert qa == qb
    assert len(r.quantized) > 0 and all(not n.endswith(("embed_tokens.weight", "mlp.gate.weight")) for n in r.quantized)
    manifest = json.loads((ours / "mxquant-manifest.json").read_text())
    assert manifest["format"] == f"compressed-tensors {qb['format']}"


def test_nvfp4_global_scale_is_shared_where_llm_compressor_shares_it(pairs):
    import mxquant

    t = read_folder(pairs("nvfp4a16", "llama")[0])
    src = read_folder(pairs("nvfp4a16", "llama")[0].parent / "src")
    g = {k[: -len(".weight_global_scale")]: v for k, v in t.items() if k.endswith("weight_global_scale")}
    alone = {m: mxquant.nvfp4_quantize(src[m + ".weight"]).global_scale for m in g}
    for i in range(2):
        p = f"model.layers.{i}."
        for members in (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj")):
            scales = [g[p + m] for m in members]
            assert all(torch.equal(s, scales[0]) for s in scales)
            assert min(scales[0].item(), *(alone[p + m].item() for m in members)) == scales[0].item()
        assert torch.equal(g[p + "self_attn.o_proj"], alone[p + "self_attn.o_proj"])
    assert any(not torch.equal(g[m], alone[m]) for m in g)  # the sharing did change some scale
    mix = read_folder(pairs("nvfp4a16", "mixtral")[0])
    e = "model.layers.0.block_sparse_moe.experts.1."
    assert torch.equal(mix[e + "w1.weight_global_scale"], mix[e + "w3.weight_global_scale"])
    moe = read_folder(pairs("nvfp4a16", "qwen2_moe")[0])  # per-expert gate/up: no pattern, one scale each
    e = "model.layers.0.mlp.experts.0."
    assert not torch.equal(moe[e + "gate_proj.weight_global_scale"], moe[e + "up_proj.weight_global_scale"])


def test_nvfp4_a_fused_set_of_mixed_dtypes_as_model_free_ptq(tmp_path):
    """A fused set whose members have different dtypes (k_proj fp32 beside bf16 q/v, up_proj fp16
    beside a bf16 gate_proj): the set's one global scale, and every tensor, as llm-compressor
    writes them (the amax taken in the promoted dtype)."""
    from llmcompressor import model_free_ptq
    from safetensors.torch import load_file, save_file

    sizes = dict(SMALL, num_hidden_layers=1)
    torch.manual_seed(3)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**sizes, tie_word_embeddings=False)).to(
        torch.bfloat16).save_pretrained(tmp_path / "src")
    f = tmp_path / "src" / "model.safetensors"
    t = load_file(f)
    k, u = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.up_proj.weight"
    t[k] = t[k].float() * 3 + 1e-3  # the set's largest |x|, and not a bf16 value
    t[u] = t[u].to(torch.float16) * 2
    save_file(t, f, metadata={"format": "pt"})
    r = convert(tmp_path / "src", tmp_path / "ours", scheme="nvfp4a16", ignore=IGNORE, device="cpu")
    model_free_ptq(str(tmp_path / "src"), str(tmp_path / "llmc"), scheme="NVFP4A16", ignore=r.ignore, device="cpu")
    a, b = read_folder(tmp_path / "ours"), read_folder(tmp_path / "llmc")
    assert_same_tensors(a, b)
    g = {n: v.item() for n, v in a.items() if n.endswith("global_scale")}
    p = "model.layers.0."
    assert g[p + "self_attn.q_proj.weight_global_scale"] == g[p + "self_attn.k_proj.weight_global_scale"]
    assert g[p + "mlp.gate_proj.weight_global_scale"] == g[p + "mlp.up_proj.weight_global_scale"]


def test_a_resume_with_another_scheme_converts_again(pairs, tmp_path):
    ours, _, _ = pairs("mxfp4", "llama")
    src = ours.parent / "src"
    convert(src, tmp_path / "dst", ignore=IGNORE, device="cpu")  # mxfp8
    r = convert(src, tmp_path / "dst", scheme="mxfp4", ignore=IGNORE, device="cpu", resume=True)
    assert r.shards_resumed == 0 and r.shards_done == 4
    assert_same_tensors(read_folder(tmp_path / "dst"), read_folder(ours))
    again = convert(src, tmp_path / "dst", scheme="mxfp4", ignore=IGNORE, device="cpu", resume=True)
    assert again.shards_resumed == 4


def test_fp8_block_keeps_a_weight_whose_k_is_no_multiple_of_128(tmp_path, capsys):
    """llm-compressor cannot write such a weight (its truncated FP8 tensor is not contiguous and
    safetensors refuses it); mxquant keeps it in the source dtype and lists it in `ignore`."""
    from convert_ckpt import llama_like, save_checkpoint

    save_checkpoint(tmp_path / "src", llama_like(layers=1, hidden=256, inter=320))
    r = convert(tmp_path / "src", tmp_path / "dst", scheme="fp8-block", device="cpu")
    assert r.skipped["model.layers.0.mlp.down_proj.weight"] == "last dim 320 not a multiple of 128"
    assert "model.layers.0.mlp.down_proj" in r.ignore and "model.layers.0.mlp.up_proj.weight" in r.quantized
    for args, phrase in ((["--scheme", "nvfp4a16", "--scale-mode", "rceil"], "does not apply to --scheme nvfp4a16"),
                         (["--scheme", "fp8-block", "--scale-mode", "rceil"], "does not apply to --scheme fp8-block")):
        refuse(capsys, [tmp_path / "src", tmp_path / "x", *args], phrase)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("scheme", ["mxfp4", "nvfp4a16", "fp8-block"])
def test_fused_3d_experts_are_split_per_expert_as_model_free_ptq_splits_them(pairs, scheme, tmp_path):
    """A Qwen2-MoE whose experts are fused 3-D tensors: the same tensors as converting its
    per-expert form (whose bytes match llm-compressor's and which transformers loads:
    test_convert_scheme_load.py), and the same as model_free_ptq on the fused checkpoint."""
    from llmcompressor import model_free_ptq

    ours, _, r = pairs(scheme, "qwen2_moe")
    fuse_experts(ours.parent / "src", tmp_path / "fused")
    assert any(t.dim() == 3 for t in read_folder(tmp_path / "fused").values())
    rf = convert(tmp_path / "fused", tmp_path / "ours", scheme=scheme, ignore=IGNORE, device="cpu")
    got = read_folder(tmp_path / "ours")
    assert_same_tensors(got, read_folder(ours))
    assert rf.ignore == r.ignore and sorted(rf.quantized) == sorted(r.quantized)
    model_free_ptq(str(tmp_path / "fused"), str(tmp_path / "llmc"), scheme=PRESET[scheme], ignore=rf.ignore,
                   device="cpu")
    assert_same_tensors(got, read_folder(tmp_path / "llmc"))
    qa, qb = (json.loads((d / "config.json").read_text())["quantization_config"] for d in (tmp_path / "ours",
                                                                                          tmp_path / "llmc"))
    qa.pop("version"), qb.pop("version")
    assert qa == qb


@pytest.mark.parametrize("config,tensors,phrase", [
    ({"model_type": "gpt_oss", "hidden_size": 128},
     {"gate_up_proj": (4, 128, 256), "down_proj": (4, 128, 128)}, "stores fused experts as [E, in, out]"),
    ({"model_type": "llama4_text", "hidden_size": 128},
     {"gate_up_proj": (4, 128, 256), "down_proj": (4, 128, 128)}, "stores fused experts as [E, in, out]"),
    ({"model_type": "mixtral", "hidden_size": 128},
     {"gate_up_proj": (4, 256, 128), "down_proj": (4, 128, 128)}, "names mixtral checkpoints do not use"),
    ({"model_type": "qwen3_moe", "hidden_size": 128},
     {"gate_proj": (4, 128, 128)}, "splits only gate_up_proj and down_proj"),
], ids=["gpt_oss", "llama4", "mixtral", "other-name"])
def test_fused_3d_experts_that_no_split_serves_are_refused(tmp_path, capsys, config, tensors, phrase):
    """Where llm-compressor's per-expert split is wrong ([E, in, out]: it would cut along the
    input axis) or writes names the architecture does not load, each scheme refuses, naming why."""
    from convert_ckpt import save_checkpoint

    t = {f"model.layers.0.mlp.experts.{n}": torch.randn(*shape, dtype=torch.bfloat16) for n, shape in tensors.items()}
    save_checkpoint(tmp_path / "src", t, config=config)
    for scheme in ("mxfp4", "nvfp4a16", "fp8-block"):
        refuse(capsys, [tmp_path / "src", tmp_path / "x", "--scheme", scheme], phrase)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fp8_block_identical_to_compressed_tensors(dtype):
    """fp8block.quantize against compressed-tensors' FP8_BLOCK observer + compressor as
    model_free_ptq runs them on one weight: whole and partial row blocks, zero blocks, scales
    from tiny to large, a value at the clamp."""
    from compressed_tensors.compressors import compress_module
    from compressed_tensors.quantization import preset_name_to_scheme
    from llmcompressor.entrypoints.model_free.lifecycle import calibrate_weight, initialize_quantized_linear

    from mxquant.checkpoint import fp8block

    g = torch.Generator().manual_seed(0)
    for shape in ((256, 384), (200, 256), (128, 128), (300, 512)):
        for std in (1e-3, 0.05, 3.0):
            w = (torch.randn(*shape, generator=g) * std).to(dtype)
            w[:128, :128] = 0
            w[-1, -1] = 448 * std
            m = initialize_quantized_linear(w.clone(), preset_name_to_scheme("FP8_BLOCK", ["Linear"]), "cpu")
            calibrate_weight(m)
            compress_module(m)
            q, s = fp8block.quantize(w)
            assert s.dtype == m.weight_scale.dtype == dtype and torch.equal(s, m.weight_scale), (shape, std)
            assert torch.equal(q.view(torch.uint8), m.weight.view(torch.uint8)), (shape, std)
