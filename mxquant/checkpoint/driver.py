"""`convert(src, dst, ...)`: a Hugging Face safetensors checkpoint to compressed-tensors MXFP8.

Order of work: plan (every refusal happens here, nothing written yet), then per shard of this
rank: stream tensors into DST/<shard>.tmp, rename, verify, record a part manifest; after a
barrier rank 0 copies the other files, writes config.json, the index and the manifest. On an
error a DST this run created (or emptied, with --overwrite) is removed whole; under --resume,
finished shards (each complete, with its part manifest) stay and a half-written one (*.tmp)
is removed.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field

from . import dist, manifest
from .fmt import SCALE_MODES
from .plan import INDEX, Plan, make_plan
from .stio import CheckpointError, itemsize
from .writer import ShardWriter
from .tensors import copy_tensor, quantize_tensor
from .verify import verify_shard



@dataclass
class ConvertResult:
    """What `convert` did. `tensors`: every output tensor's manifest entry."""
    src: str
    dst: str
    quantized: list[str]
    skipped: dict[str, str]
    """Source tensors kept as they were -> the reason."""
    ignore: list[str]
    bytes_in: int
    bytes_out: int
    seconds: float
    shards_done: int
    shards_resumed: int
    tensors: list[dict] = field(default_factory=list)
    manifest_path: str = ""
    peak_rss_bytes: int | None = None
    """This process's peak resident memory (Linux VmHWM), None where unknown."""

    @property
    def gb_per_s(self) -> float:
        return self.bytes_in / self.seconds / 1e9 if self.seconds > 0 else float("nan")

    def worst(self, n: int = 5) -> list[dict]:
        q = [t for t in self.tensors if t.get("quantized") and t.get("sqnr_db") is not None]
        return sorted(q, key=lambda t: t["sqnr_db"])[:n]


def resolve_device(device: str, local_rank: int = 0) -> str:
    """cpu, cuda, xpu (this rank's device under torchrun: LOCAL_RANK modulo the device count),
    cuda:N / xpu:N, or auto (the first available of cuda, xpu, cpu). A device that is not
    available is refused."""
    import torch

    from ..report import local_device_types

    kind, _, index = device.partition(":")
    here = local_device_types()  # of cpu, cuda, xpu
    if kind == "auto" and not index:
        kind = next(k for k in ("cuda", "xpu", "cpu") if k in here)
    if kind not in ("cpu", "cuda", "xpu") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise CheckpointError(f"device {device!r} is not one of cpu, cuda, xpu, auto (cuda:N, xpu:N)")
    if kind not in here:
        raise CheckpointError(f"device {device!r} is not available here")
    if kind == "cpu":
        return "cpu"
    count = getattr(torch, kind).device_count()
    if index and int(index) >= count:
        raise CheckpointError(f"device {device!r} is not available here ({count} {kind} device(s))")
    # torchrun ranks take LOCAL_RANK's device; more ranks than devices share them round-robin
    # (the conversion is mostly host work, so extra ranks on one GPU still help)
    dev = f"{kind}:{index or local_rank % count}"
    getattr(torch, kind).set_device(torch.device(dev))  # this rank's device is the current one
    return dev


def _prepare_dst(dst: str, overwrite: bool, resume: bool) -> bool:
    """Make DST ready; True if this call created it (so a failure may remove it whole)."""
    if os.path.isdir(dst) and os.listdir(dst) and overwrite and not resume:
        shutil.rmtree(dst)
    created = not os.path.exists(dst)
    os.makedirs(dst, exist_ok=True)
    return created


def _convert_shard(plan: Plan, shard, *, device, scale_mode, chunk_elems, progress, verify) -> list[dict]:
    """Write one output shard; returns its tensors' manifest entries."""
    out = os.path.join(plan.dst, shard.file)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    meta = dict(shard.metadata or {})
    meta.setdefault("format", "pt")
    writer = ShardWriter(out, shard.layout(), meta)
    entries = []
    try:
        with open(shard.path, "rb") as f:
            for t in shard.tensors:
                if shard.decisions[t.name].quantize:
                    entries += quantize_tensor(f, t, shard.data_start, writer, device=device, scale_mode=scale_mode,
                                               chunk_elems=chunk_elems, progress=progress)
                else:
                    entries.append(copy_tensor(f, t, shard.data_start, writer, chunk_elems, progress))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    for e in entries:
        e["sha256"] = writer.digests[e["name"]]
    if verify:
        try:
            verify_shard(out, entries)
        except BaseException:
            os.remove(out)
            raise
    return entries


def _finish(plan: Plan, records: list[dict]) -> str:
    """Rank 0: copy other files, write config.json, the index and the manifest (its path)."""
    for rel in plan.copies:
        target = os.path.join(plan.dst, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(plan.src, rel), target)
    manifest.write_json_atomic(os.path.join(plan.dst, "config.json"), plan.config)
    weight_map = {t["name"]: rec["file"] for rec in records for t in rec["tensors"]}
    if plan.has_index or len(records) > 1:
        meta = dict(plan.index_metadata)
        meta["total_size"] = _tensor_bytes(records)
        manifest.write_json_atomic(os.path.join(plan.dst, INDEX),
                                   {"metadata": meta, "weight_map": dict(sorted(weight_map.items()))})
    path = os.path.join(plan.dst, manifest.MANIFEST)
    manifest.write_json_atomic(path, {"format": "compressed-tensors mxfp8-quantized", "src": plan.src,
                                      "ignore": plan.ignore, "shards": records})
    shutil.rmtree(os.path.join(plan.dst, manifest.PARTS), ignore_errors=True)
    return path


def _tensor_bytes(records) -> int:
    """metadata.total_size as transformers writes it: the bytes of all tensors (no headers)."""
    return sum(math.prod(t["shape"]) * itemsize(t["dtype"]) for rec in records for t in rec["tensors"])


def convert(src, dst, *, ignore=(), quantize_lm_head: bool = False, scale_mode: str = "compressed-tensors",
            device: str = "auto", overwrite: bool = False, resume: bool = False, verify: bool = True,
            chunk_elems: int | None = None, progress=None) -> ConvertResult:
    """Convert the Hugging Face safetensors checkpoint in folder `src` to a compressed-tensors
    `mxfp8-quantized` checkpoint in `dst` (docs/convert.md). Raises CheckpointError on any
    refusal, before writing anything. `progress(nbytes, total=None)` is called once with
    the total input bytes of this rank, then with the bytes consumed as they are."""
    src, dst = os.fspath(src), os.fspath(dst)
    if scale_mode not in SCALE_MODES:
        raise CheckpointError(f"scale mode {scale_mode!r} is not one of {', '.join(SCALE_MODES)}")
    group = dist.join()
    dev = resolve_device(device, dist.launcher()[1])
    t0 = time.perf_counter()
    ignore = list(ignore)
    plan = make_plan(src, dst, ignore=ignore, quantize_lm_head=quantize_lm_head,
                     overwrite=overwrite, resume=resume)
    chunk = chunk_elems or (1 << 22 if dev == "cpu" else 1 << 26)
    options = {"scale_mode": scale_mode, "ignore": ignore, "quantize_lm_head": quantize_lm_head}
    progress = progress or (lambda n, total=None: None)
    created = _prepare_dst(dst, overwrite, resume) if group.rank == 0 else False
    group.barrier()
    owner = dist.assign([s.size for s in plan.shards], group.world)
    progress(0, total=sum(s.size for i, s in enumerate(plan.shards) if owner[i] == group.rank))
    done, resumed, ok, error = 0, 0, True, None
    try:
        for i, shard in enumerate(plan.shards):
            if owner[i] != group.rank:
                continue
            rec = manifest.finished_record(dst, shard, options) if resume else None
            if rec is not None:
                manifest.write_json_atomic(manifest.part_path(dst, shard.file), rec)
                resumed += 1
                progress(shard.size)
                continue
            s0 = time.perf_counter()
            entries = _convert_shard(plan, shard, device=dev, scale_mode=scale_mode, chunk_elems=chunk,
                                     progress=progress, verify=verify)
            out = os.path.join(dst, shard.file)
            done += 1
            rec = manifest.shard_record(shard, options, out, entries, time.perf_counter() - s0)
            manifest.write_json_atomic(manifest.part_path(dst, shard.file), rec)
    except BaseException as e:  # noqa: BLE001 - cleaned up, then re-raised (KeyboardInterrupt too)
        ok, error = False, e
    if not group.all_ok(ok):
        if created and not resume:  # a fresh DST goes whole; with --resume finished shards stay
            shutil.rmtree(dst, ignore_errors=True)
        group.close()
        if error is not None:
            raise error
        raise CheckpointError("another rank failed; see its error")
    mpath = os.path.join(dst, manifest.MANIFEST)
    records = manifest.load_parts(dst, [s.file for s in plan.shards])
    group.barrier()
    if group.rank == 0:
        _finish(plan, records)
    group.barrier()
    group.close()
    decisions = plan.decisions
    return ConvertResult(
        src=src, dst=dst,
        quantized=[d.name for d in decisions if d.quantize],
        skipped={d.name: d.reason for d in decisions if not d.quantize},
        ignore=plan.ignore, bytes_in=plan.bytes_in,
        bytes_out=sum(r["output"]["size"] for r in records),
        seconds=time.perf_counter() - t0,
        shards_done=done,
        shards_resumed=resumed,
        tensors=[t for r in records for t in r["tensors"]], manifest_path=mpath, peak_rss_bytes=_peak_rss())


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
