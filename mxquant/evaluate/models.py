"""The two models, built by transformers from SRC's config.json: the source (SRC's tensors, as
`from_pretrained(SRC)` loads them) and the converted one (the same architecture loaded from
DST's tensors, quantized ones dequantized by mxquant: files.converted_state_dict, through
transformers' own loading path and its checkpoint conversion, so fused in-memory MoE experts
are built from per-expert files as for the source).

Which in-memory parameters are quantized is read off transformers' own name mapping (each
parameter's reverted checkpoint names, `revert_weight_conversion`, transformers 5; the names
themselves before), never guessed from values. Parameters built only from tensors DST keeps
are checked equal to the source's and then shared with it (one copy in memory).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..checkpoint.stio import CheckpointError
from .files import Pair


@dataclass
class Models:
    source: object
    converted: object
    dtype: object
    quantized_params: dict[str, list[str]]
    """In-memory parameter name -> the quantized file tensors it is built from."""
    notes: list[str] = field(default_factory=list)

    @property
    def layers(self) -> list[str]:
        """Modules that own quantized parameters directly (a Linear; a fused-experts module)."""
        return sorted({n.rpartition(".")[0] for n in self.quantized_params})


def transformers_or_refuse():
    try:
        import transformers
    except ImportError as e:
        raise CheckpointError(f"mxquant eval needs transformers to build the model ({e}); "
                              "pip install transformers") from None
    return transformers


def compute_dtype(pair: Pair):
    """The dtype the quantized weights are stored in, in SRC (bf16 for most checkpoints): both
    models run in it. Refused when the quantized weights come in several dtypes."""
    from ..checkpoint.stio import DTYPES

    kinds = {pair.src[n][1].dtype for n in pair.quantized} or {
        t.dtype for _, t in pair.src.values() if t.dtype in ("F32", "F16", "BF16")}
    if len(kinds) != 1:
        raise CheckpointError(f"SRC's weights come in several dtypes ({', '.join(sorted(kinds)) or 'none'}); "
                              "mxquant eval runs both models in the one dtype SRC stores them in")
    return DTYPES[kinds.pop()]


def _model_class(transformers, config):
    mapping = transformers.AutoModelForCausalLM._model_mapping
    try:
        return mapping[type(config)]
    except KeyError:
        raise CheckpointError(f"transformers {transformers.__version__} has no causal-LM model for "
                              f"model_type {config.model_type!r}; mxquant eval runs AutoModelForCausalLM") from None


def _quiet(transformers):
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _loaded(what: str, model_and_info) -> object:
    model, info = model_and_info
    bad = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "mismatched_keys")}
    for k, names in bad.items():
        if names:
            raise CheckpointError(f"{what}: transformers reports {len(names)} {k.replace('_', ' ')} (first: "
                                  f"{names[0]}); the model would not run on the checkpoint's weights")
    return model.eval()


def _kwargs(cls, dtype) -> dict:
    kw = {"dtype": dtype, "output_loading_info": True}
    can = getattr(cls, "_can_set_experts_implementation", None)
    if can is not None and can():
        kw["experts_implementation"] = "eager"  # per-expert F.linear calls (activation fake-quant sees them)
    return kw


def _file_names(model, names: list[str]) -> dict[str, list[str]]:
    """In-memory parameter name -> the checkpoint tensor names transformers builds it from."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: in-memory names are the checkpoint's
        return {n: [n] for n in names}
    import torch

    sd = model.state_dict()
    return {n: list(revert_weight_conversion(model, {n: sd[n].to(torch.device("meta"))})) for n in names}


def built(what: str, step):
    """`step()`, transformers' failure on SRC's config.json (an unknown model_type, a malformed
    field) as a one-line CheckpointError."""
    try:
        return step()
    except (CheckpointError, MemoryError, RecursionError, ImportError):  # (a missing package is no config problem)
        raise
    except Exception as e:  # noqa: BLE001 - whatever transformers raises on a config it cannot use
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"SRC's config.json: transformers cannot {what} ({type(e).__name__}: "
                              f"{first if len(first) <= 200 else first[:200] + '...'})") from None


def auto_config(transformers, folder: str):
    return built("read it", lambda: transformers.AutoConfig.from_pretrained(folder))


LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_INDEX = re.compile(r"(?:^|\.)(\d+)(?=\.)")


def _layer_counts(config: dict, where: str = "", depth: int = 0):
    """(key path, value) of every layer count in config.json and its nested configs."""
    for k, v in config.items():
        if k in LAYER_KEYS and type(v) is int:
            yield where + k, v
        elif isinstance(v, dict) and depth < 4:
            yield from _layer_counts(v, f"{where}{k}.", depth + 1)


def check_layer_counts(pair: Pair) -> None:
    """Refuse, from the headers alone, a config.json with more layers than SRC's tensor names
    number: every layer has parameters, named `...layers.<i>.`-style, so a real model's layer
    count is at most the number of distinct `.<i>.` indices among its tensor names. (Building a
    config of a million layers, even on the meta device, takes minutes and gigabytes.)"""
    indices = {int(i) for n in pair.src for i in _INDEX.findall(n)}
    for key, n in _layer_counts(pair.config):
        if n > len(indices):
            raise CheckpointError(f"SRC's config.json has {key} = {n:,}, but its tensor names hold at most "
                                  f"{len(indices):,} layers (distinct `.<i>.` indices); config.json and the weights "
                                  "do not match")


def check_config_matches(pair: Pair) -> int:
    """Refuse, before allocating anything, a config.json that describes a bigger model than
    SRC's files hold (a config without the model's sizes builds transformers' defaults: a 7B
    Llama from a tiny checkpoint). The model is built on the meta device: no memory; its layer
    count is bounded from the tensor names first (check_layer_counts)."""
    import torch

    transformers = transformers_or_refuse()
    check_layer_counts(pair)
    config = auto_config(transformers, pair.src_dir)
    cls = _model_class(transformers, config)
    with torch.device("meta"):
        model = built(f"build a {cls.__name__} from it", lambda: cls._from_config(config))
    want = sum(p.numel() for p in model.parameters())
    have = sum(math.prod(t.shape) for _, t in pair.src.values())
    if want > have:
        raise CheckpointError(f"SRC's config.json describes a {cls.__name__} of {want:,} parameters, but its files "
                              f"hold {have:,} values; config.json and the weights do not match")
    return vocab_size(config)


def vocab_size(config) -> int:
    """The vocabulary the model is built with (a multimodal config's text part)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "vocab_size", None)
    if type(n) is not int or n < 1:
        raise CheckpointError("SRC's config has no vocab_size; mxquant eval needs a causal language model")
    return n


def load(pair: Pair, device: str) -> Models:
    """Both models on `device`, in SRC's dtype; the converted one first (its state dict is
    freed before the source is read)."""
    import torch

    transformers = transformers_or_refuse()
    _quiet(transformers)
    dtype = compute_dtype(pair)
    config = auto_config(transformers, pair.src_dir)
    cls = _model_class(transformers, config)
    from .files import converted_state_dict

    sd = converted_state_dict(pair)
    converted = _loaded("DST", cls.from_pretrained(None, config=config, state_dict=sd, **_kwargs(cls, dtype)))
    del sd
    converted.to(device)
    source = _loaded("SRC", cls.from_pretrained(pair.src_dir, **_kwargs(cls, dtype))).to(device)
    params = dict(converted.named_parameters())
    origin = _file_names(converted, list(params))
    quantized_files = set(pair.quantized)
    quantized = {n: [f for f in files if f in quantized_files] for n, files in origin.items()}
    quantized = {n: fs for n, fs in quantized.items() if fs}
    notes = []
    used = {f for fs in origin.values() for f in fs}
    unused = sorted(set(pair.src) - used)
    if unused:
        notes.append(f"{len(unused)} tensor(s) of the checkpoint are not parameters of transformers' "
                     f"{cls.__name__} and take no part in either model (first: {unused[0]})")
    src_params = dict(source.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            if n in quantized:
                continue
            if not torch.equal(p, src_params[n]):
                raise CheckpointError(f"{n}: built from tensors DST keeps, yet it differs from the source "
                                      "model's; refusing to compare")
            p.data = src_params[n].data  # one copy in memory
    return Models(source, converted, dtype, quantized, notes)


def available_bytes(device: str) -> int | None:
    """Free memory of `device` (CPU: MemAvailable), None where unknown."""
    import torch

    if device.startswith(("cuda", "xpu")):
        return getattr(torch, device.split(":")[0]).mem_get_info(torch.device(device))[0]
    from ..checkpoint.driver import proc_bytes

    return proc_bytes("/proc/meminfo", "MemAvailable")


def check_memory(pair: Pair, device: str, dtype, logits_bytes: int) -> int:
    """Refuse, before loading, a pair that does not fit: two copies of the model in `dtype`
    plus the activations of one forward pass (`logits_bytes`, the dominant part) on `device`,
    and two copies on the host while the converted model loads. Returns the estimate."""
    from ..checkpoint.stio import itemsize

    def in_dtype(t):
        return dtype.itemsize if t.dtype in ("F32", "F16", "BF16") else itemsize(t.dtype)

    model = pair.bytes_of(pair.src, in_dtype)
    need = 2 * model + logits_bytes
    places = [(device, need)] + ([("cpu", 2 * model)] if device != "cpu" else [])
    for where, n in places:
        free = available_bytes(where)
        if free is not None and n > free:
            raise CheckpointError(f"not enough memory on {where}: about {n / 1e9:.2f} GB needed (two copies of the "
                                  f"model, {model / 1e9:.2f} GB each, plus activations), {free / 1e9:.2f} GB free; "
                                  "use a device with more memory, or a smaller --batch / --seq-len")
    return need
