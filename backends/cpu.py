"""The `cpu` backend: the pure-PyTorch reference (mxquant/reference.py), always available on
CPU and the lowest-priority choice. It is the source of truth for every other backend, and the
only built-in backend that claims the training and MoE calls (reference_training.py) and the
MXFP4 / NVFP4 calls (reference_fp4.py) so far."""

from mxquant import reference, reference_fp4, reference_training
from mxquant.backend import CLAIMABLE_OPS, Backend, Capabilities
from mxquant.formats import SCALE_MODES
from mxquant.outputs import own_outputs

backend = Backend(
    name="cpu",
    capabilities=Capabilities(devices=frozenset({"cpu"}), scale_modes=frozenset(SCALE_MODES), ops=frozenset(CLAIMABLE_OPS)),
    probe=lambda device: None,
    quantize=reference.quantize,
    dequantize=reference.dequantize,
    priority=0,
    description="reference implementation in plain PyTorch (docs/semantics.md, bit for bit)",
    quantize_colwise=reference_training.quantize_colwise,
    quantize_rowcol=reference_training.quantize_rowcol,
    quantize_2d=reference_training.quantize_2d,
    quantize_grouped=reference_training.quantize_grouped,
    quantize_grouped_colwise=reference_training.quantize_grouped_colwise,
    mxfp4_quantize=reference_fp4.mxfp4_quantize,
    mxfp4_dequantize=reference_fp4.mxfp4_dequantize,
    nvfp4_quantize=reference_fp4.nvfp4_quantize,
    nvfp4_dequantize=reference_fp4.nvfp4_dequantize,
)

own_outputs(backend)  # outputs allocated here: no per-call check (mxquant/outputs.py)
