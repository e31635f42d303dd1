"""`mxquant convert` holds chunks, not tensors: a row longer than the chunk goes in pieces of
whole 32-blocks, a tensor kept as is (1-D included) is copied in byte ranges, and verify reads
a long row in pieces too (issue 19, item 9).

Oracles: mxquant.reference.quantize of each whole tensor for the bytes, a float64 SQNR computed
here from the reference's dequantization, and the child process's own peak resident size
(Linux VmHWM, its peak reset through /proc/self/clear_refs before each measured step).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("safetensors")

from convert_ckpt import assert_same_tensors, read_folder, save_checkpoint  # noqa: E402
from subproc import child_env  # noqa: E402
from test_convert import _expected  # noqa: E402

from mxquant import reference  # noqa: E402
from mxquant.checkpoint import convert  # noqa: E402

UP = "model.layers.0.mlp.up_proj.weight"
MOE_CONFIG = {"model_type": "qwen3_moe", "hidden_size": 2048}
"""Fused experts are quantized only for an architecture whose [E, out, in] layout is known."""


def _tensors(g):
    def w(*shape, dtype=torch.bfloat16):
        return (torch.randn(*shape, generator=g) * 0.05).to(dtype)

    return {
        UP: w(1, 1 << 22),  # one row of 4M elements
        "model.layers.0.mlp.down_proj.weight": w(3, 4096),  # rows of 4 pieces of 992 and one of 128
        "model.layers.0.self_attn.q_proj.weight": w(5, 2048, dtype=torch.float32),
        "model.layers.0.mlp.experts.gate_up_proj": w(2, 3, 2048),  # fused 3-D expert tensor
        "model.layers.0.self_attn.o_proj.weight": w(40, 64),  # whole rows, 15 per chunk
        "model.layers.0.mlp.experts.up_proj": w(2, 0, 2048),  # no elements
        "model.norm.weight": w(5001),  # kept, 1-D: copied in 6 ranges
        "model.layers.0.self_attn.q_proj.bias": w(1 << 20, dtype=torch.float32),
    }


def _sqnr_db(x: torch.Tensor) -> float:
    data, scale = reference.quantize(x, torch.float8_e4m3fn, "compressed-tensors", "linear")
    deq = reference.dequantize(data, scale, "linear", torch.float64)
    x = x.double()
    return 10 * math.log10(float((x * x).sum()) / float(((x - deq) ** 2).sum()))


def test_rows_split_into_block_pieces_give_the_reference_bytes_and_sqnr(tmp_path):
    tensors = _tensors(torch.Generator().manual_seed(1))
    save_checkpoint(tmp_path / "src", tensors, config=MOE_CONFIG)
    r = convert(tmp_path / "src", tmp_path / "dst", chunk_elems=1000)  # 1000: pieces of 992 (31 blocks)
    quantized = {n for n in tensors if n.endswith("proj.weight") or n.endswith("_proj")}
    assert set(r.quantized) == quantized
    assert_same_tensors(read_folder(tmp_path / "dst"), _expected(tensors, quantized))
    whole = convert(tmp_path / "src", tmp_path / "whole", chunk_elems=1 << 23)  # every tensor one chunk
    stats = {t["name"]: t for t in r.tensors}
    for t in whole.tensors:  # the same statistics, up to the fp32 accumulation of each chunk's sums
        if t.get("sqnr_db") is not None:
            truth = _sqnr_db(tensors[t["name"]])
            assert stats[t["name"]]["sqnr_db"] == pytest.approx(truth, abs=2e-3)
            assert t["sqnr_db"] == pytest.approx(truth, abs=2e-3)
            assert stats[t["name"]]["rel_error"] == pytest.approx(t["rel_error"], rel=1e-3)
    assert stats["model.layers.0.mlp.experts.up_proj"]["sqnr_db"] is None  # empty: no error to measure


CHILD = r"""
import json, sys
from mxquant.checkpoint import convert
from mxquant.checkpoint.verify import verify_shard

def kib(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))

def growth(step):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident size restarts from the current one
    base = kib("VmRSS")
    step()
    return (kib("VmHWM") - base) * 1024

root, chunk = sys.argv[1], int(sys.argv[2])
out = {}
warm = convert(f"{root}/warm", f"{root}/warm-out", chunk_elems=chunk, verify=False)  # every code path once
verify_shard(f"{root}/warm-out/model.safetensors", warm.tensors, chunk_bytes=chunk)
for case in ("row", "flat"):
    res = []
    out[case] = growth(lambda: res.append(convert(f"{root}/{case}", f"{root}/{case}-out", chunk_elems=chunk,
                                                  verify=False)))
    out[case + "-verify"] = growth(lambda: verify_shard(f"{root}/{case}-out/model.safetensors", res[0].tensors,
                                                        chunk_bytes=chunk))
print(json.dumps(out))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc/self/clear_refs")
def test_peak_memory_is_a_few_chunks_not_the_tensor(tmp_path):
    g = torch.Generator().manual_seed(2)
    n = 1 << 24  # 32 MB of bf16 per tensor
    save_checkpoint(tmp_path / "row", {UP: torch.randn(1, n, generator=g).bfloat16()})
    save_checkpoint(tmp_path / "flat", {"model.norm.weight": torch.randn(n, generator=g).bfloat16()})
    save_checkpoint(tmp_path / "warm", {UP: torch.randn(1, 1 << 18, generator=g).bfloat16(),
                                        "model.norm.weight": torch.randn(1 << 18, generator=g).bfloat16()})
    chunk = 1 << 16
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(chunk)], capture_output=True,
                         text=True, env=child_env(), timeout=600)
    assert out.returncode == 0, out.stderr
    grew = json.loads(out.stdout.strip().splitlines()[-1])
    # a chunk costs about 16 bytes an element (bf16 in and the next one read ahead, fp8 out and
    # a few queued for the writer, the fp32 original and error), the row its scales (n / 32)
    bound = 32 * chunk + n // 32 + (2 << 20)  # + 2 MiB of allocator and thread slack
    assert bound < 2 * n / 4  # far below the tensor's 2n bytes
    assert grew["row"] < bound, grew
    assert grew["flat"] < bound, grew
    # verify reads pieces of at most chunk bytes, and reopens the file (unmapping what it read)
    # after each chunk bytes
    assert grew["row-verify"] < 16 * chunk + (1 << 20), grew
    assert grew["flat-verify"] < 16 * chunk + (1 << 20), grew
    assert read_folder(tmp_path / "row-out")[UP].shape == (1, n)
