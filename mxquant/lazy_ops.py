"""mxquant's torch custom ops are registered when something first needs them, not at `import mxquant`.

Registering one op (torch.library.custom_op with its fake and autograd formula) costs about a
millisecond and ~115 long-lived Python objects. Twelve of them at import pushed `import mxquant`
past the allocation count at which Python runs a full garbage collection over the ~170k objects
`import torch` leaves (40-70 ms on the 2-core EPYC; docs/performance.md). The public functions
need no op on their eager path (call_path._eager); a call that goes through the dispatcher
(torch.compile, fake or meta tensors, an input that requires grad) looks its op up as
`torch.ops.mxquant.<name>`, and so does anyone else (opcheck, a loaded torch.export program):
the namespace below imports the module that defines the op on that first lookup. Under
torch.compile the lookup happens while dynamo traces, so the op exists before it is called.
"""

from __future__ import annotations

import importlib

import torch

# op name -> the module whose import registers it (with its fake and autograd formula)
OP_MODULES = {
    "quantize": "mxquant.custom_ops",
    "dequantize": "mxquant.custom_ops",
    "fake_quantize": "mxquant.fake_quant",
    "expand_tile_scales": "mxquant.tile_scales",
    "quantize_colwise": "mxquant.custom_ops_training",
    "quantize_rowcol": "mxquant.custom_ops_training",
    "quantize_2d": "mxquant.custom_ops_training",
    "quantize_grouped": "mxquant.custom_ops_training",
    "quantize_grouped_colwise": "mxquant.custom_ops_training",
    "mxfp4_quantize": "mxquant.custom_ops_fp4",
    "mxfp4_dequantize": "mxquant.custom_ops_fp4",
    "nvfp4_quantize": "mxquant.custom_ops_fp4",
    "nvfp4_dequantize": "mxquant.custom_ops_fp4",
}

_BASE = getattr(getattr(torch, "_ops", None), "_OpNamespace", None)


if _BASE is not None:
    class _MxquantNamespace(_BASE):
        """torch.ops.mxquant: an op mxquant defines is registered (its module imported) on first lookup."""

        __module__ = _BASE.__module__  # torch names an op's module after its namespace's; dynamo resolves it

        def __getattr__(self, name: str):
            module = OP_MODULES.get(name)
            if module is not None:
                importlib.import_module(module)
            return super().__getattr__(name)


def install() -> bool:
    """Make torch.ops.mxquant register mxquant's ops on first lookup. Where this torch's op
    namespaces cannot be extended so, register them all now instead (correct, only slower to
    import); returns whether the lazy namespace is in place."""
    namespace = torch.ops.mxquant
    if _BASE is not None and type(namespace) in (_BASE, _MxquantNamespace):
        namespace.__class__ = _MxquantNamespace
        return True
    register_all()
    return False


def register_all() -> None:
    """Register every mxquant custom op now."""
    for module in sorted(set(OP_MODULES.values())):
        importlib.import_module(module)
