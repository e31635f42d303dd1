"""The Gluon column-wise / row+column kernel's config check (backends/_triton_training_ops.py,
_use_gluon and _gluon_shape), with no GPU: the check runs on a CUDA device object before anything
launches. Needs a Triton whose Gluon the kernel runs with (GLUON_TRITON); CI runs it in the
Triton side environment with tests/test_triton_training.py (tests/test_triton_interpreter.py)."""

from __future__ import annotations

import pytest
import torch

from mxquant.backends import _triton_training_ops as ops

from test_triton_compile import _NO_TRITON


@pytest.mark.skipif(bool(_NO_TRITON) or ops._gluon() is None, reason="needs a Triton whose Gluon the kernel runs with")
def test_gluon_configs_are_checked_before_any_launch():
    """("gluon", rows per thread, warps[, slabs[, maxnreg[, scale policy[, data policy[, flags]]]]]):
    the shapes the kernel takes, a register cap 0 (none) or 16-255, an int (not a bool), the column
    stores' eviction policies and the words "packed" / "packed prefetch"; checked on a CUDA device object before anything runs (so no GPU is
    needed here). The shipped configs pass the same check."""
    cuda = torch.device("cuda")
    for ok in (("gluon", 8, 2), ("gluon", 8, 2, 2), ("gluon", 8, 2, 2, 0), ("gluon", 16, 4, 1, 96),
               ("gluon", 8, 2, 2, 0, "evict_last"), ("gluon", 8, 2, 1, 0, "", "evict_first"), ("gluon", 8, 2, 8),
               ("gluon", 8, 2, 4, 0, "", "", "packed"), ("gluon", 8, 2, 8, 0, "evict_last", "", "packed prefetch"),
               ("gluon", 8, 2, 2, 0, "", "", ""),
               *(("gluon", *c) for c in ops.GLUON_CONFIGS.values())):
        assert ops._use_gluon(ok, cuda), ok
    assert ops._gluon_shape(("gluon", 8, 2)) == (8, 2, 1, 0)
    for bad in (("gluon", 8), ("gluon", 8, 3), ("gluon", 8, 2, 3), ("gluon", 8, 2, 2, True), ("gluon", 8, 2, 2, 8),
                ("gluon", 8, 2, 2, 256), ("gluon", 8, 2, 2, 96, 1), ("gluon", 8, 2, 2, 0, "evict_normal"),
                ("gluon", 8, 2, 2, 0, "", "", "", ""), ("gluon", 8, 2, 16), ("gluon", 8, 2, 2, 0, "", "", "prefetch"),
                ("gluon", 8, 2, 2, 0, "", "", "packed fast"), ("gluon", 8, 2, 2, 0, "", "", 1),
                ("gluon", 8, 2, 1, 0, "", "", "ring3x8")):
        with pytest.raises(ValueError, match="register cap 0 \\(none\\) or 16 to 255"):
            ops._use_gluon(bad, cuda)
