"""The error sums behind `mxquant convert`'s SQNR: cpu-native's one-pass C function
(cpu_native.error_sums) and the torch path used elsewhere, against a float64 computation
from the reference's dequantization (the oracle: mxquant.reference, summed in float64 by
torch); every instruction-set variant; the same result for any thread count; NaN/Inf
propagate; the conversion's manifest agrees whichever path ran. fp16 input: all 65536 bit
patterns, each alone in a row, against NumPy's float64 value of it (NaN rows: the NaN's bits as
IEEE arithmetic carries them), and every finite one in real MXFP8 rows against the oracle row by
row: the exact widening of AVX2 without F16C (widen_f16x8_avx2) and the other variants' own."""

import math
import platform

import numpy as np
import pytest
import torch

from native_isa import VARIANTS, native_isa

import mxquant
from mxquant import reference
from mxquant.backends import _native_lib

pytestmark = pytest.mark.skipif(_native_lib.load()[0] is None, reason="cpu-native not built")


def _oracle(x, q):
    deq = reference.dequantize(q.data, q.scale, "linear", torch.float64)
    xd = x.double()
    return float((xd * xd).sum()), float(((xd - deq) ** 2).sum())


def _inputs(dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(200, 1024, generator=g) * torch.logspace(-30, 30, 200).unsqueeze(1)
    x[3] = 0  # zero blocks
    x[4, :32] = 448 * 2.0 ** 10  # amax at max * 2^k
    x[5, :7] = torch.tensor([2.0 ** -133, -(2.0 ** -140), 1e-40, 3e-39, 0.5, -1.0, 2.0 ** -126])  # subnormals
    return x.to(dtype)


@pytest.mark.parametrize("variant", [name for name, _ in VARIANTS] or [None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("elem", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("mode", ["compressed-tensors", "rceil", "floor"])  # floor saturates elements
def test_native_sums_match_the_float64_oracle(variant, dtype, elem, mode):
    from mxquant.backends import cpu_native

    x = _inputs(dtype)
    q = mxquant.mxfp8_quantize(x, elem, scale_mode=mode, scale_layout="linear")
    want = _oracle(x, q)
    with native_isa(variant):
        got = cpu_native.error_sums(x, q.data, q.scale)
    for g, w in zip(got, want):  # fp16 overflows to Inf at the large rows: Inf / NaN on both sides
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-9), (got, want)
    if dtype != torch.float16:
        assert all(math.isfinite(v) for v in got)


def test_native_sums_do_not_depend_on_the_thread_count():
    from mxquant.backends import cpu_native

    x = _inputs(torch.bfloat16).reshape(-1, 64)
    q = mxquant.mxfp8_quantize(x, torch.float8_e4m3fn)
    threads = torch.get_num_threads()
    try:
        results = set()
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.add(cpu_native.error_sums(x, q.data, q.scale))
    finally:
        torch.set_num_threads(threads)
    assert len(results) == 1, results


def test_native_sums_propagate_nan_and_inf():
    from mxquant.backends import cpu_native

    for bad, want in ((float("nan"), "nan"), (float("inf"), "inf")):
        x = torch.randn(4, 64)
        x[1, 5] = bad
        q = mxquant.mxfp8_quantize(x, torch.float8_e4m3fn)
        signal, noise = cpu_native.error_sums(x, q.data, q.scale)
        assert (math.isnan(signal) if want == "nan" else signal == math.inf), signal
        assert math.isnan(noise)  # an Inf/NaN block dequantizes to NaN


def test_convert_gives_the_same_sqnr_on_either_path(tmp_path, monkeypatch):
    pytest.importorskip("safetensors")
    from convert_ckpt import llama_like, save_checkpoint

    from mxquant.checkpoint import convert, tensors

    save_checkpoint(tmp_path / "src", llama_like(layers=1, hidden=256, inter=512, dtype=torch.float32))
    native = {t["name"]: t for t in convert(tmp_path / "src", tmp_path / "a").tensors}
    monkeypatch.setattr(tensors, "native_calls", lambda quant: None)  # the torch path
    plain = {t["name"]: t for t in convert(tmp_path / "src", tmp_path / "b").tensors}
    quantized = [n for n, t in native.items() if t.get("sqnr_db") is not None]
    assert quantized
    for n in quantized:
        assert native[n]["sqnr_db"] == pytest.approx(plain[n]["sqnr_db"], abs=1e-3), n
        assert native[n]["rel_error"] == pytest.approx(plain[n]["rel_error"], rel=1e-4), n


def _row_sums(x, data, scale, elem=torch.float8_e4m3fn):
    """mxq_error_sums' per-row sums (the esum the C function fills), as float64 [rows, 2]."""
    lib = _native_lib.load()[0]
    esum = torch.empty(2 * x.shape[0], dtype=torch.float64)
    sums = torch.empty(2, dtype=torch.float64)
    rc = lib.mxq_error_sums(x.data_ptr(), _native_lib.HP_CODE[x.dtype], x.shape[0], x.shape[1], x.stride(0),
                            data.view(torch.uint8).data_ptr(), scale.view(torch.uint8).data_ptr(),
                            {torch.float8_e4m3fn: 0, torch.float8_e5m2: 1}[elem], esum.data_ptr(), sums.data_ptr(),
                            torch.get_num_threads())
    assert rc == 0
    return esum.view(-1, 2).numpy()


@pytest.mark.parametrize("variant", [name for name, _ in VARIANTS] or [None])
def test_every_fp16_bit_pattern_widens_exactly(variant):
    """Row r: the fp16 pattern r at column r % 32 (every vector lane), +0 elsewhere; its data byte
    e4m3 1.0 (0x38), the other bytes 0, scale 2^0. Row sums x^2 and (x - 1)^2: exact in float64 for
    every finite x (the difference of two fp16 values is exact in double, as is x^2), so they must equal
    NumPy's; +-Inf -> Inf. A NaN x: both sums that NaN, its fp32 payload (h & 0x3ff) << 13 carried to
    double as IEEE arithmetic on x86 does (quiet bit set, payload at bit 42, sign kept)."""
    rows = 65536
    h = np.arange(rows, dtype=np.uint32).astype(np.uint16)
    xb = np.zeros((rows, 32), dtype=np.uint16)
    col = np.arange(rows) % 32
    xb[np.arange(rows), col] = h
    x = torch.from_numpy(xb.view(np.int16)).view(torch.float16)
    data = torch.zeros(rows, 32, dtype=torch.uint8)
    data[torch.arange(rows), torch.from_numpy(col)] = 0x38
    scale = torch.full((rows, 1), 127, dtype=torch.uint8)
    with native_isa(variant):
        got = _row_sums(x, data.view(torch.float8_e4m3fn), scale)
    v = h.view(np.float16).astype(np.float64)
    nan = np.isnan(v)
    assert nan.sum() == 2 * 1023 and np.isinf(v).sum() == 2
    with np.errstate(invalid="ignore", over="ignore"):
        want = np.stack([v * v, (v - 1.0) * (v - 1.0)], axis=1)
    assert np.array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64)), np.argwhere(
        got[~nan].view(np.uint64) != want[~nan].view(np.uint64))[:5]
    assert np.isnan(got[nan]).all()
    if platform.machine() in ("x86_64", "AMD64"):
        hn = h[nan].astype(np.uint64)
        bits = ((hn & 0x8000) << np.uint64(48)) | np.uint64(0x7FF8000000000000) | ((hn & 0x3FF) << np.uint64(42))
        assert np.array_equal(got[nan].view(np.uint64), np.stack([bits, bits], axis=1))


@pytest.mark.parametrize("variant", [name for name, _ in VARIANTS] or [None])
@pytest.mark.parametrize("elem", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_every_finite_fp16_in_mxfp8_rows(variant, elem):
    """The 63488 finite fp16 patterns (+-0, subnormals, +-65504 among them) in rows of 32, in bit order
    (rows of near values) and shuffled; MXFP8-quantized by mxfp8_quantize; each row's two sums against
    the float64 oracle (the same terms summed in another order: rel 1e-12)."""
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    h = h[np.isfinite(h.view(np.float16))]
    assert h.size == 63488 and {0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0xFBFF} <= set(h.tolist())
    shuffled = h[np.random.default_rng(5).permutation(h.size)]
    x = torch.from_numpy(np.concatenate([h, shuffled]).view(np.int16)).view(torch.float16).reshape(-1, 32)
    q = mxquant.mxfp8_quantize(x, elem, scale_layout="linear")
    with native_isa(variant):
        got = _row_sums(x, q.data, q.scale, elem)
    deq = reference.dequantize(q.data, q.scale, "linear", torch.float64)
    xd = x.double()
    want = torch.stack([(xd * xd).sum(1), ((xd - deq) ** 2).sum(1)], 1).numpy()
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
