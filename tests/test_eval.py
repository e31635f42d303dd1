"""`mxquant eval SRC DST` (extra `convert-test`: transformers) on tiny models saved by
transformers itself (a dense Llama with a tokenizer, a Qwen2-MoE whose experts transformers 5
fuses in memory), each converted by `mxquant convert`.

The oracle is the test's own computation (tests/eval_oracle.py): SRC loaded by transformers,
each quantized weight replaced by mxquant.reference's dequantization of DST's bytes (read with
the safetensors package; per-expert tensors stacked into transformers' fused parameters there),
both models run on the same tokens, and every number (logits relative error, top-1, KL,
perplexity, each layer's output SQNR from its recorded inputs) computed from those outputs, not
by the eval code. The other schemes: tests/test_eval_schemes.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed (extra convert-test)")

from eval_oracle import _check, _expected, _random, _round_trip  # noqa: E402
from hidden_modules import hide  # noqa: E402
from subproc import child_env  # noqa: E402

from mxquant.checkpoint import CheckpointError, convert  # noqa: E402
from mxquant.evaluate import evaluate  # noqa: E402

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)
WORDS = ["[UNK]"] + [f"w{i}" for i in range(99)]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _llama(folder, weights=None):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, tie_word_embeddings=True))
    model = model.to(torch.bfloat16)
    if weights:
        weights(model)
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def _qwen2_moe(folder):
    cfg = transformers.Qwen2MoeConfig(**{**TINY, "num_hidden_layers": 1}, moe_intermediate_size=64,
                                      shared_expert_intermediate_size=64, num_experts=4, num_experts_per_tok=2)
    torch.manual_seed(2)
    transformers.Qwen2MoeForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder)
    return folder


def _converted(tmp_path_factory, name, build):
    tmp = tmp_path_factory.mktemp(name)
    src = build(tmp / "src")
    convert(src, tmp / "dst")
    return src, tmp / "dst"


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return _converted(tmp_path_factory, "dense", _llama)


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    return _converted(tmp_path_factory, "moe", _qwen2_moe)


# ---- the numbers --------------------------------------------------------------------------------

def test_cli_json_on_dense_llama_matches_independent_computation(dense):
    src, dst = dense
    proc = subprocess.run([sys.executable, "-m", "mxquant", "eval", str(src), str(dst), "--json", "--device", "cpu",
                           "--batch", "3", "--seq-len", "20", "--seed", "5"],
                          capture_output=True, text=True, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["inputs"] == {"kind": "random", "sequences": 3, "tokens": 60, "seed": 5}
    want = _expected(src, dst, _random(256, 3, 20, 5))
    _check(got, want)
    assert len(got["layers"]) == 14 and 0 < got["logits_rel_error"] < 0.2
    assert all(e["calls"] == 1 and 20 < e["output_sqnr_db"] < 40 for e in got["layers"])


def test_moe_input_ids_used_as_given(moe, tmp_path):
    src, dst = moe
    seqs = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [200, 3, 17], [5] * 9, [9, 8, 7]]
    (tmp_path / "ids.json").write_text(json.dumps(seqs))
    got = evaluate(src, dst, input_ids=str(tmp_path / "ids.json"), device="cpu", batch=8).as_json()
    assert got["inputs"] == {"kind": "input-ids", "sequences": 4, "tokens": 24}
    want = _expected(src, dst, [torch.tensor(seqs[0::2]), torch.tensor(seqs[1::2])])
    _check(got, want, perplexity=True)
    assert "model.layers.0.mlp.experts" in want["sqnr"]  # the fused experts, one layer
    assert len(want["sqnr"]) == 8


@pytest.mark.parametrize("which", ["dense", "moe"])
def test_fake_quant_activations(which, request, monkeypatch):
    src, dst = request.getfixturevalue(which)
    plain = evaluate(src, dst, device="cpu", batch=2, seq_len=16).as_json()
    got = evaluate(src, dst, device="cpu", batch=2, seq_len=16, fake_quant_activations=True).as_json()
    assert got["activation_scale_mode"] == "rceil"
    want = _expected(src, dst, _random(256, 2, 16, 0), fake_quant=True, monkeypatch=monkeypatch)
    _check(got, want)
    assert got["logits_rel_error"] > plain["logits_rel_error"]


def test_text_perplexity_with_the_source_tokenizer(dense, tmp_path):
    src, dst = dense
    text = " ".join(f"w{(i * 7) % 99}" for i in range(50)) + " unknownword w3"
    (tmp_path / "t.txt").write_text(text)
    got = evaluate(src, dst, text=str(tmp_path / "t.txt"), device="cpu", batch=2, seq_len=16).as_json()
    ids = transformers.AutoTokenizer.from_pretrained(src)(text)["input_ids"]
    assert len(ids) == 52 and got["inputs"] == {"kind": "text", "sequences": 4, "tokens": 52}
    windows = [ids[i:i + 16] for i in range(0, 52, 16)]
    want = _expected(src, dst, [torch.tensor(windows[:2]), torch.tensor(windows[2:3]), torch.tensor(windows[3:])])
    _check(got, want, perplexity=True)


def test_unquantized_copy_is_exact(dense, tmp_path):
    src, _ = dense
    convert(src, tmp_path / "none", ignore=["re:.*"])
    r = evaluate(src, tmp_path / "none", device="cpu", batch=2, seq_len=16)
    assert (r.logits_rel_error, r.top1_agreement, r.kl_divergence, r.layers) == (0.0, 1.0, 0.0, [])


def test_weights_on_the_mxfp8_grid_give_identical_layers(tmp_path):
    def on_grid(model):
        with torch.no_grad():
            for name, m in model.named_modules():
                if isinstance(m, torch.nn.Linear) and name != "lm_head":
                    m.weight.copy_(_round_trip(m.weight))

    src = _llama(tmp_path / "src", on_grid)
    convert(src, tmp_path / "dst", scale_mode="rceil")
    r = evaluate(src, tmp_path / "dst", device="cpu", batch=2, seq_len=16)
    assert (r.logits_rel_error, r.top1_agreement, r.kl_divergence) == (0.0, 1.0, 0.0)
    assert len(r.layers) == 14 and all(e["identical"] and e["output_sqnr_db"] is None for e in r.layers)


# ---- refusals -----------------------------------------------------------------------------------

def _main(capsys, *argv) -> tuple[int, str]:
    from mxquant.cli import main

    rc = main(["eval", *map(str, argv), "--quiet"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) <= 1, err
    return rc, err


def test_refusals(dense, moe, tmp_path, capsys, monkeypatch):
    src, dst = dense
    ids = tmp_path / "ids.json"
    cases = [
        ((src, src), "not a quantized checkpoint"),
        ((src, moe[1]), "different models"),
        ((moe[0], dst), "different models"),
        ((src, dst, "--text", tmp_path / "nothing.txt"), "no such file"),
        ((moe[0], moe[1], "--text", ids), "has none (no tokenizer.json"),
        ((src, dst, "--input-ids", ids, "--seq-len", "8"), "--seq-len does not apply"),
        ((src, dst, "--batch", "0"), "at least 1"),
        ((src, dst, "--device", "tpu"), "not one of cpu"),
        ((src, dst, "--layers", "-1"), "--layers must be 0 or more (got -1)"),  # printed 13 of 14 rows
    ]
    for value in ([], [[1, "2"]], [[]], {"a": 1}):
        ids.write_text(json.dumps(value))
        rc, err = _main(capsys, src, dst, "--input-ids", ids)
        assert rc == 2 and "non-empty JSON list" in err, (value, err)
    ids.write_text("[[1, 256]]")
    rc, err = _main(capsys, src, dst, "--input-ids", ids)
    assert rc == 2 and "token id 256, outside the model's vocabulary [0, 256)" in err
    for argv, message in cases:
        rc, err = _main(capsys, *argv)
        assert rc == 2 and message in err, (argv, err)
    from mxquant.evaluate import models

    monkeypatch.setattr(models, "available_bytes", lambda device: 1000)
    rc, err = _main(capsys, src, dst)
    assert rc == 2 and "not enough memory on cpu" in err


def test_refuses_a_dst_that_is_not_src_converted(dense, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    src, dst = dense
    for change, message in [("kept", "bytes differ from SRC's"), ("drop", "different tensor sets"),
                            ("scale", "mxfp8-quantized format needs U8 [96, 2]"),
                            ("config", "different models: their config.json "
                                                                     "differ in rms_norm_eps")]:
        bad = tmp_path / change
        shutil.copytree(dst, bad)
        tensors = load_file(bad / "model.safetensors")
        if change == "kept":
            tensors["model.norm.weight"] = tensors["model.norm.weight"] + 1
        elif change == "drop":
            del tensors["model.layers.0.input_layernorm.weight"]
        elif change == "scale":
            name = "model.layers.1.mlp.up_proj.weight_scale"
            tensors[name] = tensors[name][:, :1].contiguous()
        else:
            cfg = json.loads((bad / "config.json").read_text())
            cfg["rms_norm_eps"] = 0.1
            (bad / "config.json").write_text(json.dumps(cfg))
        save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
        rc, err = _main(capsys, src, bad)
        assert rc == 2 and message in err, (change, err)


def test_a_config_without_the_model_sizes_is_refused_before_allocating(dense, tmp_path, capsys):
    import shutil

    src, dst = dense
    for folder in (src, dst):
        shutil.copytree(folder, tmp_path / folder.name)
        cfg = json.loads((tmp_path / folder.name / "config.json").read_text())
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers"):
            del cfg[key]  # transformers' defaults: a 7B Llama
        (tmp_path / folder.name / "config.json").write_text(json.dumps(cfg))
    rc, err = _main(capsys, tmp_path / src.name, tmp_path / dst.name)
    assert rc == 2 and "config.json and the weights do not match" in err


def test_without_transformers_one_line_and_mxquant_imports_no_transformers(dense):
    src, dst = dense
    script = hide("transformers") + (
        "import sys, mxquant, mxquant.cli, mxquant.evaluate\n"
        "assert not [m for m in sys.modules if m.startswith('transformers')]\n"
        f"sys.exit(mxquant.cli.main(['eval', {str(src)!r}, {str(dst)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "mxquant eval: error: mxquant eval needs transformers to build the model (No module named 'transformers' "
        "(hidden by the test)); pip install transformers"]


def test_evaluate_raises_checkpoint_error(dense):
    src, _ = dense
    with pytest.raises(CheckpointError, match="not a quantized checkpoint"):
        evaluate(src, src, device="cpu")
