"""The oracle of the `mxquant eval` tests: the numbers eval reports, computed here from SRC loaded
by transformers and a copy whose quantized weights are an independent dequantization of DST's
bytes (read with the safetensors package): mxquant.reference for MXFP8, tests/scheme_oracle.py
for the other schemes; per-expert tensors stacked into transformers' fused parameters."""

from __future__ import annotations

import math
import re

import pytest
import scheme_oracle
import torch
import transformers
from convert_ckpt import read_folder

from mxquant import reference

EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")


def _load(src):
    return transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16,
                                                             experts_implementation="eager").eval()


def _dequantized(files, scheme):
    """SRC's weight name -> its dequantization from DST's tensors, by the scheme's oracle."""
    out = {}
    for module in scheme_oracle.quantized_modules(files):
        if scheme == "mxfp8":
            w, s = files[module + ".weight"], files[module + ".weight_scale"].view(torch.float8_e8m0fnu)
            out[module + ".weight"] = reference.dequantize(w, s, "linear", torch.bfloat16)
        else:
            out[module + ".weight"] = scheme_oracle.dequantized(scheme, files, module)
    return out


def _reference_model(src, dst, scheme="mxfp8"):
    """(SRC's model, its copy with DST's weights as the oracle dequantizes them, the quantized
    in-memory parameter names)."""
    source, ref = _load(src), _load(src)
    params = dict(ref.named_parameters())
    quantized = set()
    with torch.no_grad():
        for name, w in _dequantized(read_folder(dst), scheme).items():
            m = EXPERT.match(name)
            if m is None:
                params[name].copy_(w)
                quantized.add(name)
                continue
            group, e, proj = m.group(1), int(m.group(2)), m.group(3)
            if proj == "down":
                params[f"{group}.down_proj"][e].copy_(w)
            else:  # transformers 5 fuses [gate; up] along the output axis
                inter = w.shape[0]
                params[f"{group}.gate_up_proj"][e][(0 if proj == "gate" else inter):][:inter].copy_(w)
            quantized.add(f"{group}.{'down_proj' if proj == 'down' else 'gate_up_proj'}")
    return source, ref, sorted(quantized)


def _round_trip(x, scale_mode="rceil"):
    data, scale = reference.quantize(x, torch.float8_e4m3fn, scale_mode, "linear")
    return reference.dequantize(data, scale, "linear", x.dtype)


def _expected(src, dst, batches, fake_quant=False, monkeypatch=None, scheme="mxfp8", round_trip=_round_trip):
    """The test's own numbers for these token batches."""
    source, ref, qparams = _reference_model(src, dst, scheme)
    layers = sorted({p.rpartition(".")[0] for p in qparams})
    if fake_quant:  # every F.linear with a quantized weight reads a round trip of its input
        storages = {dict(ref.named_parameters())[p].untyped_storage().data_ptr() for p in qparams}
        linear = torch.nn.functional.linear

        def fq_linear(x, w, b=None):
            if w.untyped_storage().data_ptr() in storages:
                x = round_trip(x)
            return linear(x, w, b)

        monkeypatch.setattr(torch.nn.functional, "linear", fq_linear)
    recorded = {n: [] for n in layers}
    hooks = [source.get_submodule(n).register_forward_hook(
        lambda mod, args, kwargs, out, n=n: recorded[n].append((args, kwargs, out)), with_kwargs=True) for n in layers]
    diff2 = ref2 = kl = 0.0
    agree = positions = 0
    nll = [0.0, 0.0]
    with torch.no_grad():
        for ids in batches:
            a, b = source(ids).logits.float(), ref(ids).logits.float()
            diff2 += ((a - b).double() ** 2).sum().item()
            ref2 += (a.double() ** 2).sum().item()
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            positions += ids.numel()
            pa, pb = torch.softmax(a.double(), -1), torch.softmax(b.double(), -1)
            kl += (pa * (pa.log() - pb.log())).sum().item()
            for i, logits in enumerate((a, b)):
                nll[i] += torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(),
                                                            ids[:, 1:].reshape(-1), reduction="sum").item()
        for h in hooks:
            h.remove()
        sqnr = {}
        for n in layers:
            s = e = 0.0
            for args, kwargs, out in recorded[n]:
                y = ref.get_submodule(n)(*args, **kwargs)
                s += (out.double() ** 2).sum().item()
                e += ((out.double() - y.double()) ** 2).sum().item()
            sqnr[n] = 10 * math.log10(s / e) if e else None
    predicted = sum(ids[:, 1:].numel() for ids in batches)
    return {"logits_rel_error": math.sqrt(diff2 / ref2), "top1_agreement": agree / positions,
            "kl_divergence": kl / positions, "sqnr": sqnr,
            "perplexity": [math.exp(x / predicted) for x in nll] if predicted else None}


def _check(got: dict, want: dict, perplexity: bool = False):
    assert got["logits_rel_error"] == pytest.approx(want["logits_rel_error"], rel=1e-5)
    assert got["top1_agreement"] == want["top1_agreement"]
    assert got["kl_divergence"] == pytest.approx(want["kl_divergence"], rel=1e-3, abs=1e-9)
    layers = {e["name"]: e["output_sqnr_db"] for e in got["layers"]}
    assert set(layers) == set(want["sqnr"])
    for n, v in want["sqnr"].items():
        assert layers[n] == pytest.approx(v, abs=1e-6), n
    values = [e["output_sqnr_db"] for e in got["layers"] if e["output_sqnr_db"] is not None]
    assert values == sorted(values)  # worst first
    if perplexity:
        assert [got["perplexity"]["source"], got["perplexity"]["converted"]] == pytest.approx(want["perplexity"],
                                                                                              rel=1e-5)
    else:
        assert got["perplexity"] is None


def _random(vocab, batch, seq_len, seed):
    """The documented random tokens (docs/eval.md)."""
    return [torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))]
