"""`convert(src, dst, ...)`: a Hugging Face safetensors checkpoint to compressed-tensors MXFP8.

Order of work: plan (every refusal happens here, nothing written yet); rank 0 takes DST
(dstdir.prepare: created or emptied, locked, checked writable); then per shard of this rank:
stream tensors into DST/<shard>.tmp, rename, verify, record a part manifest; then rank 0
copies the other files and writes the index, the manifest and, last, config.json. Every step
runs under one cleanup (`_together`): on an error on any rank, a DST this run created (or
emptied, with --overwrite) is removed whole; under --resume, finished shards (each complete,
with its part manifest) stay, a half-written one (*.tmp) is removed and config.json is absent,
so a failed run never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import stat
import time
from dataclasses import dataclass, field

from . import dist, dstdir, manifest
from .dstdir import Dst
from . import quantizers, schemes, shardpool, tensors
from .plan import INDEX, Plan, make_plan
from .srcfiles import SUFFIX
from .stio import CheckpointError, itemsize
from .writer import ShardWriter
from .tensors import copy_tensor, quantize_tensor
from .verify import check_written



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
    """Shards converted / taken from an earlier run, over all ranks."""
    bytes_converted: int = 0
    """Input bytes of the shards this run converted (resumed ones excluded), over all ranks."""
    tensors: list[dict] = field(default_factory=list)
    manifest_path: str = ""
    peak_rss_bytes: int | None = None
    """This process's peak resident memory (Linux VmHWM), None where unknown."""
    notes: list[str] = field(default_factory=list)
    """Where the output departs from the name rule, and why (an expert group kept whole)."""

    @property
    def gb_per_s(self) -> float:
        """Input converted per second (resumed shards do not count); nan when none was."""
        return self.bytes_converted / self.seconds / 1e9 if self.seconds > 0 and self.bytes_converted else float("nan")

    def worst(self, n: int = 5) -> list[dict]:
        """The quantized tensors of lowest SQNR, those with NaN or Inf in the input first (no SQNR)."""
        bad = [t for t in self.tensors if t.get("nonfinite")]
        q = [t for t in self.tensors if t.get("quantized") and t.get("sqnr_db") is not None]
        return (bad + sorted(q, key=lambda t: t["sqnr_db"]))[:n]


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
    _bind_device(dev)  # this rank's device is the current one
    return dev


def _convert_shard(plan: Plan, out_dir: Dst, shard, *, device, scale_mode, chunk_elems, progress,
                   verify) -> tuple[list[dict], str]:
    """Write one output shard; returns its tensors' manifest entries and the source's sha256."""
    out = out_dir.target(shard.file)
    writer = ShardWriter(out, shard.layout(), shard.output_metadata(), verify=verify)
    entries = []
    try:
        with open(shard.path, "rb") as raw:
            f = manifest.HashingReader(raw, shard.path)
            try:
                for t in shard.tensors:
                    if shard.decisions[t.name].quantize:
                        entries += quantize_tensor(f, t, shard.data_start, writer, device=device, scale_mode=scale_mode,
                                                   chunk_elems=chunk_elems, progress=progress, quant=plan.quant)
                    else:
                        entries.append(copy_tensor(f, t, shard.data_start, writer, chunk_elems, progress))
                source_sha256 = f.sha256()
            finally:
                f.close()  # its hashing thread, also when a tensor failed
                tensors.buffers.clear()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    for e in entries:
        e["sha256"] = writer.digests[e["name"]]
        if not e["quantized"] and "scale_of" not in e:
            e["kept"] = shard.decisions[e["name"]].reason
    if verify:
        try:
            check_written(out, entries, writer.edges)
        except BaseException:
            os.remove(out)
            raise
    return entries, source_sha256


def _copy_file(src_path: str, target: str) -> None:
    """A file of SRC copied: its bytes, permission bits and times; never its setuid, setgid or
    sticky bits or extended attributes (file capabilities among them), which a checkpoint from
    anywhere could carry into DST under the converting user's ownership."""
    with open(src_path, "rb") as f:
        st = os.fstat(f.fileno())

        def write(out) -> None:  # mode and times set on the .tmp's descriptor, before the rename
            shutil.copyfileobj(f, out, 8 << 20)
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode) & 0o777)
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))

        dstdir.replace_from(target, write)


def _finish(plan: Plan, out_dir: Dst, records: list[dict]) -> str:
    """Rank 0: copy other files, write the index, the manifest and, last, config.json (the
    step that makes DST a loadable checkpoint). Returns the manifest's path."""
    for rel in plan.copies:
        _copy_file(os.path.join(plan.src, rel), out_dir.target(rel))
    weight_map = {t["name"]: rec["file"] for rec in records for t in rec["tensors"]}
    writes_index = plan.has_index or len(records) > 1
    stale = _stale_outputs(plan.dst, {rec["file"] for rec in records}, writes_index)
    for rel in stale:
        os.unlink(os.path.join(plan.dst, rel))
    if stale:
        plan.notes.append(f"removed {len(stale)} file(s) of an earlier run into DST that this conversion does not "
                          f"write, which loaders would read: {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}")
    if writes_index:
        meta = dict(plan.index_metadata)
        meta["total_size"] = _tensor_bytes(records)
        manifest.write_json_atomic(os.path.join(plan.dst, INDEX),
                                   {"metadata": meta, "weight_map": dict(sorted(weight_map.items()))})
    path = os.path.join(plan.dst, manifest.MANIFEST)
    manifest.write_json_atomic(path, {"format": f"compressed-tensors {plan.quant.scheme.format}", "src": plan.src,
                                      "ignore": plan.ignore, "notes": plan.notes, "shards": records})
    try:
        manifest.write_json_atomic(os.path.join(plan.dst, dstdir.CONFIG), plan.config)
    except BaseException:  # not complete: no manifest either (the part files are still there)
        os.unlink(path)
        raise
    parts = os.path.join(plan.dst, manifest.PARTS)
    if os.path.islink(parts):  # never followed (target() refused writing through it)
        os.unlink(parts)
    else:
        shutil.rmtree(parts, ignore_errors=True)
    return path


def _stale_outputs(dst: str, shards: set, writes_index: bool) -> list[str]:
    """Weight files and an index in DST that this plan does not write (left by an earlier run
    under --resume, say, of another sharding): loaders would read them beside the new ones."""
    stale = []
    for root, dirs, files in os.walk(dst):
        dirs[:] = [d for d in dirs if not (root == dst and d == manifest.PARTS)]
        for n in files:
            rel = os.path.relpath(os.path.join(root, n), dst).replace(os.sep, "/")
            if (n.endswith(SUFFIX) and rel not in shards) or (rel == INDEX and not writes_index):
                stale.append(rel)
    return sorted(stale)


def _tensor_bytes(records) -> int:
    """metadata.total_size as transformers writes it: the bytes of all tensors (no headers)."""
    return sum(math.prod(t["shape"]) * itemsize(t["dtype"]) for rec in records for t in rec["tensors"])


def convert(src, dst, *, ignore=(), quantize_lm_head: bool = False, scale_mode: str = "compressed-tensors",
            device: str = "auto", overwrite: bool = False, resume: bool = False, verify: bool = True,
            chunk_elems: int | None = None, progress=None, scheme: str = schemes.DEFAULT,
            jobs: int | None = None) -> ConvertResult:
    """Convert the Hugging Face safetensors checkpoint in folder `src` to a compressed-tensors
    checkpoint in `dst` (`scheme`: a name in schemes.SCHEMES; docs/convert.md). Raises
    CheckpointError on any refusal, before writing anything. `progress(nbytes, total=None)` is called once with
    the total input bytes of this rank, then with the bytes consumed as they are (from one thread
    at a time). `jobs`: shards converted at once by this rank (None: shardpool.auto_jobs)."""
    src, dst = os.fspath(src), os.fspath(dst)
    schemes.get(scheme, scale_mode)  # refused here: an unknown scheme, a scale mode it lacks
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise CheckpointError(f"jobs must be a positive integer (shards converted at once), got {jobs!r}")
    group = dist.join()
    t0 = time.perf_counter()

    def planned():  # every refusal, on every rank, before DST is touched
        dev = resolve_device(device, dist.launcher()[1])
        plan = make_plan(src, dst, ignore=list(ignore), quantize_lm_head=quantize_lm_head,
                         overwrite=overwrite, resume=resume, scheme=scheme)
        _check_backend(plan, dev, scale_mode)
        return dev, plan

    dev, plan = _together(group, planned)
    # 16M elements on a GPU: more chunks per shard to overlap (64M: 0.34 of the ceiling on one H200, 16M: 0.45)
    chunk = chunk_elems or (1 << 22 if dev == "cpu" else 1 << 24)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # the host's cores are shared by its ranks, unless each rank's affinity is its share already
    ranks_here = dist.local_world() if cpus and cpus >= (os.cpu_count() or cpus) else 1
    jobs = jobs or shardpool.auto_jobs(dev, cpus, ranks_here)
    options = {"scale_mode": scale_mode, "ignore": list(ignore), "quantize_lm_head": quantize_lm_head,
               "scheme": scheme}  # a --resume with another scheme converts every shard again
    progress = progress or (lambda n, total=None: None)
    out_dir = _together(group, lambda: dstdir.prepare(dst, overwrite, resume, src) if group.rank == 0 else None)

    def failed() -> None:  # rank 0, after any rank failed: a fresh DST goes whole; under --resume
        if out_dir is not None:  # finished shards stay, and DST is left incomplete
            if resume:
                out_dir.mark_incomplete()
            else:
                out_dir.discard()
            out_dir.release()

    work = out_dir or dstdir.Dst(dst, -1, False)  # ranks > 0 write shards without holding the lock
    with _compute_threads(dev):
        done, resumed, converted = _together(
            group, lambda: _convert_shards(plan, work, group, options, dev, scale_mode, chunk, progress, verify,
                                           resume, jobs), failed)
    records = _together(group, lambda: manifest.load_parts(dst, [s.file for s in plan.shards]), failed)
    bad = [t["name"] for r in records for t in r["tensors"] if t.get("nonfinite")]
    if bad:
        plan.notes.append(f"{len(bad)} quantized tensor(s) hold NaN or Inf, so their blocks are NaN in the output: "
                          f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    _together(group, lambda: _finish(plan, out_dir, records) if group.rank == 0 else None, failed)
    done, resumed, converted = group.sum([done, resumed, converted])
    if out_dir is not None:
        out_dir.release()
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
        shards_resumed=resumed, bytes_converted=converted,
        tensors=[t for r in records for t in r["tensors"]], manifest_path=os.path.join(dst, manifest.MANIFEST),
        peak_rss_bytes=_peak_rss(), notes=list(plan.notes))


@contextlib.contextmanager
def _compute_threads(device: str):
    """On the CPU, one intra-op thread fewer while shards convert (at least one): the writer
    thread hashes and writes, and the reader reads, meanwhile. With every core in torch's
    (OpenMP) team as well, a parallel region waits for a worker that is not running: a 128 KiB
    copy took 8 ms instead of 5 us on 2 cores. Restored afterwards. On a GPU, the page-locked
    buffers of the reads and copies back (tensors.py, torch's caching host allocator, some
    hundreds of MB) are given back to the system afterwards (where this torch can:
    torch.accelerator.empty_host_cache)."""
    import torch

    before = torch.get_num_threads()
    if device == "cpu" and before > 1:
        torch.set_num_threads(before - 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        release = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
        if device.startswith("cuda") and release is not None:
            try:
                release()
            except Exception:  # noqa: BLE001 - after a CUDA error: the conversion's own error is the one to see
                pass


def _check_backend(plan: Plan, device: str, scale_mode: str) -> None:
    """The calls the conversion will make, made once on one block of each source dtype, so
    that a backend that cannot serve them (MXQUANT_BACKEND=triton on a CPU host, say) is a
    one-line refusal before any work, not a traceback halfway through."""
    from ..errors import BackendError
    from .stio import DTYPES

    for dtype in sorted({t.dtype for s in plan.shards for t in s.tensors if s.decisions[t.name].quantize}):
        try:
            quantizers.check_calls(plan.quant, DTYPES[dtype], device, scale_mode)
        except BackendError as e:
            raise CheckpointError(f"{str(e).splitlines()[0]} (checked before any work; `mxquant info` tells "
                                  "what can run here)") from None


def _together(group, step, failed=lambda: None):
    """Run `step` on every rank; when it failed on any rank, `failed()` (cleanup), close the
    group, and raise (this rank's error, or a note that another rank failed). The check is a
    collective, so it is also a barrier: no rank goes on before every rank has finished."""
    error = result = None
    try:
        result = step()
    except BaseException as e:  # noqa: BLE001 - cleaned up, then re-raised (KeyboardInterrupt too)
        error = e
    if group.all_ok(error is None):
        return result
    try:
        failed()
    finally:
        group.close()
    if error is not None:
        raise error
    raise CheckpointError("another rank failed; see its error")


def _convert_shards(plan, out_dir, group, options, dev, scale_mode, chunk, progress, verify, resume, jobs):
    """This rank's shards: each resumed (finished by an earlier run from the same source) or
    converted (`jobs` at a time, shardpool.py), and recorded in its part manifest. Returns
    (converted, resumed, converted bytes)."""
    owner = dist.assign([s.size for s in plan.shards], group.world)
    mine = [s for i, s in enumerate(plan.shards) if owner[i] == group.rank]
    progress(0, total=sum(s.size for s in mine))
    todo, resumed = [], 0
    for shard in mine:
        rec = manifest.finished_record(plan.dst, shard, options) if resume else None
        if rec is not None:
            manifest.write_json_atomic(out_dir.target(manifest.part_rel(shard.file)), rec)
            resumed += 1
            progress(shard.size)
        else:
            todo.append(shard)

    def one(shard, report) -> int:
        _bind_device(dev)  # a shard's thread: the rank's device is its current one too
        s0 = time.perf_counter()
        entries, sha = _convert_shard(plan, out_dir, shard, device=dev, scale_mode=scale_mode, chunk_elems=chunk,
                                      progress=report, verify=verify)
        rec = manifest.shard_record(shard, options, os.path.join(plan.dst, shard.file), entries,
                                    time.perf_counter() - s0, sha)
        manifest.write_json_atomic(out_dir.target(manifest.part_rel(shard.file)), rec)
        return shard.size

    sizes = shardpool.run_each(todo, one, jobs, progress)
    return len(sizes), resumed, sum(sizes)


def _bind_device(dev: str) -> None:
    """Make `dev` (cuda:N, xpu:N) the calling thread's current device (a thread starts on device 0)."""
    if dev != "cpu":
        import torch

        getattr(torch, dev.partition(":")[0]).set_device(torch.device(dev))


def proc_bytes(path: str, key: str) -> int | None:
    """A `key:  N kB` field of a Linux /proc file (status, meminfo) in bytes; None where unknown."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peak_rss() -> int | None:
    return proc_bytes("/proc/self/status", "VmHWM")
