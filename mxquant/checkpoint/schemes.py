"""The schemes `mxquant convert --scheme` writes: per scheme the output tensors of one quantized
weight (names, dtypes, shapes), the block rule a weight must meet, and config.json's entry.

scheme (llm-compressor preset, format): tensors of a quantized `<m>.weight` [N, K]
  mxfp8 (MXFP8, mxfp8-quantized): weight F8_E4M3 [N, K], weight_scale U8 [N, K/32]
  mxfp4 (MXFP4, mxfp4-pack-quantized): weight_packed U8 [N, K/2], weight_scale U8 [N, K/32]
  nvfp4a16 (NVFP4A16, nvfp4-pack-quantized): weight_packed U8 [N, K/2], weight_scale F8_E4M3
      [N, K/16], weight_global_scale F32 [1]
  fp8-block (FP8_BLOCK, float-quantized): weight F8_E4M3 [N, K], weight_scale [ceil(N/128), K/128]
      in the source dtype

mxfp8's config keeps the layout compressed-tensors' ModelCompressor writes (fmt.py); the others
are laid out as llm-compressor 0.14's `model_free_ptq` writes them (group named after the
preset, every QuantizationArgs field present), so that the two compare equal as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import fmt

DEFAULT = "mxfp8"


@dataclass(frozen=True)
class Scheme:
    name: str
    preset: str
    format: str
    k_block: int
    """The last dimension must be a multiple of this (else the weight is kept, in `ignore`)."""
    row_block: int = 1
    """Rows per scale block (fp8-block: 128); chunks hold whole row blocks."""
    scale_modes: tuple = ("compressed-tensors",)

    def outputs(self, name: str, dtype: str, shape: tuple) -> list[tuple[str, str, tuple]]:
        """The output tensors (name, dtype, shape) of a quantized source tensor, in file order."""
        shape = tuple(shape)
        lead, k = shape[:-1], shape[-1]
        if self.name == "mxfp8":
            return [(name, fmt.DATA_DTYPE, shape), (fmt.scale_name(name), fmt.SCALE_DTYPE, (*lead, k // 32))]
        base = name[: -len("weight")] if name.endswith("weight") else name + "_"
        if self.name == "mxfp4":
            return [(base + "weight_packed", "U8", (*lead, k // 2)), (base + "weight_scale", "U8", (*lead, k // 32))]
        if self.name == "nvfp4a16":
            return [(base + "weight_packed", "U8", (*lead, k // 2)),
                    (base + "weight_scale", "F8_E4M3", (*lead, k // 16)), (base + "weight_global_scale", "F32", (1,))]
        n = shape[0]
        return [(name, "F8_E4M3", shape), (base + "weight_scale", dtype, (math.ceil(n / 128), k // 128))]

    def quantization_config(self, ignore: list[str]) -> dict:
        if self.name == "mxfp8":
            return fmt.quantization_config(ignore)
        return {"version": fmt.CT_VERSION, "quant_method": "compressed-tensors", "transform_config": {},
                "config_groups": {self.preset: {"targets": ["Linear"], "weights": _WEIGHTS[self.name],
                                                "input_activations": _INPUTS[self.name], "output_activations": None,
                                                "format": self.format}},
                "kv_cache_scheme": None, "format": self.format, "quantization_status": "compressed",
                "global_compression_ratio": None, "ignore": list(ignore)}


def _args(bits, group, strategy, dynamic, scale_dtype, block=None) -> dict:
    return {"num_bits": bits, "type": "float", "symmetric": True, "group_size": group, "strategy": strategy,
            "block_structure": block, "dynamic": dynamic, "actorder": None, "scale_dtype": scale_dtype,
            "zp_dtype": None, "observer": None, "observer_kwargs": {}}


_WEIGHTS = {"mxfp4": _args(4, 32, "group", False, "torch.uint8"),
            "nvfp4a16": _args(4, 16, "tensor_group", False, "torch.float8_e4m3fn"),
            "fp8-block": _args(8, None, "block", False, None, [128, 128])}
_INPUTS = {"mxfp4": _args(4, 32, "group", True, "torch.uint8"), "nvfp4a16": None,
           "fp8-block": _args(8, 128, "group", True, None)}

SCHEMES = {s.name: s for s in (
    Scheme("mxfp8", "MXFP8", fmt.FORMAT, 32, scale_modes=fmt.SCALE_MODES),
    Scheme("mxfp4", "MXFP4", "mxfp4-pack-quantized", 32, scale_modes=fmt.SCALE_MODES),
    Scheme("nvfp4a16", "NVFP4A16", "nvfp4-pack-quantized", 16),
    Scheme("fp8-block", "FP8_BLOCK", "float-quantized", 128, row_block=128),
)}


def get(name: str, scale_mode: str) -> Scheme:
    """The scheme called `name`, refused (CheckpointError, one line) with a scale mode it lacks."""
    from .stio import CheckpointError

    if name not in SCHEMES:
        raise CheckpointError(f"scheme {name!r} is not one of {', '.join(SCHEMES)}")
    s = SCHEMES[name]
    if scale_mode not in s.scale_modes:
        raise CheckpointError(f"--scale-mode {scale_mode} does not apply to --scheme {name} (it has one rule: "
                              f"compressed-tensors)")
    return s
