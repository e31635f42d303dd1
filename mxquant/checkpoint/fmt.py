"""The compressed-tensors `mxfp8-quantized` format: tensor names, dtypes and config.json entry.

Per quantized tensor `X` (normally `<module>.weight`, shape [..., K]):
    X          F8_E4M3, same shape             (elements)
    X_scale    U8, shape [..., K/32]           (E8M0 biased exponents, linear layout)
config.json gains `quantization_config` laid out as compressed-tensors' ModelCompressor
writes it (compressed-tensors 0.20.1, preset scheme "MXFP8": static group-32 FP8 weights with
uint8 scales, dynamic group-32 FP8 input activations). vLLM reads it as
CompressedTensorsW8A8Mxfp8; transformers loads it through compressed-tensors.
"""

from __future__ import annotations

SCALE_MODES = ("compressed-tensors", "rceil")
"""The scale modes `mxquant convert` writes: compressed-tensors' own rule (the default) and rceil."""

FORMAT = "mxfp8-quantized"
CT_VERSION = "0.20.1"
"""The compressed-tensors release whose writer this layout reproduces (tests check it parses
and re-dumps identically with whichever compressed-tensors is installed)."""

DATA_DTYPE = "F8_E4M3"
SCALE_DTYPE = "U8"


def scale_name(name: str) -> str:
    return name + "_scale"


def _args(dynamic: bool) -> dict:
    return {"num_bits": 8, "type": "float", "symmetric": True, "group_size": 32, "strategy": "group",
            "dynamic": dynamic, "scale_dtype": "torch.uint8"}


def quantization_config(ignore: list[str]) -> dict:
    """config.json's `quantization_config` for an MXFP8 checkpoint with this `ignore` list."""
    return {
        "version": CT_VERSION,
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": {},
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": _args(False),
                "input_activations": _args(True),
                "output_activations": None,
                "format": FORMAT,
            }
        },
        "kv_cache_scheme": None,
        "format": FORMAT,
        "quantization_status": "compressed",
        "global_compression_ratio": None,
        "ignore": list(ignore),
        "moe_sparsity_config": None,
    }
