"""cpu-native's row+column call at the edges of its vector paths, on every instruction-set variant,
byte for byte against the NumPy oracle (tests/mx_oracle.py) and the column-wise call.

The AVX-512 bf16 kernel rounds each |x| once to the element format's mantissa width and encodes
it with the column scale and with the row scale (backends/csrc/mxq_cpu_training_avx512.c): right
only where the result is an fp8 normal or clamps to the max. Lanes whose result is below the
smallest normal (fp8 subnormals, zeros) are re-encoded in vectors from x itself; a row block is
first checked against the smallest |x| of its 32x64 tile, exactly only when that fails; blocks
with NaN/Inf or a scale so small that a bf16 subnormal could round up past 2^emin go to the
scalar block code. These inputs put elements on both sides of those borders: blocks of |x| in
[1/8, 2) whose few small elements lie around and below each block's smallest-normal threshold
(2^-14 / 2^-13 relative for e4m3, 2^-29 / 2^-28 for e5m2, the scale depending on the mode and the
amax's mantissa, which is often near the rceil / compressed-tensors step 1.75), mantissas that
carry into the exponent when rounded (0x7f, 0x78 ties), amaxes whose floor-mode scale saturates,
a tile of bf16 subnormals, and a few zeros, subnormals, NaN and Inf."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mxquant
import mx_oracle as oracle
from cpu_auto import loaded_backend
from native_isa import NATIVE_VARIANTS, native_isa
from training_helpers import ELEMS, INPUTS, MODES, assert_bytes, ids

NATIVE = "cpu-native"
LOW = {torch.float8_e4m3fn: -14, torch.float8_e5m2: -29}  # log2 of the threshold for an amax in [1, 2)
TINY = {torch.float8_e4m3fn: 113, torch.float8_e5m2: 98}  # a tile scaled by 2^-(TINY + seed): s = 3 - C - seed
CASES = [(hp, dtype, mode) for hp in INPUTS for dtype in ELEMS for mode in MODES]


@pytest.fixture(params=NATIVE_VARIANTS)
def variant(request):
    loaded_backend(NATIVE)
    with native_isa(request.param.partition("@")[2] or None):
        yield


def boundary_matrix(hp, dtype, seed: int, m: int = 128, k: int = 256, small: float = 1 / 48) -> torch.Tensor:
    """sign * 2^u * (1 + f / 128): u in -3..0 for most elements (so a block's amax is in [1, 2)),
    u in LOW - 6 .. LOW + 2 for a fraction `small` of them (so about half of the blocks have one
    near the threshold), f random with extra weight on the rounding edges of e4m3 and e5m2 (0x7f,
    0x78, 0x77, 0x70, 0x6f) and the rceil step (0x5f, 0x60, 0x61); one 32x32 tile scaled down so
    far that its small elements are bf16 subnormals whose scaled values may round up past the
    smallest normal; a few specials."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randint(-3, 1, (m, k), generator=g)
    near = torch.rand(m, k, generator=g) < small
    u = torch.where(near, torch.randint(LOW[dtype] - 6, LOW[dtype] + 3, (m, k), generator=g), u)
    f = torch.randint(0, 128, (m, k), generator=g)
    edge = torch.tensor([0x7F, 0x78, 0x77, 0x7C, 0x70, 0x6F, 0x5F, 0x60, 0x61, 0x00, 0x08])
    pick = torch.rand(m, k, generator=g) < 0.3
    f = torch.where(pick, edge[torch.randint(len(edge), (m, k), generator=g)], f)
    sign = torch.where(torch.rand(m, k, generator=g) < 0.5, -1.0, 1.0).double()
    x = sign * torch.exp2(u.double()) * (1 + f.double() / 128)
    x[32:64, 64:96] *= 2.0 ** -(TINY[dtype] + seed)  # its small elements bf16 subnormals, C + s in 1..4
    flat = x.view(-1)
    where = torch.randint(m * k, (24,), generator=g)
    specials = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 2.0**-130, 2.0**-140, 2.0**-20]
    for i, w in enumerate(where.tolist()):
        flat[w] = specials[i % len(specials)]
    return x.to(hp)


def exact_border_matrix(dtype, seed: int) -> torch.Tensor:
    """64x64 bf16 whose row blocks all have the amax 1.5 (one scale in every mode), the other
    elements in [1/8, 1.5), and in each row one element at the threshold's bits + delta, delta
    cycling through -9, -8, -1, 0, 1, 16 (for e4m3, -9 is the first whose fast-path byte is wrong):
    the smallest of a tile decides whether its rows are checked one by one."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(64, 64, generator=g, dtype=torch.float64) * 1.375 + 0.125).to(torch.bfloat16)
    thr = int(torch.tensor(2.0 ** LOW[dtype], dtype=torch.bfloat16).view(torch.int16))
    for r in range(64):
        c = 5 * r % 31 + 32 * (r // 6 % 2)
        x[r, c + 1] = -1.5 if r % 3 else 1.5
        x[r, c] = torch.tensor(thr + (-9, -8, -1, 0, 1, 16)[r % 6], dtype=torch.int16).view(torch.bfloat16)
    return x


@pytest.mark.parametrize("hp, dtype, mode", CASES, ids=[ids(c) for c in CASES])
def test_rowcol_at_the_fast_path_borders(variant, hp, dtype, mode):
    inputs = [boundary_matrix(hp, dtype, seed, small=small) for seed, small in ((1, 1 / 48), (2, 1 / 16), (3, 1 / 200))]
    for seed, x in enumerate(inputs + [exact_border_matrix(dtype, 4).to(hp)], 1):
        row, col = mxquant.mxfp8_quantize_rowcol(x, dtype, scale_mode=mode, backend=NATIVE)
        want_r, want_rs = oracle.quantize(x, dtype, mode, "linear")
        want_c, want_cs = oracle.quantize_colwise(x, dtype, mode, "linear")
        what = f"seed {seed}"
        assert_bytes(row.data, want_r, f"{what}: row data vs oracle")
        assert_bytes(row.scale, oracle.public(want_rs, "linear"), f"{what}: row scale vs oracle")
        assert_bytes(col.data, want_c, f"{what}: col data vs oracle")
        assert_bytes(col.scale, oracle.public(want_cs, "linear"), f"{what}: col scale vs oracle")
        alone = mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, axis=-2, backend=NATIVE)
        assert_bytes(alone.data, want_c, f"{what}: column-wise call's data vs oracle")
        assert_bytes(alone.scale, oracle.public(want_cs, "linear"), f"{what}: column-wise call's scale vs oracle")


def test_inputs_reach_both_sides_of_each_border():
    """The inputs are what the docstring says: per format and mode, finite row and column blocks
    on the fast path with an element within 4x of the threshold 2^s * (smallest normal), and
    finite blocks on the slow path (s from the oracle's definition)."""
    for dtype in ELEMS:
        emin = oracle.FORMATS[dtype][2]
        for mode in MODES:
            x = boundary_matrix(torch.bfloat16, dtype, 1).double().numpy()
            for blocks in (x.reshape(-1, 32), x.T.reshape(-1, 32)):
                finite = np.isfinite(blocks).all(axis=1)
                a = np.abs(np.where(finite[:, None], blocks, 1.0))
                thr = np.ldexp(2.0**emin, oracle.scale_exponents(a.max(axis=1), dtype, mode).astype(np.int32))
                lo = np.where(a > 0, a, np.inf).min(axis=1)
                assert (finite & (lo >= thr) & (lo < 4 * thr)).sum() >= 20, (dtype, mode)
                assert (finite & (lo < thr)).sum() >= 20, (dtype, mode)


@pytest.mark.parametrize("hp", INPUTS, ids=[str(h).replace("torch.", "") for h in INPUTS])
def test_rowcol_every_row_on_its_own_scale(variant, hp):
    """Row blocks whose scales all differ within a tile (row r scaled by 2^(r mod 29 - 14), the
    column blocks mixing them), a few with a zero or a NaN: the vector kernels compute the row
    scales of a tile together (the AVX2 one by a reduction tree whose lanes are rows in a shuffled
    order), so a row given another row's scale shows here, where random data, whose rows share
    their scale, hides it."""
    g = torch.Generator().manual_seed(7)
    m, k = 96, 320
    x = torch.randn(m, k, generator=g, dtype=torch.float64) * torch.exp2(torch.arange(m) % 29 - 14.0)[:, None]
    x[5, 70], x[40, 200], x[77, 3] = 0.0, float("nan"), 0.0
    x = x.to(hp)
    for dtype in ELEMS:
        for mode in MODES:
            row, col = mxquant.mxfp8_quantize_rowcol(x, dtype, scale_mode=mode, backend=NATIVE)
            want_r, want_rs = oracle.quantize(x, dtype, mode, "linear")
            want_c, want_cs = oracle.quantize_colwise(x, dtype, mode, "linear")
            what = f"{dtype} {mode}"
            assert_bytes(row.scale, oracle.public(want_rs, "linear"), f"{what}: row scale vs oracle")
            assert_bytes(row.data, want_r, f"{what}: row data vs oracle")
            assert_bytes(col.scale, oracle.public(want_cs, "linear"), f"{what}: col scale vs oracle")
            assert_bytes(col.data, want_c, f"{what}: col data vs oracle")
