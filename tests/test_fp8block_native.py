"""cpu-native's FP8 128x128-block quantization with its error sums (backends/csrc/mxq_cpu_fp8block.c,
cpu_native.fp8block_quantize), which `mxquant convert --scheme fp8-block` uses on the CPU, against
independent oracles, on every instruction-set variant this CPU runs (tests/native_isa.py):

- the bytes of data and scale against fp8block.quantize (compressed-tensors' rules as plain torch
  statements) and against compressed-tensors' own observer and compressor as llm-compressor's
  model_free_ptq runs them (where installed: extra `convert-test`), on random data of each dtype and on
  adversarial blocks: NaN (either sign, payloads), +-Inf, zero and -0 blocks, subnormals, a scale that
  rounds to 0 (eps), magnitudes near the dtype's max, elements on the e4m3 rounding ties of their block's
  scale, a partial last row block, R < 128, row-strided input;
- sum(x^2) and sum((x - dq)^2) against a float64 NumPy sum over torch's own fp8 -> fp32 cast of the
  data times the block scale; the same for any thread count;
- every fp16 bit pattern (+-0, subnormals, +-65504, +-Inf, NaNs with payloads) in 1x128 blocks of
  consecutive patterns and shuffled into 128x128 blocks: the bytes, and the sums of the finite ones
  (the AVX2 variant widens fp16 by hand, without F16C, and rounds x / scale to fp16 in integer bits);
- a conversion on the C path and on the torch path: the same files, the same SQNR to 1e-3 dB.
NaN / Inf blocks in wide weights: tests/test_fp8block_nan_rule.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mxquant.checkpoint import fp8block
from native_isa import NATIVE_VARIANTS, native_isa

cpu_native = pytest.importorskip("mxquant.backends.cpu_native")
_native_lib = pytest.importorskip("mxquant.backends._native_lib")
if _native_lib.load()[0] is None:
    pytest.skip(f"cpu-native not built: {_native_lib.load()[1]}", allow_module_level=True)

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
BITS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
NAN, INF = float("nan"), float("inf")
SHAPES = [(128, 128), (1, 128), (5, 256), (127, 384), (129, 128), (300, 512), (256, 1024)]


@pytest.fixture(params=NATIVE_VARIANTS)
def variant(request):
    name = request.param.partition("@")[2] or None
    with native_isa(name):
        yield name


def _e4m3_grid() -> torch.Tensor:
    """Every finite non-negative e4m3 value, ascending (from torch's own cast)."""
    v = torch.arange(0, 0x7f, dtype=torch.uint8).view(torch.float8_e4m3fn).double()
    return torch.sort(v).values


def _block(kind: int, dtype, nr: int, g: torch.Generator) -> torch.Tensor:
    """One [nr, 128] block of kind `kind` (float64 before the cast to dtype, bits set after)."""
    fi = torch.finfo(dtype)
    x = torch.randn(nr, 128, generator=g, dtype=torch.float64)
    k = kind % 16
    if k == 0:  # ordinary, block magnitude 1e-6 .. 1e4
        return (x * 10 ** (torch.rand(1, generator=g).item() * 10 - 6)).to(dtype)
    if k == 1:  # zeros with some -0
        return torch.where(x > 0.5, -0.0, 0.0).to(dtype)
    if k == 2:  # subnormals of dtype only (and -0)
        return (torch.randint(-40, 41, (nr, 128), generator=g).double() * fi.smallest_normal * 2.0 ** -8).to(dtype)
    if k == 3:  # tiny: amax / 448 rounds to 0 in dtype -> scale eps
        return (x * fi.smallest_normal * 4).to(dtype)
    if k == 4:  # near the dtype's largest value
        return (x.clamp(-3, 3) / 3 * fi.max).to(dtype)
    if k == 5:  # e4m3 values and rounding ties (and one dtype ulp beside them) of the block's scale 2^e
        grid = _e4m3_grid()
        mids = torch.cat([grid, (grid[1:] + grid[:-1]) / 2])
        e = int(torch.randint(-10, 6, (1,), generator=g))
        amax = torch.tensor(448.0 * 2.0 ** e).to(dtype)  # scale = amax / 448 = 2^e exactly
        s = 2.0 ** e
        pick = mids[torch.randint(0, mids.numel(), (nr, 128), generator=g)] * s
        sign = torch.where(torch.rand(nr, 128, generator=g) < 0.5, -1.0, 1.0).double()
        xb = (pick * sign).to(dtype)
        nudge = torch.randint(-1, 2, (nr, 128), generator=g).to(BITS[dtype])
        xb = (xb.view(BITS[dtype]) + nudge * (xb != 0).to(BITS[dtype])).view(dtype)  # +-1 ulp or none
        xb = torch.where(xb.abs() <= amax, xb, amax)
        xb[0, 0] = amax
        return xb
    xb = (x * 0.1).to(dtype)
    r, c = int(torch.randint(0, nr, (1,), generator=g)), int(torch.randint(0, 128, (1,), generator=g))
    r2, c2 = (r + 1) % nr, (c + 7) % 128
    if k == 6:
        xb[r, c] = NAN
    elif k == 7:
        xb[r, c] = -NAN
    elif k == 8:
        xb[r, c] = INF
    elif k == 9:
        xb[r, c] = -INF
    elif k == 10:
        xb[r, c], xb[r2, c2] = INF, NAN
    elif k == 11:
        xb[r, c], xb[r2, c2] = INF, -INF
    elif k == 12:  # NaN payloads, signalling ones too
        bits = xb.view(BITS[dtype])
        pay = {torch.bfloat16: (0x7F81, -0x7F), torch.float16: (0x7C01, -0x3FF), torch.float32: (0x7F800001, -0x3FFFFF)}
        bits[r, c], bits[r2, c2] = pay[dtype]
    elif k == 13:  # one element: the smallest subnormal, the rest 0
        xb.zero_()
        xb[r, c] = -fi.smallest_normal * (2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10 if dtype == torch.float16
                                           else 2.0 ** -23)
    elif k == 14:  # every element the same magnitude: y = x / scale near 448 for all of them
        xb = torch.where(x < 0, -1.0, 1.0).to(dtype) * xb.abs().amax()
    return xb


FINITE = (0, 1, 2, 3, 4, 5, 13, 14)  # the kinds without NaN or Inf


def adversarial(dtype, rows: int, k: int, seed: int, kinds=tuple(range(16))) -> torch.Tensor:
    """[rows, k]: block (i, j) of kind kinds[(seed + i * (k / 128) + j) % len(kinds)] (all 16 kinds
    over a few shapes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(rows, k, dtype=dtype)
    kb = k // 128
    for i in range(-(-rows // 128)):
        nr = min(128, rows - 128 * i)
        for j in range(kb):
            kind = kinds[(seed + i * kb + j) % len(kinds)]
            x[128 * i:128 * i + nr, 128 * j:128 * (j + 1)] = _block(kind, dtype, nr, g)
    return x


def random(dtype, rows: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, k, generator=g) * torch.logspace(-4, 3, rows).unsqueeze(1)).to(dtype)


def _same_bytes(got, want):
    (gq, gs), (wq, ws) = got, want
    assert gq.dtype == wq.dtype == torch.float8_e4m3fn and gq.shape == wq.shape
    assert gs.dtype == ws.dtype and gs.shape == ws.shape
    bad = (gq.view(torch.uint8) != wq.view(torch.uint8)).nonzero()
    assert bad.numel() == 0, (f"{bad.shape[0]} data bytes differ, first at {bad[0].tolist()}: "
                              f"{gq.view(torch.uint8)[tuple(bad[0])]:#x} vs {wq.view(torch.uint8)[tuple(bad[0])]:#x}")
    assert torch.equal(gs.view(BITS[gs.dtype]), ws.view(BITS[ws.dtype])), (gs, ws)


def _native(x):
    data, scale, _ = cpu_native.fp8block_quantize(x)
    return data, scale


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_data_byte_exact(variant, dtype):
    for seed, (rows, k) in enumerate(SHAPES):
        x = random(dtype, rows, k, seed)
        _same_bytes(_native(x), fp8block.quantize(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 5, 11])
def test_adversarial_blocks_byte_exact(variant, dtype, seed):
    for rows, k in ((128, 2048), (300, 1024), (64, 512), (257, 256)):
        x = adversarial(dtype, rows, k, seed)
        _same_bytes(_native(x), fp8block.quantize(x))


def test_the_adversarial_blocks_reach_their_cases():
    """The inputs above hold what they claim: NaN and Inf blocks, eps scales, e4m3 ties, subnormals."""
    for dtype in DTYPES:
        x = adversarial(dtype, 128, 16 * 128, 0)
        q, s = fp8block.quantize(x)
        assert s.isnan().any() and s.isinf().any() and (s == torch.finfo(dtype).eps).sum() >= 2
        assert (q.view(torch.uint8) == 0x7F).any() and (q.view(torch.uint8) == 0x80).any()
        sub = (x != 0) & (x.abs() < torch.finfo(dtype).smallest_normal)
        assert sub.sum() > 1000
        y = x[:, 5 * 128:6 * 128].float() / s[0, 5].float()
        grid = _e4m3_grid().float()
        mids = (grid[1:] + grid[:-1]) / 2
        assert torch.isin(y.abs(), mids).sum() > 1000  # x / scale exactly between two e4m3 values


def _all_fp16(finite_only: bool = False) -> np.ndarray:
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    return h[np.isfinite(h.view(np.float16))] if finite_only else h


def _fp16(bits: np.ndarray, shape) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(bits).view(np.int16)).view(torch.float16).reshape(shape)


def test_every_fp16_bit_pattern_byte_exact(variant):
    """All 65536 fp16 patterns as one row of 1x128 blocks of consecutive patterns (one binade or less a
    block: every element a meaningful e4m3 code, eps scales at the subnormal blocks, 65504's block, the
    Inf / NaN blocks), and the finite ones alone, in order and shuffled into 496x128 and 124x512 (blocks
    of mixed magnitudes, a partial row block): fp8block.py's bytes; the finite inputs' sums against
    float64 NumPy."""
    x = _fp16(_all_fp16(), (1, 65536))
    assert {0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7C01, 0xFE00} <= set(
        x.view(torch.int16).numpy().view(np.uint16).ravel().tolist())
    _same_bytes(_native(x), fp8block.quantize(x))
    finite = _all_fp16(finite_only=True)
    perm = np.random.default_rng(3).permutation(finite.size)
    cases = [_fp16(finite, (1, -1)), _fp16(finite[perm], (496, 128)), _fp16(finite[perm], (124, 512))]
    for x in cases:
        q, s, (signal, noise) = cpu_native.fp8block_quantize(x)
        _same_bytes((q, s), fp8block.quantize(x))
        want = _numpy_sums(x, q, s)
        assert math.isfinite(noise) and _close(signal, want[0]) and _close(noise, want[1]), ((signal, noise), want)


def test_row_strided_input(variant):
    x = random(torch.bfloat16, 200, 768, 3)
    part = x[:, 128:512]  # rows 768 elements apart
    assert not part.is_contiguous()
    _same_bytes(_native(part), fp8block.quantize(part.contiguous()))


def test_empty_and_bad_shapes():
    q, s, sums = cpu_native.fp8block_quantize(torch.empty(0, 256, dtype=torch.bfloat16))
    assert q.shape == (0, 256) and s.shape == (0, 2) and sums == (0.0, 0.0)
    with pytest.raises(RuntimeError, match="returned -3"):
        cpu_native.fp8block_quantize(torch.zeros(4, 96, dtype=torch.bfloat16))


def _numpy_sums(x, q, s):
    """sum(x^2), sum((x - q * scale)^2) in float64 NumPy; q's values from torch's own fp8 cast."""
    rows = x.shape[0]
    xd = x.double().numpy()
    sc = np.repeat(np.repeat(s.double().numpy(), 128, 0)[:rows], 128, 1)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN / Inf blocks: NaN and Inf sums wanted
        dq = q.float().double().numpy() * sc
        return float((xd * xd).sum()), float(((xd - dq) ** 2).sum())


def _close(got: float, want: float) -> bool:
    if math.isnan(want) or math.isinf(want):
        return (math.isnan(got) and math.isnan(want)) or got == want
    return got == pytest.approx(want, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_error_sums_against_float64(variant, dtype):
    cases = [random(dtype, r, k, i) for i, (r, k) in enumerate(SHAPES)]
    cases += [adversarial(dtype, 130, 128 * 16, seed) for seed in (0, 3)]
    cases += [adversarial(dtype, 300, 128 * 6, 0, FINITE)]
    for x in cases:
        q, s, (signal, noise) = cpu_native.fp8block_quantize(x)
        want = _numpy_sums(x, q, s)
        assert _close(signal, want[0]) and _close(noise, want[1]), ((signal, noise), want)
    finite = cases[-1]
    assert math.isfinite(cpu_native.fp8block_quantize(finite)[2][1])


def test_error_sums_propagate_nan_and_inf(variant):
    for bad in (NAN, INF, -INF):
        x = random(torch.bfloat16, 256, 256, 1)
        x[130, 7] = bad
        _, _, (signal, noise) = cpu_native.fp8block_quantize(x)
        assert (math.isnan(signal) if bad != bad else signal == INF), signal
        assert math.isnan(noise)  # a NaN block dequantizes to NaN; an Inf block to 0 * Inf


def test_quantize_only_writes_the_same_bytes(variant):
    x = adversarial(torch.bfloat16, 300, 1024, 2)
    q, s, sums = cpu_native.fp8block_quantize(x, sums=False)
    assert sums is None
    _same_bytes((q, s), fp8block.quantize(x))


def test_same_result_for_any_thread_count():
    x = random(torch.float32, 1024, 1024, 4)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            q, s, sums = cpu_native.fp8block_quantize(x)
            results.append((q.view(torch.uint8), s, sums))
    finally:
        torch.set_num_threads(threads)
    for q, s, sums in results[1:]:
        assert torch.equal(q, results[0][0]) and torch.equal(s, results[0][1]) and sums == results[0][2]


@pytest.mark.parametrize("dtype", DTYPES)
def test_byte_exact_against_compressed_tensors(dtype):
    """compressed-tensors' FP8_BLOCK observer and compressor on one weight, as llm-compressor's
    model_free_ptq runs them: an oracle that is not fp8block.py. Finite adversarial kinds and random
    data. Not NaN / Inf blocks: there mxquant writes its own fixed NaN bytes (test_nan_inf_rule...),
    compressed-tensors' NaN signs vary with torch's path (test_special_blocks_as_compressed_tensors...)."""
    pytest.importorskip("compressed_tensors")
    pytest.importorskip("llmcompressor")
    from compressed_tensors.compressors import compress_module
    from compressed_tensors.quantization import preset_name_to_scheme
    from llmcompressor.entrypoints.model_free.lifecycle import calibrate_weight, initialize_quantized_linear

    inputs = [adversarial(dtype, 300, 8 * 128, 0, FINITE), adversarial(dtype, 100, 8 * 128, 3, FINITE),
              random(dtype, 256, 384, 1), random(dtype, 200, 256, 2)]
    for w in inputs:
        m = initialize_quantized_linear(w.clone(), preset_name_to_scheme("FP8_BLOCK", ["Linear"]), "cpu")
        calibrate_weight(m)
        compress_module(m)
        _same_bytes(_native(w), (m.weight, m.weight_scale))


def test_convert_same_files_and_sqnr_on_either_path(tmp_path, monkeypatch):
    """`mxquant convert --scheme fp8-block` on the C path and on the torch path (native_calls None)."""
    pytest.importorskip("safetensors")
    from convert_ckpt import llama_like, save_checkpoint
    from safetensors.torch import load_file

    from mxquant.checkpoint import convert, tensors

    save_checkpoint(tmp_path / "src", llama_like(layers=1, hidden=256, inter=512, dtype=torch.bfloat16))
    native = {t["name"]: t for t in convert(tmp_path / "src", tmp_path / "a", scheme="fp8-block").tensors}
    monkeypatch.setattr(tensors, "native_calls", lambda quant: None)
    plain = {t["name"]: t for t in convert(tmp_path / "src", tmp_path / "b", scheme="fp8-block").tensors}
    quantized = [n for n, t in native.items() if t.get("sqnr_db") is not None]
    assert quantized
    for n in quantized:
        assert native[n]["sqnr_db"] == pytest.approx(plain[n]["sqnr_db"], abs=1e-3), n
        assert native[n]["rel_error"] == pytest.approx(plain[n]["rel_error"], rel=1e-4), n
    files = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert files == sorted(p.name for p in (tmp_path / "b").glob("*.safetensors")) and files
    for f in files:
        a, b = load_file(tmp_path / "a" / f), load_file(tmp_path / "b" / f)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key].view(torch.uint8), b[key].view(torch.uint8)), key
