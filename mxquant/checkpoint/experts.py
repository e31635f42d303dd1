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
"""

from __future__ import annotations

import re
from dataclasses import replace

from .select import Decision
from .stio import CheckpointError

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
            notes.append(f"{group}: all {len(names)} projections kept in the source dtype, because {kept[0]} is "
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
