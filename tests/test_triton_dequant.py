"""The `triton` backend's MXFP8 dequantize kernel (backends/_triton_dequant.py), bit for bit
against the NumPy oracle (tests/mx_oracle.py, NaN included: one NaN per out_dtype,
docs/semantics.md "Dequantize") and through the conformance kit (compare.check_dequantize):
every element byte under every scale byte, both element dtypes, layouts and output dtypes, the
shipped and small tile configurations (partial tiles in M and K), strided rows.

Run as tests/test_triton_fp4.py: "cpu" under Triton's interpreter (TRITON_INTERPRET=1, the side
environment of tests/test_triton_interpreter.py), "cuda" (marked `cuda`) on a GPU; the sm_90
compile check without the interpreter.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mxquant.conformance import compare
from mxquant.formats import OUTPUT_DTYPES

import mx_oracle as oracle
from mx_oracle import assert_same_values
from test_triton_compile import _INTERPRET, _NO_TRITON, _aot_compile
from test_triton_training import DEVS, poisoned_outputs  # noqa: F401  (autouse fixture)
from training_helpers import ELEMS, LAYOUTS, ids

GRID = list(itertools.product(ELEMS, OUTPUT_DTYPES, LAYOUTS))


def _inputs(elem, layout):
    """(name, data, scale in layout, linear scale bytes): every element byte (rows of 256) under
    every scale byte; random bytes in a shape with partial tiles (77 x 96)."""
    gen = torch.Generator().manual_seed(11)
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    cases = [("every byte", every.repeat(256, 1), every.unsqueeze(1).repeat(1, 256 // 32)),
             ("random(77, 96)", torch.randint(0, 256, (77, 96), generator=gen, dtype=torch.uint8),
              torch.randint(0, 256, (77, 3), generator=gen, dtype=torch.uint8))]
    for name, data, lin in cases:
        yield name, data.view(elem), oracle.swizzle(lin) if layout == "swizzled" else lin, lin


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("elem, out_dtype, layout", GRID, ids=[ids(c) for c in GRID])
def test_dequantize_every_byte(dev, elem, out_dtype, layout):
    from mxquant.backends import triton as tb

    for name, data, scale, lin in _inputs(elem, layout):
        want = oracle.dequantize(data, lin, out_dtype)
        s = scale.view(torch.float8_e8m0fnu).to(dev)
        wide = torch.cat([data, data], dim=1).to(dev)[:, data.shape[1]:]  # rows 2K apart
        for config, d in ((None, data.to(dev)), ((8, 64, 1), data.to(dev)), (None, wide)):
            got = tb.dequantize(d, s, layout, out_dtype, config)
            assert_same_values(got.cpu(), want, f"{name} {config} stride {d.stride()}")


VERIFY = [(torch.float8_e4m3fn, torch.bfloat16, "swizzled"), (torch.float8_e5m2, torch.float16, "linear")]


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("elem, out_dtype, layout", VERIFY, ids=[ids(c) for c in VERIFY])
def test_verify_kit_passes(dev, elem, out_dtype, layout):
    from mxquant.backends import triton as tb

    result = compare.check_dequantize(tb.backend, torch.device(dev), out_dtype, elem, layout, seed=3)
    assert result.status == compare.PASS and result.cases > 0, (result.reason, result.examples[:2])


@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason="needs triton importable and TRITON_INTERPRET unset")
@pytest.mark.parametrize("out", ["*bf16", "*fp32", "*fp16"])
def test_dequantize_kernel_compiles_for_sm90(out):
    """The kernel at its shipped configurations (both card classes), both element dtypes and
    layouts, masked and persistent, compiles for sm_90 with the NaN rule in it."""
    from mxquant.backends import _triton_dequant as k
    from mxquant.backends import triton as tb

    for card, e5, swz in itertools.product(("default", "fast-hbm"), (False, True), (False, True)):
        cfg = tb.dequantize_config(8192, 8192, card)
        c = dict(E5M2=e5, SWIZZLED=swz, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, MASK_M=swz, MASK_K=False,
                 EVICT=cfg.evict, PERSISTENT=swz, STAGES=cfg.stages, INTERPRETED=False)
        _aot_compile(k.mxfp8_dequantize_kernel, ["*u8", "*u8", out], c, cfg.warps)  # data as bytes (triton.py)


@pytest.mark.skipif(bool(_NO_TRITON) or not _INTERPRET, reason="needs triton and TRITON_INTERPRET=1 (the side environment)")
def test_the_backend_refuses_device_tensors_while_the_interpreter_is_on(monkeypatch):
    """Under TRITON_INTERPRET=1 on a GPU machine the kernels would run interpreted on CUDA tensors,
    taking the hardware-conversion branch whose interpreted cast rounds differently (review of the
    ninth session): the probe refuses the device instead. (No GPU here: the CUDA probe's own
    checks are stubbed out, so that the interpreter check is what answers.)"""
    from mxquant.backends import triton as tb

    monkeypatch.setattr(tb, "cuda_probe", lambda *a: None)
    reason = tb.probe(torch.device("cuda", 0))
    assert reason and "Triton's interpreter is on (TRITON_INTERPRET=1)" in reason
