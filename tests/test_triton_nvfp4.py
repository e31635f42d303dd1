"""The `triton` backend's NVFP4 kernel for bf16 / fp16 input (backends/_triton_nvfp4.py: a
reciprocal per group; in groups its rule flags Markstein's quotient, or where that is out of its
range the IEEE division), byte for byte against the NumPy oracle (tests/fp4_oracle.py) where its
paths meet: every group flagged (g = 1 with the quotients on the rounding midpoints), none, both
in one tile beside NaN / Inf groups, clamped scales, Markstein's range ends, at every PTX block
size; and compiled for sm_90. tests/test_nvfp4_reciprocal.py checks the rule itself on
every x of both dtypes. Runs as tests/test_triton_fp4.py does: "cpu" under Triton's interpreter in
the side environment (tests/test_triton_interpreter.py), "cuda" on a GPU."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mxquant.backends import _triton_fp4_ops as ops
from mxquant.backends import _triton_launch as _launch

import fp4_oracle as oracle
from test_nvfp4_reciprocal import E4M3, NEAR, flagged, flagged_d
from test_triton_compile import _INTERPRET, _NO_TRITON, _aot_compile_as_launched
from test_triton_fp4 import _flat
from test_triton_training import DEVS, cuda_only, poisoned_outputs  # noqa: F401  (autouse fixture)
from training_helpers import LAYOUTS, assert_bytes

HALF = [torch.bfloat16, torch.float16]
GRID_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIDPOINTS = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
CONFIGS = [None, (4, 256, 4, 0, 1), (2, 512, 2, 0, 2), (1, 1024, 1, 0, 4)]  # PTX blocks of 8 / 1 / 2 / 4


@pytest.fixture(autouse=True)
def half_inputs_on_this_kernel(monkeypatch):
    """bf16 and fp16 NVFP4 both on backends/_triton_nvfp4.py's kernel (ops.NV_DIVISION_FREE, held
    here whatever the shipped set)."""
    monkeypatch.setattr(ops, "NV_DIVISION_FREE", frozenset(HALF))


@pytest.fixture(params=["per group", "table", "table, PDL"])
def rflags(monkeypatch, request):
    """Each group's r and flags (and a flagged block's D and R) computed per group, or read from
    the per-scale-byte table (nvfp4_table_kernel; TABLE, which calls of ops.NV_TABLE_MIN elements
    and up take: every call here with the threshold at 0), the quantize kernel launched as the
    table kernel's programmatic dependent or not (ops.NV_TABLE_PDL; CUDA only)."""
    if "PDL" in request.param and request.node.callspec.params.get("dev", "cuda") != "cuda":
        pytest.skip("programmatic dependent launch: CUDA only")
    monkeypatch.setattr(ops, "NV_TABLE_MIN", 1 << 62 if request.param.startswith("per group") else 0)
    monkeypatch.setattr(ops, "NV_TABLE_LAYOUTS", frozenset(LAYOUTS))
    monkeypatch.setattr(ops, "NV_TABLE_PDL", "PDL" in request.param)
    return request.param


def _table_want(g: float, kind: str) -> np.ndarray:
    """nvfp4_table_kernel's 2 x 128 entries for g, restated in NumPy (IEEE fp32 divisions). Entry
    b: r = RN(g / scale) in the low word; _nv_flag's rule on d = RN(scale * RN(1 / g))
    (flagged_d) and Markstein's range [2**-95, 2**15) on d give the flag without Y_BOUND (bits
    32-34: 0, 1, or 3 outside the range) and with it (bits 35-37: 5, or 3 outside the range).
    Entry 128 + b: D = RN(scale / g) low, R = RN(1 / D) high. Byte 0 stands for 0x20's 0.125,
    0x7F (a NaN / Inf group's) is 0 in both."""
    F32 = np.float32
    sval = np.concatenate([[0.125], E4M3, [1.0]]).astype(F32)  # (E4M3: bytes 1-126 in order; 0x7F's entry is 0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        r = F32(g) / sval
        d = sval * (F32(1) / F32(g))
        big_d = sval / F32(g)
        rd = F32(1) / big_d
    slow = ~((d >= 2.0**-95) & (d < 2.0**15))
    f_big = np.where(slow, 3, 5)
    f = np.where(flagged_d(d, kind), np.where(slow, 3, 1), 0)
    want = np.concatenate([r.view(np.uint32).astype(np.int64) | ((f | (f_big << 3)).astype(np.int64) << 32),
                           big_d.view(np.uint32).astype(np.int64) | (rd.view(np.uint32).astype(np.int64) << 32)])
    want[[0x7F, 0xFF]] = 0
    return want


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", HALF, ids=str)
def test_nvfp4_table_entries(dev, hp):
    """nvfp4_table_kernel's every entry, g given (scales flagged by class, Markstein's range ends)
    and g derived from the amax bits as the quantize call does, against the NumPy restatement:
    a wrong flag class (1 for 3, or Y_BOUND's field) costs only speed on a GPU, so the bytes
    alone would not show it."""
    kind = "bf16" if hp == torch.bfloat16 else "fp16"
    n = ops.NV_TABLE_ENTRIES
    for g in (2688.0 / 3.1, 512.0, 448.0, 1.0, 2.0**100, 2.0**-14, _partly_flagged_g(kind)):
        t = torch.empty(n, dtype=torch.int64, device=dev)
        gt = torch.tensor([g], dtype=torch.float32, device=dev)
        ops._table_plan(True, hp, gt.data_ptr() % 16 == 0, False, gt.device).launch_n(gt.device, gt, t)
        want = _table_want(float(np.float32(g)), kind)
        got = t.cpu().numpy()
        assert np.array_equal(got, want), f"g {g}: entries {np.flatnonzero(got != want)[:8]} differ"
    for amax in (3.1, 0.02, 6e4 if hp == torch.float16 else 1e30):
        x = torch.tensor([amax], dtype=hp)
        bits = torch.tensor([x.float().view(torch.int32).item()], dtype=torch.int32, device=dev)
        t = torch.empty(n, dtype=torch.int64, device=dev)
        ops._table_plan(False, hp, False, False, bits.device).launch_n(bits.device, bits, t)
        want = _table_want(oracle.nvfp4_global_scale(x), kind)
        assert np.array_equal(t.cpu().numpy(), want), f"amax {amax}"


@cuda_only
@pytest.mark.cuda
@pytest.mark.parametrize("given", [False, True], ids=["g computed", "g given"])
def test_nvfp4_table_in_a_cuda_graph(rflags, given):
    """The table kernel and the quantize kernel (its programmatic dependent where PDL) captured
    in a CUDA graph and replayed on new data of a new amax (and a new g where given): the table
    is rebuilt for the replay's g, bytes against the oracle."""
    rng = np.random.default_rng(5)
    x = _groups(torch.bfloat16, 2688.0 / 3.1, 6, rng).cuda()
    x[1] = 1.0  # (no NaN / Inf: g computed stays finite)
    g = torch.tensor([2688.0 / 3.1], dtype=torch.float32, device="cuda")
    call = lambda: ops.nvfp4_quantize(x, g if given else None, "compressed-tensors", "linear")  # noqa: E731
    _launch._PLANS.clear()  # (to see which plans this call makes)
    call()  # (compiled outside the capture)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    x.copy_(_groups(torch.bfloat16, 512.0, 6, rng).cuda())
    x[1] = -2.0
    g.fill_(512.0)
    graph.replay()
    torch.cuda.synchronize()
    want = oracle.nvfp4_quantize(x.cpu(), 512.0 if given else None, "linear")
    tables = [p for key, p in _launch._PLANS.items() if key[0] == "nvfp4table"]
    assert bool(tables) == (not rflags.startswith("per group"))
    assert all(p.constexprs["PDL"] == ("PDL" in rflags) for p in tables)
    assert out[2].item() == np.float32(want[2])
    assert_bytes(out[0].cpu(), want[0], "replayed data")
    assert_bytes(_flat(out[1].cpu(), "linear"), want[1], "replayed scale")


def _check(x, g, layout, config, name):
    gt = torch.tensor([g], dtype=torch.float32, device=x.device)
    data, scale, g_out = ops.nvfp4_quantize(x, gt, "compressed-tensors", layout, config)
    want_data, want_scale, _ = oracle.nvfp4_quantize(x.cpu(), g, layout)
    assert g_out.item() == np.float32(g)
    assert_bytes(data.cpu(), want_data, f"{name} data")
    assert_bytes(_flat(scale.cpu(), layout), want_scale, f"{name} scale")


def _groups(dtype, g: float, rows: int, rng) -> torch.Tensor:
    """(rows, 256) of groups of 16 whose amax gives scales over all of e4m3's range; the other 15
    elements are the dtype's values nearest m * d (m a rounding midpoint, d = RN(s / g)) and 1-2
    steps beside them, either sign; a NaN and an Inf group in row 1."""
    x = np.zeros((rows, 16, 16), np.float32)
    for r, j in itertools.product(range(rows), range(16)):
        s = float(rng.choice(E4M3[E4M3 >= 2.0**-6]))
        a = float(oracle.round_to(6.0 * s / g, dtype))
        if not np.isfinite(a) or a == 0:
            continue
        p = min(float(np.float32(g * oracle.round_to(a / 6.0, dtype))), 448.0)
        d = np.float32(np.float32(oracle.round_grid(np.array(p), 3, -6)) / np.float32(g))
        v = torch.tensor(rng.choice(MIDPOINTS, 15) * float(d), dtype=torch.float32).to(dtype)
        bits = v.view(torch.int16).to(torch.int32) + torch.from_numpy(rng.integers(-2, 3, 15)).to(torch.int32)
        v = bits.to(torch.int16).view(dtype).float().numpy()
        v = np.where(np.abs(v) < a, v, 0) * rng.choice([-1, 1], 15)
        x[r, j] = [a, *v]
    x[2, ::2, 0] *= 8  # (amax 8x: scales up from 56 clamp to 448)
    x = torch.from_numpy(x.reshape(rows, 256)).to(dtype)
    x[1, 16:32] = float("nan")
    x[1, 33] = float("inf")
    return x


def _partly_flagged_g(kind: str) -> float:
    """A global scale of data (2688 / amax) under which _nv_flag's rule divides some e4m3 scales
    and not others (the first of a fixed search)."""
    for amax in 2.0 ** np.linspace(-8, 8, 4001):
        g = float(np.float32(np.float32(1) / np.float32(amax)) * np.float32(2688))
        share = flagged(E4M3, g, kind).mean()
        if 0.05 < share < 0.5:
            return g
    raise AssertionError("no partly flagged g found")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", HALF, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nvfp4_half_inputs_where_groups_are_divided_or_not(dev, hp, layout, rflags):
    """g = 1 on midpoint quotients (every group flagged), a g built so that d lies one step from
    the midpoints (every group flagged), a g of data that flags some scales, and a plain one:
    every config (so every PTX block size)."""
    rng = np.random.default_rng(7)
    kind = "bf16" if hp == torch.bfloat16 else "fp16"
    # (the interpreter has no PTX blocks; there swizzled fp16 runs the shipped tile only: 12 s a config)
    configs = CONFIGS if dev == "cuda" else CONFIGS[:1] if (layout, hp) == ("swizzled", torch.float16) else CONFIGS[:2]
    for g, config in itertools.product((1.0, NEAR[0], _partly_flagged_g(kind), 2688.0 / 3.1), configs):
        x = _groups(hp, g, 6, rng).to(dev)
        _check(x, g, layout, config, f"g {g} config {config}")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", HALF, ids=str)
def test_nvfp4_half_inputs_at_the_ends_of_markstein_range(dev, hp, rflags):
    """Flagged groups on both sides of MARKSTEIN_DMIN / DMAX (d of a tile's scales below and above
    2**-95, or 2**15: divided there, Markstein's quotient inside), clamped scales, and the
    smallest subnormals as a group's amax (amax / 6 rounds to 0: scale 0.125, divided)."""
    rng = np.random.default_rng(11)
    # (fp16 reaches d >= 2**15 only where a scale clamps: an unclamped d is at most about 65504 / 6)
    gs = [2.0**100, 2.0**99 * 1.25, 2.0**-14] if hp == torch.bfloat16 else [1.0, 2.0**10, 2.0**100]
    configs = CONFIGS if dev == "cuda" else CONFIGS[:1]
    paths = set()
    for g, config in itertools.product(gs, configs):
        x = _groups(hp, g, 4, rng)
        tiny = torch.tensor(1, dtype=torch.int16).view(hp).item()  # the smallest subnormal
        x[3, :16] = tiny * torch.tensor(rng.choice([-1.0, 1.0, 0.0], 16))
        x[3, 16:32] = tiny * 3
        _check(x.to(dev), g, "linear", config, f"g {g} config {config}")
        paths |= _paths(x, g)
    want = {"markstein", "divided: d < DMIN", "divided: clamped", "divided: amax / 6 -> 0"}
    assert want | ({"divided: d >= DMAX"} if hp == torch.bfloat16 else set()) <= paths, paths


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp", HALF, ids=str)
def test_nvfp4_half_groups_whose_quotients_pass_six(dev, hp, rflags):
    """Groups whose |x / scale * g| passes 6: the kernel clamps y only on the flagged path where
    RN(amax * r) reaches Y_BOUND = 6.5 (Markstein's quotient in its range, flag 5, else the
    division), and feeds unflagged groups' |y| < 6.5, and grid-flagged ones' (flag 1, Markstein's
    quotient), unclamped to the e2m1 rounding.
    Groups of e4m3 scales rounded down from a subnormal per = g * amax / 6 (|y| up to 9), of
    amax / 6 rounded down to a subnormal of the dtype under a large g, of a scale clamped to 448,
    and of normal scales rounded down (|y| between 6 and 6.5, unclamped; under g = 2688 unflagged,
    under 448 and 512 flagged); bytes against the NumPy
    oracle, and each path's presence by the kernel's rule restated in NumPy (_y_path)."""
    rng = np.random.default_rng(23)
    g = 2688.0  # (the global amax of a tensor at 1)
    rows = [(k * ratio * 2.0**-9 * 6.0 / g, g)  # per at k subnormal e4m3 steps times 1, 1.2, 1.45
            for k, ratio in itertools.product(range(1, 8), (1.0, 1.2, 1.45))]
    rows += [((8 + k + 0.49) / 8 * 2.0**-2 * 6.0 / g, g) for k in (1, 3, 5)]  # normal, rounded down
    sub = torch.tensor(1, dtype=torch.int16).view(hp).item()  # the smallest subnormal
    rows += [((k + 0.4) * sub * 6.0, float(np.float32(2.0**-9 / (k * sub)))) for k in (1, 2, 3)]
    rows += [(2.0, g)]  # per = 896: the scale clamps to 448
    # normal scales rounded down under g of a short significand, which flags them (Markstein's
    # quotient unclamped: flag 1, |y| between 6 and 6.5)
    rows += [((8 + k + 0.49) / 8 * 6.0 / gs, gs) for gs, k in itertools.product((448.0, 512.0), (1, 3, 5))]
    paths = set()
    for amax, gg in rows:
        a = float(oracle.round_to(np.array(amax), hp))
        v = oracle.round_to(rng.uniform(-a, a, (4, 16)), hp)
        v[:, 0] = a * rng.choice([-1.0, 1.0], 4)
        x = torch.from_numpy(v.reshape(1, 64)).to(hp)
        _check(x.to(dev), gg, "linear", None, f"amax {a} g {gg}")
        paths.add(_y_path(a, gg, hp))
    want = {"markstein, clamped", "divided, clamped", "unflagged, 6 < |y| < 6.5", "markstein, 6 < |y| < 6.5"}
    assert want <= paths, paths


def _y_path(amax: float, g: float, dtype) -> str:
    """Which path the kernel takes for a group of this amax under g (its rule restated: the
    oracle's scale, r = RN(g / scale), RN(amax * r) against 6.5, _nv_flag's and Markstein's range)."""
    x = torch.tensor([[amax]], dtype=torch.float32).to(dtype)
    s = _scale_values(torch.cat([x, torch.zeros(1, 15, dtype=dtype)], 1), g)[0]
    per = float(oracle.round_to(np.float32(g) * oracle.round_to(np.array(amax) / 6.0, dtype), torch.float32))
    with np.errstate(over="ignore"):
        y = np.float32(amax) * np.float32(np.float32(g) / s)
    d = np.float32(s * (np.float32(1) / np.float32(g)))
    in_range = 2.0**-95 <= d < 2.0**15 and not (per > 448 or (per == 0 and amax > 0))
    if y >= 6.5:
        return "markstein, clamped" if in_range else "divided, clamped"
    if flagged_d(np.array([d]), "bf16" if dtype == torch.bfloat16 else "fp16")[0]:
        return ("markstein" if in_range else "divided") + (", 6 < |y| < 6.5" if y > 6 else "")
    return "unflagged, 6 < |y| < 6.5" if y > 6 else "unflagged"


def _scale_values(x: torch.Tensor, g: float) -> np.ndarray:
    """Each group's e4m3 scale value (0 -> 0.125) as the contract computes it (the oracle's
    arithmetic), fp32."""
    v = x.float().reshape(-1, 16).numpy().astype(np.float64)
    per = oracle.round_to(np.float32(g) * oracle.round_to(np.abs(v).max(axis=1) / 6.0, x.dtype), torch.float32)
    s = oracle.round_grid(np.minimum(per, 448.0), 3, -6)
    return np.where(s == 0, 0.125, s).astype(np.float32)


def _paths(x: torch.Tensor, g: float) -> set:
    """Which of the flagged groups' paths x's finite groups take under g, by the kernel's rule as
    tests/test_nvfp4_reciprocal.py states it (oracle's scales)."""
    kind = "bf16" if x.dtype == torch.bfloat16 else "fp16"
    v = x.float().reshape(-1, 16).numpy().astype(np.float64)
    amax = np.abs(v).max(axis=1)
    per = oracle.round_to(np.float32(g) * oracle.round_to(amax / 6.0, x.dtype), torch.float32)
    s = oracle.round_grid(np.minimum(per, 448.0), 3, -6)
    d = (np.where(s == 0, 0.125, s).astype(np.float32) * (np.float32(1) / np.float32(g))).astype(np.float32)
    ok = np.isfinite(amax) & flagged_d(d, kind)
    out = {"markstein"} if (ok & (per <= 448) & (per > 0) & (d >= 2.0**-95) & (d < 2.0**15)).any() else set()
    out |= {"divided: d < DMIN"} if (ok & (d < 2.0**-95)).any() else set()
    out |= {"divided: d >= DMAX"} if (ok & (d >= 2.0**15)).any() else set()
    out |= {"divided: clamped"} if (ok & (per > 448)).any() else set()
    return out | ({"divided: amax / 6 -> 0"} if (ok & (per == 0) & (amax > 0)).any() else set())


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_nvfp4_flag_rule_on_the_device(dev, kind):
    """_nv_flag as the kernel runs it against the rule stated in NumPy (tests/test_nvfp4_reciprocal.py):
    d log-uniform over fp32's range and d one to 40 fp32 steps from the dtype's grid times 1 / k.
    (Written after call B of 2026-12-06 gave wrong bytes on an H100 where the interpreter's were
    right: the rule's form then, k * d's bits shifted left by 16, compiled (Triton 3.6's ptxas,
    sm_90) to an integer multiply of the bits of d * 2**-133 by k's.)"""
    rng = np.random.default_rng(3)
    grid = torch.from_numpy(rng.uniform(-3, 3, 4000).astype(np.float32)).to(GRID_DTYPE[kind]).float().numpy()
    k = rng.choice([1.0, 3.0, 5.0, 7.0], grid.shape).astype(np.float32)
    near = (grid / k).astype(np.float32)
    near = (near.view(np.int32) + rng.integers(-40, 41, grid.shape).astype(np.int32)).view(np.float32)
    d = np.concatenate([(2.0 ** rng.uniform(-130, 130, 8000)).astype(np.float32), np.abs(near)])
    dt = torch.from_numpy(d).to(dev)
    out = torch.empty(d.shape, dtype=torch.int32, device=dev)
    from nvfp4_flag_kernel import flag_kernel

    flag_kernel[(len(d) + 1023) // 1024,](dt, out, len(d), X_KIND=1 if kind == "bf16" else 2)
    want = flagged_d(d, kind)
    got = out.cpu().numpy() != 0
    assert want[8000:].any() and not want[8000:].all()
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} of {len(d)} flags differ"


@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason="needs triton importable and TRITON_INTERPRET unset")
@pytest.mark.parametrize("hp", ["*bf16", "*fp16"])
def test_nvfp4_half_kernel_compiles_for_sm90(hp):
    """At the shipped tile of every card class and at small tiles with every PTX block size (1-8
    elements), masked or not: compiles for sm_90, with no approximate division or reciprocal
    (div.full, div.approx, rcp.approx) and no .ftz anywhere (its divisions, for r and in the
    flagged groups' PTX, are div.rn.f32, Markstein's reciprocal rcp.rn.f32 per group; with the
    table, which holds D and R, neither is in the PTX block but the division of flag 3)."""
    from mxquant.backends import _triton_nvfp4 as k

    dtype = {"*bf16": torch.bfloat16, "*fp16": torch.float16}[hp]
    # (the shipped tiles, of large calls, read the table in the layouts listed, the quantize
    # kernel launched as the table kernel's dependent; the small tiles compute per group)
    shipped = [(card, swz, ("swizzled" if swz else "linear") in ops.NV_TABLE_LAYOUTS)
               for card, swz in itertools.product(ops.FP4_CONFIGS, (False, True))]
    shapes = [(*ops._tile_plan(True, True, swz, dtype, 8192, 8192, None, None, card, table), card, swz, table)
              for card, swz, table in shipped]
    shapes += [(bm, bk, w, ops._spread(swz, bm, None), ops._evict(dtype, swz), None, swz, False)
               for bm, bk, w, swz in ((4, 256, 4, False), (2, 512, 2, True), (1, 1024, 1, False), (4, 2048, 8, True))]
    for (bm, bk, warps, spread, evict, card, swz, table), given, pack in itertools.product(shapes, (False, True),
                                                                                           (1, 2, 4, 8)):
        if pack > bm * bk // 2 // (32 * warps) or (card and pack != 8):  # (a block holds a thread's elements)
            continue
        c = dict(GIVEN=given, X_KIND=1 if hp == "*bf16" else 2, SWIZZLED=swz, BLOCK_M=bm, BLOCK_K=bk, MASK=swz,
                 EVICT=evict, BIG=swz, INTERPRETED=False, NK_SHIFT=-1 if swz else 0, PACK=pack, SPREAD=spread,
                 TABLE=table, PDL=table and ops.NV_TABLE_PDL)
        cap = ops._maxnreg(True, None, dtype, card) if card else None
        ptrs = [hp, "*u8", "*u8", "*fp32" if given else "*i32", "*fp32", "*i64" if table else "*fp32"]
        ck = _aot_compile_as_launched(k.nvfp4_quantize_kernel, ptrs, c, warps, None,
                                      options={"maxnreg": cap} if cap else None)
        ptx = ck.asm["ptx"]
        assert "div.full" not in ptx and "div.approx" not in ptx and "rcp.approx" not in ptx and ".ftz" not in ptx, c
        assert ("griddepcontrol.wait" in ptx) == c["PDL"], c
        assert ptx.count("FLAGGED:") == ptx.count("SLOW:") > 0, c
        # Markstein's R: rcp.rn.f32 in every PTX block per group, read from the table with TABLE
        assert ptx.count("rcp.rn.f32") == (0 if table else ptx.count("SLOW:")), c


@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason="needs triton importable and TRITON_INTERPRET unset")
def test_nvfp4_table_kernel_compiles_for_sm90():
    """The per-scale-byte table's kernel, g given or derived from the amax bits, both dtypes:
    compiles for sm_90 with IEEE divisions only (div.rn.f32 for r and 1 / g) and no .ftz (the
    scale bytes 1-7 are e4m3 subnormals, built from fp32 subnormals)."""
    from mxquant.backends import _triton_nvfp4 as k

    for given, kind in itertools.product((False, True), (1, 2)):
        ck = _aot_compile_as_launched(k.nvfp4_table_kernel, ["*fp32" if given else "*i32", "*i64"],
                                      dict(GIVEN=given, X_KIND=kind, PDL=given), 4, None)
        ptx = ck.asm["ptx"]
        assert "div.rn.f32" in ptx and ".ftz" not in ptx and "div.full" not in ptx and "approx" not in ptx, (given, kind)


def test_only_cuda_and_the_interpreter_take_this_kernel():
    """Its flagged groups' block is inline PTX: XPU (Intel's Triton takes no PTX) keeps the division
    kernel for every dtype, CUDA and the interpreter take this one for the dtypes listed; fp32
    never."""
    for dt in HALF:
        assert ops._division_free(dt, torch.device("cuda")) and ops._division_free(dt, torch.device("cpu"))
        assert not ops._division_free(dt, torch.device("xpu"))
    assert not ops._division_free(torch.float32, torch.device("cuda"))
