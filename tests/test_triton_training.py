"""The `triton` backend's training and MoE kernels (backends/_triton_training.py), byte for byte
against the NumPy oracle (tests/mx_oracle.py: column-wise from NumPy's own transpose, 32x32
tiles, its swizzle from the contract's flat-index formula, per group / per expert) and the
transpose identities, on the adversarial and special inputs of conformance/training_inputs.py
and random odd shapes, strided views, ragged / empty groups and clamped out-of-range offsets.

Two ways to run, one body per case (the `dev` parameter):
- "cpu": the kernels under Triton's interpreter on CPU tensors, small shapes, several tile
  configurations (multi-tile edges, padding tiles). Needs triton importable and
  TRITON_INTERPRET=1; the main environment has no triton, so there these skip. Run:
      python3 -m venv --system-site-packages /tmp/trit-venv && /tmp/trit-venv/bin/pip install triton==3.6.0
      TRITON_INTERPRET=1 /tmp/trit-venv/bin/python -m pytest -q tests/test_triton_training.py
  The kernels' fp8 conversion there is INTERPRETED (the same rounding from the fp32 bits: the
  interpreter's own cast rounds half up), everything else is the GPU code.
- "cuda" (marked `cuda`): the same on a GPU with bigger shapes, plus the public calls, CUDA-graph
  capture and torch.compile(fullgraph=True). Skipped without a CUDA device.
"""

from __future__ import annotations

import os

import pytest
import torch

import mxquant
from mxquant.backend import TRAINING_OPS
from mxquant.backends import _triton_training_ops as ops
from mxquant.conformance import cases
from mxquant.conformance.training_inputs import colwise_inputs, grouped_inputs, matrix_inputs, special_tiles

import mx_oracle as oracle
from training_helpers import (ELEMS, GLUON_TEST_CONFIGS, GRID, GRID_LAYOUTS, INPUTS, LAYOUTS, MODES, PAIRWISE, assert_bytes,
                              ids)

try:
    import triton  # noqa: F401
    _NO_TRITON = None
except Exception as exc:  # ImportError, or a broken install
    _NO_TRITON = f"{type(exc).__name__}: {exc}"
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

if _NO_TRITON:
    _CPU_SKIP = (f"triton is not importable here ({_NO_TRITON}); the interpreter run: TRITON_INTERPRET=1 with a venv "
                 "holding triton (this module's docstring)")
elif not _INTERPRET:
    _CPU_SKIP = "CPU tensors run only under Triton's interpreter: set TRITON_INTERPRET=1"
else:
    _CPU_SKIP = None
if _INTERPRET:
    _CUDA_SKIP = "TRITON_INTERPRET=1: the interpreter would run the GPU cases on the host"
elif not torch.cuda.is_available():
    _CUDA_SKIP = "no CUDA device"
elif _NO_TRITON:
    _CUDA_SKIP = f"triton is not importable ({_NO_TRITON})"
else:
    from mxquant.backends import triton as _tb
    _CUDA_SKIP = _tb.probe(torch.device("cuda", 0))

DEVS = [pytest.param("cpu", marks=pytest.mark.skipif(bool(_CPU_SKIP), reason=str(_CPU_SKIP))),
        pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(bool(_CUDA_SKIP), reason=str(_CUDA_SKIP))])]
cuda_only = pytest.mark.skipif(bool(_CUDA_SKIP), reason=str(_CUDA_SKIP))

# Tile configurations (BLOCK_M, BLOCK_K, warps): None (the shipped one) and small ones, so that
# small inputs span several tiles, partial tiles and tiles made only of padding.
COLWISE_CONFIGS = {"linear": [None, (32, 32, 4)], "swizzled": [None, (128, 32, 4)]}
ROWCOL_CONFIGS = {"linear": [None, (32, 64, 4)], "swizzled": [None, (128, 128, 4)]}
# On CUDA None is the Gluon kernel (backends/_gluon_training.py) and the tuples above are the
# Triton kernel; GLUON_TEST_CONFIGS are the Gluon kernel's other shapes.


def _configs(configs, dev, small=True):
    """The tile configurations a case runs: on CUDA all and the Gluon ones; under the interpreter
    the shipped one, and the small ones where `small` (a program there costs about 0.1 s at any
    size, so the small tiles' many programs are the cost: each input dtype takes them in one of
    the structure tests, SMALL_TILES_ON)."""
    if dev == "cuda":
        return configs + GLUON_TEST_CONFIGS
    return configs if small else configs[:1]


SMALL_TILES_ON = {("colwise", "linear"): torch.float32, ("colwise", "swizzled"): torch.bfloat16,
                  ("rowcol", "linear"): torch.float16, ("rowcol", "swizzled"): torch.float32,
                  ("2d", None): torch.bfloat16, ("grouped", None): torch.float16}
"""Under the interpreter, the input dtype whose structure test (shapes, strides, padding) runs
the small tile configurations too; the others run the shipped one (a GPU runs every pair)."""


def _small_tiles(dev, test, hp) -> bool:
    return dev == "cuda" or SMALL_TILES_ON[test] == hp


def _cpu_grid(grid, cpu_cases):
    """(dev, *case) parameters: every case of `grid` on CUDA, those in `cpu_cases` on the CPU."""
    return [pytest.param(dev.values[0], *case, marks=dev.marks, id=f"{ids(case)}-{dev.values[0]}")
            for case in grid for dev in DEVS if dev.values[0] == "cuda" or case in cpu_cases]


_EMPTY = torch.empty


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Byte outputs (uint8, fp8) allocated with torch.empty start as 0xA5, not as the zeros a
    fresh CPU allocation often holds: a byte the kernels fail to write (padding!) shows."""
    def empty(*args, **kwargs):
        t = _EMPTY(*args, **kwargs)
        if t.element_size() == 1 and t.dtype != torch.bool:
            t.view(torch.uint8).fill_(0xA5)
        return t

    monkeypatch.setattr(torch, "empty", empty)


def _random(shape, seed, dtype, dev):
    g = torch.Generator().manual_seed(seed)
    mag = torch.exp2(torch.randint(-30, 31, (*shape[:-1], 1), generator=g).float())
    return (torch.randn(shape, generator=g) * mag).to(dtype).to(dev)


def _check_colwise(x, dtype, mode, layout, config, name):
    data, scale = ops.quantize_colwise(x, dtype, mode, layout, config)
    want_data, want_scale = oracle.quantize_colwise(x.cpu(), dtype, mode, layout)
    assert_bytes(data.cpu(), want_data, f"{name} data")
    assert scale.dtype == torch.float8_e8m0fnu
    assert_bytes(scale.cpu(), want_scale, f"{name} scale")
    return data, scale


def _check_rowcol(x, dtype, mode, layout, config, name):
    rd, rs, cd, cs = ops.quantize_rowcol(x, dtype, mode, layout, config)
    want = (*oracle.quantize(x.cpu(), dtype, mode, layout), *oracle.quantize_colwise(x.cpu(), dtype, mode, layout))
    for got, exp, what in zip((rd, rs, cd, cs), want, ("row data", "row scale", "column data", "column scale")):
        assert_bytes(got.cpu(), exp, f"{name} {what}")


def _check_2d(x, dtype, mode, config, name):
    data, scale = ops.quantize_2d(x, dtype, mode, config)
    want_data, want_scale = oracle.quantize_tiles(x.cpu(), dtype, mode)
    assert_bytes(data.cpu(), want_data, f"{name} data")
    assert_bytes(scale.cpu(), want_scale, f"{name} scale")
    return data, scale


def _check_grouped(x, ends, dtype, mode, config, name, clamped=None):
    data, scale = ops.quantize_grouped(x, ends, dtype, mode, config)
    want_data, want_scale = oracle.quantize_grouped(x, clamped if clamped is not None else ends, dtype, mode)
    assert_bytes(data.cpu(), want_data, f"{name} data")
    assert scale.dtype == torch.float8_e8m0fnu
    assert_bytes(scale.cpu(), want_scale, f"{name} scale")


# ---- arithmetic: every input dtype, element dtype, scale mode (and layout) on special inputs ----

@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp, dtype, mode, layout", GRID_LAYOUTS, ids=[ids(c) for c in GRID_LAYOUTS])
def test_rowwise_kernel_after_the_refactor(dev, hp, dtype, mode, layout):
    """The row-wise kernel shares its pieces with the new kernels now: still the oracle's bytes."""
    from mxquant.backends import triton as tb

    x = cases.adversarial_batch(hp, seed=1).to(dev)
    data, scale = tb.quantize(x, dtype, mode, layout)
    want_data, want_scale = oracle.quantize(x.cpu(), dtype, mode, layout)
    assert_bytes(data.cpu(), want_data, "data")
    assert_bytes(scale.cpu(), want_scale, "scale")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp, dtype, mode, layout", GRID_LAYOUTS, ids=[ids(c) for c in GRID_LAYOUTS])
def test_colwise_adversarial_down_the_columns(dev, hp, dtype, mode, layout):
    x = cases.adversarial_batch(hp, seed=2).mT.contiguous().to(dev)  # (128, N): its blocks run down the columns
    _check_colwise(x, dtype, mode, layout, None, "adversarial^T")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp, dtype, mode, layout", GRID_LAYOUTS, ids=[ids(c) for c in GRID_LAYOUTS])
def test_rowcol_special_tiles(dev, hp, dtype, mode, layout):
    x = special_tiles(hp).to(dev)  # every special block as a circulant 32x32 tile: special rows and columns
    _check_rowcol(x, dtype, mode, layout, None, "special tiles")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp, dtype, mode", GRID, ids=[ids(c) for c in GRID])
def test_2d_special_tiles(dev, hp, dtype, mode):
    x = special_tiles(hp).to(dev)
    data, scale = _check_2d(x, dtype, mode, None, "special tiles")
    # the transpose identity: tiles of x^T are the transposed tiles of x
    data_t, scale_t = ops.quantize_2d(x.mT.contiguous(), dtype, mode)
    assert_bytes(data_t.cpu(), data.cpu().mT.contiguous(), "2d(x^T) data vs 2d(x) data^T")
    assert_bytes(scale_t.cpu(), scale.cpu().mT.contiguous(), "2d(x^T) scale vs 2d(x) scale^T")


@pytest.mark.parametrize("dev, hp, dtype, mode", _cpu_grid(GRID, PAIRWISE))
def test_grouped_adversarial_ragged_and_empty_groups(dev, hp, dtype, mode):
    """Under the interpreter the nine PAIRWISE cases (the row-wise test runs the same helpers on
    every case); on a GPU all eighteen."""
    x = cases.adversarial_batch(hp, seed=3).to(dev)
    t = x.shape[0]
    ends = torch.tensor([0, 1, 1, 70, t, t], dtype=torch.int32, device=dev)  # empty first, middle, last
    _check_grouped(x, ends, dtype, mode, None, "adversarial tokens")
    _check_grouped(x[: t // 32 * 32].reshape(-1, 32, x.shape[1]), None, dtype, mode, None, "adversarial experts")


# ---- structure: shapes, strides, tile configurations, padding -----------------------------------
# (one element dtype and scale mode per input dtype: the arithmetic is covered above)

def _one_combo(hp):
    return ELEMS[INPUTS.index(hp) % 2], MODES[INPUTS.index(hp)]


def _inputs(dev, hp, small, cuda_shapes):
    """The conformance kit's small inputs under the interpreter; random bigger ones on CUDA."""
    if dev == "cpu":
        return small(hp, 0)
    return [(f"random{s}", _random(s, i, hp, "cpu")) for i, s in enumerate(cuda_shapes)]


SHAPE_CASES = {  # op: (check, the kit's small inputs, CUDA shapes, tile configs per layout)
    "colwise": (_check_colwise, colwise_inputs, [(4096, 2048), (3, 640, 1000), (96, 8191)], COLWISE_CONFIGS),
    # (3, 96, 1024) swizzled: the last matrix's padding rows reach past the padded scale columns (tiles
    # with no column scale to store)
    "rowcol": (_check_rowcol, matrix_inputs, [(4096, 4096), (3, 640, 992), (160, 8192), (3, 96, 1024)], ROWCOL_CONFIGS),
}


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("op", SHAPE_CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("hp", INPUTS, ids=lambda d: ids((d,)))
def test_colwise_and_rowcol_shapes(dev, op, layout, hp):
    check, small, cuda_shapes, configs = SHAPE_CASES[op]
    dtype, mode = _one_combo(hp)
    for name, x in _inputs(dev, hp, small, cuda_shapes):
        x = x.to(dev)
        for config in _configs(configs[layout], dev, _small_tiles(dev, (op, layout), hp)):
            check(x, dtype, mode, layout, config, f"{name} config {config}")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_colwise_of_transposed_and_strided_views(dev, layout):
    """A transposed view (stride 1 along M) takes the row-wise kernel on x.mT, no copy; with a
    tile config given, the column-wise kernel reads the same strides: both the oracle's bytes."""
    base = _random((2, 96, 64) if dev == "cpu" else (8192, 4096), 7, torch.bfloat16, dev)
    for x, name in ((base.mT, "x.mT"), (base[..., ::2, :].mT, "x[..., ::2, :].mT"), (base[..., ::2], "x[..., ::2]")):
        for config in _configs(COLWISE_CONFIGS[layout], dev):
            _check_colwise(x, torch.float8_e4m3fn, "rceil", layout, config, f"{name} config {config}")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", INPUTS, ids=lambda d: ids((d,)))
def test_2d_shapes(dev, hp):
    dtype, mode = _one_combo(hp)
    for name, x in _inputs(dev, hp, matrix_inputs, [(4096, 4096), (3, 640, 992)]):
        for config in (None, (32, 32, 4)) if _small_tiles(dev, ("2d", None), hp) else (None,):
            _check_2d(x.to(dev), dtype, mode, config, f"{name} config {config}")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", INPUTS, ids=lambda d: ids((d,)))
def test_grouped_shapes(dev, hp):
    dtype, mode = _one_combo(hp)
    if dev == "cpu":
        inputs = grouped_inputs(hp, 0)
    else:
        x = _random((6000, 2880), 1, hp, "cpu")
        inputs = [("tokens(6000, 2880)", x, torch.tensor([0, 2000, 2000, 2129, 4000, 6000], dtype=torch.int32)),
                  ("experts(4, 1000, 2048)", _random((4, 1000, 2048), 2, hp, "cpu"), None)]
    for name, x, ends in inputs:
        x = x.to(dev)
        ends = ends if ends is None else ends.to(dev)
        small = ends is not None and _small_tiles(dev, ("grouped", None), hp)
        for config in (None, (32, 128, 4)) if small else (None,):
            _check_grouped(x, ends, dtype, mode, config, f"{name} config {config}")


@pytest.mark.parametrize("dev", DEVS)
def test_grouped_offsets_clamped_into_the_buffers(dev):
    """Offsets the GPU call does not validate (reading them would synchronise): each end is
    clamped into [previous end, T], so the kernel stays inside its buffers; the scale bytes are
    those of the clamped offsets (the contract leaves them unspecified) and data is still the
    whole row-wise data, also for rows after a last end < T."""
    x = _random((300, 96), 5, torch.bfloat16, dev)
    for raw, clamped in [((5, 3, 400), (5, 5, 300)), ((-7, 200, 150, 300), (0, 200, 200, 300)),
                         ((10, 20), (10, 20)), ((2**31 - 1,), (300,))]:
        ends = torch.tensor(raw, dtype=torch.int32, device=dev)
        _check_grouped(x, ends, torch.float8_e4m3fn, "rceil", (32, 128, 4), f"ends {raw}",
                       clamped=torch.tensor(clamped, dtype=torch.int32))


@pytest.mark.parametrize("dev", DEVS)
def test_empty_inputs(dev):
    for shape in [(0, 64), (32, 0), (2, 0, 32)]:
        x = torch.zeros(shape, device=dev)
        _check_colwise(x, torch.float8_e4m3fn, "rceil", "swizzled", None, f"colwise {shape}")
        _check_rowcol(x, torch.float8_e4m3fn, "rceil", "swizzled", None, f"rowcol {shape}")
        _check_2d(x, torch.float8_e4m3fn, "rceil", None, f"2d {shape}")
    strided = torch.tensor([100, -1, 100, -1, 300, -1], dtype=torch.int32, device=dev)[::2]  # a view: ends 100, 100, 300
    x = _random((300, 64), 8, torch.float16, dev)
    _check_grouped(x, strided, torch.float8_e5m2, "floor", None, "strided ends")
    aligned = torch.tensor([100, 100, 300], dtype=torch.int32, device=dev)
    shifted = torch.tensor([7, 100, 100, 300], dtype=torch.int32, device=dev)[1:]  # 4 bytes into its storage
    for ends, name in ((aligned, "aligned ends"), (shifted, "ends 4 bytes off 16")):  # one signature, cached plans
        _check_grouped(x, ends, torch.float8_e5m2, "floor", None, name)
    _check_grouped(torch.zeros(0, 64, device=dev), torch.zeros(3, dtype=torch.int32, device=dev),
                   torch.float8_e4m3fn, "rceil", None, "no tokens")
    _check_grouped(torch.zeros(0, 5, 32, device=dev), None, torch.float8_e4m3fn, "rceil", None, "no experts")


def test_bad_tile_configs_are_one_line_errors():
    x = torch.zeros(128, 128)
    with pytest.raises(ValueError, match=r"rowcol config: swizzled scales pack 4 blocks per word: BLOCK_M and BLOCK_K"):
        ops.quantize_rowcol(x, torch.float8_e4m3fn, "rceil", "swizzled", (128, 64, 4))
    with pytest.raises(ValueError, match=r"colwise config: BLOCK_K must be a power of two >= 32, got 48"):
        ops.quantize_colwise(x, torch.float8_e4m3fn, "rceil", "linear", (32, 48, 4))


def test_triton_claims_the_training_calls():
    """Claimed in capabilities.ops with a callable each (loads anywhere: triton imports on a call);
    the FP4 calls are its other claims (tests/test_triton_fp4.py)."""
    from mxquant.backend import FP4_OPS
    from mxquant.backends import triton as tb

    assert tb.backend.capabilities.ops == frozenset(TRAINING_OPS + FP4_OPS)
    assert all(callable(getattr(tb.backend, op)) for op in TRAINING_OPS)


# ---- CUDA only: the public calls, CUDA graphs, torch.compile ------------------------------------

@pytest.mark.cuda
@cuda_only
@pytest.mark.parametrize("layout", LAYOUTS)
def test_public_calls_pick_triton_cuda(layout):
    x = _random((1024, 2048), 3, torch.bfloat16, "cuda")
    col = mxquant.mxfp8_quantize(x, axis=-2, scale_layout=layout)
    row, col2 = mxquant.mxfp8_quantize_rowcol(x, scale_layout=layout)
    want_d, want_s = oracle.quantize_colwise(x.cpu(), torch.float8_e4m3fn, "rceil", layout)
    for q in (col, col2):
        assert_bytes(q.data.cpu(), want_d, "column data")
        assert_bytes(q.scale.cpu(), oracle.public(want_s, layout), "column scale")
    want_d, want_s = oracle.quantize(x.cpu(), torch.float8_e4m3fn, "rceil", layout)
    assert_bytes(row.data.cpu(), want_d, "row data")
    assert_bytes(row.scale.cpu(), oracle.public(want_s, layout), "row scale")


@pytest.mark.cuda
@cuda_only
def test_cuda_graph_capture_of_the_new_calls():
    """Grouped offsets stay on the device: capture, then replay with new data *and new offsets*."""
    x = _random((4096, 1024), 4, torch.bfloat16, "cuda")
    w = _random((4, 512, 1024), 5, torch.bfloat16, "cuda")
    ends = torch.tensor([1000, 1000, 3000, 4096], dtype=torch.int32, device="cuda")

    def calls():
        return (mxquant.mxfp8_quantize(x, axis=-2), mxquant.mxfp8_quantize_rowcol(x, scale_layout="swizzled"),
                mxquant.mxfp8_quantize_2d(x), mxquant.mxfp8_quantize_grouped(x, ends),
                mxquant.mxfp8_quantize_grouped(w, None))

    calls()  # warm up outside capture: resolve, compile
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        col, (row, col2), tiles, tokens, experts = calls()
    for seed, new_ends in enumerate([(1000, 1000, 3000, 4096), (0, 129, 4000, 4096), (4096, 4096, 4096, 4096)]):
        x.copy_(_random(tuple(x.shape), 10 + seed, torch.bfloat16, "cuda"))
        ends.copy_(torch.tensor(new_ends, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        e4 = torch.float8_e4m3fn
        assert_bytes(col.data.cpu(), oracle.quantize_colwise(x.cpu(), e4)[0], "colwise data")
        assert_bytes(col2.scale.cpu(), oracle.quantize_colwise(x.cpu(), e4, "rceil", "swizzled")[1].reshape(-1),
                     "rowcol column scale")
        assert_bytes(row.data.cpu(), oracle.quantize(x.cpu(), e4)[0], "rowcol row data")
        assert_bytes(tiles.scale.cpu(), oracle.quantize_tiles(x.cpu(), e4)[1], "2d scale")
        assert_bytes(tokens.scale.cpu(), oracle.quantize_grouped(x, ends.cpu(), e4, "rceil")[1], f"tokens scale, ends {new_ends}")
        assert_bytes(experts.scale.cpu(), oracle.quantize_grouped(w, None, e4, "rceil")[1], "experts scale")


@pytest.mark.cuda
@cuda_only
def test_torch_compile_fullgraph_of_the_new_calls_cuda():

    @torch.compile(fullgraph=True)
    def f(x, ends):
        row, col = mxquant.mxfp8_quantize_rowcol(x)
        return row.data, col.scale, mxquant.mxfp8_quantize_2d(x).scale, mxquant.mxfp8_quantize_grouped(x, ends).scale

    x = _random((512, 1024), 6, torch.bfloat16, "cuda")
    ends = torch.tensor([100, 300, 512], dtype=torch.int32, device="cuda")
    row_data, col_scale, tile_scale, grouped_scale = f(x, ends)
    e4 = torch.float8_e4m3fn
    assert_bytes(row_data.cpu(), oracle.quantize(x.cpu(), e4)[0], "row data")
    assert_bytes(col_scale.cpu(), oracle.quantize_colwise(x.cpu(), e4)[1], "column scale")
    assert_bytes(tile_scale.cpu(), oracle.quantize_tiles(x.cpu(), e4)[1], "tile scale")
    assert_bytes(grouped_scale.cpu(), oracle.quantize_grouped(x, ends.cpu(), e4, "rceil")[1], "grouped scale")
