"""Why the `flashinfer` backend is gated to SM100+: a check to run on an H100 (SM90).

    bash .whl/install-carried.sh && export PYTHONPATH=/tmp/site && pip install -q --no-deps --no-build-isolation -e . && python3 benchmarks/check_flashinfer_h100.py

(the first command installs the carried flashinfer-python 0.7.2.post1 into /tmp/site; any
install where `import flashinfer` works will do). Prints, each in its own section:

  (a) mxquant's availability reason for `flashinfer` on cuda:0;
  (b) MXQUANT_BACKEND=flashinfer: the strict error (caught and printed);
  (c) which backend automatic selection picks (expected: triton), and whether its bytes
      equal the reference;
  (d) flashinfer.mxfp8_quantize called directly on random bf16 data (its JIT build takes
      about a minute): its outputs against the reference, once as returned and once with
      the allocator's memory poisoned with 0xAB beforehand, which shows whether the kernel
      wrote anything at all;
  (e) `mxquant verify` on this machine;
  (f) FlashInfer's per-block arithmetic (a transcription of cvt_warp_fp16_to_mxfp8, built
      with fast math as FlashInfer builds it, through CuPy's NVRTC if CuPy is importable)
      run on this GPU and checked by verify's rules: which declared deviations show up.
      Not Blackwell: the e8m0 conversion takes CUDA's software path here and rcp.approx
      is this GPU's. It also prints rcp.approx.ftz.f32(448), which decides `approx-scale`.

and a compact JSON summary at the end. Every section catches its own errors. Runs in about
two to three minutes on a fresh machine (FlashInfer's JIT build and Triton's compiles).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import types

import torch

import mxquant  # noqa: E402
from mxquant import layouts, reference  # noqa: E402
from mxquant.backend import Backend, Call  # noqa: E402
from mxquant.errors import BackendError  # noqa: E402
from mxquant.registry import get_registry  # noqa: E402
from mxquant.selection import ENV_ALLOW, ENV_BACKEND  # noqa: E402

E4M3, BF16 = torch.float8_e4m3fn, torch.bfloat16
SUMMARY: dict = {}
T0 = time.time()


def section(title: str) -> None:
    print(f"\n=== {title}  [{time.time() - T0:.0f} s] ===", flush=True)


def guarded(key: str):
    def wrap(fn):
        def run(*args):
            try:
                return fn(*args)
            except Exception as exc:
                traceback.print_exc()
                SUMMARY[key] = f"error: {type(exc).__name__}: {exc}"

        return run

    return wrap


def byte_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.cpu().view(torch.uint8).reshape(-1) != b.cpu().view(torch.uint8).reshape(-1)).sum())


@guarded("a_probe")
def probe(dev):
    section("(a) mxquant's availability reason for flashinfer on cuda:0")
    print(f"device: {torch.cuda.get_device_name(dev)}, capability {torch.cuda.get_device_capability(dev)}, "
          f"torch {torch.__version__}")
    try:
        import flashinfer

        print(f"flashinfer {getattr(flashinfer, '__version__', '?')} imports from {os.path.dirname(flashinfer.__file__)}")
        SUMMARY["flashinfer_version"] = getattr(flashinfer, "__version__", "?")
    except Exception as exc:
        print(f"flashinfer does not import: {type(exc).__name__}: {exc}")
        SUMMARY["flashinfer_version"] = None
    reg = get_registry()
    entry = next(e for e in reg.entries() if e.name == "flashinfer")
    reason = reg.probe(entry, dev)
    print(f"probe: {reason!r}")
    SUMMARY["a_probe"] = reason


@guarded("b_forced")
def forced(dev):
    section("(b) MXQUANT_BACKEND=flashinfer must raise, never run")
    os.environ[ENV_BACKEND] = "flashinfer"
    try:
        mxquant.mxfp8_quantize(torch.randn(4, 64, device=dev, dtype=BF16))
        print("NOT RAISED: flashinfer ran on this GPU (a bug in the gate)")
        SUMMARY["b_forced"] = "not raised (BUG)"
    except BackendError as exc:
        print(f"{type(exc).__name__}: {exc}")
        SUMMARY["b_forced"] = f"raised {type(exc).__name__}"
    finally:
        del os.environ[ENV_BACKEND]


@guarded("c_automatic")
def automatic(dev):
    section("(c) automatic selection")
    os.environ.pop(ENV_ALLOW, None)
    call = Call("quantize", dev, BF16, E4M3, "rceil", "linear")
    name = get_registry().resolved_name(call)
    x = torch.randn(300, 4096, device=dev, dtype=BF16)
    exact = all(byte_diff(got, want) == 0 for layout in ("linear", "swizzled")
                for got, want in zip(mxquant.mxfp8_quantize(x, scale_layout=layout), reference.quantize(x.cpu(), E4M3, "rceil", layout)))
    with mxquant.allow_deviations("flashinfer"):
        allowed = get_registry().resolved_name(call)
    print(f"automatic: {name} (bytes equal the reference: {exact}); with allow_deviations('flashinfer'): {allowed}")
    SUMMARY["c_automatic"] = {"picked": name, "exact": exact, "picked_with_flashinfer_allowed": allowed}


@guarded("d_direct")
def direct(dev):
    section("(d) flashinfer.mxfp8_quantize called directly on this GPU (JIT build first)")
    import flashinfer

    m, k = 512, 4096
    x = torch.randn(m, k, device=dev, dtype=BF16) * torch.exp2(torch.randint(-8, 9, (m, 1), device=dev).to(BF16))
    out = {}
    for layout in ("linear", "swizzled"):
        want_d, want_s = reference.quantize(x.cpu(), E4M3, "rceil", layout)
        for poisoned in (False, True):
            if poisoned:  # the buffers FlashInfer allocates next come from this freed memory
                junk = [torch.full((n,), 0xAB, dtype=torch.uint8, device=dev) for n in (m * k, want_s.numel())]
                del junk
            t = time.time()
            data, scale = flashinfer.mxfp8_quantize(x, is_sf_swizzled_layout=layout == "swizzled", alignment=32)
            torch.cuda.synchronize(dev)
            dt = time.time() - t
            sb = scale.view(torch.uint8).cpu()
            rec = {
                "seconds": round(dt, 2),
                "data_shape": list(data.shape), "scale_numel": scale.numel(), "scale_dtype": str(scale.dtype),
                "data_bytes_differing": byte_diff(data, want_d), "data_bytes": data.numel(),
                "scale_bytes_differing": byte_diff(scale, want_s), "scale_bytes": scale.numel(),
                "scale_bytes_zero": int((sb == 0).sum()), "scale_bytes_0xAB": int((sb == 0xAB).sum()),
                "scale_distinct_values": sorted(set(sb.tolist()))[:8],
            }
            key = f"{layout}{'_poisoned' if poisoned else ''}"
            out[key] = rec
            print(f"{key}: {json.dumps(rec)}")
    SUMMARY["d_direct"] = {k: {f: v[f] for f in ("scale_bytes_differing", "scale_bytes", "scale_bytes_zero",
                                                 "scale_bytes_0xAB", "data_bytes_differing", "data_bytes")}
                           for k, v in out.items()}


@guarded("e_verify")
def verify():
    section("(e) mxquant verify")
    from mxquant.cli.verify import print_report
    from mxquant.conformance import collect, exit_code

    report = collect(seed=0)
    print_report(report)
    SUMMARY["e_verify"] = {"exit_code": exit_code(report), "summary": report["summary"],
                           "fail": sorted({f"{r['backend']} {r['op']} {r['hp_dtype']}->{r['element_dtype']} "
                                           f"{r['scale_mode']} {r['scale_layout']}: {(r['reason'] or '')[:120]}"
                                           for r in report["results"] if r["status"] == "fail"})[:6]}


EMULATION = r"""
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>

__device__ __forceinline__ float rcp_ftz(float a) {
  float b;
  asm volatile("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(b) : "f"(a));
  return b;
}
__device__ __forceinline__ float2 to_f2(__nv_bfloat162 v) { return __bfloat1622float2(v); }
__device__ __forceinline__ float2 to_f2(__half2 v) { return __half22float2(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }

// One block of 32 as cvt_warp_fp16_to_mxfp8 does it (4 threads x 8 elements, then two xor shuffles).
template <typename T, typename T2>
__device__ void block_quant(const T2* v, unsigned char* out, unsigned char* sf) {
  T2 lm[4];
  for (int t = 0; t < 4; ++t) {
    lm[t] = __habs2(v[4 * t]);
    for (int i = 1; i < 4; ++i) lm[t] = __hmax2(lm[t], __habs2(v[4 * t + i]));
  }
  T2 l0 = __hmax2(lm[1], lm[0]);
  T2 l2 = __hmax2(lm[3], lm[2]);
  T2 m = __hmax2(l2, l0);
  T a = m.x, b = m.y;
  T mx = (a > b) ? a : b;
  float vecMax = to_f(mx);
  float SFValue = vecMax * rcp_ftz(448.0f);
  __nv_fp8_e8m0 s;
  s.__x = __nv_cvt_float_to_e8m0(SFValue, __NV_SATFINITE, cudaRoundPosInf);
  SFValue = static_cast<float>(s);
  float outputScale = SFValue != 0.f ? rcp_ftz(SFValue) : 0.0f;
  *sf = s.__x;
  for (int i = 0; i < 16; ++i) {
    float2 f = to_f2(v[i]);
    f.x *= outputScale;
    f.y *= outputScale;
    f.x = fmaxf(fminf(f.x, 448.0f), -448.0f);
    f.y = fmaxf(fminf(f.y, 448.0f), -448.0f);
    __nv_fp8x2_e4m3 q(f);
    out[2 * i] = (unsigned char)(q.__x & 0xff);
    out[2 * i + 1] = (unsigned char)(q.__x >> 8);
  }
}

extern "C" __global__ void emu_bf16(const __nv_bfloat162* in, unsigned char* out, unsigned char* sf, long long n) {
  long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (b < n) block_quant<__nv_bfloat16, __nv_bfloat162>(in + 16 * b, out + 32 * b, sf + b);
}
extern "C" __global__ void emu_f16(const __half2* in, unsigned char* out, unsigned char* sf, long long n) {
  long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (b < n) block_quant<__half, __half2>(in + 16 * b, out + 32 * b, sf + b);
}
extern "C" __global__ void rcp(const float* in, float* out, long long n) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i < n) out[i] = rcp_ftz(in[i]);
}
"""


def _include_dirs() -> list[str]:
    import shutil

    dirs = [os.path.join(os.environ[v], "include") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    nvcc = shutil.which("nvcc")
    if nvcc:
        dirs.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    dirs += ["/usr/local/cuda/include"]
    return [d for d in dict.fromkeys(dirs) if os.path.isfile(os.path.join(d, "cuda_fp8.h"))]


@guarded("f_emulation")
def emulation(dev):
    section("(f) FlashInfer's MXFP8 arithmetic transcribed and run on this GPU, checked by verify's rules")
    import cupy

    from mxquant.backends import flashinfer as fib
    from mxquant.conformance import check_quantize

    module = cupy.RawModule(code=EMULATION, options=("--use_fast_math", "-std=c++17",
                                                     *(f"-I{d}" for d in _include_dirs())))
    kernels = {BF16: module.get_function("emu_bf16"), torch.float16: module.get_function("emu_f16")}

    # the primitive that decides approx-scale
    vals = torch.tensor([448.0] + [2.0**e for e in range(-126, 127)], device=dev)
    outv = torch.empty_like(vals)
    module.get_function("rcp")(((vals.numel() + 255) // 256,), (256,),
                               (cupy.asarray(vals), cupy.asarray(outv), cupy.int64(vals.numel())))
    torch.cuda.synchronize(dev)
    r448 = outv[0].cpu()
    rn = torch.tensor(1 / 448, dtype=torch.float32)
    product = (torch.tensor(448.0) * r448).item()
    pow2_exact = bool((outv[1:].cpu() == torch.tensor([2.0**-e for e in range(-126, 127)])).all())
    facts = {"rcp_approx_448_bits": hex(r448.view(torch.int32).item()), "rn_1_over_448_bits": hex(rn.view(torch.int32).item()),
             "448_times_rcp": product, "exact_power_of_two_at_448": product == 1.0,
             "rcp_of_powers_of_two_exact": pow2_exact}
    print(json.dumps(facts))

    def fake_mxfp8_quantize(input, is_sf_swizzled_layout=True, alignment=32, enable_pdl=None, backend="cuda",
                            sf_swizzle_layout=None):
        m, k = input.numel() // input.shape[-1], input.shape[-1]
        data = torch.empty((m, k), dtype=torch.uint8, device=input.device)
        sf = torch.empty((m, k // 32), dtype=torch.uint8, device=input.device)
        n = m * k // 32
        kernels[input.dtype](((n + 127) // 128,), (128,), (cupy.asarray(input.contiguous().view(torch.int16)),
                                                          cupy.asarray(data), cupy.asarray(sf), cupy.int64(n)))
        torch.cuda.synchronize(input.device)
        if is_sf_swizzled_layout:
            sf = layouts.swizzle(sf)
        return data.view(E4M3).view(*input.shape[:-1], k), sf.reshape(-1)

    fake = types.ModuleType("flashinfer")
    fake.mxfp8_quantize = fake_mxfp8_quantize

    def quantize(*args):
        saved = sys.modules.get("flashinfer")
        sys.modules["flashinfer"] = fake
        try:
            return fib.quantize(*args)
        finally:
            if saved is None:
                sys.modules.pop("flashinfer", None)
            else:
                sys.modules["flashinfer"] = saved

    emulated = Backend(name="flashinfer-emulated", capabilities=fib.backend.capabilities, probe=lambda d: None,
                       quantize=quantize, deviations=fib.DEVIATIONS)
    results = {}
    for hp in (BF16, torch.float16):
        for layout in ("linear", "swizzled"):
            r = check_quantize(emulated, dev, hp, E4M3, "rceil", layout, 0)
            results[f"{hp} {layout}"] = {"status": r.status, "deviations": r.deviations,
                                         "unexplained_blocks": r.unexplained_blocks}
            print(f"{hp} -> e4m3 rceil {layout}: {r.status}: {r.reason}")
            for ex in r.examples[:3]:
                print(f"    e.g. {json.dumps(ex)}")
    SUMMARY["f_emulation"] = {"facts": facts, "results": results}


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: run this on the H100 machine")
        return 2
    dev = torch.device("cuda", 0)
    for var in (ENV_BACKEND, ENV_ALLOW):
        os.environ.pop(var, None)
    probe(dev)
    forced(dev)
    automatic(dev)
    direct(dev)
    verify()
    emulation(dev)
    section("summary")
    SUMMARY["seconds"] = round(time.time() - T0, 1)
    print(json.dumps(SUMMARY, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
