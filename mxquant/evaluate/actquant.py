"""`--fake-quant-activations`: the converted model's quantized layers read inputs rounded as the
scheme's dynamic input activations are, as vLLM runs the checkpoint where it quantizes them
(MXFP8 / MXFP4: per token, blocks of 32 along K, E8M0 scales, rceil by default, FlashInfer's
rule; FP8 block: per-token groups of 128; dequant.activation_round_trip). NVFP4A16 has none.

Every `F.linear` call whose weight lives in a quantized parameter's storage (a Linear's
weight, or one expert's slice of a fused-experts parameter) gets `round_trip(input)` in place
of its input; a torch function mode sees the calls, so no model code is patched. A layer that
ran without any such call (its weights used through another op) cannot be emulated, and is
refused after the run rather than reported without its activation error.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from ..checkpoint.stio import CheckpointError


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class ActivationFakeQuant(TorchFunctionMode):
    def __init__(self, model, quantized_params: list[str], round_trip):
        super().__init__()
        params = dict(model.named_parameters())
        self._layer_of = {_storage(params[n]): n.rpartition(".")[0] for n in quantized_params}
        self.seen: set[str] = set()
        self.round_trip = round_trip

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            layer = self._layer_of.get(_storage(weight)) if isinstance(weight, torch.Tensor) else None
            if layer is not None:
                self.seen.add(layer)
                # (inside its own handler the mode is off: these calls run plainly)
                if args:
                    args = (self.round_trip(args[0]), *args[1:])
                else:
                    kwargs["input"] = self.round_trip(kwargs["input"])
        return func(*args, **kwargs)


def check_all_emulated(mode: ActivationFakeQuant, ran: dict[str, int]) -> None:
    """Every layer that ran went through F.linear with its quantized weight."""
    missed = sorted(n for n, calls in ran.items() if calls and n not in mode.seen)
    if missed:
        more = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
        raise CheckpointError(f"--fake-quant-activations: {missed[0]}{more} "
                              "computes with its quantized weight through an op other than F.linear, so its input "
                              "activations cannot be fake-quantized here; run without the option")
