"""CPU inputs under another default device (`with torch.device("meta")`, as model-building code
uses): the CPU backends allocate their outputs and scratch on the CPU whatever the default
device is. Before, cpu-native handed a meta tensor's null pointer to its C kernel (a segfault),
and the CPU output cache could keep such a block for later calls. The oracle: the same calls
outside the context."""

from __future__ import annotations

import gc

import pytest
import torch

import mxquant
from mxquant.backends import _cpu_pool as pool

BACKENDS = ["cpu-native", "cpu-eager", "cpu"]


def _calls(x, ends):
    """name -> a call of the public API on CPU inputs (the dequantize ones quantize first)."""
    def dq(b):
        q = mxquant.mxfp8_quantize(x, scale_layout="swizzled", backend=b)
        return mxquant.mxfp8_dequantize(q.data, q.scale, scale_layout="swizzled", backend=b)

    def fp4(b):
        q = mxquant.nvfp4_quantize(x, backend=b)
        return (*q, mxquant.nvfp4_dequantize(q.data, q.scale, q.global_scale, backend=b))

    return {
        "quantize": lambda b: tuple(mxquant.mxfp8_quantize(x, backend=b)),
        "dequantize": dq,
        "column-wise": lambda b: tuple(mxquant.mxfp8_quantize(x, axis=-2, backend=b)),
        "row+column": lambda b: tuple(t for q in mxquant.mxfp8_quantize_rowcol(x, backend=b) for t in q),
        "32x32": lambda b: tuple(mxquant.mxfp8_quantize_2d(x, backend=b)),
        "grouped": lambda b: tuple(mxquant.mxfp8_quantize_grouped(x, ends, backend=b)),
        "mxfp4": lambda b: tuple(mxquant.mxfp4_quantize(x, backend=b)),
        "nvfp4": fp4,
    }


def _claims(backend: str, name: str) -> bool:
    registry = mxquant.get_registry()
    caps = registry.load(next(e for e in registry.entries() if e.name == backend)).capabilities.ops
    need = {"column-wise": "quantize_colwise", "row+column": "quantize_rowcol", "32x32": "quantize_2d",
            "grouped": "quantize_grouped", "mxfp4": "mxfp4_quantize", "nvfp4": "nvfp4_quantize"}.get(name)
    return need is None or need in caps


def _u8(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_calls_under_a_meta_default_device(backend):
    x = torch.randn(256, 512, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    ends = torch.tensor([64, 64, 200, 256], dtype=torch.int32)
    checked = 0
    for name, call in _calls(x, ends).items():
        if not _claims(backend, name):
            continue
        want = call(backend)
        with torch.device("meta"):
            got = call(backend)
        for g, w in zip(got, want):
            assert g.device.type == "cpu", f"{backend} {name}: an output on {g.device}"
            assert torch.equal(_u8(g), _u8(w)), f"{backend} {name}: bytes differ under torch.device('meta')"
        checked += 1
    assert checked >= (2 if backend == "cpu-eager" else 8)  # cpu-eager claims quantize and dequantize only


def test_a_cached_block_made_under_a_meta_default_device_is_cpu_memory():
    x = torch.randn(4096, 8192, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)  # 32 MiB out
    want = mxquant.mxfp8_quantize(x, backend="cpu").data.view(torch.uint8).clone()
    gc.collect()
    pool.empty()
    with torch.device("meta"):
        q = mxquant.mxfp8_quantize(x, backend="cpu-native")  # a new block, allocated in the context
    assert q.data.device.type == "cpu" and torch.equal(q.data.view(torch.uint8), want)
    del q
    assert pool.idle_bytes() > 0
    q = mxquant.mxfp8_quantize(x, backend="cpu-native")  # that block again, outside the context
    assert torch.equal(q.data.view(torch.uint8), want)
