"""Everything decided before a byte is written: the source checked, every tensor's fate, the
output layout of every shard, the config. All refusals happen here, so a refused conversion
leaves nothing behind."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..layouts import scale_shape
from . import fmt
from .select import Decision, check_ignore, check_not_quantized, decide, ignore_list
from .stio import CheckpointError, TensorInfo, read_header

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


@dataclass
class Shard:
    file: str
    path: str
    size: int
    data_start: int
    tensors: list[TensorInfo]
    decisions: dict[str, Decision]
    metadata: dict

    def layout(self) -> list[tuple[str, str, tuple]]:
        """Output tensors in file order: each source tensor, its scale right after it."""
        out = []
        for t in self.tensors:
            if self.decisions[t.name].quantize:
                out.append((t.name, fmt.DATA_DTYPE, t.shape))
                out.append((fmt.scale_name(t.name), fmt.SCALE_DTYPE, scale_shape(tuple(t.shape), "linear")))
            else:
                out.append((t.name, t.dtype, t.shape))
        return out


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

    @property
    def decisions(self) -> list[Decision]:
        return [d for s in self.shards for d in s.decisions.values()]

    @property
    def bytes_in(self) -> int:
        return sum(s.size for s in self.shards)


def _is_inside(child: str, parent: str) -> bool:
    child, parent = os.path.realpath(child), os.path.realpath(parent)
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_paths(src: str, dst: str, overwrite: bool, resume: bool) -> None:
    if not os.path.isdir(src):
        raise CheckpointError(f"SRC {src} is not a directory")
    if _is_inside(dst, src):
        raise CheckpointError(f"DST {dst} is inside SRC {src}; the source is never written to")
    if _is_inside(src, dst):
        raise CheckpointError(f"SRC {src} is inside DST {dst}")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise CheckpointError(f"DST {dst} exists and is not a directory")
    if os.path.isdir(dst) and os.listdir(dst) and not (overwrite or resume):
        raise CheckpointError(f"DST {dst} exists and is not empty (pass --overwrite to replace it, "
                              "or --resume to continue a conversion)")


def _source_files(src: str) -> tuple[list[str], bool, dict]:
    """(shard file names, has_index, index json) of SRC."""
    index_path = os.path.join(src, INDEX)
    if os.path.isfile(index_path):
        try:
            with open(index_path) as f:
                index = json.load(f)
            weight_map = index["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{INDEX}: unreadable ({type(e).__name__}: {e})") from None
        files = sorted(set(weight_map.values()))
        for name in files:
            if not os.path.isfile(os.path.join(src, name)):
                raise CheckpointError(f"{INDEX} names shard {name}, which is missing from {src}")
        return files, True, index
    if os.path.isfile(os.path.join(src, SINGLE)):
        return [SINGLE], False, {}
    raise CheckpointError(f"SRC {src} is not a Hugging Face safetensors checkpoint "
                          f"(no {SINGLE} or {INDEX})")


def _read_config(src: str) -> dict:
    path = os.path.join(src, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"SRC {src} has no config.json; not a Hugging Face checkpoint")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"config.json: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError("config.json: not a JSON object")
    return cfg


def make_plan(src: str, dst: str, *, ignore=(), quantize_lm_head=False, overwrite=False, resume=False) -> Plan:
    check_paths(src, dst, overwrite, resume)
    check_ignore(ignore)
    files, has_index, index = _source_files(src)
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
    if has_index:
        wrong = [k for k, v in index["weight_map"].items() if seen.get(k) != v]
        if wrong:
            raise CheckpointError(f"{INDEX} does not match the shards (e.g. {wrong[0]})")
    check_not_quantized(seen, config)
    for shard in shards:
        shard.decisions = {t.name: decide(t, ignore, quantize_lm_head) for t in shard.tensors}
    plan_ignore = ignore_list([d for s in shards for d in s.decisions.values()], ignore, quantize_lm_head)
    config = dict(config)
    config["quantization_config"] = fmt.quantization_config(plan_ignore)
    skip = set(files) | {INDEX, "config.json"}  # config.json: rewritten by _finish
    copies = []
    for root, dirs, names in os.walk(src):
        dirs.sort()
        for n in sorted(names):
            rel = os.path.relpath(os.path.join(root, n), src)
            if rel not in skip:
                copies.append(rel)
    return Plan(src, dst, shards, copies, config, plan_ignore, has_index, dict(index.get("metadata", {})))
