"""MXFP4 / NVFP4 quantize and dequantize on one CUDA GPU, side by side with the peers, in one process
(issue 23's speed target: the Triton FP4 quantize at >= 90% of copy bandwidth).

    python3 benchmarks/bench_fp4.py --out bench-out [--shapes 4096x4096 8192x8192 16384x8192] [--rounds 2]

bf16 input (`--dtype float16`: fp16). Times: medians over CUDA events, L2 flushed before each call (bench_quantize.bench),
contenders interleaved round by round, the lowest round kept. Bytes per element: 2 read + 1/2
written + 1/32 (MXFP4) or 1/16 (NVFP4) scale bytes for quantize (dequantize the reverse);
`% copy BW` is that over the bandwidth of a device-to-device copy of x (2 + 2 bytes per element)
at the same shape. Contenders per shape (M x K):
- `copy (ceiling)`;
- ours, called on the backend directly: `triton mxfp4` (rceil, compressed-tensors; linear and
  swizzled scales), `triton nvfp4 given g` (one pass), `triton nvfp4` (the global scale computed:
  an amax pass, then the quantize pass; counted with the one-pass bytes, so its % shows the cost
  of the second read), the two dequantize calls;
- peers where they import and run on this card: torch.compile of torchao's `to_mx` with fp4
  elements (RCEIL; swizzled too), torchao's `nvfp4_quantize` compiled (with a per-tensor scale)
  and `NVFP4Tensor.to_nvfp4` with its Triton kernel (skipped with the reason where that needs
  SM100), FlashInfer's `fp4_quantize` (SM100+ only: skipped with the reason below that).
`exact`: our outputs against mxquant.reference_fp4 on the CPU at the first shape (probe_input:
a zero and a NaN block). Writes bench_fp4.json (card, rows, notes) to --out and prints a table.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402

import bench_training  # noqa: E402  (benchmarks/ on sys.path: the shared run loop and command line)

SHAPES = [(4096, 4096), (8192, 8192), (16384, 8192)]
FP4 = torch.float4_e2m1fn_x2


def ours(x):
    """{name: (callable, bytes, reference on the CPU copy or None)}."""
    from mxquant import reference_fp4 as ref
    from mxquant.backends import _triton_fp4_ops as ops

    n = x.numel()
    mx, nv = n * (2 + 0.5 + 1 / 32), n * (2 + 0.5 + 1 / 16)
    copy_dst = torch.empty_like(x)
    g = ops.nvfp4_quantize(x, None, "compressed-tensors", "linear")[2].clone()
    out = {"copy (ceiling)": (lambda: copy_dst.copy_(x), 4 * n, None)}
    for mode, layout in (("rceil", "linear"), ("rceil", "swizzled"), ("compressed-tensors", "linear")):
        out[f"triton mxfp4 {mode} {layout}"] = (
            lambda m=mode, lay=layout: ops.mxfp4_quantize(x, m, lay), mx,
            lambda c, m=mode, lay=layout: ref.mxfp4_quantize(c, m, lay))
    for layout in ("linear", "swizzled"):
        out[f"triton nvfp4 given g {layout}"] = (
            lambda lay=layout: ops.nvfp4_quantize(x, g, "compressed-tensors", lay), nv,
            lambda c, lay=layout: ref.nvfp4_quantize(c, g.cpu(), "compressed-tensors", lay))
        out[f"triton nvfp4 {layout}"] = (
            lambda lay=layout: ops.nvfp4_quantize(x, None, "compressed-tensors", lay), nv,
            lambda c, lay=layout: ref.nvfp4_quantize(c, None, "compressed-tensors", lay))
    md, ms = ops.mxfp4_quantize(x, "rceil", "linear")
    nd, ns, ng = ops.nvfp4_quantize(x, None, "compressed-tensors", "linear")
    out["triton mxfp4 dequantize"] = (lambda: ops.mxfp4_dequantize(md, ms, "linear", torch.bfloat16), mx, None)
    out["triton nvfp4 dequantize"] = (lambda: ops.nvfp4_dequantize(nd, ns, ng, "linear", torch.bfloat16), nv, None)
    return out


def peers(x, notes):
    """{name: (callable, bytes, None)} of the peers that import and run here; notes say why not."""
    n = x.numel()
    mx, nv = n * (2 + 0.5 + 1 / 32), n * (2 + 0.5 + 1 / 16)
    cands = {}
    try:
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
        from torchao.prototype.mx_formats.mx_tensor import to_mx
        from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, nvfp4_quantize

        for swz in (False, True):
            f = torch.compile(lambda t, s=swz: to_mx(t, FP4, 32, ScaleCalculationMode.RCEIL, s), fullgraph=True)
            cands["compile(torchao to_mx fp4)" + (" swizzled" if swz else "")] = (lambda f=f: f(x), mx)
        amax = x.abs().amax().float()
        pts = amax / (448.0 * 6.0)
        f_nv = torch.compile(lambda t: nvfp4_quantize(t, 16, pts), fullgraph=True)
        cands["compile(torchao nvfp4_quantize)"] = (lambda: f_nv(x), nv)
        cands["torchao NVFP4Tensor.to_nvfp4 triton"] = (
            lambda: NVFP4Tensor.to_nvfp4(x, per_tensor_scale=pts, is_swizzled_scales=True, use_triton_kernel=True), nv)
    except Exception as exc:  # pragma: no cover - depends on the machine
        notes.append(f"torchao: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    major = torch.cuda.get_device_capability(x.device)[0]
    if major < 10:
        notes.append(f"flashinfer fp4_quantize: skipped, SM{major}0 card (its FP4 quantizer needs SM100+)")
    else:
        try:
            from flashinfer import fp4_quantize

            gsf = (448.0 * 6.0 / x.abs().amax().float()).reshape(1)
            cands["flashinfer fp4_quantize"] = (lambda: fp4_quantize(x, gsf, 16, False, True), nv)
        except Exception as exc:  # pragma: no cover
            notes.append(f"flashinfer: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    return bench_training.runnable(cands, notes)


def main(argv=None):
    return bench_training.main(argv, "bench_fp4", lambda x, notes: {**ours(x), **peers(x, notes)}, SHAPES, __doc__)


if __name__ == "__main__":
    sys.exit(main())
