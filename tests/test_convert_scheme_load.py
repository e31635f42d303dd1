"""transformers + compressed-tensors load what `mxquant convert --scheme mxfp4 | nvfp4a16 |
fp8-block` writes, on the CPU (extra `convert-test`; mxfp8: tests/test_convert_runtimes.py).

One tiny Llama saved by transformers (untied lm_head, sharded; every Linear a whole number of
128x128 blocks so that fp8-block quantizes all of them) is converted once per scheme and loaded
with `AutoModelForCausalLM.from_pretrained`, which leaves the weights compressed and lets
compressed-tensors decompress them on the first forward pass (its own decompressor). Oracles:

- every loaded (decompressed) weight equals an independent dequantization of the file's bytes:
  tests/scheme_oracle.py (fp4_oracle's NumPy for MXFP4 and NVFP4, element times its block's
  scale in float64 rounded once to bf16 for FP8 block);
- the logits equal those of the source model whose quantized Linears compute with those
  dequantized weights and, where the scheme quantizes input activations (MXFP4: dynamic FP4
  groups of 32; FP8 block: dynamic FP8 groups of 128 per token; NVFP4A16: none), with inputs
  rounded to that format by the oracle;
- the logits are within the scheme's error of the bf16 model's: their relative error lies
  between 0.3x and 3x the root-sum-square of the weights' worst relative error (the converter's
  manifest: 10^(-SQNR/20)) and the activations' worst one (the oracle's round trip of the
  Linears' inputs). Measured: 1.5x-1.8x (the 14 Linears' errors add up through two layers);
  a block scale off by one power of two, or a quantization not applied, falls outside.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed (extra convert-test)")
pytest.importorskip("compressed_tensors", reason="compressed-tensors not installed (extra convert-test)")

import scheme_oracle  # noqa: E402
from convert_ckpt import read_folder  # noqa: E402
from scheme_oracle import dequantized  # noqa: E402

from mxquant.checkpoint import convert  # noqa: E402

SIZES = dict(vocab_size=256, hidden_size=256, intermediate_size=384, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=128, max_position_embeddings=64, tie_word_embeddings=False)
SCHEMES = ["mxfp4", "nvfp4a16", "fp8-block"]
DATA = {"mxfp4": "weight_packed", "nvfp4a16": "weight_packed", "fp8-block": "weight"}
LINEARS = 14  # 7 per layer, lm_head kept


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("scheme-load")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SIZES)).to(torch.bfloat16)
    model.save_pretrained(root / "src", max_shard_size="600KB")
    assert (root / "src" / "model.safetensors.index.json").exists()
    return root


@pytest.fixture(scope="module")
def converted(source):
    """scheme -> (DST, ConvertResult), converted on first use."""
    made = {}

    def get(scheme):
        if scheme not in made:
            made[scheme] = source / scheme, convert(source / "src", source / scheme, scheme=scheme, device="cpu")
        return made[scheme]

    return get


# ---- the oracles --------------------------------------------------------------------------------

def _mxfp4_round_trip(x: torch.Tensor) -> torch.Tensor:
    return scheme_oracle.mxfp4_round_trip(x, "compressed-tensors")


def _fp8_group_round_trip(x: torch.Tensor) -> torch.Tensor:
    """compressed-tensors' dynamic FP8 group-128 activation rule (transformers runs it; vLLM's
    differs: scheme_oracle.fp8_groups_vllm), in x's dtype: scale = amax / 448
    (0 -> eps), element e4m3(clamp(x / scale, +-448)), value element * scale."""
    g = x.unflatten(-1, (x.shape[-1] // 128, 128))
    scale = g.abs().amax(-1, keepdim=True) / 448.0
    scale = torch.where(scale == 0, torch.finfo(x.dtype).eps, scale).to(x.dtype)
    q = (g / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
    return (q.to(x.dtype) * scale).flatten(-2)


ACTIVATION = {"mxfp4": _mxfp4_round_trip, "nvfp4a16": None, "fp8-block": _fp8_group_round_trip}


def _reference(model, scheme, files, modules):
    """The source model with each quantized Linear's weight dequantized by the oracle and its
    input rounded as the scheme's input activations are (none for NVFP4A16)."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name in modules:
            lin = ref.get_submodule(name)
            lin.weight.copy_(dequantized(scheme, files, name))
            if ACTIVATION[scheme] is not None:
                lin.register_forward_pre_hook(lambda mod, args, f=ACTIVATION[scheme]: (f(args[0]),))
    return ref


# ---- the tests ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_transformers_loads_each_scheme_as_its_oracle_dequantizes_it(converted, source, ids, scheme):
    dst, result = converted(scheme)
    files = read_folder(dst)
    modules = sorted(n[: -len(".weight")] for n in result.quantized)
    assert len(modules) == LINEARS and all(f"{m}.{DATA[scheme]}" in files for m in modules)
    model = transformers.AutoModelForCausalLM.from_pretrained(source / "src").eval()
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(dst, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    loaded.eval()
    qc = json.loads((dst / "config.json").read_text())["quantization_config"]
    group = next(iter(qc["config_groups"].values()))
    assert (group["input_activations"] is None) == (ACTIVATION[scheme] is None)
    ref = _reference(model, scheme, files, modules)
    with torch.no_grad():
        got = loaded(ids).logits.float()  # the first forward pass decompresses the weights
        want = ref(ids).logits.float()
    sd = loaded.state_dict()
    for m in modules:  # compressed-tensors' decompression is the oracle's, bit for bit
        assert sd[m + ".weight"].dtype == torch.bfloat16, m
        assert torch.equal(sd[m + ".weight"], dequantized(scheme, files, m)), m
    assert torch.equal(got, want), (got - want).abs().max()


def _activation_error(model, scheme, ids) -> float:
    """The largest relative error of the oracle's round trip of a quantized Linear's input (0 for
    A16), over the source model's inputs to each Linear."""
    f = ACTIVATION[scheme]
    if f is None:
        return 0.0
    worst = []

    def hook(mod, args):
        x = args[0].double()
        worst.append(float((f(args[0]).double() - x).norm() / x.norm()))

    handles = [m.register_forward_pre_hook(hook) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return max(worst)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_logits_are_within_the_schemes_error_of_the_bf16_model(converted, source, ids, scheme):
    dst, result = converted(scheme)
    model = transformers.AutoModelForCausalLM.from_pretrained(source / "src").eval()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(dst).eval()
    with torch.no_grad():
        a, b = model(ids).logits.double(), loaded(ids).logits.double()
    rel = float((a - b).norm() / a.norm())
    weights = max(t["rel_error"] for t in result.tensors if t.get("quantized"))
    sqnr = min(t["sqnr_db"] for t in result.tensors if t.get("quantized"))
    assert weights == pytest.approx(10 ** (-sqnr / 20), rel=1e-6)  # the SQNR's amplitude form
    expected = math.hypot(weights, _activation_error(model, scheme, ids))
    print(f"{scheme}: worst weight SQNR {sqnr:.1f} dB, logits relative error {rel:.4f}, expected ~{expected:.4f}")
    assert 0.3 * expected < rel < 3 * expected, (rel, expected)
    top1 = float((a.argmax(-1) == b.argmax(-1)).double().mean())
    assert top1 > 0.5, top1


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """A per-expert Qwen2-MoE (which transformers 5 fuses in memory) converted with each scheme."""
    root = tmp_path_factory.mktemp("scheme-load-moe")
    scheme_oracle.save_qwen2_moe(root / "src", 2, SIZES)
    for scheme in SCHEMES:
        convert(root / "src", root / scheme, scheme=scheme, device="cpu")
    return root


@pytest.mark.parametrize("scheme", SCHEMES)
def test_moe_experts(moe, scheme):
    """transformers 5.17 fuses per-expert files into gate_up_proj / down_proj [E, out, in] and
    decompresses them: for mxfp4 and fp8-block exactly the oracle's weights. For nvfp4a16 it drops
    the experts' `weight_global_scale` as unexpected keys and runs other weights: a limit of
    transformers, not of the files (llm-compressor writes the same bytes); docs/convert.md."""
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(moe / scheme, output_loading_info=True)
    with torch.no_grad():
        loaded(torch.tensor([[1, 2, 3]]))
    files, sd, ex = read_folder(moe / scheme), loaded.state_dict(), "model.layers.0.mlp.experts."
    same = []
    for e in range(4):
        gate, up, down = (dequantized(scheme, files, f"{ex}{e}.{p}_proj") for p in ("gate", "up", "down"))
        same += [torch.equal(sd[ex + "gate_up_proj"][e], torch.cat([gate, up])),
                 torch.equal(sd[ex + "down_proj"][e], down)]
    if scheme == "nvfp4a16":
        assert not any(same), "transformers now loads NVFP4 experts right: update docs/convert.md and this test"
        assert all(k.endswith("weight_global_scale") and ".experts." in k for k in info["unexpected_keys"])
        assert len(info["unexpected_keys"]) == 12 and not info["missing_keys"]
        return
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert all(same)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_fused_moe_layer_kept_whole_loads_as_the_source(moe, tmp_path, scheme):
    """The Qwen2-MoE fused as transformers 5 holds it, its down_proj ignored: the layer is kept
    whole and fused (not half split), and transformers loads those experts exactly as the source's,
    with no missing or unexpected key, next to the quantized rest."""
    from convert_ckpt import fuse_experts

    src = fuse_experts(moe / "src", tmp_path / "fused")
    r = convert(tmp_path / "fused", tmp_path / "dst", scheme=scheme, ignore=["re:.*down_proj"], device="cpu")
    assert "model.layers.0.self_attn.q_proj.weight" in r.quantized
    loaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dst", output_loading_info=True)
    with torch.no_grad():
        loaded(torch.tensor([[1, 2, 3]]))
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    sd, ex = loaded.state_dict(), "model.layers.0.mlp.experts."
    for n in ("gate_up_proj", "down_proj"):
        assert torch.equal(sd[ex + n], src[ex + n]), n
