"""Where a conversion's time goes, in this process: a synthetic checkpoint (bench_convert.py's),
a warm-up conversion, then per round the I/O ceiling (read the source, write + fsync the
output's bytes) and a conversion, the last one under cProfile (main thread). Also the CPU
seconds of each thread of the process over that conversion (from /proc: the reader, the
writer, the hasher, torch's pools), to see which one is saturated, and the wall seconds each
stage of the pipeline spent (Roles: summed over its threads; a stage whose seconds come near the
conversion's, times the shards at once, sets the pace). With several --jobs values the rounds
interleave the ceiling and one conversion per value.

    python3 benchmarks/profile_convert.py --device cuda --gb 2 --out OUT_DIR [--chunk-elems N] [--jobs 1 2 3]

Writes OUT_DIR/profile_convert_<device>.json (timings, per-thread CPU) and .txt (pstats).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_convert import ceiling_out, make_checkpoint, shard_files  # noqa: E402


def thread_cpu() -> dict[int, tuple[str, float]]:
    """{tid: (name, CPU seconds)} of every thread of this process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


class ThreadWatch:
    """thread_cpu() sampled every 20 ms on a thread of its own while active, so threads that end
    before the conversion does (each shard's writer and hasher) are counted too (up to the last
    sample before they ended). Names are the kernel's: "python3" for Python's own threads; the
    main thread's tid is the pid."""

    def __init__(self):
        import threading

        self.seen: dict = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            self.seen.update(thread_cpu())

    def __enter__(self):
        self.start = thread_cpu()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.seen.update(thread_cpu())

    def spent(self) -> list:
        """[(thread name, tid, CPU seconds)] over the watch, largest first."""
        rows = [(name, tid, round(cpu - self.start.get(tid, ("", 0.0))[1], 2))
                for tid, (name, cpu) in self.seen.items()]
        return sorted((r for r in rows if r[2] > 0.02), key=lambda r: -r[2])


class Roles:
    """Wall seconds spent in each stage of the conversion pipeline, summed over the threads that
    ran it, by wrapping the functions of mxquant.checkpoint that do each (a benchmark's probe:
    the wrappers are installed for the whole process)."""

    def __init__(self):
        import threading

        from mxquant.checkpoint import driver, manifest, tensors, writer

        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        wrap = self._wrap
        writer.ShardWriter._write = wrap("write + read back (writer thread)", writer.ShardWriter._write)
        writer.ShardWriter._hash = wrap("output sha256 (hasher thread)", writer.ShardWriter._hash)
        writer.ShardWriter._put = wrap("wait: writer / hasher queues full (quantizing thread)", writer.ShardWriter._put)
        writer.ShardWriter.close = wrap("shard close: join, fsync, rename", writer.ShardWriter.close)
        tensors.read_range = wrap("read a chunk (reader thread, incl. the wait below)", tensors.read_range)
        manifest.HashingReader._put = wrap("wait: source sha256 queue full (reader thread)", manifest.HashingReader._put)
        driver.check_written = wrap("check_written (safetensors re-open)", driver.check_written)
        driver.quantize_tensor = wrap("quantize_tensor (quantizing thread, incl. its waits)", driver.quantize_tensor)
        driver.copy_tensor = wrap("copy_tensor (quantizing thread, incl. its waits)", driver.copy_tensor)
        real_drain = manifest.drain

        def drain(q, handle, errors):  # the source sha256 thread's loop
            return real_drain(q, wrap("source sha256 (hasher thread)", handle), errors)

        manifest.drain = drain

    def _wrap(self, role, fn):
        import functools

        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                with self._lock:
                    self.seconds[role] = self.seconds.get(role, 0.0) + dt

        return timed

    def take(self) -> dict:
        with self._lock:
            out = {k: round(v, 3) for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}
            self.seconds.clear()
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk-elems", type=int, default=None)
    ap.add_argument("--out", default=".")
    ap.add_argument("--jobs", type=int, nargs="+", default=[None], help="convert(jobs=...) values to compare")
    a = ap.parse_args()
    from mxquant.checkpoint import convert

    work = tempfile.mkdtemp(prefix="profile_convert_")
    src = os.path.join(work, "src")
    make_checkpoint(src, a.gb, 0.5)
    bytes_in = sum(os.path.getsize(os.path.join(src, n)) for n in shard_files(src))
    d = os.path.join(work, "warm")
    t0 = time.perf_counter()
    convert(src, d, device=a.device, chunk_elems=a.chunk_elems)
    first = time.perf_counter() - t0
    sizes = {n: os.path.getsize(os.path.join(d, n)) for n in shard_files(src)}
    shutil.rmtree(d)
    ceil, spent = [], []
    conv: dict = {str(j): [] for j in a.jobs}
    cpu: dict = {str(j): [] for j in a.jobs}
    roles: dict = {str(j): [] for j in a.jobs}
    prof = cProfile.Profile()
    probe = Roles()
    probe.take()
    for i in range(a.rounds):
        d = os.path.join(work, f"c{i}")
        ceil.append(ceiling_out(src, d, sizes))
        shutil.rmtree(d)
        for j in a.jobs:
            last = i == a.rounds - 1 and j == a.jobs[0]
            with ThreadWatch() as watch:
                c0, t0 = time.process_time(), time.perf_counter()
                if last:
                    prof.enable()
                convert(src, d, device=a.device, chunk_elems=a.chunk_elems, jobs=j)
                if last:
                    prof.disable()
                conv[str(j)].append(time.perf_counter() - t0)
                cpu[str(j)].append(time.process_time() - c0)
            roles[str(j)].append(probe.take())
            if last:
                spent = watch.spent()
            shutil.rmtree(d)
    res = {"device": a.device, "gb_in": bytes_in / 1e9, "gb_out": sum(sizes.values()) / 1e9, "first_s": first,
           "chunk_elems": a.chunk_elems, "ceiling_s": ceil, "convert_s": conv, "convert_cpu_s": cpu,
           "ratio_median": {j: sorted(c / v for c, v in zip(ceil, t))[len(t) // 2] for j, t in conv.items()},
           "roles_s": roles, "threads_cpu_s_last_round": spent, "pid": os.getpid(),
           "cpus": len(os.sched_getaffinity(0))}
    if a.device.startswith("cuda"):
        import torch

        res["gpu"] = torch.cuda.get_device_name(0)
    tag = a.device.replace(":", "") + (f"_chunk{a.chunk_elems}" if a.chunk_elems else "")
    with open(os.path.join(a.out, f"profile_convert_{tag}.json"), "w") as f:
        json.dump(res, f, indent=1)
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s).strip_dirs()
    st.sort_stats("tottime").print_stats(30)
    st.sort_stats("cumtime").print_stats(30)
    with open(os.path.join(a.out, f"profile_convert_{tag}.txt"), "w") as f:
        f.write(s.getvalue())
    print(json.dumps(res, indent=1))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
