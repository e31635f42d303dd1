"""Everything decided before a byte is written: the source checked, every tensor's fate, the
output layout of every shard, the config. All refusals happen here, so a refused conversion
leaves nothing behind."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from . import experts, fused, stio
from .dstdir import check_resumable
from .quantizers import DEFAULT, Quant
from .schemes import SCHEMES
from .select import (Decision, check_ignore, check_not_quantized, decide, ignore_list, is_lm_head, match_ignore,
                     module_name)
from .srcfiles import INDEX, check_apart, is_inside, load_json, other_files, resolve_inside, source_root, source_shards
from .stio import CheckpointError, TensorInfo, build_header, read_header



@dataclass
class Shard:
    file: str
    path: str
    size: int
    data_start: int
    tensors: list[TensorInfo]
    decisions: dict[str, Decision]
    metadata: dict
    quant: Quant = DEFAULT

    def layout(self) -> list[tuple[str, str, tuple]]:
        """Output tensors in file order: each source tensor, its scheme's outputs in its place
        (data, scale, NVFP4's global scale)."""
        out = []
        for t in self.tensors:
            if self.decisions[t.name].quantize:
                out += self.quant.scheme.outputs(t.name, t.dtype, t.shape)
            else:
                out.append((t.name, t.dtype, t.shape))
        return out

    def output_metadata(self) -> dict:
        """The output file's `__metadata__`: the source's, with `format: pt` where it has none."""
        meta = dict(self.metadata or {})
        meta.setdefault("format", "pt")
        return meta


@dataclass
class Plan:
    src: str
    dst: str
    shards: list[Shard]
    copies: list[str]
    """Other files of SRC (relative paths), copied unchanged (config.json is not among them: it is
    written from `config`, which gains the quantization entry)."""
    config: dict
    ignore: list[str]
    has_index: bool
    index_metadata: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What the plan changed from the name rule, and why (an expert group kept whole)."""
    quant: Quant = DEFAULT
    """The scheme, and NVFP4's global scales."""

    @property
    def decisions(self) -> list[Decision]:
        return [d for s in self.shards for d in s.decisions.values()]

    @property
    def bytes_in(self) -> int:
        return sum(s.size for s in self.shards)


def check_paths(src: str, dst: str, overwrite: bool, resume: bool) -> None:
    if not os.path.isdir(src):
        raise CheckpointError(f"SRC {src} is not a directory")
    if os.path.lexists(dst) and not os.path.isdir(dst):
        raise CheckpointError(f"DST {dst} exists and is not a directory")
    real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
    nested = is_inside(real_dst, real_src) or is_inside(real_src, real_dst)  # (said as such by check_apart)
    if not nested and os.path.isdir(dst) and os.listdir(dst) and not (overwrite or resume):
        raise CheckpointError(f"DST {dst} exists and is not empty (pass --overwrite to replace it, "
                              "or --resume to continue a conversion)")
    check_apart(src, dst)  # (after the cheap refusal above: it walks both folders)
    if os.path.isdir(dst) and resume and not overwrite:
        check_resumable(dst)


def _read_config(src: str) -> dict:
    if not os.path.lexists(os.path.join(src, "config.json")):
        raise CheckpointError(f"SRC {src} has no config.json; not a Hugging Face checkpoint")
    path = resolve_inside(src, source_root(src), "config.json")
    cfg = load_json(path, "config.json")
    if not isinstance(cfg, dict):
        raise CheckpointError("config.json: not a JSON object")
    return cfg


def _check_index(weight_map: dict, seen: dict) -> None:
    """The index and the shards agree both ways: every entry names the shard that holds the
    tensor, and every tensor of every shard is listed."""
    wrong = [k for k, v in weight_map.items() if seen.get(k) != v]
    if wrong:
        raise CheckpointError(f"{INDEX} does not match the shards (e.g. {wrong[0]} is not in "
                              f"{weight_map[wrong[0]]})")
    unlisted = [k for k in seen if k not in weight_map]
    if unlisted:
        raise CheckpointError(f"{INDEX} does not list tensor {unlisted[0]} of {seen[unlisted[0]]} "
                              f"({len(unlisted)} unlisted)")


def _check_output_names(shards: list[Shard]) -> None:
    """No two output tensors share a name (a source tensor named like another's scale)."""
    owner: dict[str, str] = {}
    for shard in shards:
        for name, _, _ in shard.layout():
            if name in owner:
                raise CheckpointError(f"output tensor {name} would be written twice (a source tensor has the "
                                      "name of another's scale); refusing")
            owner[name] = shard.file


def _check_output_headers(shards: list[Shard]) -> None:
    """Every output shard's header, built as the writer builds it, within the safetensors
    package's limit (stio.MAX_HEADER bytes): past it no reader opens the file."""
    for shard in shards:
        n = len(build_header(shard.layout(), shard.output_metadata())[0])
        if n > stio.MAX_HEADER:
            raise CheckpointError(f"output {shard.file} would have a safetensors header of {n:,} bytes, past the "
                                  f"{stio.MAX_HEADER:,} bytes safetensors readers accept (tensor names too long, "
                                  "or too many tensors in one shard); refusing")


MAX_FREE_TENSORS = 1 << 16
BYTES_PER_TENSOR = 1 << 16
"""Past MAX_FREE_TENSORS output tensors, the conversion must read BYTES_PER_TENSOR source bytes per
output tensor: each costs a fixed overhead (a header entry, a quantizer call, a hash, a manifest
entry), and real checkpoints hold megabytes per tensor. A fused expert tensor of 65536 tiny experts
(4 MiB split into 393,216 NVFP4 tensors: two minutes, 1.6 GB) is refused in the plan instead."""


def _check_output_count(shards: list[Shard], decisions: dict[str, Decision], scheme, split: bool) -> None:
    """Refuse, before any split is enumerated, a plan of more output tensors than its source bytes
    justify (MAX_FREE_TENSORS, BYTES_PER_TENSOR); counted from the shapes alone."""
    count = 0
    for t in (t for s in shards for t in s.tensors):
        if not decisions[t.name].quantize:
            count += 1
        elif split and len(t.shape) == 3:  # each expert's parts, each part the scheme's outputs
            experts.check_count(t.name, t.shape)  # its own refusals first: empty experts, E past 65536
            count += t.shape[0] * len(experts.split_names(t.name)) * len(scheme.outputs(t.name, t.dtype, t.shape[1:]))
        else:
            count += len(scheme.outputs(t.name, t.dtype, t.shape))
    source = sum(s.size for s in shards)
    if count > max(MAX_FREE_TENSORS, source // BYTES_PER_TENSOR):
        raise CheckpointError(f"the conversion would write {count:,} tensors from {source:,} bytes of source (past "
                              f"{MAX_FREE_TENSORS:,} tensors, at least {BYTES_PER_TENSOR:,} source bytes a tensor are "
                              "needed: tiny fused experts split per expert?); refusing a checkpoint that is mostly "
                              "per-tensor overhead")


def _part_kept(d: Decision, t: TensorInfo, decide_one) -> Decision:
    """The decision `d` for the fused 3-D expert tensor `t`, turned to kept where a per-expert part
    the split would write is kept (`--ignore` naming it)."""
    for p in experts.parts(t):
        dp = decide_one(p)
        if not dp.quantize:
            return replace(d, quantize=False, reason=f"its per-expert part {dp.module} is kept ({dp.reason})",
                           to_ignore=True)
    return d


def _decide(shards: list[Shard], config: dict, scheme: str, decide_one) -> tuple[dict[str, Decision], list[str]]:
    """Every tensor's decision, and the notes. One scheme per MoE layer (experts.one_scheme_per_group)
    is decided on the source names, fused expert tensors among them, before anything is split; so a
    layer is split whole or left whole. Then each fused 3-D expert tensor left quantized is checked
    (experts.check_fused) and, for schemes other than mxfp8, replaced in its shard by its per-expert
    2-D weights (experts.split_fused; refused where that is wrong). A kept layer is written as in the
    source, fused."""
    split = scheme != "mxfp8"
    decisions = {t.name: decide_one(t) for s in shards for t in s.tensors}
    _check_output_count(shards, decisions, SCHEMES[scheme], split)
    fused3d = [t for s in shards for t in s.tensors if len(t.shape) == 3 and decisions[t.name].quantize]
    if split:
        for t in fused3d:
            decisions[t.name] = _part_kept(decisions[t.name], t, decide_one)
    notes = experts.one_scheme_per_group(decisions)
    source = set(decisions)
    for shard in shards:
        tensors = []
        for t in shard.tensors:
            if not (len(t.shape) == 3 and decisions[t.name].quantize):
                tensors.append(t)
            elif not split:
                experts.check_fused(t.name, t.shape, config)
                tensors.append(t)
            else:
                parts = experts.split_fused(t, config, scheme)
                for p in parts:
                    if p.name in source:
                        raise CheckpointError(f"{t.name} {list(t.shape)} split per expert (as --scheme {scheme} "
                                              f"writes fused experts) gives {p.name}, which the source also has; "
                                              "refusing (--scheme mxfp8 keeps the experts fused)")
                    decisions[p.name] = decide_one(p)
                del decisions[t.name]
                tensors += parts
        shard.tensors = tensors
    return decisions, notes


def _unmatched_ignore(patterns, names) -> list[str]:
    """A note for each --ignore pattern that matches no module of the source (a typo, or a
    tensor name such as x.weight where the rule matches module names)."""
    modules = {module_name(n) for n in names}
    notes = []
    for p in patterns:
        if not any(match_ignore(m, [p]) for m in modules):
            hint = f" (patterns match module names: {p[:-len('.weight')]!r}?)" if p.endswith(".weight") else ""
            notes.append(f"--ignore {p!r} matches no module of the checkpoint{hint}")
    return notes


def make_plan(src: str, dst: str, *, ignore=(), quantize_lm_head=False, overwrite=False, resume=False,
              scheme: str = "mxfp8") -> Plan:
    check_paths(src, dst, overwrite, resume)
    check_ignore(ignore)
    files, index = source_shards(src)
    config = _read_config(src)
    shards, seen = [], {}
    for name in files:
        path = os.path.join(src, name)
        infos, meta, data_start = read_header(path)
        tensors = list(infos.values())  # in file order: read_header builds them so
        for t in tensors:
            if t.name in seen:
                raise CheckpointError(f"tensor {t.name} is in both {seen[t.name]} and {name}")
            seen[t.name] = name
        shards.append(Shard(name, path, os.path.getsize(path), data_start, tensors, {}, meta))
    if index is not None:
        _check_index(index["weight_map"], seen)
    check_not_quantized(seen, config)
    sch = SCHEMES[scheme]
    decisions, notes = _decide(shards, config, scheme, lambda t: decide(t, ignore, quantize_lm_head, sch.k_block))
    notes += experts.moe_notes(decisions, scheme) + _unmatched_ignore(ignore, seen)
    where = {t.name: (s.path, s.data_start, t) for s in shards for t in s.tensors if decisions[t.name].quantize}
    quant = Quant(sch, fused.GlobalScales(where) if scheme == "nvfp4a16" else None)
    for shard in shards:
        shard.decisions = {t.name: decisions[t.name] for t in shard.tensors}
        shard.quant = quant
    if quantize_lm_head and not any(is_lm_head(d.module) for d in decisions.values()):
        # tied embeddings: no lm_head weight to quantize, but runtimes still build lm_head as a Linear,
        # which must stay out of the scheme (else a quantized Linear with no scale: NaN logits)
        notes.append("--quantize-lm-head: the checkpoint holds no lm_head weight (tied to the embeddings?), so "
                     "lm_head stays unquantized and in ignore")
        quantize_lm_head = False
    plan_ignore = ignore_list([d for s in shards for d in s.decisions.values()], ignore, quantize_lm_head)
    config = dict(config)
    config["quantization_config"] = sch.quantization_config(plan_ignore)
    _check_output_names(shards)
    _check_output_headers(shards)
    copies, left = other_files(src, files)
    if left:
        more = " ..." if len(left) > 5 else ""
        notes.append(f"not copied: {len(left)} weight file(s) of another format, which would ship unconverted "
                     f"weights beside the compressed-tensors config: {', '.join(left[:5])}{more}")
    return Plan(src, dst, shards, copies, config, plan_ignore, index is not None,
                dict(index["metadata"]) if index else {}, notes, quant)
