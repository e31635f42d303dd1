"""The converted model's weights and, with --fake-quant-activations, its inputs, per scheme of
`mxquant convert` (docs/eval.md):

- weights: mxquant's public dequantization of the file's tensors, in SRC's dtype for the weight:
  mxfp8_dequantize / mxfp4_dequantize (U8 scale bytes read as E8M0), nvfp4_dequantize (E4M3
  scales, the F32 global scale), and FP8 block's rule (element times its 128x128 block's scale,
  mxquant.checkpoint.fp8block.dequantize, in float32, then rounded once to SRC's dtype);
- input activations, where the scheme quantizes them (the A16 scheme, nvfp4a16, does not): an
  MXFP8 or MXFP4 round trip per token in blocks of 32 with the E8M0 rule `scale_mode`, or FP8
  block's dynamic per-token groups of 128 as vLLM quantizes them (scale = amax / 448 in float32,
  at least 1 / (448 * 512); elements e4m3(clamp(x / scale, +-448))), the result in x's dtype.
"""

from __future__ import annotations

from ..checkpoint.stio import DTYPES, CheckpointError

FP8_MAX = 448.0
FP8_MIN_SCALE = 1.0 / (FP8_MAX * 512)
"""vLLM's floor on a dynamic FP8 activation scale (an all-zero group)."""


def dequantize(scheme, tensors: list, src_dtype: str):
    """One quantized weight from `tensors`, the scheme's outputs in file order (Scheme.outputs)."""
    import torch

    import mxquant

    dtype = DTYPES[src_dtype]
    if scheme.name == "mxfp8":
        return mxquant.mxfp8_dequantize(tensors[0], tensors[1].view(torch.float8_e8m0fnu), out_dtype=dtype)
    if scheme.name == "mxfp4":
        return mxquant.mxfp4_dequantize(tensors[0], tensors[1].view(torch.float8_e8m0fnu), out_dtype=dtype)
    if scheme.name == "nvfp4a16":
        return mxquant.nvfp4_dequantize(tensors[0], tensors[1], tensors[2], out_dtype=dtype)
    from ..checkpoint import fp8block

    return fp8block.dequantize(tensors[0], tensors[1]).to(dtype)


def _fp8_groups(x):
    import torch

    g = x.unflatten(-1, (x.shape[-1] // 128, 128))
    scale = (g.abs().amax(-1, keepdim=True).float() / FP8_MAX).clamp(min=FP8_MIN_SCALE)
    q = (g.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return (q.float() * scale).to(x.dtype).flatten(-2)


def activation_round_trip(scheme, scale_mode: str | None):
    """x -> x rounded as the scheme's input activations, and the E8M0 rule it uses (None where the
    scheme's scales are no power of two); refused for a scheme that leaves activations alone, and
    a scale mode given to FP8 block."""
    import mxquant

    if scheme.name == "nvfp4a16":
        raise CheckpointError("--fake-quant-activations: DST's scheme nvfp4a16 quantizes weights only (its input "
                              "activations stay unquantized, as vLLM runs it); run without the option")
    if scheme.name == "fp8-block":
        if scale_mode is not None:
            raise CheckpointError("--activation-scale-mode does not apply to --scheme fp8-block (its activation "
                                  "scales are amax / 448, no power of two)")
        return _fp8_groups, None
    mode = scale_mode or "rceil"
    if scheme.name == "mxfp8":
        return (lambda x: mxquant.mxfp8_fake_quantize(x, scale_mode=mode)), mode

    def mxfp4(x):
        q = mxquant.mxfp4_quantize(x, scale_mode=mode)
        return mxquant.mxfp4_dequantize(q.data, q.scale, out_dtype=x.dtype)

    return mxfp4, mode
