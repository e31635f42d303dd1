"""Run inside vLLM's own environment (.ci/vllm-env.sh) by tests/test_vllm_load.py: load each
checkpoint of a job file with vLLM's CPU build and report what vLLM made of it. It asserts
nothing and does not import mxquant; the test compares the report with the files.

    python vllm_child.py JOB.json

JOB.json: {"cases": [{"name", "path", "out", "dtype": null | "float32", "linear_backend": null | "emulation",
"generate": null | {"prompt": [ids], "max_tokens": n}}]}.
For each case it writes OUT/NAME.json: {"error": null | "Type: message", "amx": whether this CPU has
AMX tiles (vLLM's FP8 block kernels for the CPU need them), "modules": {module:
[module class, quant_method class, scheme class]}, "tokens", "logprobs" (one {token id:
logprob} per prompt position after the first, then per generated token)}, and
OUT/NAME.safetensors: every non-empty parameter of the loaded model, as vLLM holds it after
loading (process_weights_after_loading included).

vLLM registers no MXFP8, MXFP4 or NVFP4 linear kernel for the CPU platform; its own emulation
kernels are registered for it here (EmulationMxfp8LinearKernel: weights dequantized to bf16 at
load, activations left in bf16; EmulationMxfp4LinearKernel and EmulationNvFp4LinearKernel), as
the CPU build needs them to serve such a checkpoint at all (docs/convert.md says which load).
"""

import gc
import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: apply_model sees it
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB


def _register_cpu_emulation_kernels():
    from vllm.model_executor.kernels.linear import register_linear_kernel
    from vllm.model_executor.kernels.linear.mxfp4.emulation import EmulationMxfp4LinearKernel
    from vllm.model_executor.kernels.linear.mxfp8.emulation import (
        EmulationMxfp8LinearKernel,
    )
    from vllm.model_executor.kernels.linear.nvfp4.emulation import EmulationNvFp4LinearKernel
    from vllm.platforms import PlatformEnum

    register_linear_kernel(EmulationMxfp8LinearKernel, PlatformEnum.CPU, "mxfp8")
    register_linear_kernel(EmulationMxfp4LinearKernel, PlatformEnum.CPU, "mxfp4")
    register_linear_kernel(EmulationNvFp4LinearKernel, PlatformEnum.CPU, "nvfp4")


def _describe(model):
    modules = {}
    for name, mod in model.named_modules():
        method, scheme = getattr(mod, "quant_method", None), getattr(mod, "scheme", None)
        if method is not None or scheme is not None:
            modules[name] = [type(mod).__name__, type(method).__name__,
                             type(scheme).__name__ if scheme is not None else None]
    params = {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.numel()}
    return modules, params


def _generate(llm, spec, vocab):
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=spec["max_tokens"], temperature=0.0, logprobs=vocab, prompt_logprobs=vocab)
    out = llm.generate([{"prompt_token_ids": spec["prompt"]}], sp, use_tqdm=False)[0]
    seq = out.outputs[0]
    steps = list(out.prompt_logprobs[1:]) + list(seq.logprobs)
    return list(seq.token_ids), [{str(t): lp.logprob for t, lp in step.items()} for step in steps]


def run_case(case, LLM):
    from safetensors.torch import save_file

    import torch

    report = {"error": None, "amx": bool(torch.cpu._is_amx_tile_supported()), "modules": {}, "tokens": None,
              "logprobs": None}
    llm = None
    start = time.time()
    try:
        gen = case.get("generate")
        options = {k: case[k] for k in ("dtype", "linear_backend") if case.get(k)}
        llm = LLM(case["path"], skip_tokenizer_init=True, enforce_eager=True, max_model_len=64,
                  **({"max_logprobs": -1} if gen else {}), **options)
        modules, params = llm.apply_model(_describe)[0]
        report["modules"] = modules
        save_file(params, os.path.join(case["out"], case["name"] + ".safetensors"))
        if gen:
            vocab = llm.llm_engine.model_config.get_vocab_size()
            report["tokens"], report["logprobs"] = _generate(llm, gen, vocab)
    except Exception as e:  # a refusal is a result: the test decides whether it was expected
        report["error"] = f"{type(e).__name__}: {e}"[:4000]
    finally:
        del llm
        gc.collect()
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    with open(os.path.join(case["out"], case["name"] + ".json"), "w") as f:
        json.dump(report, f)
    print(f"vllm_child: {case['name']}: {'refused' if report['error'] else 'loaded'} in {time.time() - start:.1f} s",
          flush=True)


def main(job_file):
    start = time.time()
    import vllm
    from vllm import LLM

    _register_cpu_emulation_kernels()
    print(f"vllm_child: vllm {vllm.__version__} imported in {time.time() - start:.1f} s", flush=True)
    with open(job_file) as f:
        cases = json.load(f)["cases"]
    for case in cases:
        run_case(case, LLM)


if __name__ == "__main__":
    main(sys.argv[1])
