"""NVFP4's per-tensor global scale, shared where llm-compressor shares it.

llm-compressor's model_free_ptq (0.14, `microscale.py`) gives the weights of one fused set a
single global scale, computed from the largest |x| over the set: q/k/v of an attention module
(`...attn|attention.{q,k,v}_proj`), MLA's `wq_a` and `wkv_a_with_mqa`, `...mlp.{gate,up}_proj`,
and `<prefix>.{w1,w3}` (Mixtral's experts). Per-expert `experts.<i>.gate_proj/up_proj` match no
pattern there and keep one scale each. The set is the quantized weights of one prefix (an
ignored or kept member takes no part, as there). Where llm-compressor fails instead (a set split
across shards in a way its per-file name matching rejects, a q_proj without k/v), the sets here
are still formed by prefix.

The scale: g = 2688 / amax as compressed-tensors computes it (reference_fp4.nvfp4_global_scale
on the set's amax, in the weights' dtype), amax over the finite elements. The members are read
once each (in chunks, from whichever shard holds them) the first time the set is needed.
"""

from __future__ import annotations

import math
import re
import threading

import torch

_SETS = (
    re.compile(r"^(.*(?:attn|attention))\.(?:q|k|v)_proj\.weight$"),
    re.compile(r"^(.*(?:attn|attention))\.(?:wq_a|wkv_a_with_mqa)\.weight$"),
    re.compile(r"^(.*mlp)\.(?:gate|up)_proj\.weight$"),
    re.compile(r"^(.*)\.(?:w1|w3)\.weight$"),
)


def set_key(name: str):
    """The fused set a weight belongs to (pattern, prefix), or None."""
    for i, p in enumerate(_SETS):
        m = p.match(name)
        if m:
            return i, m.group(1)
    return None


class GlobalScales:
    """name -> float32 (1,) global scale, for the quantized weights of an NVFP4 conversion.
    `where`: name -> (path, data_start, TensorInfo) of every quantized weight."""

    def __init__(self, where: dict, chunk_elems: int = 1 << 22):
        self._where = where
        self._chunk = chunk_elems
        self._members: dict = {}
        for name in where:
            self._members.setdefault(set_key(name) or ("alone", name), []).append(name)
        self._cache: dict = {}
        self._lock = threading.Lock()  # shards converted at once (shardpool.py) share it: each set read once

    def __call__(self, name: str, device) -> torch.Tensor:
        key = set_key(name) or ("alone", name)
        with self._lock:
            g = self._scale(key)
        return g.to(device)

    def _scale(self, key) -> torch.Tensor:
        if key not in self._cache:
            from ..reference_fp4 import nvfp4_global_scale

            amaxes = [self._amax(n) for n in self._members[key]]
            dtype = amaxes[0].dtype
            for a in amaxes[1:]:
                dtype = torch.promote_types(dtype, a.dtype)
            amax = torch.stack([a.to(dtype) for a in amaxes]).amax()
            self._cache[key] = nvfp4_global_scale(amax.reshape(1))
        return self._cache[key]

    def _amax(self, name: str) -> torch.Tensor:
        from .stio import DTYPES
        from .tensors import read_range

        path, data_start, info = self._where[name]
        dtype = DTYPES[info.dtype]
        total = math.prod(info.shape)
        amax = torch.zeros((), dtype=dtype)
        with open(path, "rb") as f:
            for e0 in range(0, total, self._chunk):
                n = min(self._chunk, total - e0)
                x = read_range(f, data_start + info.begin + e0 * dtype.itemsize, n * dtype.itemsize).view(dtype)
                amax = torch.maximum(amax, finite_amax(x))
        return amax


def finite_amax(x: torch.Tensor) -> torch.Tensor:
    """The largest |x| over x's finite elements (0 for none), in x's dtype: max(|max x|, |min x|)
    from one aminmax pass where every element is finite (torch's isfinite on bf16 alone took 16x that
    pass), else over the finite elements masked."""
    lo, hi = torch.aminmax(x)
    m = torch.maximum(hi.abs(), lo.abs())
    if bool(m.isfinite()):
        return m
    return torch.where(x.isfinite(), x, 0).abs().amax()
