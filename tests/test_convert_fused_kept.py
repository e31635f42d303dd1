"""Fused 3-D MoE experts with `--scheme mxfp4 | nvfp4a16 | fp8-block` where the layer is not
quantized whole: one scheme per MoE layer is decided on the fused tensors before any split, so a
layer with one member kept is written exactly as in the source (fused, source dtype, listed in
`ignore`), never half split; a fused tensor without experts is refused; a split whose names the
source already has is refused naming the split. Oracle: the source tensors as the `safetensors`
package reads them (the kept layer must be their bytes; transformers loading it:
tests/test_convert_scheme_load.py)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from convert_ckpt import assert_same_tensors, read_folder, refuse, save_checkpoint

from mxquant.checkpoint import convert

SCHEMES = ["mxfp4", "nvfp4a16", "fp8-block"]
CONFIG = {"model_type": "qwen3_moe", "hidden_size": 128}
L0, L1 = "model.layers.0.mlp.experts.", "model.layers.1.mlp.experts."


def _source(inter0: int) -> dict[str, torch.Tensor]:
    """Two MoE layers of 2 fused experts (layer 0 with intermediate size `inter0`, layer 1 with 128)
    and an attention weight, all quantizable by every scheme except where inter0 says otherwise."""
    g = torch.Generator().manual_seed(inter0)

    def w(*shape):
        return torch.randn(*shape, generator=g).to(torch.bfloat16)

    return {L0 + "gate_up_proj": w(2, 2 * inter0, 128), L0 + "down_proj": w(2, 128, inter0),
            L1 + "gate_up_proj": w(2, 256, 128), L1 + "down_proj": w(2, 128, 128),
            "model.layers.0.self_attn.q_proj.weight": w(128, 128)}


# why layer 0 is kept: its down_proj's K (40: no multiple of 32, 16 or 128), --ignore naming the
# fused down_proj, --ignore naming one per-expert part of the fused gate_up_proj
CASES = {"k": (40, [], "last dim 40 not a multiple of"),
         "ignore-fused": (128, ["re:.*layers\\.0\\..*down_proj"], "ignored (--ignore)"),
         "ignore-part": (128, ["model.layers.0.mlp.experts.1.up_proj"],
                         "its per-expert part model.layers.0.mlp.experts.1.up_proj is kept (ignored (--ignore))")}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_fused_layer_with_a_member_kept_is_written_as_in_the_source(tmp_path, scheme, case):
    inter0, ignore, reason = CASES[case]
    src = _source(inter0)
    save_checkpoint(tmp_path / "src", src, config=CONFIG)
    r = convert(tmp_path / "src", tmp_path / "dst", scheme=scheme, ignore=ignore, device="cpu")
    got = read_folder(tmp_path / "dst")
    layer0 = {k: v for k, v in got.items() if k.startswith(L0)}
    assert_same_tensors(layer0, {k: v for k, v in src.items() if k.startswith(L0)})  # fused, source bytes
    listed = {L0 + "gate_up_proj"} | ({L0 + "down_proj"} if case != "ignore-fused" else set())
    assert listed | set(ignore) <= set(r.ignore)  # the fused down_proj named by the user's pattern there
    reasons = [r.skipped[k] for k in sorted(layer0)]  # the member's own reason, the group rule's for the other
    assert sum(reason in x for x in reasons) == 1, reasons
    assert reasons.count("expert group kept whole (one scheme per MoE layer)") == 1, reasons
    assert any(n.startswith("model.layers.0.mlp.experts: all 2 expert weights kept") and reason in n
               for n in r.notes), r.notes
    # the rest is quantized as usual: layer 1 split per expert, the attention weight
    split = {f"{L1}{e}.{p}_proj.weight" for e in range(2) for p in ("gate", "up", "down")}
    assert split <= set(r.quantized) and "model.layers.0.self_attn.q_proj.weight" in r.quantized
    assert L1 + "gate_up_proj" not in got and L1 + "down_proj" not in got


@pytest.mark.parametrize("scheme", ["mxfp8", *SCHEMES])
def test_a_fused_expert_tensor_without_experts_is_refused(tmp_path, capsys, scheme):
    """E = 0 is no MoE layer any runtime builds (a truncated file): refused, nothing written,
    rather than dropped (the split of zero experts is nothing) or written as an empty layer."""
    src = {L0 + "gate_up_proj": torch.zeros(0, 256, 128, dtype=torch.bfloat16),
           L0 + "down_proj": torch.zeros(0, 128, 128, dtype=torch.bfloat16),
           "model.norm.weight": torch.ones(128, dtype=torch.bfloat16)}
    save_checkpoint(tmp_path / "src", src, config=CONFIG)
    refuse(capsys, [tmp_path / "src", tmp_path / "x", "--scheme", scheme], "with no experts (E = 0)")
    assert not (tmp_path / "x").exists()
    # kept by --ignore, as the refusal suggests: written unchanged
    convert(tmp_path / "src", tmp_path / "dst", scheme=scheme, ignore=["re:.*experts.*"], device="cpu")
    assert_same_tensors(read_folder(tmp_path / "dst"), src)


@pytest.mark.parametrize("scheme", SCHEMES)  # mxfp8 quantizes a fused tensor whole (test_convert_memory.py)
def test_a_fused_expert_tensor_of_empty_experts_is_refused_at_once(tmp_path, capsys, scheme):
    """[E, 0, H]: zero bytes whatever E is, so a header can claim 2^40 experts that the file's
    size never bounds; splitting them one by one would run without end. Refused before anything
    is enumerated (the test's time bounds it: E = 2^40 would take hours to split), as is E past
    65536 with bytes behind it."""
    for shape, phrase in (([1 << 40, 0, 128], "a fused expert tensor of empty experts"),
                          ([(1 << 16) + 1, 2, 128], "65537 experts in one tensor, more than the 65536")):
        nbytes = shape[0] * shape[1] * shape[2] * 2
        header = {L0 + "gate_up_proj": {"dtype": "BF16", "shape": shape, "data_offsets": [0, nbytes]}}
        blob = json.dumps(header).encode()
        src = tmp_path / "src"
        src.mkdir(exist_ok=True)
        with open(src / "model.safetensors", "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + nbytes)  # a sparse file of zeros: 32 MiB claimed, none written
        (src / "config.json").write_text(json.dumps(CONFIG))
        refuse(capsys, [src, tmp_path / "x", "--scheme", scheme], phrase)
        assert not (tmp_path / "x").exists()


def test_a_split_that_gives_a_name_the_source_has_is_refused_naming_the_split(tmp_path, capsys):
    save_checkpoint(tmp_path / "src", {L0 + "gate_up_proj": torch.randn(2, 256, 128, dtype=torch.bfloat16),
                                       L0 + "0.gate_proj.weight": torch.randn(128, 128, dtype=torch.bfloat16)},
                    config=CONFIG)
    for scheme in SCHEMES:
        err = refuse(capsys, [tmp_path / "src", tmp_path / "x", "--scheme", scheme],
                     f"{L0}gate_up_proj [2, 256, 128] split per expert")
        assert f"gives {L0}0.gate_proj.weight, which the source also has" in err
    assert not (tmp_path / "x").exists()
