"""MoE checkpoints no runtime can misread (issue 20): one scheme per expert group, and fused
3-D experts quantized only where their layout is known to be [E, out, in].

Checkpoints are written by transformers' own `save_pretrained` (GPT-OSS and Llama 4 store
fused experts [E, in, out]; Qwen2-MoE per expert). Oracles: the source files' bytes, read
with the safetensors package, for everything that must stay as it was; the name rule for
what is quantized.
"""

import json

import pytest
import torch

pytest.importorskip("safetensors")
transformers = pytest.importorskip("transformers")

from convert_ckpt import read_folder, save_checkpoint  # noqa: E402

from mxquant.checkpoint import CheckpointError, convert, experts  # noqa: E402
from mxquant.cli import main  # noqa: E402

ATTN = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            vocab_size=128)


def _save(model, folder):
    torch.manual_seed(0)
    model.to(torch.bfloat16).save_pretrained(folder)
    return read_folder(folder)


def _gpt_oss():
    return transformers.GptOssForCausalLM(transformers.GptOssConfig(
        **ATTN, intermediate_size=96, num_local_experts=4, num_experts_per_tok=2))


def _llama4():
    return transformers.Llama4ForCausalLM(transformers.Llama4TextConfig(
        **ATTN, intermediate_size=96, intermediate_size_mlp=128, num_local_experts=4, num_experts_per_tok=1))


def _deepseek_v3():
    return transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(
        **{**ATTN, "num_hidden_layers": 2, "num_key_value_heads": 2}, intermediate_size=128, moe_intermediate_size=32,
        first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, q_lora_rank=32,
        kv_lora_rank=32, qk_rope_head_dim=32, qk_nope_head_dim=32, v_head_dim=32, n_group=1, topk_group=1))


def _qwen3_moe():
    return transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
        **ATTN, intermediate_size=96, moe_intermediate_size=64, num_experts=4, num_experts_per_tok=2))


def _qwen2_moe(moe_intermediate):
    return transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        **ATTN, intermediate_size=96, moe_intermediate_size=moe_intermediate, shared_expert_intermediate_size=64,
        num_experts=4, num_experts_per_tok=2))


@pytest.mark.parametrize("build, experts", [(_gpt_oss, "model.layers.0.mlp.experts"),
                                            (_llama4, "model.layers.0.feed_forward.experts")], ids=["gpt_oss", "llama4"])
def test_fused_experts_stored_in_out_are_refused_then_kept_on_request(tmp_path, capsys, build, experts):
    src = tmp_path / "src"
    source = _save(build(), src)
    fused = experts + ".gate_up_proj"
    assert source[fused].shape[1] == 64  # [E, hidden, 2I]: blocks along the last axis would be output rows
    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["convert", str(src), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "[E, in, out]" in err and "--ignore 're:.*experts.*'" in err, err
    assert not (tmp_path / "dst").exists()
    r = convert(src, tmp_path / "dst", ignore=["re:.*experts.*"])
    out = read_folder(tmp_path / "dst")
    for name in (fused, experts + ".down_proj"):
        assert name not in r.quantized and name + "_scale" not in out
        assert torch.equal(out[name].view(torch.uint8), source[name].view(torch.uint8))
    assert "model.layers.0.self_attn.q_proj.weight" in r.quantized  # the rest is converted


def test_expert_width_not_a_multiple_of_32_keeps_the_whole_group(tmp_path, capsys):
    """Qwen2-MoE, moe_intermediate_size=48: down_proj's K is 48, so gate/up alone could be
    quantized; vLLM refuses such a layer. The whole group stays bf16, in `ignore`, with a note."""
    src = tmp_path / "src"
    source = _save(_qwen2_moe(48), src)
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "dst")]) == 0
    printed = capsys.readouterr().out
    assert "note: model.layers.0.mlp.experts: all 12 expert weights kept" in printed
    out = read_folder(tmp_path / "dst")
    experts = [n for n in source if ".mlp.experts." in n]
    assert len(experts) == 12
    for n in experts:
        assert n + "_scale" not in out and torch.equal(out[n].view(torch.uint8), source[n].view(torch.uint8)), n
    assert out["model.layers.0.mlp.shared_expert.down_proj.weight"].dtype == torch.float8_e4m3fn  # K = 64
    config = json.loads((tmp_path / "dst" / "config.json").read_text())
    ignore = config["quantization_config"]["ignore"]
    assert {n[: -len(".weight")] for n in experts} <= set(ignore)
    man = json.loads((tmp_path / "dst" / "mxquant-manifest.json").read_text())
    assert len(man["notes"]) == 1 and "one scheme per MoE layer" in man["notes"][0]  # no quantized experts
    kept = {t["name"]: t.get("kept") for s in man["shards"] for t in s["tensors"]}
    assert kept["model.layers.0.mlp.experts.0.gate_proj.weight"] == "expert group kept whole (one scheme per MoE layer)"
    assert "not a multiple of 32" in kept["model.layers.0.mlp.experts.0.down_proj.weight"]


def test_ignoring_one_expert_keeps_its_group(tmp_path):
    src = tmp_path / "src"
    _save(_qwen2_moe(64), src)
    r = convert(src, tmp_path / "dst", ignore=["model.layers.0.mlp.experts.1.down_proj"])
    assert not [n for n in r.quantized if ".mlp.experts." in n]
    assert "model.layers.0.mlp.shared_expert.up_proj.weight" in r.quantized
    full = convert(src, tmp_path / "all")
    assert len([n for n in full.quantized if ".mlp.experts." in n]) == 12  # without --ignore: all of them
    assert any("transformers 5.15.1-5.25.0 cannot load them" in n for n in full.notes)  # the MoE warning
    assert not any("transformers" in n for n in r.notes)  # no quantized experts, no warning


@pytest.mark.parametrize("scheme,warned", [("nvfp4a16", "drops each expert's weight_global_scale"), ("mxfp4", None)])
def test_moe_warning_per_scheme(tmp_path, scheme, warned):
    """The MoE warning names what transformers misreads for that scheme (tests/test_convert_scheme_load.py
    loads each: nvfp4a16 experts lose their global scales; mxfp4 / fp8-block experts load exactly;
    fp8-block needs K % 128, which this model's hidden size of 64 is not)."""
    src = tmp_path / "src"
    _save(_qwen2_moe(128), src)
    r = convert(src, tmp_path / "dst", scheme=scheme)
    assert len([n for n in r.quantized if ".mlp.experts." in n]) == 12
    notes = [n for n in r.notes if "transformers" in n]
    assert (notes == []) if warned is None else (len(notes) == 1 and warned in notes[0]), r.notes


def test_fused_experts_of_unknown_or_disagreeing_layout_are_refused(tmp_path):
    e = torch.zeros(4, 64, 64, dtype=torch.bfloat16)
    src = tmp_path / "unknown"
    save_checkpoint(src, {"model.layers.0.mlp.experts.gate_up_proj": e},
                    config={"model_type": "brand_new_moe", "hidden_size": 64})
    with pytest.raises(CheckpointError, match="no known layout; refusing to guess"):
        convert(src, tmp_path / "dst")
    src = tmp_path / "transposed"  # a qwen3_moe config, but gate_up stored [E, hidden, 2I]
    save_checkpoint(src, {"model.layers.0.mlp.experts.gate_up_proj": torch.zeros(4, 64, 96, dtype=torch.bfloat16)},
                    config={"model_type": "qwen3_moe", "hidden_size": 64})
    with pytest.raises(CheckpointError, match="the file disagrees"):
        convert(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_fused_experts_of_a_known_out_in_layout_are_quantized(tmp_path):
    src = tmp_path / "src"
    g = torch.Generator().manual_seed(3)
    t = {"model.layers.0.mlp.experts.gate_up_proj": torch.randn(4, 96, 64, generator=g).bfloat16(),
         "model.layers.0.mlp.experts.down_proj": torch.randn(4, 64, 64, generator=g).bfloat16(),
         "model.conv.weight": torch.randn(64, 4, 32, generator=g).bfloat16()}  # a conv kernel: no Linear
    save_checkpoint(src, t, config={"model_type": "qwen3_moe", "hidden_size": 64})
    r = convert(src, tmp_path / "dst")
    assert sorted(r.quantized) == ["model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.gate_up_proj"]
    assert r.skipped["model.conv.weight"] == "3-D weight, not a Linear"


@pytest.mark.parametrize("model_type", sorted(experts.OUT_IN | experts.IN_OUT))
def test_the_layout_table_matches_the_installed_transformers(model_type):
    """Each model_type's fused experts, built by transformers itself on the meta device from
    its default config: [E, out, in] (hidden size last in gate_up, second in down) where the
    table says OUT_IN, [E, in, out] where it says IN_OUT."""
    try:
        cfg = transformers.AutoConfig.for_model(model_type)
    except (KeyError, ValueError):
        pytest.skip(f"transformers {transformers.__version__} has no {model_type}")
    text = getattr(cfg, "text_config", None) or cfg
    for c in {id(cfg): cfg, id(text): text}.values():
        if hasattr(c, "num_hidden_layers"):
            c.num_hidden_layers = 4  # past DeepSeek-V3's first dense layers, still free on meta
        if getattr(c, "head_dim", 0) is None:  # Hunyuan-MoE's default config leaves it unset
            c.head_dim = c.hidden_size // c.num_attention_heads
    try:
        with torch.device("meta"):
            try:
                model = transformers.AutoModelForCausalLM.from_config(cfg)
            except ValueError:  # a multimodal config: its base model holds the text layers
                model = transformers.AutoModel.from_config(cfg)
    except Exception as e:  # noqa: BLE001 - a default config this transformers cannot build
        pytest.skip(f"{model_type}'s default config does not build here ({type(e).__name__}: {e})")
    fused = {n: tuple(p.shape) for n, p in model.named_parameters() if ".experts." in n and p.dim() == 3}
    assert fused, f"{model_type}: no fused expert parameters"
    hidden, decided = text.hidden_size, 0
    for name, shape in fused.items():
        out_in = shape[1 if name.endswith("down_proj") else 2] == hidden
        in_out = shape[2 if name.endswith("down_proj") else 1] == hidden
        if out_in != in_out:  # a square one (intermediate == hidden) tells nothing
            assert out_in == (model_type in experts.OUT_IN), (name, shape, hidden)
            decided += 1
    assert decided, f"{model_type}: no fused expert parameter whose dims tell the layout"


@pytest.mark.parametrize("build", [_deepseek_v3, _qwen3_moe], ids=["deepseek_v3", "qwen3_moe"])
def test_per_expert_checkpoints_quantize_every_expert(tmp_path, build):
    """transformers 5.17 saves these experts one by one ([out, in] Linear weights): all of them
    are quantized (one scheme), the router gate and the shared experts' own rule apply, and the
    bytes are the reference's."""
    from mxquant import reference

    src = tmp_path / "src"
    source = _save(build(), src)
    r = convert(src, tmp_path / "dst")
    out = read_folder(tmp_path / "dst")
    experts_ = [n for n in source if ".mlp.experts." in n]
    assert experts_ and set(experts_) <= set(r.quantized)
    assert not [n for n in r.notes if "kept in the source dtype" in n]
    assert any("transformers 5.15.1-5.25.0" in n for n in r.notes)
    for n in experts_:
        data, scale = reference.quantize(source[n], torch.float8_e4m3fn, "compressed-tensors", "linear")
        assert torch.equal(out[n].view(torch.uint8), data.view(torch.uint8)), n
        assert torch.equal(out[n + "_scale"], scale.view(torch.uint8)), n
    gates = [n for n in source if n.endswith("mlp.gate.weight")]
    assert gates and all(r.skipped[g] == "router gate" for g in gates)
