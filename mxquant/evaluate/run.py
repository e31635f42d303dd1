"""`evaluate(src, dst, ...)`: what converting SRC to DST cost in accuracy (docs/eval.md).

Order of work: the device; SRC and DST checked from config.json and headers (files.py); the
inputs (inputs.py); the memory estimate against what is free; the bytes of every tensor DST
keeps compared with SRC's; both models built (models.py); then each batch runs through the
source model, whose hooks run each converted layer on the same inputs (metrics.LayerErrors),
and through the converted model; logits compared (metrics.LogitStats). Every refusal is a
CheckpointError raised before the forward passes, but for the one --fake-quant-activations
can only find by running (actquant.check_all_emulated).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field

from ..checkpoint.fmt import SCALE_MODES
from ..checkpoint.stio import CheckpointError

DEFAULT_BATCH = 4
DEFAULT_SEQ_LEN = 128
LOGITS_COPIES = 6
"""float32 logits-sized buffers alive at once while two batches of logits are compared."""


@dataclass
class EvalResult:
    src: str
    dst: str
    device: str
    dtype: str
    inputs: dict
    scheme: str
    """`mxquant convert`'s --scheme DST was written with (mxfp8, mxfp4, nvfp4a16, fp8-block)."""
    fake_quant_activations: bool
    activation_scale_mode: str | None
    logits_rel_error: float
    top1_agreement: float
    kl_divergence: float
    kl_direction: str
    perplexity: dict | None
    """{"source": ..., "converted": ...} on user data (--text, --input-ids); None on random tokens."""
    positions: int
    layers: list[dict]
    """Worst first: {"name", "output_sqnr_db", "output_rel_error", "identical", "calls"}."""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    memory_estimate_bytes: int = 0

    def as_json(self) -> dict:
        return asdict(self)


def _logits_bytes(batches, vocab: int) -> int:
    return max(b.numel() for b in batches) * vocab * 4 * LOGITS_COPIES


def evaluate(src, dst, *, text=None, input_ids=None, batch: int = DEFAULT_BATCH, seq_len: int | None = None,
             seed: int = 0, device: str = "auto", fake_quant_activations: bool = False,
             activation_scale_mode: str | None = None, progress=None) -> EvalResult:
    """Run SRC (as stored) and DST (weights dequantized by mxquant) on the same tokens and
    measure the difference (docs/eval.md). `activation_scale_mode`: the E8M0 rule of MXFP8 / MXFP4
    fake-quantized activations (None: rceil). `progress(message)` is told each stage."""
    import torch

    from ..checkpoint.driver import resolve_device
    from . import actquant, dequant, files, inputs, metrics, models

    say = progress or (lambda message: None)
    t0 = time.perf_counter()
    if activation_scale_mode is not None and activation_scale_mode not in SCALE_MODES:
        raise CheckpointError(f"activation scale mode {activation_scale_mode!r} is not one of {', '.join(SCALE_MODES)}")
    if input_ids is not None and seq_len is not None:
        raise CheckpointError("--seq-len does not apply to --input-ids (its sequences are used as given)")
    dev = resolve_device(device)
    pair = files.read_pair(src, dst)
    round_trip = mode_name = None
    if fake_quant_activations:
        round_trip, mode_name = dequant.activation_round_trip(pair.scheme, activation_scale_mode)
    dtype = models.compute_dtype(pair)
    vocab = models.check_config_matches(pair)
    feed = inputs.choose(text, input_ids, pair.src_dir, vocab, batch, DEFAULT_SEQ_LEN if seq_len is None else seq_len,
                         seed)
    need = models.check_memory(pair, dev, dtype, _logits_bytes(feed.batches, vocab))
    say("comparing the tensors DST keeps with SRC's")
    files.check_kept_identical(pair)
    say("building both models")
    pair_models = models.load(pair, dev)
    source, converted = pair_models.source, pair_models.converted
    mode = None
    if fake_quant_activations:
        mode = actquant.ActivationFakeQuant(converted, list(pair_models.quantized_params), round_trip)

    def context():
        return mode if mode is not None else contextlib.nullcontext()

    layers = metrics.LayerErrors(source, converted, pair_models.layers, context)
    ran = dict.fromkeys(pair_models.layers, 0)

    def counter(name):
        def hook(module, args, output):
            ran[name] += 1
        return hook

    handles = [converted.get_submodule(n).register_forward_hook(counter(n)) for n in pair_models.layers]
    stats = metrics.LogitStats()
    try:
        with torch.no_grad():
            for i, ids in enumerate(feed.batches):
                say(f"forward pass {i + 1} of {len(feed.batches)}")
                ids = ids.to(dev)
                a = source(input_ids=ids, use_cache=False).logits
                with context():
                    b = converted(input_ids=ids, use_cache=False).logits
                stats.add(ids, a, b)
                del a, b
    finally:
        layers.remove()
        for h in handles:
            h.remove()
    if mode is not None:
        actquant.check_all_emulated(mode, ran)
    logits = stats.result(feed.user_data)
    return EvalResult(
        src=pair.src_dir, dst=pair.dst_dir, device=dev, dtype=str(dtype).removeprefix("torch."),
        inputs={"kind": feed.kind, "sequences": feed.sequences, "tokens": feed.tokens,
                **({"seed": seed} if feed.kind == "random" else {})},
        scheme=pair.scheme.name, fake_quant_activations=fake_quant_activations, activation_scale_mode=mode_name,
        layers=layers.result(), notes=pair_models.notes, seconds=time.perf_counter() - t0,
        memory_estimate_bytes=need, **logits)
