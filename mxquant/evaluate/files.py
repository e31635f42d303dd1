"""SRC and DST as files: DST checked to be SRC converted by `mxquant convert` (any --scheme), and
the converted weights read back through mxquant's own dequantization (dequant.py).

DST must be a compressed-tensors checkpoint of one of convert's schemes (its format, and the
weights' and input activations' arguments of that scheme: mxquant.checkpoint.schemes): the same
config.json apart from `quantization_config` (and `transformers_version`), and SRC's tensors with
each quantized `<m>.weight` replaced by exactly the scheme's tensors, of the dtypes and shapes the
scheme gives for SRC's shape (MXFP8: `weight` F8_E4M3 + U8 `weight_scale` [..., K/32]; MXFP4:
`weight_packed` + U8 `weight_scale`; NVFP4A16: `weight_packed` + F8_E4M3 `weight_scale` +
`weight_global_scale`; FP8 block: `weight` F8_E4M3 + `weight_scale` [ceil(N/128), K/128] in SRC's
dtype); every other tensor has SRC's dtype, shape and bytes. Anything else is a CheckpointError
(exit 2), found before any model is built.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..checkpoint.schemes import SCHEMES, Scheme
from ..checkpoint.srcfiles import load_json, source_shards
from ..checkpoint.stio import CheckpointError, TensorInfo, itemsize, read_header

FLOAT_SOURCES = ("F32", "F16", "BF16")
CONFIG_FREE = ("quantization_config", "transformers_version")
"""config.json keys that may differ between SRC and DST."""


@dataclass
class Pair:
    """SRC and DST read from their headers. `src`/`dst`: tensor name -> (shard path, TensorInfo)."""
    src_dir: str
    dst_dir: str
    config: dict
    src: dict[str, tuple[str, TensorInfo]]
    dst: dict[str, tuple[str, TensorInfo]]
    quantized: list[str]
    """SRC's names of the quantized tensors (DST holds the scheme's outputs in their place)."""
    scheme: Scheme = SCHEMES["mxfp8"]

    def outputs(self, name: str) -> list[tuple[str, str, tuple]]:
        """DST's tensors (name, dtype, shape) of SRC's quantized tensor `name`."""
        t = self.src[name][1]
        return self.scheme.outputs(name, t.dtype, t.shape)

    @property
    def kept(self) -> list[str]:
        return [n for n in self.src if n not in set(self.quantized)]

    def bytes_of(self, names, itemsize_of=None) -> int:
        """Bytes of SRC's tensors `names` (each at `itemsize_of(info)` bytes an element if given)."""
        total = 0
        for n in names:
            t = self.src[n][1]
            total += math.prod(t.shape) * (itemsize_of(t) if itemsize_of else itemsize(t.dtype))
        return total


def _tensors(folder: str, what: str) -> dict[str, tuple[str, TensorInfo]]:
    try:
        shards, _ = source_shards(folder)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    out = {}
    for shard in shards:
        path = os.path.join(folder, shard)
        infos, _, _ = read_header(path)
        for name, info in infos.items():
            if name in out:
                raise CheckpointError(f"{what}: tensor {name} is in two shards")
            out[name] = (path, info)
    return out


def _config(folder: str, what: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {folder} has no config.json; it is not a Hugging Face checkpoint")
    cfg = load_json(path, f"{what}/config.json")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{what}/config.json is not a JSON object")
    return cfg


FORMATS = {s.format: s for s in SCHEMES.values()}
ARGS = ("num_bits", "type", "group_size", "strategy", "block_structure", "dynamic")
"""The quantization arguments that identify a scheme (compared with what convert writes)."""


def _scheme(cfg: dict) -> Scheme:
    """The convert scheme DST's quantization_config names, refused unless it is one of them."""
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        raise CheckpointError("DST is not a quantized checkpoint (its config.json has no quantization_config); "
                              "give the output of `mxquant convert`")
    groups = [g for g in (q.get("config_groups") or {}).values() if isinstance(g, dict)]
    found = sorted(map(str, ({q.get("format")} | {g.get("format") for g in groups}) - {None}))
    if q.get("quant_method") != "compressed-tensors" or len(found) != 1 or found[0] not in FORMATS:
        raise CheckpointError(f"DST is not a compressed-tensors checkpoint of one of `mxquant convert`'s schemes "
                              f"(quant_method {q.get('quant_method')!r}, format {found}; mxquant eval reads "
                              f"{', '.join(FORMATS)})")
    scheme = FORMATS[found[0]]
    want = next(iter(scheme.quantization_config([])["config_groups"].values()))
    for g in groups:
        for key in ("weights", "input_activations"):
            got, ref = g.get(key) or {}, want[key] or {}
            bad = [f"{a}={got.get(a)!r}" for a in ARGS if got.get(a) != ref.get(a)]
            if bad:
                raise CheckpointError(f"DST's {key} are not those of --scheme {scheme.name} ({found[0]}): "
                                      f"{', '.join(bad)}; mxquant eval reads what `mxquant convert` writes")
    return scheme


def _quantized(scheme: Scheme, s: dict, d: dict) -> list[str]:
    """SRC's tensors DST holds quantized: a floating-point tensor of 2+ dimensions whose first
    output (the data) DST holds, under its own name as F8_E4M3 or under the scheme's new name."""
    out = []
    for n, (_, t) in s.items():
        if t.dtype not in FLOAT_SOURCES or len(t.shape) < 2:
            continue
        data = scheme.outputs(n, t.dtype, t.shape)[0][0]
        if (data != n and data in d and n not in d) or (data == n and n in d and d[n][1].dtype == "F8_E4M3"):
            out.append(n)
    return sorted(out)


def read_pair(src: str, dst: str) -> Pair:
    """SRC and DST checked against each other from config.json and the headers (no tensor data)."""
    src, dst = os.fspath(src), os.fspath(dst)
    for folder, what in ((src, "SRC"), (dst, "DST")):
        if not os.path.isdir(folder):
            raise CheckpointError(f"{what} {folder} is not a folder")
    src_cfg, dst_cfg = _config(src, "SRC"), _config(dst, "DST")
    if src_cfg.get("quantization_config") is not None:  # null: not quantized, as convert reads it
        raise CheckpointError("SRC is already quantized (its config.json has a quantization_config); "
                              "give the original checkpoint as SRC")
    scheme = _scheme(dst_cfg)
    differ = sorted(k for k in set(src_cfg) | set(dst_cfg)
                    if k not in CONFIG_FREE and src_cfg.get(k, ...) != dst_cfg.get(k, ...))
    if differ:
        raise CheckpointError(f"SRC and DST are different models: their config.json differ in {', '.join(differ[:8])}"
                              f"{' ...' if len(differ) > 8 else ''}")
    s, d = _tensors(src, "SRC"), _tensors(dst, "DST")
    pair = Pair(src, dst, src_cfg, s, d, _quantized(scheme, s, d), scheme)
    want = {n: (t.dtype, tuple(t.shape)) for n, (_, t) in s.items() if n not in set(pair.quantized)}
    for n in pair.quantized:
        want.update({o: (dtype, tuple(shape)) for o, dtype, shape in pair.outputs(n)})
    extra, missing = sorted(set(d) - set(want)), sorted(set(want) - set(d))
    if extra or missing:
        what = (f"DST has {len(extra)} tensor(s) SRC lacks (first: {extra[0]})" if extra else
                f"DST lacks {len(missing)} tensor(s) of SRC (first: {missing[0]})")
        raise CheckpointError(f"SRC and DST have different tensor sets for --scheme {scheme.name}: {what}")
    quantized_outputs = {o for n in pair.quantized for o, _, _ in pair.outputs(n)}
    for o, (dtype, shape) in want.items():
        got = (d[o][1].dtype, tuple(d[o][1].shape))
        if got == (dtype, shape):
            continue
        if o in quantized_outputs:
            raise CheckpointError(f"{o}: {got[0]} {list(got[1])} in DST; the {scheme.format} format needs {dtype} "
                                  f"{list(shape)} there; DST is not SRC converted")
        raise CheckpointError(f"{o}: {got[0]} {list(got[1])} in DST, {dtype} {list(shape)} in SRC; a tensor DST "
                              "keeps must be SRC's")
    return pair


def _reader():
    from safetensors import safe_open

    opened: dict[str, object] = {}

    def read(path: str, name: str):
        if path not in opened:
            opened[path] = safe_open(path, "pt")
        return opened[path].get_tensor(name)

    return read


def check_kept_identical(pair: Pair) -> None:
    """Every tensor DST keeps has SRC's bytes (read one tensor at a time)."""
    import torch

    read = _reader()
    for n in pair.kept:
        a, b = read(*pair.src[n][:1], n), read(*pair.dst[n][:1], n)
        if not torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)):
            raise CheckpointError(f"{n}: DST keeps this tensor unquantized but its bytes differ from SRC's; "
                                  "DST is not SRC converted")


def converted_state_dict(pair: Pair) -> dict:
    """DST's weights in SRC's naming: each quantized tensor as dequant.dequantize gives it from
    the scheme's tensors (mxquant's dequantization, in SRC's dtype for it), every other tensor as
    stored."""
    from .dequant import dequantize

    read = _reader()
    quantized = set(pair.quantized)
    out = {}
    for n in pair.src:
        if n in quantized:
            out[n] = dequantize(pair.scheme, [read(pair.dst[o][0], o) for o, _, _ in pair.outputs(n)],
                                pair.src[n][1].dtype)
        else:
            out[n] = read(pair.dst[n][0], n)
    return out
