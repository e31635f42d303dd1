"""cpu-native's training and MoE calls (backends/csrc/mxq_cpu_training.c, and the row-wise kernel
with grouped scales) on every instruction-set variant of its kernel (the AVX-512 one skips on a
CPU without it), byte for byte against independent oracles: the NumPy oracle (tests/mx_oracle.py:
column blocks from NumPy's own transpose, 32x32 tiles), the transpose identities (column-wise is
the row-wise call on x.mT.contiguous(); tiles of x.mT are the transpose of tiles of x) and
torchao's grouped layouts of the oracle's linear scales (tests/test_grouped.py). Inputs: the
step-1 inputs (special blocks down the columns, circulant special tiles, the adversarial batch,
strided views, odd and empty shapes, ragged and empty groups) plus inputs for the C kernel's own
edges: tiles of 64 columns mixing fast and slow columns, last tiles of 1..63 columns, odd band counts,
several work units (8 bands x 2048 columns each) in both directions, rows read
in place with a row stride, leading dimensions that do not merge, and inputs large enough to run
on two threads."""

from __future__ import annotations

import pytest
import torch

import mxquant
from mxquant.backends import _native_lib
from mxquant.conformance.training_inputs import colwise_inputs, grouped_inputs, matrix_inputs

import mx_oracle as oracle
from cpu_auto import loaded_backend
from native_isa import NATIVE_VARIANTS, native_isa
from training_helpers import GRID, GRID_LAYOUTS, assert_bytes, ids

NATIVE = "cpu-native"


@pytest.fixture(params=NATIVE_VARIANTS)
def variant(request):
    """cpu-native's kernel forced to one instruction-set variant for the test."""
    loaded_backend(NATIVE)
    with native_isa(request.param.partition("@")[2] or None):
        yield


def _mixed_columns(shape, hp, seed) -> torch.Tensor:
    """Random values, one power-of-two magnitude per column block (2^-140 .. 2^120, clamped to the
    input dtype's range, so fp32-subnormal and fp8-subnormal results occur), and in a fifth of the
    column blocks one special value (NaN, +-Inf, a subnormal, the dtype's max, 0)."""
    g = torch.Generator().manual_seed(seed)
    *lead, m, k = shape
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    exps = torch.randint(-140, 121, (*lead, m // 32, 1, k), generator=g).double()
    x = (x.reshape(*lead, m // 32, 32, k) * torch.exp2(exps)).reshape(shape)
    fin = torch.finfo(hp)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), fin.smallest_normal / 4, fin.max, 0.0],
                            dtype=torch.float64)
    flat = x.reshape(-1, m // 32, 32, k)
    pick = torch.rand(flat.shape[0], m // 32, k, generator=g) < 0.2
    where = torch.randint(32, pick.shape, generator=g)
    value = specials[torch.randint(len(specials), pick.shape, generator=g)]
    for b, i, c in pick.nonzero().tolist():
        flat[b, i, where[b, i, c], c] = value[b, i, c]
    return x.clamp(-fin.max, fin.max).to(hp)  # NaN stays NaN


def native_matrix_inputs(hp, k_any: bool):
    """(name, x): the step-1 inputs, then the kernel's own edges (K any for column-wise)."""
    out = list(colwise_inputs(hp, 0) if k_any else matrix_inputs(hp, 0))
    out.append(("mixed columns (64, 192)", _mixed_columns((64, 192), hp, 1)))
    out.append(("mixed columns, 2 threads (2, 256, 640)", _mixed_columns((2, 256, 640), hp, 2)))
    wide = _mixed_columns((2, 96, 352), hp, 3)
    out.append(("row stride > K (2, 96, 320)", wide[..., 32:]))  # read in place, rows 352 apart
    out.append(("leading dims do not merge (2, 2, 64, 96)", _mixed_columns((2, 4, 64, 96), hp, 4)[:, ::2]))
    if k_any:
        for k in (1, 31, 63, 65, 127):
            out.append((f"last tile of {k % 64} columns (64, {k})", _mixed_columns((64, k), hp, k)))
    return out


def walks() -> tuple:
    """The column-wise walks of the variant running now: both (_native_lib.COL_ORDERS) in the AVX2
    and AVX-512 variants, one (None: as it is) in the baseline code, which walks band by band
    (_native_lib.col_order says which).
    CI's AVX2-only machines run the AVX-512 variant's walks nowhere; the GPU machine's Intel Xeon
    ran them (docs/performance.md, twenty-third session)."""
    lib = _native_lib.load()[0]
    return (None,) if _native_lib.col_order(lib) is None else _native_lib.COL_ORDERS


def col_order(name):
    """cpu-native's column-wise walk forced to `name` (_native_lib.COL_ORDERS; None: the automatic
    choice) inside the block."""
    return _native_lib.forced_col_order(_native_lib.load()[0], name)


def test_forced_walks_nest():
    """A forced walk is undone to the setting before it, not to the automatic choice, so that
    blocks nest; the C library's own answer (mxq_col_order) is what is read back."""
    loaded_backend(NATIVE)
    lib = _native_lib.load()[0]
    if _native_lib.col_order(lib) is None:
        pytest.skip("the variant running here has one column-wise walk")
    auto = lib.mxq_col_order()
    outer, inner = _native_lib.COL_ORDERS[1 - auto], _native_lib.COL_ORDERS[auto]  # outer: not this CPU's choice
    with col_order(outer):
        with col_order(inner):
            assert lib.mxq_col_order() == _native_lib.COL_ORDERS.index(inner)
        assert lib.mxq_col_order() == _native_lib.COL_ORDERS.index(outer)  # not back to the automatic choice
    assert lib.mxq_col_order() == auto


@pytest.mark.parametrize("hp, dtype, mode, layout", GRID_LAYOUTS, ids=[ids(c) for c in GRID_LAYOUTS])
def test_colwise_and_rowcol(variant, hp, dtype, mode, layout):
    """Column-wise in both of its walks (column order, the automatic choice on AMD CPUs; bands two
    at a time elsewhere), row+column, against the oracle and the transpose identity."""
    for name, x in native_matrix_inputs(hp, k_any=True):
        want_data, want_scale = oracle.quantize_colwise(x, dtype, mode, layout)
        for walk in walks():
            with col_order(walk):
                got = mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, scale_layout=layout, axis=-2, backend=NATIVE)
            assert_bytes(got.data, want_data, f"{name}: column data ({walk} order) vs oracle")
            assert_bytes(got.scale, oracle.public(want_scale, layout), f"{name}: column scale ({walk} order) vs oracle")
        row_t = mxquant.mxfp8_quantize(x.mT.contiguous(), dtype, scale_mode=mode, scale_layout=layout, backend=NATIVE)
        assert_bytes(got.data, row_t.data, f"{name}: column data vs row-wise of x.mT")
        assert_bytes(got.scale, row_t.scale, f"{name}: column scale vs row-wise of x.mT")
        if x.shape[-1] % 32:
            continue
        row, col = mxquant.mxfp8_quantize_rowcol(x, dtype, scale_mode=mode, scale_layout=layout, backend=NATIVE)
        assert_bytes(col.data, got.data, f"{name}: rowcol's col data vs the column-wise call")
        assert_bytes(col.scale, got.scale, f"{name}: rowcol's col scale vs the column-wise call")
        want_data, want_scale = oracle.quantize(x, dtype, mode, layout)
        assert_bytes(row.data, want_data, f"{name}: rowcol's row data vs oracle")
        assert_bytes(row.scale, oracle.public(want_scale, layout), f"{name}: rowcol's row scale vs oracle")


@pytest.mark.parametrize("hp", [torch.bfloat16, torch.float16, torch.float32])
def test_work_units_in_both_directions(variant, hp):
    """More rows and columns than one work unit (8 bands x 2048 columns): 9 bands, 2080 columns,
    and 2 batches (the column-wise call walks a unit's tile columns first in column order, the others
    and column-wise's other walk its bands)."""
    x = _mixed_columns((2, 288, 2080), hp, 8)
    (row, col), tiles = mxquant.mxfp8_quantize_rowcol(x, scale_layout="swizzled", backend=NATIVE), \
        mxquant.mxfp8_quantize_2d(x, scale_mode="floor", backend=NATIVE)
    colwise = {}
    for walk in walks():
        with col_order(walk):
            colwise[walk] = mxquant.mxfp8_quantize(x, scale_mode="floor", scale_layout="swizzled", axis=-2, backend=NATIVE)
    floor_col = oracle.quantize_colwise(x, torch.float8_e4m3fn, "floor", "swizzled")
    for got, want, what in ((row, oracle.quantize(x, torch.float8_e4m3fn, "rceil", "swizzled"), "row"),
                            (col, oracle.quantize_colwise(x, torch.float8_e4m3fn, "rceil", "swizzled"), "col"),
                            *((q, floor_col, f"column-wise, {walk or 'baseline'} walk") for walk, q in colwise.items()),
                            (tiles, oracle.quantize_tiles(x, torch.float8_e4m3fn, "floor"), "tiles")):
        assert_bytes(got.data, want[0], f"{what} data vs oracle")
        assert_bytes(got.scale, want[1].reshape(got.scale.shape), f"{what} scale vs oracle")


@pytest.mark.parametrize("hp, dtype, mode", GRID, ids=[ids(c) for c in GRID])
def test_tiles(variant, hp, dtype, mode):
    for name, x in native_matrix_inputs(hp, k_any=False):
        got = mxquant.mxfp8_quantize_2d(x, dtype, scale_mode=mode, backend=NATIVE)
        want_data, want_scale = oracle.quantize_tiles(x, dtype, mode)
        assert_bytes(got.data, want_data, f"{name}: data vs oracle")
        assert_bytes(got.scale, want_scale, f"{name}: scale vs oracle")
        t = mxquant.mxfp8_quantize_2d(x.mT, dtype, scale_mode=mode, backend=NATIVE)
        assert_bytes(t.data, got.data.mT, f"{name}: data of x.mT")
        assert_bytes(t.scale, got.scale.mT, f"{name}: scale of x.mT")


def native_grouped_inputs(hp):
    """The step-1 groups, and many ragged and empty groups over enough rows for two threads."""
    out = list(grouped_inputs(hp, 0))
    x = _mixed_columns((1024, 256), hp, 5)
    g = torch.Generator().manual_seed(6)
    ends = torch.randint(0, 1025, (37,), generator=g).sort().values
    ends[3:6] = ends[2]  # empty groups in a row
    ends[-1] = 1024
    out.append(("(1024, 256), 37 ragged groups, 2 threads", x, ends.to(torch.int32)))
    out.append(("experts (5, 200, 256), 2 threads", _mixed_columns((5, 224, 256), hp, 7)[:, :200], None))
    return out


@pytest.mark.parametrize("hp, dtype, mode", GRID, ids=[ids(c) for c in GRID])
def test_grouped(variant, hp, dtype, mode):
    torchao_layout = pytest.importorskip("test_grouped", reason="torchao (the test extra lists it)").torchao_layout
    for name, x, ends in native_grouped_inputs(hp):
        got = mxquant.mxfp8_quantize_grouped(x, ends, dtype, scale_mode=mode, backend=NATIVE)
        want_data, linear = oracle.quantize(x, dtype, mode, "linear")
        assert_bytes(got.data, want_data, f"{name}: data vs oracle")
        assert_bytes(got.scale, torchao_layout(linear, ends), f"{name}: scale vs torchao's layout of the oracle's")


@pytest.mark.parametrize("view", ["contiguous", "row stride > K"])
def test_colwise_and_rowcol_read_x_in_place(view):
    """Issue 21: column-wise "computed from x in one pass, without materialising the transpose".
    PyTorch's profiler (an independent record of the aten ops and the allocations through
    PyTorch's CPU allocator; not what the C library's own threads malloc, nor outputs of 32 MiB
    and more that the CPU output cache serves: these are small) sees the calls allocate exactly
    their outputs' bytes and run no copy of x (no xᵀ, no contiguous copy of a strided view),
    column-wise in both walks."""
    from torch.profiler import ProfilerActivity, profile

    loaded_backend(NATIVE)
    x = _mixed_columns((256, 1088), torch.bfloat16, 9)
    x = x[:, :1024] if view == "contiguous" else x[:, 64:]  # the second: rows 1088 apart
    if view == "contiguous":
        x = x.contiguous()
    calls = [("row+column", None, lambda: list(mxquant.mxfp8_quantize_rowcol(x, backend=NATIVE)))]
    calls += [("column-wise", walk, lambda: [mxquant.mxfp8_quantize(x, axis=-2, backend=NATIVE)]) for walk in walks()]
    for what, walk, call in calls:
        with col_order(walk):
            call()  # warm: lazy imports, the registry's resolution
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                outs = call()
        events = prof.events()
        # each output is one top-level aten::empty_strided today: a nested allocation would be counted
        # once per enclosing event, so a change there shows here as more bytes, not as a copy of x
        allocated = sum(e.cpu_memory_usage for e in events if e.cpu_memory_usage > 0)
        out_bytes = sum(t.numel() * t.element_size() for q in outs for t in (q.data, q.scale))
        copies = sorted({e.name for e in events if e.name in ("aten::copy_", "aten::clone", "aten::contiguous",
                                                               "aten::_to_copy", "aten::transpose_copy")})
        assert allocated == out_bytes, (what, walk, view, allocated, out_bytes)
        assert not copies, (what, walk, view, copies)


def test_claims_all_four_and_is_chosen():
    be = loaded_backend(NATIVE)
    assert {"quantize_colwise", "quantize_rowcol", "quantize_2d", "quantize_grouped"} <= be.capabilities.ops  # + FP4_OPS
    x = torch.randn(64, 64)
    for call in (lambda b: mxquant.mxfp8_quantize(x, axis=-2, backend=b), lambda b: mxquant.mxfp8_quantize_2d(x, backend=b)):
        assert_bytes(call(None).data, call(NATIVE).data, "automatic choice")
