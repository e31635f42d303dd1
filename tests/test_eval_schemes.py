"""`mxquant eval SRC DST` on the outputs of `mxquant convert --scheme mxfp4 | nvfp4a16 | fp8-block`
(extra `convert-test`: transformers), one tiny Llama saved by transformers (every Linear a whole
number of 128x128 blocks, so fp8-block quantizes all 14), converted once per scheme.

The oracle (tests/eval_oracle.py) runs SRC with each quantized weight replaced by an independent
dequantization of DST's bytes (tests/scheme_oracle.py: fp4_oracle's NumPy for MXFP4 / NVFP4,
float64 for FP8 block) and, for --fake-quant-activations, each quantized Linear's input rounded
by the oracle as the scheme's activations are (MXFP4: fp4_oracle, rceil; FP8 block: vLLM's
per-token groups of 128 in float64 steps), and computes every reported number itself.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed (extra convert-test)")

import scheme_oracle  # noqa: E402
from eval_oracle import _check, _expected, _random  # noqa: E402

from mxquant.checkpoint import CheckpointError, convert  # noqa: E402
from mxquant.evaluate import evaluate  # noqa: E402

SIZES = {"vocab_size": 256, "hidden_size": 256, "intermediate_size": 384, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128, "max_position_embeddings": 64}
SCHEMES = ["mxfp4", "nvfp4a16", "fp8-block"]
ROUND_TRIP = {"mxfp4": lambda x: scheme_oracle.mxfp4_round_trip(x, "rceil"), "fp8-block": scheme_oracle.fp8_groups_vllm}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """scheme -> (SRC, DST), converted on first use."""
    root = tmp_path_factory.mktemp("eval-schemes")
    torch.manual_seed(3)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**SIZES)).to(torch.bfloat16).save_pretrained(root / "src")
    made = {}

    def get(scheme):
        if scheme not in made:
            convert(root / "src", root / scheme, scheme=scheme, device="cpu")
            made[scheme] = root / "src", root / scheme
        return made[scheme]

    return get


@pytest.mark.parametrize("scheme", SCHEMES)
def test_each_scheme_against_an_independent_dequantization(pairs, scheme):
    src, dst = pairs(scheme)
    got = evaluate(src, dst, device="cpu", batch=2, seq_len=16, seed=1).as_json()
    assert got["scheme"] == scheme and got["fake_quant_activations"] is False and got["activation_scale_mode"] is None
    want = _expected(src, dst, _random(256, 2, 16, 1), scheme=scheme)
    _check(got, want)
    assert len(got["layers"]) == 14 and all(e["calls"] == 1 for e in got["layers"])
    worst = got["layers"][0]["output_sqnr_db"]
    # e2m1 with power-of-two scales ~18.5 dB on Gaussian weights, NVFP4 ~20.5, e4m3 ~31 (measured 18.6, 19.9, 31.0)
    assert {"mxfp4": 16 < worst < 22, "nvfp4a16": 17 < worst < 23, "fp8-block": 28 < worst < 34}[scheme], worst


@pytest.mark.parametrize("scheme", ["mxfp4", "fp8-block"])
def test_fake_quant_activations_as_the_scheme_quantizes_them(pairs, scheme, monkeypatch):
    src, dst = pairs(scheme)
    plain = evaluate(src, dst, device="cpu", batch=2, seq_len=16).as_json()
    got = evaluate(src, dst, device="cpu", batch=2, seq_len=16, fake_quant_activations=True).as_json()
    assert got["activation_scale_mode"] == {"mxfp4": "rceil", "fp8-block": None}[scheme]
    want = _expected(src, dst, _random(256, 2, 16, 0), fake_quant=True, monkeypatch=monkeypatch, scheme=scheme,
                     round_trip=ROUND_TRIP[scheme])
    _check(got, want)
    assert got["logits_rel_error"] > plain["logits_rel_error"]


def test_what_does_not_apply_to_a_scheme_is_refused(pairs):
    src, dst = pairs("nvfp4a16")
    with pytest.raises(CheckpointError, match="nvfp4a16 quantizes weights only"):
        evaluate(src, dst, device="cpu", fake_quant_activations=True)
    src, dst = pairs("fp8-block")
    with pytest.raises(CheckpointError, match="does not apply to --scheme fp8-block"):
        evaluate(src, dst, device="cpu", fake_quant_activations=True, activation_scale_mode="rceil")


def _edited(dst, tmp_path, edit_config=None, edit_tensors=None):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
    shutil.copytree(dst, bad)
    if edit_config:
        cfg = json.loads((bad / "config.json").read_text())
        edit_config(cfg["quantization_config"])
        (bad / "config.json").write_text(json.dumps(cfg))
    if edit_tensors:
        t = load_file(bad / "model.safetensors")
        edit_tensors(t)
        save_file(t, bad / "model.safetensors", metadata={"format": "pt"})
    return bad


def test_a_dst_that_is_not_the_scheme_written_is_refused(pairs, tmp_path):
    src, nv = pairs("nvfp4a16")
    _, fp8 = pairs("fp8-block")
    q = "model.layers.0.self_attn.q_proj."

    def group(qc):
        return next(iter(qc["config_groups"].values()))

    def drop(t):
        del t[q + "weight_global_scale"]

    def e4m3_to_u8(t):
        t[q + "weight_scale"] = t[q + "weight_scale"].view(torch.uint8)

    def int_format(qc):
        qc["format"] = group(qc)["format"] = "int-quantized"

    cases = [
        (_edited(fp8, tmp_path, lambda qc: group(qc)["weights"].update(strategy="channel")),
         "weights are not those of --scheme fp8-block (float-quantized): strategy='channel'"),
        (_edited(nv, tmp_path, lambda qc: group(qc)["weights"].update(group_size=32)),
         "weights are not those of --scheme nvfp4a16"),
        (_edited(nv, tmp_path, int_format),
         "not a compressed-tensors checkpoint of one of `mxquant convert`'s schemes"),
        (_edited(nv, tmp_path, edit_tensors=drop),
         f"different tensor sets for --scheme nvfp4a16: DST lacks 1 tensor(s) of SRC (first: {q}weight_global_scale)"),
        (_edited(nv, tmp_path, edit_tensors=e4m3_to_u8), "the nvfp4-pack-quantized format needs F8_E4M3 [256, 16]"),
    ]
    for bad, message in cases:
        with pytest.raises(CheckpointError) as e:
            evaluate(src, bad, device="cpu")
        assert message in str(e.value), (bad.name, str(e.value))


@pytest.fixture(scope="module")
def moe_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-schemes-moe")
    scheme_oracle.save_qwen2_moe(root / "src", 4, SIZES)
    return root


@pytest.mark.parametrize("scheme", ["mxfp4", "fp8-block"])
def test_per_expert_moe(moe_src, scheme, monkeypatch):
    """Per-expert files (Qwen2-MoE), which transformers 5 fuses in memory: one layer per experts
    module, its SQNR from the oracle's weights stacked the same way."""
    src, dst = moe_src / "src", moe_src / scheme
    convert(src, dst, scheme=scheme, device="cpu")
    got = evaluate(src, dst, device="cpu", batch=2, seq_len=16, fake_quant_activations=True).as_json()
    want = _expected(src, dst, _random(256, 2, 16, 0), fake_quant=True, monkeypatch=monkeypatch, scheme=scheme,
                     round_trip=ROUND_TRIP[scheme])
    _check(got, want)
    assert "model.layers.0.mlp.experts" in want["sqnr"] and len(want["sqnr"]) == 8
