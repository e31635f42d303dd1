"""Converted checkpoints as runtimes see them (extra `convert-test`; each test skips when its
package is absent):

- transformers + compressed-tensors load the output of tiny real models (sharded with tied
  embeddings; q/k/v biases and an untied lm_head) with no missing or unexpected keys, and the
  logits equal those of the original model whose quantized weights were replaced by
  mxfp8_dequantize(mxfp8_quantize(w)) (the reference, not the converter's output);
- llm-compressor's model_free_ptq(scheme="MXFP8") writes the same tensors, byte for byte, for
  the same model and ignore list (dense and MoE);
- the name rule picks exactly the nn.Linear layers (less lm_head and router gates) of eight
  architectures built on the meta device.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed (extra convert-test)")
pytest.importorskip("compressed_tensors", reason="compressed-tensors not installed (extra convert-test)")

from convert_ckpt import assert_same_tensors, read_folder  # noqa: E402

from mxquant import reference  # noqa: E402
from mxquant.checkpoint import convert  # noqa: E402

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)


def _llama(tied):
    cfg = transformers.LlamaConfig(**TINY, tie_word_embeddings=tied)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def _qwen2():
    cfg = transformers.Qwen2Config(**TINY, tie_word_embeddings=False)
    torch.manual_seed(1)
    m = transformers.Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)  # non-zero biases, so they must really be carried over
    return m


def _qwen2_moe():
    cfg = transformers.Qwen2MoeConfig(**{**TINY, "num_hidden_layers": 1}, moe_intermediate_size=64,
                                      shared_expert_intermediate_size=64, num_experts=4, num_experts_per_tok=2)
    torch.manual_seed(2)
    return transformers.Qwen2MoeForCausalLM(cfg).to(torch.bfloat16).eval()


def _round_trip(x):
    data, scale = reference.quantize(x, torch.float8_e4m3fn, "compressed-tensors", "linear")
    return reference.dequantize(data, scale, "linear", x.dtype)


def _dequantized_copy(model, quantized_modules):
    """The model with each quantized Linear's weight replaced by the reference round trip, and
    its input too (the scheme's dynamic MXFP8 input activations, which the loader applies)."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for name in quantized_modules:
            lin = m.get_submodule(name)
            lin.weight.copy_(_round_trip(lin.weight))
            lin.register_forward_pre_hook(lambda mod, args: (_round_trip(args[0]),))
    return m


@pytest.mark.parametrize("build,shard", [(lambda: _llama(True), "30KB"), (_qwen2, None)], ids=["llama_tied_sharded", "qwen2_bias"])
def test_transformers_loads_and_logits_match_dequantized(tmp_path, build, shard):
    model = build()
    src, dst = tmp_path / "src", tmp_path / "dst"
    model.save_pretrained(src, **({"max_shard_size": shard} if shard else {}))
    if shard:
        assert (src / "model.safetensors.index.json").exists()
    r = convert(src, dst)
    assert "lm_head.weight" not in r.quantized
    # the baseline goes through from_pretrained too (its non-persistent buffers, e.g. rotary
    # inv_freq, then match the loaded model's)
    model = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(dst, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    loaded.eval()
    modules = [n[: -len(".weight")] for n in r.quantized]
    assert len(modules) == 14
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    ref_model = _dequantized_copy(model, modules)
    with torch.no_grad():
        got = loaded(ids).logits.float()
        want = ref_model(ids).logits.float()
        orig = model(ids).logits.float()
    assert torch.equal(got, want), (got - want).abs().max()
    assert (orig - want).abs().mean() > 1e-3  # and quantization did move them
    sd, ref = loaded.state_dict(), ref_model.state_dict()
    for n in r.quantized:  # the weights it runs with are exactly the reference's dequantized ones
        assert torch.equal(sd[n].to(torch.bfloat16), ref[n]), n
    if build is _qwen2:
        b = "model.layers.0.self_attn.q_proj.bias"
        assert torch.equal(sd[b], model.state_dict()[b])



def test_quantize_lm_head_on_tied_embeddings_keeps_lm_head_out_and_loads(tmp_path):
    """Review of the ninth session: with tied embeddings there is no lm_head weight to quantize,
    yet --quantize-lm-head dropped lm_head from `ignore`; transformers then built lm_head as a
    quantized Linear with no scale (missing key lm_head.weight_scale) and gave NaN logits. Now
    lm_head stays in ignore, with a note, and the output loads as the default conversion does."""
    model = _llama(True)
    src = tmp_path / "src"
    model.save_pretrained(src)
    r = convert(src, tmp_path / "default")
    r_asked = convert(src, tmp_path / "asked", quantize_lm_head=True)
    assert "lm_head" in r_asked.ignore and r_asked.ignore == r.ignore
    assert any("no lm_head weight" in n for n in r_asked.notes), r_asked.notes
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    logits = []
    for folder in ("asked", "default"):
        loaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():
            logits.append(loaded.eval()(ids).logits.float())
    assert torch.isfinite(logits[0]).all()
    assert torch.equal(logits[0], logits[1])


@pytest.mark.parametrize("build", [lambda: _llama(False), _qwen2_moe], ids=["llama", "qwen2_moe"])
def test_same_bytes_as_llm_compressor_model_free_ptq(tmp_path, build):
    pytest.importorskip("llmcompressor", reason="llm-compressor not installed (extra convert-test)")
    from llmcompressor import model_free_ptq

    model = build()
    src = tmp_path / "src"
    model.save_pretrained(src, max_shard_size="60KB")
    ours = convert(src, tmp_path / "ours")
    # model_free_ptq quantizes every 2-D `*.weight` it is not told to ignore (embeddings and
    # router gates included), so its ignore list names them; ours finds them by the name rule.
    ignore = ["lm_head", "model.embed_tokens", "re:.*mlp\\.gate$", "re:.*shared_expert_gate$"]
    model_free_ptq(str(src), str(tmp_path / "llmc"), scheme="MXFP8", ignore=ignore, device="cpu")
    a, b = read_folder(tmp_path / "ours"), read_folder(tmp_path / "llmc")
    assert_same_tensors(a, b)
    assert len([k for k in a if k.endswith("_scale")]) == len(ours.quantized) > 0


ARCHS = ["LlamaConfig", "Qwen2Config", "Qwen2MoeConfig", "MixtralConfig", "Gemma2Config", "Phi3Config",
         "Qwen3MoeConfig", "MistralConfig"]


@pytest.mark.parametrize("arch", ARCHS)
def test_name_rule_picks_exactly_the_linear_layers(arch):
    """The name rule against the model's own module structure (built on the meta device): it
    quantizes every nn.Linear weight except lm_head and MoE router gates, and nothing else; the
    unquantized Linears are all in the config's ignore list."""
    from mxquant.checkpoint.select import decide, ignore_list, match_ignore
    from mxquant.checkpoint.stio import TensorInfo

    cls = getattr(transformers, arch, None)
    if cls is None:
        pytest.skip(f"transformers {transformers.__version__} has no {arch}")
    cfg = cls(**{**TINY, "hidden_size": 128, "intermediate_size": 256, "vocab_size": 32064})  # meta: free
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    names = dict(model.state_dict().items())  # per-expert or fused, as this version stores them
    ds = [decide(TensorInfo(n, "BF16", tuple(t.shape), 0, 0)) for n, t in names.items()]
    quantized = {d.module for d in ds if d.quantize}
    fused = {m for m in quantized if m not in linears}  # 3-D expert parameters, no Linear module
    assert all(".experts." in m and names[m].dim() == 3 for m in fused), fused
    gates = {n for n in linears if n.rsplit(".", 1)[-1] in ("gate", "router", "shared_expert_gate")}
    assert quantized - fused == linears - {"lm_head"} - gates
    ignore = ignore_list(ds)
    assert all(match_ignore(n, ignore) for n in linears - quantized)
