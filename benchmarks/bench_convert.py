"""`mxquant convert` throughput against the ceiling of plain read + write of the same files,
and its peak memory.

    python3 benchmarks/bench_convert.py --gb 2                       # CPU, one process
    python3 benchmarks/bench_convert.py --gb 8 --device cuda --ranks 2  # 2 GPUs via torchrun
    python3 benchmarks/bench_convert.py --src DIR --steady --repeat 5   # steady state, one process

A synthetic Llama-shaped bf16 checkpoint of about --gb GB (hidden 4096, MLP 11008, shards of
about --shard-gb) is written to --workdir (or given with --src). Then, alternately, --repeat
times: the ceiling (each shard read in 16 MB chunks and written to a new file, fsync'd) and
the conversion (a subprocess: `python -m mxquant convert`, or torchrun with --ranks > 1), each
into a fresh folder; with --peer also llm-compressor's model_free_ptq(scheme="MXFP8") (one
process; on --device cuda it is given "cuda", which it spreads over every visible GPU). Reported: GB of input consumed per second of wall time (the subprocess's
own timer, the `seconds` of its --json, which excludes interpreter start-up), their ratio, the
CPU seconds of each subprocess (user + system, start-up included: steadier than wall time on a
shared machine), and
the conversion's peak RSS (rank 0's VmHWM, as `--json` reports it) next to that of the bare
interpreter with torch and mxquant imported, the largest tensor and the checkpoint size.
Prints JSON.

--steady measures the steady state in this one process instead (issue 22's definition): a
warm-up conversion first (one-off costs: imports, backend probes, thread pools; it also gives
the output's shard sizes), then alternately --repeat times the ceiling as the issue defines it
(read every source byte in 16 MB chunks, write and fsync as many bytes as the converted shard
has: `ceiling_out_s`) and `mxquant.checkpoint.convert(...)` with the same options as the CLI
(verify and SQNR on unless --no-verify), each timed by this process, with its CPU seconds
(all threads). `ratio` is the median ceiling over the median conversion; `pair_ratios` each
round's own. `--scheme mxfp8,mxfp4,nvfp4a16,fp8-block` converts with each scheme in turn in every
round (each with its own ceiling: the output sizes differ), reported per scheme.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from timing import cpu_model  # benchmarks/ is on sys.path when a script here runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 16 << 20


def make_checkpoint(folder: str, gb: float, shard_gb: float, hidden=4096, inter=11008, vocab=32000) -> int:
    """A Llama-shaped bf16 checkpoint of about `gb` GB; returns the largest tensor's bytes."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden)}
    per_layer = 4 * hidden * hidden + 3 * hidden * inter
    layers = max(1, int((gb * 1e9 / 2 - 2 * vocab * hidden) // per_layer))
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[p + f"self_attn.{n}.weight"] = (hidden, hidden)
        tensors[p + "mlp.gate_proj.weight"] = (inter, hidden)
        tensors[p + "mlp.up_proj.weight"] = (inter, hidden)
        tensors[p + "mlp.down_proj.weight"] = (hidden, inter)
        tensors[p + "input_layernorm.weight"] = (hidden,)
        tensors[p + "post_attention_layernorm.weight"] = (hidden,)
    tensors["model.norm.weight"] = (hidden,)
    shards, cur, size = [], {}, 0
    for name, shape in tensors.items():
        nbytes = 2 * torch.Size(shape).numel()
        if cur and size + nbytes > shard_gb * 1e9:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = shape
        size += nbytes
    shards.append(cur)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        data = {n: (torch.randn(s, generator=g) * 0.02).to(torch.bfloat16) for n, s in shard.items()}
        save_file(data, os.path.join(folder, file), metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in data.values())
        weight_map.update({n: file for n in shard})
        del data
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden}, f)
    return 2 * max(torch.Size(s).numel() for s in tensors.values())


def shard_files(src: str) -> list[str]:
    return sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))


def ceiling(src: str, dst: str) -> float:
    """Seconds to read every shard in 16 MB chunks and write it to dst, fsync'd."""
    os.makedirs(dst)
    buf = bytearray(CHUNK)
    t0 = time.perf_counter()
    for name in shard_files(src):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                g.write(memoryview(buf)[:n])
            g.flush()
            os.fsync(g.fileno())
    return time.perf_counter() - t0


def ceiling_out(src: str, dst: str, out_sizes: dict[str, int]) -> float:
    """Seconds to read every shard in 16 MB chunks and write, fsync'd, as many of its bytes as
    its converted shard has (out_sizes): the I/O a conversion cannot avoid."""
    os.makedirs(dst)
    buf = bytearray(CHUNK)
    t0 = time.perf_counter()
    for name in shard_files(src):
        left = out_sizes[name]
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            while n := f.readinto(buf):
                if left > 0:
                    g.write(memoryview(buf)[:min(n, left)])
                    left -= min(n, left)
            while left > 0:  # an output larger than its source (fp32 scales of tiny tensors)
                left -= g.write(memoryview(buf)[:min(CHUNK, left)])
            g.flush()
            os.fsync(g.fileno())
    return time.perf_counter() - t0


def steady(src: str, work: str, device: str, repeat: int, verify: bool, schemes=("mxfp8",)) -> dict:
    """In this process: a warm-up conversion per scheme, then per round, for each scheme in turn,
    the ceiling (read source, write + fsync that scheme's output bytes) and a conversion, so the
    schemes are interleaved with each other and with their ceilings. One scheme: the figures at
    the top level (as before); several: under "schemes", one entry each."""
    from mxquant.checkpoint import convert

    out_sizes, firsts, bytes_in = {}, {}, 0
    for sc in schemes:
        d = os.path.join(work, "warmup")
        t0 = time.perf_counter()
        first = convert(src, d, device=device, verify=verify, scheme=sc)
        firsts[sc] = time.perf_counter() - t0
        bytes_in = first.bytes_in
        out_sizes[sc] = {n: os.path.getsize(os.path.join(d, n)) for n in shard_files(src)}
        shutil.rmtree(d)
    ceil_s = {sc: [] for sc in schemes}
    conv_s = {sc: [] for sc in schemes}
    conv_cpu = {sc: [] for sc in schemes}
    for i in range(repeat):
        for sc in schemes:
            d = os.path.join(work, f"ceil{i}")
            ceil_s[sc].append(ceiling_out(src, d, out_sizes[sc]))
            shutil.rmtree(d)
            d = os.path.join(work, f"conv{i}")
            c0, t0 = time.process_time(), time.perf_counter()
            convert(src, d, device=device, verify=verify, scheme=sc)
            conv_s[sc].append(time.perf_counter() - t0)
            conv_cpu[sc].append(time.process_time() - c0)
            shutil.rmtree(d)
    res = {}
    for sc in schemes:
        c, v = statistics.median(ceil_s[sc]), statistics.median(conv_s[sc])
        res[sc] = {"first_convert_s": firsts[sc], "bytes_out_gb": sum(out_sizes[sc].values()) / 1e9,
                   "ceiling_out_s": ceil_s[sc], "convert_s": conv_s[sc], "convert_cpu_s": conv_cpu[sc],
                   "ceiling_gb_s": bytes_in / c / 1e9, "convert_gb_s": bytes_in / v / 1e9, "ratio": c / v,
                   "pair_ratios": [a / b for a, b in zip(ceil_s[sc], conv_s[sc])]}
    return res[schemes[0]] if len(schemes) == 1 else {"schemes": res}


def _child_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def convert_run(src: str, dst: str, device: str, ranks: int, verify: bool, scheme: str = "mxfp8") -> dict:
    args = ["convert", src, dst, "--device", device, "--scheme", scheme, "--json"] + ([] if verify else ["--no-verify"])
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
               "-m", "mxquant", *args]
    else:
        cmd = [sys.executable, "-m", "mxquant", *args]
    t0, c0 = time.perf_counter(), _child_cpu_s()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"convert failed ({p.returncode}): {p.stderr[-3000:]}")
    out = json.loads(p.stdout[p.stdout.index("{"):])
    return {"seconds": out["seconds"], "wall_with_startup": wall, "cpu_s": _child_cpu_s() - c0, "peak_rss_bytes": out["peak_rss_bytes"],
            "bytes_in": out["bytes_in"], "bytes_out": out["bytes_out"]}


PEER = """
import sys, time
from llmcompressor import model_free_ptq
src, dst, device = sys.argv[1:4]
ignore = ["lm_head", "re:.*embed_tokens$", "re:.*mlp\\.gate$", "re:.*shared_expert_gate$"]
t0 = time.perf_counter()
model_free_ptq(src, dst, scheme="MXFP8", ignore=ignore, device=device)
print(time.perf_counter() - t0)
"""


def peer_run(src: str, dst: str, device: str) -> tuple[float, float]:
    """(seconds of its own timer, CPU seconds incl. start-up) of llm-compressor's
    model_free_ptq(scheme="MXFP8") on the same checkpoint, same tensors quantized; it writes
    the same bytes (tests/test_convert_runtimes.py)."""
    c0 = _child_cpu_s()
    p = subprocess.run([sys.executable, "-c", PEER, src, dst, device], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"model_free_ptq failed: {p.stderr[-3000:]}")
    return float(p.stdout.strip().splitlines()[-1]), _child_cpu_s() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--shard-gb", type=float, default=0.5)
    ap.add_argument("--src", help="an existing checkpoint folder instead of a synthetic one")
    ap.add_argument("--workdir", default=None, help="where the synthetic checkpoint and outputs go")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--peer", action="store_true", help="also time llm-compressor's model_free_ptq (installed)")
    ap.add_argument("--scheme", default="mxfp8",
                    help="the scheme (--steady: several separated by commas, interleaved round by round)")
    ap.add_argument("--steady", action="store_true",
                    help="in this process, after a warm-up: ceiling (read + write/fsync the output's bytes) vs convert")
    a = ap.parse_args()
    if "," in a.scheme and not a.steady:
        ap.error("several schemes need --steady")
    work = a.workdir or tempfile.mkdtemp(prefix="bench_convert_")
    src = a.src or os.path.join(work, "src")
    largest = None
    if not a.src:
        largest = make_checkpoint(src, a.gb, a.shard_gb)
    bytes_in = sum(os.path.getsize(os.path.join(src, n)) for n in shard_files(src))
    if a.steady:
        res = {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "cores": os.cpu_count(),
               "torch": torch.__version__, "device": a.device, "verify": not a.no_verify, "steady": True,
               "checkpoint_gb": bytes_in / 1e9, "load_average": os.getloadavg(),
               "load_average_end": None,
               **steady(src, work, a.device, a.repeat, not a.no_verify, tuple(a.scheme.split(",")))}
        res["load_average_end"] = os.getloadavg()
        print(json.dumps(res, indent=1))
        if not a.workdir:
            shutil.rmtree(work)
        return
    # the interpreter + torch + mxquant alone (VmHWM is per process image: exec resets it)
    base = subprocess.run([sys.executable, "-c", "import torch, mxquant.checkpoint.driver as d; print(d._peak_rss())"],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    ceil_s, conv, peer = [], [], []
    ceiling(src, os.path.join(work, "warm"))  # page cache: both sides read warm files
    shutil.rmtree(os.path.join(work, "warm"))
    for i in range(a.repeat):
        d = os.path.join(work, f"ceil{i}")
        ceil_s.append(ceiling(src, d))
        shutil.rmtree(d)
        d = os.path.join(work, f"conv{i}")
        conv.append(convert_run(src, d, a.device, a.ranks, not a.no_verify, a.scheme))
        shutil.rmtree(d)
        if a.peer:
            d = os.path.join(work, f"peer{i}")
            peer.append(peer_run(src, d, "cuda" if a.device.startswith("cuda") else a.device))
            shutil.rmtree(d)
    c_s = statistics.median(ceil_s)
    v_s = statistics.median(r["seconds"] for r in conv)
    res = {
        "date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
        "device": a.device, "ranks": a.ranks, "verify": not a.no_verify,
        "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") and torch.cuda.is_available() else None,
        "checkpoint_gb": bytes_in / 1e9, "largest_tensor_mb": largest / 1e6 if largest else None,
        "ceiling_gb_s": bytes_in / c_s / 1e9, "convert_gb_s": bytes_in / v_s / 1e9, "ratio": c_s / v_s,
        "ceiling_s": ceil_s, "convert_s": [r["seconds"] for r in conv],
        "convert_wall_with_startup_s": [r["wall_with_startup"] for r in conv],
        "convert_cpu_s": [r["cpu_s"] for r in conv],
        "peer_model_free_ptq_s": [p[0] for p in peer] or None,
        "peer_cpu_s": [p[1] for p in peer] or None,
        "peer_gb_s": bytes_in / statistics.median(p[0] for p in peer) / 1e9 if peer else None,
        "convert_over_peer_speed": statistics.median(p[0] for p in peer) / v_s if peer else None,
        "peak_rss_mb": max(r["peak_rss_bytes"] for r in conv) / 1e6,
        "baseline_rss_mb": int(base.stdout) / 1e6, "bytes_out_gb": conv[0]["bytes_out"] / 1e9,
    }
    print(json.dumps(res, indent=1))
    if not a.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
