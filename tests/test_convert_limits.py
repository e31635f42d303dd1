"""Limits of the safetensors format and of the work a header may ask for, each refused by
`mxquant convert` in the plan (one line, exit 2, nothing written), and the safetensors package's
refusals during verification as one-line errors.

Oracles: the safetensors package (which header length it opens, which file it refuses), the
bytes of a real output file (its header length), and the clock.
"""

import json
import os
import struct
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("safetensors")

from convert_ckpt import llama_like, refuse, save_checkpoint  # noqa: E402
from subproc import child_env  # noqa: E402

from mxquant.checkpoint import CheckpointError, convert, stio  # noqa: E402


def _raw(path, header: bytes, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + data)


def test_max_header_is_the_safetensors_packages_limit(tmp_path):
    """A header of exactly stio.MAX_HEADER bytes opens in the package; 8 bytes more do not."""
    from safetensors import safe_open

    body = json.dumps({"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}).encode()
    path = tmp_path / "h.safetensors"
    _raw(path, body + b" " * (stio.MAX_HEADER - len(body)))
    with safe_open(path, "pt") as f:
        assert list(f.keys()) == ["a"]
    _raw(path, body + b" " * (stio.MAX_HEADER + 8 - len(body)))
    with pytest.raises(Exception, match="(?i)header too large"):
        safe_open(path, "pt")
    path.unlink()


def _header_len(path) -> int:
    with open(path, "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


def test_contract_output_header_past_the_limit_is_refused_in_the_plan(tmp_path, capsys, monkeypatch):
    """The plan measures each output header as the writer writes it: with the limit at the real
    output header's length (read from the file written without the limit) the run passes, one
    byte lower it is refused before DST exists (the limit lowered so the test writes kilobytes)."""
    src = tmp_path / "src"
    save_checkpoint(src, llama_like(layers=1))
    convert(src, tmp_path / "free", verify=False)
    n = _header_len(tmp_path / "free" / "model.safetensors")
    assert n > _header_len(src / "model.safetensors")  # the source itself stays readable under the limit
    monkeypatch.setattr(stio, "MAX_HEADER", n)
    convert(src, tmp_path / "at-limit", verify=False)
    assert _header_len(tmp_path / "at-limit" / "model.safetensors") == n
    monkeypatch.setattr(stio, "MAX_HEADER", n - 1)
    refuse(capsys, [src, tmp_path / "dst", "--no-verify"], f"header of {n:,} bytes, past the {n - 1:,} bytes")
    assert not (tmp_path / "dst").exists()


def test_tiny_experts_split_into_too_many_tensors_are_refused_quickly(tmp_path):
    """One fused gate_up_proj of 65536 experts [2, 16] (a 4 MiB file) would become 393,216 NVFP4
    tensors (two minutes, 1.6 GB, measured); refused from the shapes, before any split."""
    src = tmp_path / "src"
    save_checkpoint(src, {"model.layers.0.mlp.experts.gate_up_proj": torch.zeros(65536, 2, 16, dtype=torch.bfloat16)},
                    config={"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "hidden_size": 16})
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "mxquant", "convert", str(src), str(tmp_path / "dst"), "--scheme",
                            "nvfp4a16", "--device", "cpu", "--quiet"], capture_output=True, text=True,
                           env=child_env(), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("not refused within a minute")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "393,216 tensors from" in r.stderr, r.stderr
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "dst").exists()


def test_a_file_the_package_refuses_is_a_one_line_verify_error(tmp_path):
    """check_written and verify_shard turn the package's refusal (here: a header too large for
    it, which this reader's limit would never write) into `verify <file>: ...`."""
    from safetensors import safe_open

    from mxquant.checkpoint.verify import check_written, verify_shard

    body = json.dumps({"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}).encode()
    path = tmp_path / "x.safetensors"
    _raw(path, body + b" " * (stio.MAX_HEADER + 8 - len(body)))
    with pytest.raises(Exception) as refused:
        safe_open(path, "pt")
    assert not isinstance(refused.value, (CheckpointError, OSError))
    for call in (lambda: check_written(str(path), [], {}), lambda: verify_shard(str(path), [])):
        with pytest.raises(CheckpointError, match=r"^verify x\.safetensors: the safetensors package refuses it") as e:
            call()
        assert "\n" not in str(e.value)
    os.remove(path)
