"""`mxquant eval` on config.json files it must refuse in one line (exit 2) before building
anything, or accept as `mxquant convert` does, on a tiny Llama saved by transformers and
converted by `mxquant convert`.

Oracles: transformers itself (it refuses the bad configs; the real model's layer count), the
clock, and convert's acceptance of the same SRC.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed (extra convert-test)")

from mxquant.checkpoint import convert  # noqa: E402
from mxquant.cli import main  # noqa: E402

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-configs")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).to(torch.bfloat16).save_pretrained(root / "src")
    convert(root / "src", root / "dst", device="cpu")
    return root / "src", root / "dst"


def _copy(pair, tmp_path, **change):
    """SRC and DST copied (files hard-linked) with config.json changed the same way in both."""
    import os

    out = []
    for folder in pair:
        new = tmp_path / folder.name
        new.mkdir(parents=True)
        for f in folder.iterdir():
            if f.name != "config.json":
                os.link(f, new / f.name)
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(change)
        (new / "config.json").write_text(json.dumps(cfg))
        out.append(new)
    return out


def _refused(capsys, src, dst, phrase) -> str:
    assert main(["eval", str(src), str(dst), "--quiet", "--device", "cpu", "--batch", "1", "--seq-len", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mxquant eval: error: ") and phrase in err, err
    return err


def test_the_real_layer_count_passes_and_a_huge_one_is_refused_at_once(pair, tmp_path, capsys):
    """transformers' own model has 2 layers: eval runs; a config claiming more layers than the
    tensor names number is refused from the headers (10^6 layers took minutes on the meta device)."""
    src, dst = pair
    assert transformers.AutoConfig.from_pretrained(src).num_hidden_layers == 2
    assert main(["eval", str(src), str(dst), "--quiet", "--json", "--device", "cpu", "--batch", "1",
                 "--seq-len", "8"]) == 0
    capsys.readouterr()
    src3, dst3 = _copy(pair, tmp_path / "three", num_hidden_layers=3)
    _refused(capsys, src3, dst3, "num_hidden_layers = 3, but its tensor names hold at most 2 layers")
    t0 = time.perf_counter()
    big_src, big_dst = _copy(pair, tmp_path / "million", num_hidden_layers=10 ** 6)
    _refused(capsys, big_src, big_dst, "num_hidden_layers = 1,000,000")
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("change, phrase", [
    ({"model_type": "evilarch"}, "does not recognize this architecture"),
    ({"auto_map": None}, "TypeError"),
])
def test_a_config_transformers_refuses_is_one_line_exit_2(pair, tmp_path, capsys, change, phrase):
    src, dst = _copy(pair, tmp_path, **change)
    with pytest.raises(Exception) as e:  # transformers itself refuses it
        transformers.AutoConfig.from_pretrained(src)
    assert phrase in f"{type(e.value).__name__}: {e.value}"
    _refused(capsys, src, dst, f"SRC's config.json: transformers cannot read it")
    capsys.readouterr()


def test_quantization_config_null_is_not_quantized_for_eval_as_for_convert(pair, tmp_path, capsys):
    """`"quantization_config": null` in SRC: convert converts it (it is not quantized), so eval
    must take the pair too."""
    src, _ = _copy(pair, tmp_path / "null", quantization_config=None)
    convert(src, tmp_path / "dst-null", device="cpu")
    assert json.loads((tmp_path / "dst-null" / "config.json").read_text())["quantization_config"]["format"] == \
        "mxfp8-quantized"
    assert main(["eval", str(src), str(tmp_path / "dst-null"), "--quiet", "--json", "--device", "cpu", "--batch",
                 "1", "--seq-len", "8"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["top1_agreement"] > 0.5
