"""Issue 21: the column-wise and row+column calls are "computed from x in one pass, without
materialising the transpose", checked on a GPU through the CUDA caching allocator (an
independent record of every device allocation). The CPU counterpart (PyTorch's profiler on
cpu-native) is in tests/test_cpu_native_training.py. Marked `cuda`: skips without a CUDA device
(first run on an H100 on 2026-12-07)."""

from __future__ import annotations

import pytest
import torch

import mxquant

from test_triton_training import _random, cuda_only


@pytest.mark.cuda
@cuda_only
def test_colwise_and_rowcol_allocate_only_their_outputs():
    """Issue 21: column-wise "computed from x in one pass, without materialising the transpose":
    the caching allocator's peak during each call (x already on the device) is at least its
    outputs' bytes and less than those plus half of x's: no xᵀ, no copy of x (8 MB here)."""
    x = _random((2048, 2048), 6, torch.bfloat16, "cuda")
    calls = {"column-wise": lambda: [mxquant.mxfp8_quantize(x, axis=-2)],
             "column-wise swizzled": lambda: [mxquant.mxfp8_quantize(x, axis=-2, scale_layout="swizzled")],
             "row+column": lambda: list(mxquant.mxfp8_quantize_rowcol(x))}
    for what, call in calls.items():
        call()  # warm: compile, resolve
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        outs = call()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        out_bytes = sum(t.numel() * t.element_size() for q in outs for t in (q.data, q.scale))
        assert out_bytes <= peak < out_bytes + x.numel() * x.element_size() // 2, (what, peak, out_bytes)
