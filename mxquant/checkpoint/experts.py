"""MoE experts: rules the name rule alone cannot apply, so that no runtime can misread the output.

- One scheme per expert group. All projections of a layer's experts (`<...>.experts.*`:
  per-expert `experts.<i>.gate_proj.weight`, Mixtral's `experts.<i>.w1.weight`, fused
  `experts.gate_up_proj`) are quantized together or kept together: vLLM refuses a MoE layer
  whose projections differ ("All MoE projections need to have same quantization scheme"). When
  one projection cannot be quantized (its K is not a multiple of 32, or `--ignore` names it),
  the whole group is kept in the source dtype, listed in `ignore`, and a note says why.
- Fused 3-D expert tensors (`experts.<x>_proj`, [E, a, b]) are quantized only where the
  layout is known to be [E, out, in], so that the 32-blocks run along the reduction axis: the
  architecture (config.json's model_type) must be one whose transformers module stores them so
  (read off transformers 5.17's modeling code), and the shape must agree with the config's
  hidden size. GPT-OSS and Llama 4 store [E, in, out] (gate and up interleaved in GPT-OSS):
  refused with a hint; so is an architecture this table does not know. Never a guess.
- mxfp8 writes them fused. The other schemes split them per expert as llm-compressor 0.14's
  model_free_ptq does (`split_fused_moe_experts`: gate_up_proj [E, 2I, H] -> experts.<i>.gate_proj
  (rows 0..I) and .up_proj (rows I..2I), down_proj -> experts.<i>.down_proj, each `.weight`), where
  that split is right and loadable: layout [E, out, in] (above; every such transformers module
  takes gate as the first half: `.chunk(2, dim=-1)`), and an architecture whose per-expert
  checkpoints use those names (SPLIT_NAMES: transformers 5.17's conversion_mapping merges
  `experts.*.gate_proj/up_proj/down_proj` into the fused tensors for them; vLLM loads the same
  names). Refused elsewhere: GPT-OSS and Llama 4 ([E, in, out]: llm-compressor's split cuts
  along the input axis, wrong), Mixtral / PhiMoE / MiniMax (per-expert names w1/w3/w2: the split
  names load nowhere), GraniteMoE (no per-expert form), a fused name other than gate_up_proj /
  down_proj (llm-compressor does not split it, and cannot quantize it whole).
"""

from __future__ import annotations

import re
from dataclasses import replace

from .select import Decision
from .stio import CheckpointError, TensorInfo, itemsize

OUT_IN = frozenset({
    "mixtral", "qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_vl_moe", "deepseek_v3", "olmoe", "glm4_moe",
    "glm4v_moe", "granitemoe", "jamba", "phimoe", "minimax", "ernie4_5_moe", "hunyuan_v1_moe",
})
"""model_types whose fused experts are gate_up_proj [E, 2I, H] and down_proj [E, H, I] (F.linear layout)."""
IN_OUT = frozenset({"gpt_oss", "llama4", "llama4_text"})
"""model_types whose fused experts are [E, in, out] (used as x @ W[e])."""

GROUP_REASON = "expert group kept whole (one scheme per MoE layer)"
_GROUP = re.compile(r"^(.*(?:^|\.)experts)\.")


def _model_types(config: dict) -> set[str]:
    text = config.get("text_config")
    return {t for t in (config.get("model_type"), text.get("model_type") if isinstance(text, dict) else None)
            if isinstance(t, str)}


def _hidden_size(config: dict):
    for c in (config, config.get("text_config")):
        if isinstance(c, dict) and isinstance(c.get("hidden_size"), int):
            return c["hidden_size"]
    return None


def check_fused(name: str, shape: tuple, config: dict) -> None:
    """Refuse quantizing the fused 3-D expert tensor `name` unless its layout is known [E, out, in]."""
    types = _model_types(config)
    keep = "pass --ignore 're:.*experts.*' to keep every expert in its source dtype"
    if shape[0] == 0:  # no runtime builds a MoE layer without experts: a broken or truncated file
        raise CheckpointError(f"{name} {list(shape)}: a fused expert tensor with no experts (E = 0); refusing "
                              f"to write an empty expert layer ({keep})")
    if types & IN_OUT:
        raise CheckpointError(f"{name} {list(shape)}: {'/'.join(sorted(types & IN_OUT))} stores fused experts as "
                              f"[E, in, out]; quantized as stored, its 32-blocks would run along the output axis, "
                              f"which no MXFP8 GEMM reads ({keep})")
    if not types & OUT_IN:
        raise CheckpointError(f"{name} {list(shape)}: fused 3-D expert tensors of model_type "
                              f"{'/'.join(sorted(types)) or '(none)'} have no known layout; refusing to guess "
                              f"the reduction axis ({keep})")
    hidden = _hidden_size(config)
    axis = 1 if name.endswith("down_proj") else 2  # where the hidden size sits in [E, out, in]
    if hidden is None or shape[axis] != hidden:
        raise CheckpointError(f"{name} {list(shape)}: expected the hidden size {hidden} on axis {axis} of the "
                              f"[E, out, in] layout {'/'.join(sorted(types & OUT_IN))} uses; the file disagrees, "
                              f"so its layout is unknown ({keep})")


SPLIT_NAMES = frozenset({
    "qwen2_moe", "qwen3_moe", "qwen3_next", "deepseek_v3", "olmoe", "glm4_moe", "glm4v_moe", "ernie4_5_moe",
    "hunyuan_v1_moe", "jamba",
})
"""[E, out, in] model_types whose per-expert checkpoints are experts.<i>.{gate,up,down}_proj.weight."""
_SPLIT = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}


def split_names(name: str) -> tuple:
    """The per-expert parts the fused expert tensor `name` is split into (() where it is not)."""
    return _SPLIT.get(name.rsplit(".", 1)[-1], ())


def split_fused(t: TensorInfo, config: dict, scheme: str) -> list[TensorInfo]:
    """The per-expert 2-D weights llm-compressor's model_free_ptq splits the fused 3-D expert
    tensor `t` into (names, shapes; byte ranges of the source, in file order), or a refusal
    saying why that split would be wrong or unloadable."""
    ignore = "pass --ignore 're:.*experts.*' to keep every expert in its source dtype"
    keep = ignore + ", or use --scheme mxfp8"
    types = _model_types(config)
    if types & IN_OUT:
        raise CheckpointError(f"{t.name} {list(t.shape)}: {'/'.join(sorted(types & IN_OUT))} stores fused experts as "
                              f"[E, in, out]; llm-compressor's per-expert split takes each expert's [in, out] matrix for "
                              f"[out, in] (blocks along the output axis, gate and up cut from halves of the input "
                              f"rows): wrong weights. GPT-OSS's own 4-bit experts use OpenAI's MXFP4 layout, not "
                              f"written here ({ignore})")
    check_fused(t.name, t.shape, config)
    last = t.name.rsplit(".", 1)[-1]
    if last not in _SPLIT:
        raise CheckpointError(f"{t.name} {list(t.shape)}: --scheme {scheme} writes fused experts split per expert, "
                              f"as llm-compressor does, which splits only gate_up_proj and down_proj ({keep})")
    if not types & SPLIT_NAMES:
        raise CheckpointError(f"{t.name} {list(t.shape)}: --scheme {scheme} writes fused experts split per expert "
                              f"(experts.<i>.gate_proj/up_proj/down_proj, as llm-compressor does), names "
                              f"{'/'.join(sorted(types))} checkpoints do not use, so no runtime would load them "
                              f"({keep})")
    if t.shape[1] % len(_SPLIT[last]):
        raise CheckpointError(f"{t.name} {list(t.shape)}: gate_up_proj with an odd number of rows ({keep})")
    return parts(t)


MAX_EXPERTS = 1 << 16
"""More experts than this in one fused tensor are refused: no MoE model has a tenth as many, and a
header may claim any E (an expert of 0 rows has no bytes for the file's size to bound)."""


def check_count(name: str, shape: tuple) -> None:
    """Refuse splitting the fused expert tensor `name` per expert (parts: the schemes other than
    mxfp8; mxfp8 quantizes it whole, an empty one as empty) where its experts are empty (a
    dimension of 0) or more than MAX_EXPERTS, before anything is enumerated."""
    keep = "pass --ignore 're:.*experts.*' to keep every expert in its source dtype"
    if 0 in shape[1:]:  # zero bytes whatever E says
        raise CheckpointError(f"{name} {list(shape)}: a fused expert tensor of empty experts (a dimension of 0); "
                              f"refusing to write an expert layer of empty weights ({keep})")
    if shape[0] > MAX_EXPERTS:
        raise CheckpointError(f"{name} {list(shape)}: {shape[0]} experts in one tensor, more than the {MAX_EXPERTS} "
                              f"any model has; refusing a header that would take that many per-expert steps ({keep})")


def parts(t: TensorInfo) -> list[TensorInfo]:
    """The per-expert 2-D weights of the fused 3-D expert tensor `t` as llm-compressor names them
    (byte ranges of the source, in file order; [] for a name it does not split), checked only for
    their count (check_count); split_fused is the form checked for the layout too."""
    check_count(t.name, t.shape)
    last = t.name.rsplit(".", 1)[-1]
    names = split_names(t.name)
    e, rows, k = t.shape
    n, item = rows // max(len(names), 1), itemsize(t.dtype)
    out = []
    for i in range(e):
        for j, part in enumerate(names):
            name = t.name.replace(last, f"{i}.{part}") + ".weight"  # llm-compressor's str.replace
            begin = t.begin + (i * rows + j * n) * k * item
            out.append(TensorInfo(name, t.dtype, (n, k), begin, begin + n * k * item))
    return out


def one_scheme_per_group(decisions: dict[str, Decision]) -> list[str]:
    """Keep a whole expert group when one of its projections is kept; returns the notes."""
    groups: dict[str, list[str]] = {}
    for name, d in decisions.items():
        g = _GROUP.match(name)
        if g and (d.quantize or d.to_ignore or d.reason == "ignored (--ignore)"):
            groups.setdefault(g.group(1), []).append(name)
    notes = []
    for group, names in groups.items():
        kept = [n for n in names if not decisions[n].quantize]
        quantized = [n for n in names if decisions[n].quantize]
        if kept and quantized:
            for n in quantized:
                decisions[n] = replace(decisions[n], quantize=False, reason=GROUP_REASON, to_ignore=True)
            notes.append(f"{group}: all {len(names)} expert weights kept in the source dtype, because {kept[0]} is "
                         f"kept ({decisions[kept[0]].reason}) and runtimes need one scheme per MoE layer")
    return notes


TRANSFORMERS_NOTES = {
    "mxfp8": ("MoE experts quantized: transformers 5.15.1-5.25.0 cannot load them (its DecompressExperts "
              "applies the group scales as per-channel ones; 5.17.0 re-checked), 4.57.6 with "
              "run_compressed=False can; see docs/convert.md"),
    "nvfp4a16": ("MoE experts quantized with nvfp4a16: transformers 5.17 drops each expert's weight_global_scale "
                 "as an unexpected key and runs wrong expert weights (llm-compressor's files alike); "
                 "see docs/convert.md"),
}
"""Per scheme, the warning a checkpoint with quantized experts gets: which runtimes misread it
(tests/test_convert_moe.py, tests/test_convert_scheme_load.py pin transformers' behaviour; the
mxfp4 and fp8-block experts it loads exactly)."""


def moe_notes(decisions: dict[str, Decision], scheme: str = "mxfp8") -> list[str]:
    """The warning a MoE checkpoint with quantized experts gets (which runtimes load it)."""
    note = TRANSFORMERS_NOTES.get(scheme)
    return [note] if note and any(d.quantize and _GROUP.match(n) for n, d in decisions.items()) else []
