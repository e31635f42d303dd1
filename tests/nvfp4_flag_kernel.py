"""A kernel that runs backends/_triton_nvfp4.py's _nv_flag on a tensor of d (tests/test_triton_nvfp4.py
compares it with the rule stated in NumPy). Imports triton: imported by the test that uses it."""

import triton
import triton.language as tl

from mxquant.backends._triton_nvfp4 import _nv_flag


@triton.jit
def flag_kernel(d_ptr, out_ptr, n, X_KIND: tl.constexpr):
    i = tl.program_id(0) * 1024 + tl.arange(0, 1024)
    d = tl.load(d_ptr + i, mask=i < n, other=1.0)
    tl.store(out_ptr + i, _nv_flag(d, X_KIND).to(tl.int32), mask=i < n)
