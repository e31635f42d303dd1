"""What is measured, accumulated over every forward pass (sums in float64):

- logits_rel_error = ||a - b|| / ||a|| over all logits of all positions (a: source, b:
  converted; float32 logits);
- top1_agreement: the fraction of positions whose argmax is the same;
- kl_divergence: the mean over positions of KL(source || converted) =
  sum_v p_s(v) (log p_s(v) - log p_c(v)), in nats, from float64 log-softmax of the float32 logits;
- perplexity (user data only): exp(mean next-token negative log-likelihood) of each model;
- per layer (each module owning quantized parameters: a Linear, a fused-experts module):
  output SQNR = 10 log10(sum ||y_s||^2 / sum ||y_s - y_c||^2), where y_s is the source
  module's output in the source model's forward pass and y_c the converted module's output on
  the very same inputs (the source model's; so each layer's own error, not what the layers
  before it added). Null when the outputs are identical (infinite SQNR: `identical` is true)
  or the layer never ran (`calls` is 0).
"""

from __future__ import annotations

import math

import torch


CHUNK = 64
"""Positions whose log-softmax is taken at once, in float64."""


class LogitStats:
    def __init__(self):
        self.diff2 = self.ref2 = self.kl = 0.0
        self.agree = self.positions = 0
        self.nll = {"source": 0.0, "converted": 0.0}
        self.predicted = 0

    def add(self, ids: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
        """ids [B, L]; a, b: logits [B, L, V] of the source and converted model."""
        a, b = a.float(), b.float()
        self.diff2 += (a - b).square().sum(dtype=torch.float64).item()
        self.ref2 += a.square().sum(dtype=torch.float64).item()
        self.agree += (a.argmax(-1) == b.argmax(-1)).sum().item()
        self.positions += a.shape[0] * a.shape[1]
        targets = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1).to(a.device).reshape(-1)
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        for i in range(0, a.shape[0], CHUNK):  # float64, a few positions at a time (small KLs cancel)
            la, lb = (torch.log_softmax(x[i:i + CHUNK].double(), -1) for x in (a, b))
            self.kl += (la.exp() * (la - lb)).sum().item()
            t = targets[i:i + CHUNK]
            keep = t >= 0
            for key, lp in (("source", la), ("converted", lb)):
                self.nll[key] -= lp[keep].gather(-1, t[keep].unsqueeze(-1)).sum().item()
            self.predicted += int(keep.sum())

    def result(self, user_data: bool) -> dict:
        ppl = None
        if user_data and self.predicted:
            ppl = {k: math.exp(v / self.predicted) for k, v in self.nll.items()}
        return {"logits_rel_error": math.sqrt(self.diff2 / self.ref2) if self.ref2 else 0.0,
                "top1_agreement": self.agree / self.positions,
                "kl_divergence": self.kl / self.positions,
                "kl_direction": "KL(source || converted), nats, mean over positions",
                "perplexity": ppl, "positions": self.positions}


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next(t for t in out if isinstance(t, torch.Tensor))
    raise TypeError(f"module output {type(out).__name__} holds no tensor")


class LayerErrors:
    """Forward hooks on the source model's layers: each runs the converted layer on the inputs
    the source layer got (under `context`, the activation fake-quantization when on)."""

    def __init__(self, source, converted, names: list[str], context):
        self.signal = dict.fromkeys(names, 0.0)
        self.noise = dict.fromkeys(names, 0.0)
        self.calls = dict.fromkeys(names, 0)
        self._context = context
        self._handles = [source.get_submodule(n).register_forward_hook(self._hook(n, converted.get_submodule(n)),
                                                                       with_kwargs=True) for n in names]

    def _hook(self, name, other):
        def hook(module, args, kwargs, output):
            with torch.no_grad(), self._context():
                y_c = _first_tensor(other(*args, **kwargs)).float()
            y_s = _first_tensor(output).float()
            self.signal[name] += y_s.square().sum(dtype=torch.float64).item()
            self.noise[name] += (y_s - y_c).square().sum(dtype=torch.float64).item()
            self.calls[name] += 1
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def result(self) -> list[dict]:
        rows = []
        for n in self.signal:
            s, e = self.signal[n], self.noise[n]
            identical = e == 0.0
            sqnr = 10 * math.log10(s / e) if s > 0 and e > 0 else None
            rows.append({"name": n, "output_sqnr_db": sqnr, "output_rel_error": math.sqrt(e / s) if s else None,
                         "identical": identical and bool(self.calls[n]), "calls": self.calls[n]})
        return sorted(rows, key=lambda r: (r["output_sqnr_db"] is None, r["output_sqnr_db"] or 0.0, r["name"]))
