"""The `cpu` backend: the pure-PyTorch reference (mxquant/reference.py), always available on
CPU and the lowest-priority choice. It is the source of truth for every other backend."""

from mxquant import reference
from mxquant.backend import Backend, Capabilities
from mxquant.formats import SCALE_MODES
from mxquant.outputs import own_outputs

backend = Backend(
    name="cpu",
    capabilities=Capabilities(devices=frozenset({"cpu"}), scale_modes=frozenset(SCALE_MODES)),
    probe=lambda device: None,
    quantize=reference.quantize,
    dequantize=reference.dequantize,
    priority=0,
    description="reference implementation in plain PyTorch (docs/semantics.md, bit for bit)",
)

own_outputs(backend)  # outputs allocated here: no per-call check (mxquant/outputs.py)
