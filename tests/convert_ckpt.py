"""Helpers for the convert tests: synthetic checkpoints written with the `safetensors`
package (an independent writer), and reading a converted folder back with it."""

from __future__ import annotations

import json
import os

import torch


def llama_like(layers: int = 2, hidden: int = 64, inter: int = 96, vocab: int = 200, seed: int = 0,
               dtype=torch.bfloat16, tied: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def w(*shape, scale=0.05):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    t = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": torch.ones(hidden, dtype=dtype)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = torch.ones(hidden, dtype=dtype)
        t[p + "post_attention_layernorm.weight"] = torch.ones(hidden, dtype=dtype)
        for n, shape in (("q_proj", (hidden, hidden)), ("k_proj", (hidden // 2, hidden)),
                         ("v_proj", (hidden // 2, hidden)), ("o_proj", (hidden, hidden))):
            t[p + "self_attn." + n + ".weight"] = w(*shape)
        t[p + "self_attn.q_proj.bias"] = w(hidden)
        t[p + "mlp.gate_proj.weight"] = w(inter, hidden)
        t[p + "mlp.up_proj.weight"] = w(inter, hidden)
        t[p + "mlp.down_proj.weight"] = w(hidden, inter)
    if not tied:
        t["lm_head.weight"] = w(vocab, hidden)
    return t


def save_checkpoint(folder, tensors: dict[str, torch.Tensor], shards: int = 1, extra_files: dict | None = None,
                    config: dict | None = None) -> None:
    """Write `tensors` as a HF checkpoint: model.safetensors, or `shards` files plus the index."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    names = list(tensors)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"} if config is None else config
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    for rel, text in (extra_files or {}).items():
        os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
        with open(os.path.join(folder, rel), "w") as f:
            f.write(text)
    if shards == 1:
        save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)


def read_folder(folder) -> dict[str, torch.Tensor]:
    """Every tensor of every *.safetensors file in `folder`, read by the safetensors package."""
    from safetensors import safe_open

    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), "pt") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
    return out


def listing(folder) -> dict[str, bytes]:
    """Relative path -> bytes of every file below `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for n in files:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def assert_same_tensors(got: dict, want: dict) -> None:
    """The same names, and per name the same dtype, shape and bytes."""
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert torch.equal(got[k].view(torch.uint8), want[k].contiguous().view(torch.uint8)), k


def retarget(src, mapping) -> None:
    """Rewrite SRC's index so that every tensor of shard file `old` names `mapping[old]` instead."""
    path = os.path.join(src, "model.safetensors.index.json")
    with open(path) as f:
        index = json.load(f)
    index["weight_map"] = {k: mapping.get(v, v) for k, v in index["weight_map"].items()}
    with open(path, "w") as f:
        json.dump(index, f)


def without_manifest(files: dict) -> dict:
    """A `listing` less the manifest (which records SRC's path and timings)."""
    return {k: v for k, v in files.items() if k != "mxquant-manifest.json"}


def refuse(capsys, argv, phrase) -> str:
    """`mxquant convert ARGV` exits 2 with one line on stderr that contains `phrase`."""
    from mxquant.cli import main

    assert main(["convert", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and phrase in err, err
    return err


def fuse_experts(src, dst) -> dict[str, torch.Tensor]:
    """The per-expert checkpoint `src` with each layer's experts fused as transformers 5 holds them
    ([E, out, in]: gate_up_proj [E, 2I, H], each expert's gate rows then its up rows, as its
    modules' `.chunk(2, dim=-1)` reads them; down_proj [E, H, I]), written to `dst` as one file.
    Returns the tensors written."""
    import re

    per = re.compile(r"^(.*\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")
    out, experts = {}, {}
    for name, t in read_folder(src).items():
        m = per.match(name)
        if m:
            experts.setdefault(m[1], {}).setdefault(m[3], {})[int(m[2])] = t
        else:
            out[name] = t
    for prefix, p in experts.items():
        ids = sorted(p["gate"])
        out[prefix + ".gate_up_proj"] = torch.stack([torch.cat([p["gate"][i], p["up"][i]]) for i in ids])
        out[prefix + ".down_proj"] = torch.stack([p["down"][i] for i in ids])
    with open(os.path.join(src, "config.json")) as f:
        save_checkpoint(dst, out, config=json.load(f))
    return out
