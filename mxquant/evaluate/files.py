"""SRC and DST as files: DST checked to be SRC converted to compressed-tensors MXFP8, and the
converted weights read back through mxquant's own dequantization.

DST must be an `mxfp8-quantized` compressed-tensors checkpoint of SRC: the same config.json
apart from `quantization_config` (and `transformers_version`), SRC's tensors plus one
`X_scale` per quantized `X`; every quantized `X` is F8_E4M3 of SRC's shape with a U8 scale of
shape [..., K/32]; every other tensor has SRC's dtype, shape and bytes. Anything else is a
CheckpointError (exit 2), found before any model is built.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..checkpoint.fmt import DATA_DTYPE, FORMAT, SCALE_DTYPE, scale_name
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
    """File names of the quantized tensors (each has `<name>_scale` in DST)."""

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


def _check_quantization_config(cfg: dict) -> None:
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        raise CheckpointError("DST is not a quantized checkpoint (its config.json has no quantization_config); "
                              "give the output of `mxquant convert` (compressed-tensors mxfp8-quantized)")
    formats = {q.get("format")} | {g.get("format") for g in (q.get("config_groups") or {}).values()
                                   if isinstance(g, dict)}
    if q.get("quant_method") != "compressed-tensors" or formats - {None} != {FORMAT}:
        raise CheckpointError(f"DST is not a compressed-tensors {FORMAT} checkpoint (quant_method "
                              f"{q.get('quant_method')!r}, format {sorted(map(str, formats - {None}))}); "
                              "mxquant eval reads what `mxquant convert` writes")


def read_pair(src: str, dst: str) -> Pair:
    """SRC and DST checked against each other from config.json and the headers (no tensor data)."""
    src, dst = os.fspath(src), os.fspath(dst)
    for folder, what in ((src, "SRC"), (dst, "DST")):
        if not os.path.isdir(folder):
            raise CheckpointError(f"{what} {folder} is not a folder")
    src_cfg, dst_cfg = _config(src, "SRC"), _config(dst, "DST")
    if "quantization_config" in src_cfg:
        raise CheckpointError("SRC is already quantized (its config.json has a quantization_config); "
                              "give the original checkpoint as SRC")
    _check_quantization_config(dst_cfg)
    differ = sorted(k for k in set(src_cfg) | set(dst_cfg)
                    if k not in CONFIG_FREE and src_cfg.get(k, ...) != dst_cfg.get(k, ...))
    if differ:
        raise CheckpointError(f"SRC and DST are different models: their config.json differ in {', '.join(differ[:8])}"
                              f"{' ...' if len(differ) > 8 else ''}")
    s, d = _tensors(src, "SRC"), _tensors(dst, "DST")
    quantized = sorted(n for n, (_, t) in d.items() if t.dtype == DATA_DTYPE)
    scales = {scale_name(n) for n in quantized}
    extra = sorted(set(d) - set(s) - scales)
    missing = sorted(set(s) - set(d))
    if extra or missing:
        what = (f"DST has {len(extra)} tensor(s) SRC lacks (first: {extra[0]})" if extra else
                f"DST lacks {len(missing)} tensor(s) of SRC (first: {missing[0]})")
        raise CheckpointError(f"SRC and DST have different tensor sets: {what}")
    for n in quantized:
        _check_quantized(n, s[n][1], d[n][1], d.get(scale_name(n), (None, None))[1])
    for n in s:
        if n not in scales and n not in quantized and (s[n][1].dtype, s[n][1].shape) != (d[n][1].dtype, d[n][1].shape):
            raise CheckpointError(f"{n}: {d[n][1].dtype} {list(d[n][1].shape)} in DST, {s[n][1].dtype} "
                                  f"{list(s[n][1].shape)} in SRC; a tensor DST keeps must be SRC's")
    return Pair(src, dst, src_cfg, s, d, quantized)


def _check_quantized(name: str, s: TensorInfo, d: TensorInfo, scale: TensorInfo | None) -> None:
    if s.dtype not in FLOAT_SOURCES or s.shape != d.shape or not d.shape:
        raise CheckpointError(f"{name}: F8_E4M3 {list(d.shape)} in DST but {s.dtype} {list(s.shape)} in SRC; "
                              "DST is not SRC converted")
    want = (*d.shape[:-1], d.shape[-1] // 32)
    if scale is None or scale.dtype != SCALE_DTYPE or scale.shape != want or d.shape[-1] % 32:
        got = "missing" if scale is None else f"{scale.dtype} {list(scale.shape)}"
        raise CheckpointError(f"{scale_name(name)}: {got}; an mxfp8-quantized weight {list(d.shape)} needs a "
                              f"U8 scale {list(want)} (E8M0 exponents, linear layout)")


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
    """DST's weights in the files' naming: each quantized X as mxquant.mxfp8_dequantize(X,
    X_scale) in SRC's dtype for X (exact: every MXFP8 value is a bf16/f32 value), every other
    tensor as stored."""
    import torch

    import mxquant

    from ..checkpoint.stio import DTYPES

    read = _reader()
    quantized = set(pair.quantized)
    out = {}
    for n in pair.src:
        path = pair.dst[n][0]
        if n in quantized:
            data = read(path, n)
            scale = read(pair.dst[scale_name(n)][0], scale_name(n)).view(torch.float8_e8m0fnu)
            out[n] = mxquant.mxfp8_dequantize(data, scale, out_dtype=DTYPES[pair.src[n][1].dtype])
        else:
            out[n] = read(path, n)
    return out
