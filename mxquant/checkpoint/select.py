"""Which tensors of a checkpoint are quantized: the name rule (no model code needed).

A tensor is quantized when it is a floating-point 2-D tensor named `<module>.weight` (or a
fused 3-D expert tensor `...experts.<x>_proj`, whose layout experts.py then checks), and its
module is not an embedding, a norm, `lm_head` (unless asked), a MoE router gate, or matched by
`ignore`, and its last dimension is a multiple of the scheme's block (32; NVFP4 16;
fp8-block 128). Other weights of 3 or more dimensions (a
conv kernel, say) are kept: no Linear. A weight the rule selects that is not F32, F16 or BF16
is refused (F64 and integer ones: pass `ignore` to keep them; FP8 ones: already quantized).
Blocks run along the last dimension, which for a Linear weight [out, in] is the reduction
dimension, as runtimes expect.

`ignore` entries follow compressed-tensors: a module name matched exactly, or `re:<regex>`
matched with `re.match` against the module name (the tensor name without `.weight`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..formats import BLOCK
from .stio import CheckpointError, TensorInfo

QUANTIZABLE = ("F32", "F16", "BF16")
"""The source dtypes mxfp8_quantize takes. F64 weights are refused (see decide)."""

QUANTIZED_MARKERS = ("weight_scale", "weight_packed", "weight_zero_point", "weight_global_scale", "input_scale",
                     "qweight", "qzeros")
"""Parameter names that quantized checkpoints (compressed-tensors, GPTQ/AWQ, FP8) carry."""

_EMBED = re.compile(r"(^|\.)(embed_tokens|embed_positions|embeddings?|wte|wpe|word_embeddings|"
                    r"position_embeddings|token_type_embeddings|tok_embeddings|shared)$")
_NORM = re.compile(r"(norm|ln_\w+|ln\d*|layernorm)$", re.IGNORECASE)
_GATE = re.compile(r"(^|\.)(gate|router|shared_expert_gate|gating|wg)$")
_FUSED_EXPERT = re.compile(r"(^|\.)experts\.[A-Za-z0-9_]*_proj$")


@dataclass(frozen=True)
class Decision:
    name: str
    quantize: bool
    reason: str
    """Why it is kept as is ("" when quantized)."""
    to_ignore: bool = False
    """A Linear-like weight left unquantized: its module goes into the config's `ignore`."""

    @property
    def module(self) -> str:
        return module_name(self.name)


def module_name(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def match_ignore(module: str, patterns) -> bool:
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], module):
                return True
        elif p == module:
            return True
    return False


def check_ignore(patterns) -> None:
    for p in patterns:
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as e:
                raise CheckpointError(f"bad --ignore pattern {p!r}: {e}") from None


def is_lm_head(module: str) -> bool:
    return module == "lm_head" or module.endswith(".lm_head")


def decide(info: TensorInfo, ignore=(), quantize_lm_head: bool = False, k_block: int = BLOCK) -> Decision:
    """The decision for one tensor from its name, dtype and shape; `k_block`: what the last dimension
    must be a multiple of (the scheme's block: 32, 16 for NVFP4, 128 for fp8-block)."""
    name, shape = info.name, info.shape
    mod = module_name(name)
    fused = _FUSED_EXPERT.search(name) is not None and len(shape) == 3
    if name.endswith(".bias"):
        return Decision(name, False, "bias")
    if _NORM.search(mod.rsplit(".", 1)[-1]):
        return Decision(name, False, "norm")
    if not (name.endswith(".weight") or fused) or len(shape) < 2:
        return Decision(name, False, "not a weight matrix")
    if _EMBED.search(mod):
        return Decision(name, False, "embedding")
    if is_lm_head(mod) and not quantize_lm_head:
        return Decision(name, False, "lm_head", to_ignore=True)
    if _GATE.search(mod):
        return Decision(name, False, "router gate", to_ignore=True)
    if match_ignore(mod, ignore):
        return Decision(name, False, "ignored (--ignore)", to_ignore=False)
    if info.dtype not in QUANTIZABLE:
        if info.dtype == "F64":
            # not cast to F32 here: a quantized F64 weight would then be the MXFP8 of other values
            # (the cast rounds first, and can move a block's amax over a power of two)
            raise CheckpointError(f"{name} is an F64 weight; MXFP8 quantization takes F32, F16 or BF16 "
                                  f"(cast the checkpoint first, or pass --ignore {mod} to leave it as is)")
        if info.dtype.startswith("F8"):
            raise CheckpointError(f"{name} is already {info.dtype}: this checkpoint looks quantized already")
        raise CheckpointError(f"{name} is a weight of non-float dtype {info.dtype}; refusing to guess "
                              "(pass --ignore to leave it as is)")
    if shape[-1] % k_block or shape[-1] == 0:
        return Decision(name, False, f"last dim {shape[-1]} not a multiple of {k_block}", to_ignore=True)
    if len(shape) > 2 and not fused:  # a conv kernel, say: no Linear, its last dim no reduction axis
        return Decision(name, False, f"{len(shape)}-D weight, not a Linear")
    return Decision(name, True, "")


def check_not_quantized(names, config: dict) -> None:
    """Refuse a checkpoint that is already quantized (config or tensor names say so)."""
    qc = config.get("quantization_config")
    if qc is not None:  # a dict names its method; anything else is no config we can trust either
        method = qc.get("quant_method", "?") if isinstance(qc, dict) else f"a {type(qc).__name__}, not an object"
        raise CheckpointError(f"the checkpoint is already quantized (config.json has quantization_config, "
                              f"quant_method {method})")
    for n in names:
        if n.rsplit(".", 1)[-1] in QUANTIZED_MARKERS:
            raise CheckpointError(f"the checkpoint is already quantized (it has tensor {n})")


def ignore_list(decisions, user_ignore=(), quantize_lm_head: bool = False) -> list[str]:
    """The config's `ignore`: lm_head (a Linear even when tied, so runtimes must skip it), every
    Linear-like weight left unquantized, then the user's entries as given."""
    out = [] if quantize_lm_head else ["lm_head"]
    for d in decisions:
        if d.to_ignore and d.module not in out:
            out.append(d.module)
    for p in user_ignore:
        if p not in out:
            out.append(p)
    return out
