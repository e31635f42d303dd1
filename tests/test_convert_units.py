"""The parts of `mxquant convert` one by one: the name rule on real architectures' tensor
names, the safetensors header checks and writer against the `safetensors` package, verify
catching a changed byte, and `import mxquant` importing none of the converter's dependencies."""

import json
import subprocess
import sys

import pytest
import torch

from mxquant.checkpoint.select import decide, ignore_list
from mxquant.checkpoint.stio import CheckpointError, TensorInfo, read_header

Q = True

# (name, shape, dtype, quantized?, reason) from Llama, Qwen2-MoE, Mixtral, DeepSeek-V3, GPT-OSS,
# Gemma, Phi-3, BERT, Falcon-style checkpoints
NAMES = [
    ("model.layers.0.self_attn.q_proj.weight", (4096, 4096), "BF16", Q, ""),
    ("model.layers.0.self_attn.qkv_proj.weight", (12288, 4096), "BF16", Q, ""),
    ("model.layers.0.mlp.gate_up_proj.weight", (22016, 4096), "BF16", Q, ""),
    ("model.layers.0.mlp.gate_proj.weight", (11008, 4096), "F16", Q, ""),
    ("model.layers.0.mlp.down_proj.weight", (4096, 11008), "F32", Q, ""),
    ("model.layers.0.mlp.experts.7.up_proj.weight", (1408, 2048), "BF16", Q, ""),
    ("model.layers.0.block_sparse_moe.experts.3.w1.weight", (14336, 4096), "BF16", Q, ""),
    ("model.layers.0.mlp.experts.gate_up_proj", (32, 5760, 2880), "BF16", Q, ""),
    ("model.layers.0.mlp.experts.down_proj", (32, 2880, 2880), "BF16", Q, ""),
    ("model.layers.0.mlp.experts.gate_up_proj_bias", (32, 5760), "BF16", False, "not a weight matrix"),
    ("model.layers.0.mlp.gate.weight", (64, 2048), "BF16", False, "router gate"),
    ("model.layers.0.block_sparse_moe.gate.weight", (8, 4096), "BF16", False, "router gate"),
    ("model.layers.0.mlp.router.weight", (32, 2880), "BF16", False, "router gate"),
    ("model.layers.0.mlp.shared_expert_gate.weight", (1, 2048), "BF16", False, "router gate"),
    ("model.layers.0.mlp.gate.e_score_correction_bias", (256,), "F32", False, "not a weight matrix"),
    ("model.embed_tokens.weight", (32000, 4096), "BF16", False, "embedding"),
    ("transformer.wte.weight", (50257, 768), "F32", False, "embedding"),
    ("bert.embeddings.word_embeddings.weight", (30522, 768), "F32", False, "embedding"),
    ("lm_head.weight", (32000, 4096), "BF16", False, "lm_head"),
    ("model.norm.weight", (4096,), "BF16", False, "norm"),
    ("model.layers.0.self_attn.q_norm.weight", (128,), "BF16", False, "norm"),
    ("transformer.h.0.ln_1.weight", (768,), "F32", False, "norm"),
    ("bert.encoder.layer.0.output.LayerNorm.weight", (768,), "F32", False, "norm"),
    ("model.layers.0.self_attn.q_proj.bias", (4096,), "BF16", False, "bias"),
    ("model.layers.0.self_attn.o_proj.weight", (4096, 4100), "BF16", False, "last dim 4100 not a multiple of 32"),
    ("model.rotary_emb.inv_freq", (64,), "F32", False, "not a weight matrix"),
]


@pytest.mark.parametrize("name,shape,dtype,quantized,reason", NAMES, ids=[n[0] for n in NAMES])
def test_name_rule(name, shape, dtype, quantized, reason):
    d = decide(TensorInfo(name, dtype, shape, 0, 0))
    assert (d.quantize, d.reason) == (quantized, reason)


def test_ignore_patterns_and_list():
    infos = [TensorInfo(n, "BF16", (64, 64), 0, 0) for n in
             ("vision.blocks.0.fc.weight", "model.layers.0.mlp.gate.weight", "model.layers.1.mlp.up_proj.weight")]
    ds = [decide(i, ["re:vision\\.", "model.layers.1.mlp.up_proj"]) for i in infos]
    assert [d.reason for d in ds] == ["ignored (--ignore)", "router gate", "ignored (--ignore)"]
    assert decide(infos[2], ["re:.*up_proj\\.weight$"]).quantize  # patterns match module names
    assert ignore_list(ds, ["re:vision\\."]) == ["lm_head", "model.layers.0.mlp.gate", "re:vision\\."]
    assert ignore_list(ds, quantize_lm_head=True) == ["model.layers.0.mlp.gate"]


def test_non_float_and_fp8_weights_refused():
    with pytest.raises(CheckpointError, match="non-float"):
        decide(TensorInfo("a.up_proj.weight", "I8", (64, 64), 0, 0))
    with pytest.raises(CheckpointError, match="already"):
        decide(TensorInfo("a.up_proj.weight", "F8_E4M3", (64, 64), 0, 0))
    assert decide(TensorInfo("a.up_proj.weight", "I8", (64, 64), 0, 0), ["a.up_proj"]).reason == "ignored (--ignore)"


def test_writer_output_read_by_safetensors_and_header_checks(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    from safetensors.torch import load_file, save_file

    from mxquant.checkpoint.stio import tensor_bytes
    from mxquant.checkpoint.writer import ShardWriter

    g = torch.Generator().manual_seed(0)
    ts = {"a": torch.randn(3, 64, generator=g).bfloat16(), "b": torch.randint(0, 255, (5, 2), dtype=torch.uint8),
          "c": torch.randn(4, 32, generator=g).to(torch.float8_e4m3fn), "d": torch.randn(7, generator=g)}
    names = {torch.bfloat16: "BF16", torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3", torch.float32: "F32"}
    w = ShardWriter(str(tmp_path / "x.safetensors"), [(k, names[v.dtype], tuple(v.shape)) for k, v in ts.items()],
                    {"format": "pt"})
    for k, v in ts.items():
        w.begin(k)
        half = v.reshape(-1).shape[0] // 2
        w.write_part(tensor_bytes(v.reshape(-1)[:half].clone()))
        w.write_part(tensor_bytes(v.reshape(-1)[half:].clone()))
        w.end()
    w.close()
    back = load_file(tmp_path / "x.safetensors")
    for k, v in ts.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k].view(torch.uint8), v.view(torch.uint8))
    save_file(ts, tmp_path / "y.safetensors")  # and our reader on the package's writer
    infos, meta, start = read_header(str(tmp_path / "y.safetensors"))
    assert {k: (i.dtype, i.shape) for k, i in infos.items()} == {k: (names[v.dtype], tuple(v.shape)) for k, v in ts.items()}
    raw = (tmp_path / "y.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["a"]["data_offsets"][1] += 2  # offsets no longer match the shape
    blob = json.dumps(header).encode()
    (tmp_path / "z.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + raw[8 + n:])
    with pytest.raises(CheckpointError, match="offsets of a"):
        read_header(str(tmp_path / "z.safetensors"))
    (tmp_path / "t.safetensors").write_bytes(raw + b"\0" * 8)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_header(str(tmp_path / "t.safetensors"))
    assert safetensors


def test_verify_catches_a_changed_byte(tmp_path):
    pytest.importorskip("safetensors")
    from convert_ckpt import llama_like, save_checkpoint

    from mxquant.checkpoint import convert
    from mxquant.checkpoint.verify import verify_shard

    save_checkpoint(tmp_path / "src", llama_like(layers=1))
    r = convert(tmp_path / "src", tmp_path / "dst")
    path = tmp_path / "dst" / "model.safetensors"
    verify_shard(str(path), r.tensors)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="bytes differ"):
        verify_shard(str(path), r.tensors)
    with pytest.raises(CheckpointError, match="missing"):
        verify_shard(str(path), r.tensors + [{"name": "extra", "shape": [1], "dtype": "U8", "sha256": ""}])


def test_import_mxquant_loads_no_converter_dependency():
    code = ("import sys, mxquant, mxquant.cli, mxquant.checkpoint, mxquant.cli.convert\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('safetensors', 'transformers', 'compressed_tensors', 'llmcompressor')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _FakeCuda:
    """Stands in for torch.cuda on a machine with `count` GPUs (contract test: no GPU needed)."""

    def __init__(self, count):
        self.count, self.current = count, None

    def is_available(self):
        return self.count > 0

    def device_count(self):
        return self.count

    def set_device(self, device):
        assert device.index < self.count, "the converter picked a device that does not exist"
        self.current = device.index


@pytest.mark.parametrize("count, local_rank, want", [(1, 0, "cuda:0"), (1, 1, "cuda:0"), (2, 3, "cuda:1"),
                                                     (4, 2, "cuda:2")])
def test_contract_ranks_share_devices_round_robin(monkeypatch, count, local_rank, want):
    """torchrun with more ranks than GPUs (2 ranks on 1 H200 failed before: set_device(cuda:1))."""
    from mxquant.checkpoint.driver import resolve_device

    fake = _FakeCuda(count)
    monkeypatch.setattr(torch, "cuda", fake)
    assert resolve_device("auto", local_rank) == want and fake.current == int(want[-1])
    assert resolve_device("cuda", local_rank) == want


def test_contract_an_explicit_device_past_the_count_is_refused(monkeypatch):
    from mxquant.checkpoint.driver import resolve_device

    monkeypatch.setattr(torch, "cuda", _FakeCuda(1))
    with pytest.raises(CheckpointError, match=r"'cuda:1' is not available here \(1 cuda device"):
        resolve_device("cuda:1", 0)


def test_a_cpu_conversion_leaves_a_core_to_its_writer_and_restores_the_threads(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    from convert_ckpt import llama_like, save_checkpoint

    from mxquant.checkpoint import convert, driver

    save_checkpoint(tmp_path / "src", llama_like(layers=1))
    seen, real = [], driver.quantize_tensor
    monkeypatch.setattr(driver, "quantize_tensor", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        convert(tmp_path / "src", tmp_path / "dst", device="cpu")
        assert set(seen) == {2} and torch.get_num_threads() == 3
        seen.clear()
        torch.set_num_threads(1)
        convert(tmp_path / "src", tmp_path / "dst1", device="cpu")
        assert set(seen) == {1} and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
