"""The error sums behind `mxquant convert`'s SQNR: cpu-native's one-pass C function
(cpu_native.error_sums) and the torch path used elsewhere, against a float64 computation
from the reference's dequantization (the oracle: mxquant.reference, summed in float64 by
torch); every instruction-set variant; the same result for any thread count; NaN/Inf
propagate; the conversion's manifest agrees whichever path ran."""

import math

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
