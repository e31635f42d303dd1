"""CPU contract tests of the `flashinfer` backend (backends/flashinfer.py).

No GPU and no FlashInfer here: these tests use an injected fake. A fake `flashinfer` module
is put in sys.modules; its `mxfp8_quantize` records its calls, checks its input as FlashInfer's
CUDA path does (bf16/fp16, contiguous, rank >= 2, K % 32 == 0) and returns what FlashInfer
returns: e4m3 elements of shape (*input.shape[:-1], padded_k) and the scales as a 1-D uint8
tensor, in FlashInfer's 128x4 byte order (computed here from its offset formula, not with
mxquant's swizzle) or row-major. Its bytes come from mxquant.reference, so the wrapper's
translation is checked byte for byte. It accepts CPU tensors, so `backend.quantize` is called
directly on CPU tensors. Capability gating fakes torch.cuda's answers.
"""

from __future__ import annotations

import builtins
import math
import sys
import types

import pytest
import torch

import mxquant
from mxquant import layouts, reference
from mxquant.backend import Call
from mxquant.errors import BackendUnavailableError, NoBackendError
from mxquant.layouts import round_up
from mxquant.registry import Registry
from mxquant.selection import ENV_ALLOW, ENV_BACKEND

from flashinfer_fake import RN_RCP448, ULP_UP_RCP448, FakeFlashInfer, flashinfer_128x4, kernel_model  # tests/ on sys.path

E4M3, BF16, F16 = torch.float8_e4m3fn, torch.bfloat16, torch.float16
CUDA0 = torch.device("cuda", 0)


@pytest.fixture
def fake(monkeypatch):
    module = FakeFlashInfer()
    monkeypatch.setitem(sys.modules, "flashinfer", module)
    return module


@pytest.fixture
def capability(monkeypatch):
    """capability((major, minor)) fakes a CUDA GPU of that compute capability."""

    def set_capability(cap):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)

    return set_capability


def fib():
    from mxquant.backends import flashinfer

    return flashinfer


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def sample(shape, dtype=BF16, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-20, 21, (n,), generator=g).float())
    return x.reshape(shape).to(dtype)


# ---- declaration ----------------------------------------------------------------------------

def test_contract_declaration():
    b = fib().backend
    caps = b.capabilities
    assert b.name == "flashinfer" and b.priority == 100 and b.dequantize is None
    assert caps.devices == {"cuda"} and caps.element_dtypes == {E4M3} and caps.scale_modes == {"rceil"}
    assert caps.scale_layouts == {"linear", "swizzled"} and caps.input_dtypes == {BF16, F16}
    assert [d.code for d in b.deviations] == ["nan-ignored", "inf-saturates", "tiny-flush", "approx-scale"]
    assert all(d.summary for d in b.deviations)


def test_contract_module_import_does_not_import_flashinfer():
    import subprocess

    code = ("import sys; import mxquant.backends.flashinfer as f; import torch; "
            "assert 'flashinfer' not in sys.modules, 'flashinfer imported'; print(f.probe(torch.device('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "serves cuda only" in out


# ---- translation (backend.quantize on CPU tensors, through the fake) --------------------------

@pytest.mark.parametrize("layout", ["linear", "swizzled"])
@pytest.mark.parametrize("shape", [(1, 32), (4, 64), (130, 96), (3, 5, 64), (2, 129, 32), (96,)])
@pytest.mark.parametrize("dtype", [BF16, F16])
def test_contract_translation_byte_for_byte(fake, shape, dtype, layout):
    x = sample(shape, dtype)
    data, scale = fib().quantize(x, E4M3, "rceil", layout)
    want_data, want_scale = reference.quantize(x, E4M3, "rceil", layout)
    assert same_bytes(data, want_data) and data.is_contiguous()
    assert same_bytes(scale, want_scale) and scale.is_contiguous()
    assert scale.dtype == torch.float8_e8m0fnu
    rows = math.prod(shape[:-1])
    assert tuple(scale.shape) == ((*shape[:-1], shape[-1] // 32) if layout == "linear"
                                  else (round_up(rows, 128), round_up(shape[-1] // 32, 4)))
    (call,) = fake.calls
    assert call["shape"] == (rows, shape[-1]) and call["contiguous"]  # leading dims flattened, rank 1 -> (1, K)
    assert call["is_sf_swizzled_layout"] is (layout == "swizzled") and call["alignment"] == 32
    assert call["backend"] == "cuda" and call["sf_swizzle_layout"] is None


def test_contract_swizzle_layouts_agree():
    """FlashInfer's documented 128x4 offsets are mxquant's swizzled layout, padding included."""
    lin = torch.randint(1, 255, (300, 7), dtype=torch.uint8)
    assert torch.equal(flashinfer_128x4(lin, 7 * 32), layouts.swizzle(lin).reshape(-1))


@pytest.mark.parametrize("layout", ["linear", "swizzled"])
def test_contract_non_contiguous_input_is_made_contiguous(fake, layout):
    x = sample((64, 3, 96)).transpose(0, 1)  # (3, 64, 96), leading dims not mergeable
    sliced = sample((40, 192))[:, :128]  # row-strided
    for t in (x, sliced):
        assert not t.is_contiguous()
        data, scale = fib().quantize(t, E4M3, "rceil", layout)
        want = reference.quantize(t, E4M3, "rceil", layout)
        assert same_bytes(data, want[0]) and same_bytes(scale, want[1])
    assert all(c["contiguous"] for c in fake.calls)


@pytest.mark.parametrize("layout", ["linear", "swizzled"])
@pytest.mark.parametrize("shape", [(0, 64), (4, 0), (2, 0, 32), (0,)])
def test_contract_empty_inputs_skip_the_kernel(fake, shape, layout):
    x = torch.zeros(shape, dtype=BF16)
    data, scale = fib().quantize(x, E4M3, "rceil", layout)
    want_data, want_scale = reference.quantize(x, E4M3, "rceil", layout)
    assert same_bytes(data, want_data) and same_bytes(scale, want_scale)
    assert fake.calls == []


def test_contract_unexpected_output_shape_is_an_error(monkeypatch, fake):
    """Should FlashInfer pad K (alignment semantics change), the wrapper refuses to guess."""

    def padded(input, is_sf_swizzled_layout=True, alignment=32, **kw):
        return FakeFlashInfer.mxfp8_quantize(fake, input, is_sf_swizzled_layout, alignment=128)

    monkeypatch.setattr(fake, "mxfp8_quantize", padded)
    with pytest.raises(RuntimeError, match="flashinfer.mxfp8_quantize returned"):
        fib().quantize(sample((4, 64)), E4M3, "rceil", "linear")


# ---- availability -------------------------------------------------------------------------------

def test_contract_probe_without_cuda(monkeypatch, fake):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device" in fib().probe(CUDA0)
    assert "serves cuda only, not cpu" == fib().probe(torch.device("cpu"))


def test_contract_probe_hopper_is_refused(capability, fake):
    capability((9, 0))
    reason = fib().probe(CUDA0)
    assert reason == ("compute capability 9.0 < 10.0: its kernels are compiled out below SM100; "
                      "they would return garbage")


def test_contract_probe_hopper_never_imports_flashinfer(capability, monkeypatch):
    capability((9, 0))
    monkeypatch.delitem(sys.modules, "flashinfer", raising=False)
    imported = []
    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        if name.split(".")[0] == "flashinfer":
            imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", spy)
    assert "compiled out below SM100" in fib().probe(CUDA0)
    assert imported == []


@pytest.mark.parametrize("cap", [(10, 0), (10, 3), (12, 0)])
def test_contract_probe_blackwell_is_available(capability, fake, cap):
    capability(cap)
    assert fib().probe(CUDA0) is None


def test_contract_probe_flashinfer_missing(capability, monkeypatch):
    capability((10, 0))
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # makes `import flashinfer` raise ImportError
    assert fib().probe(CUDA0).startswith("cannot import flashinfer: ModuleNotFoundError")


def test_contract_probe_flashinfer_too_old(capability, monkeypatch):
    capability((10, 0))
    old = types.ModuleType("flashinfer")
    old.__version__ = "0.2.0"
    monkeypatch.setitem(sys.modules, "flashinfer", old)
    assert "flashinfer 0.2.0 has no mxfp8_quantize" in fib().probe(CUDA0)


# ---- through the registry ------------------------------------------------------------------------

def cuda_call(layout="linear", hp=BF16):
    return Call("quantize", CUDA0, hp, E4M3, "rceil", layout)


def test_contract_forced_on_hopper_is_a_strict_error(registry, capability, fake, monkeypatch):
    capability((9, 0))
    with pytest.raises(BackendUnavailableError) as err:
        registry.resolve(cuda_call(), "flashinfer", "the backend= argument")
    assert err.value.backend == "flashinfer" and "compiled out below SM100" in err.value.reason
    assert "flashinfer" in str(err.value) and "No fallback" in str(err.value)

    monkeypatch.setenv(ENV_BACKEND, "flashinfer")
    with pytest.raises(BackendUnavailableError) as err:
        registry.lookup("quantize", CUDA0, BF16, E4M3, "rceil", "swizzled", None)
    assert "MXQUANT_BACKEND=flashinfer" in str(err.value) and "compiled out below SM100" in str(err.value)
    assert fake.calls == []


def test_contract_forced_on_hopper_through_the_public_call(registry, capability, fake, monkeypatch):
    """mxquant.mxfp8_quantize(backend="flashinfer") on a (faked) SM90 device: the error, no call."""
    capability((9, 0))
    monkeypatch.setattr(registry, "lookup", _lookup_as_cuda(registry))
    with pytest.raises(BackendUnavailableError, match="compiled out below SM100"):
        mxquant.mxfp8_quantize(sample((4, 64)), backend="flashinfer")
    assert fake.calls == []


def _lookup_as_cuda(registry):
    real = Registry.lookup

    def lookup(op, device, *rest):  # the CPU tensor stands in for one on cuda:0
        return real(registry, op, CUDA0, *rest)

    return lookup


def test_contract_forced_on_blackwell_runs(registry, capability, fake, monkeypatch):
    capability((10, 0))
    monkeypatch.setattr(registry, "lookup", _lookup_as_cuda(registry))
    x = sample((3, 5, 64))
    data, scale = mxquant.mxfp8_quantize(x, backend="flashinfer", scale_layout="swizzled")
    want = reference.quantize(x, E4M3, "rceil", "swizzled")
    # the public swizzled scale is flat; the reference returns the backends' 2-D form
    assert same_bytes(data, want[0]) and same_bytes(scale, want[1].reshape(-1)) and len(fake.calls) == 1


def resolved(registry, call, allowed=frozenset()):
    """The backend automatic selection picks for `call`, or None when none can serve it
    (here there is no triton, so nothing but flashinfer serves cuda)."""
    try:
        return registry.resolve(call, allowed=allowed).name
    except NoBackendError:
        return None


@pytest.mark.parametrize("cap", [(9, 0), (10, 0)])
def test_contract_automatic_selection_needs_opt_in(registry, capability, fake, cap):
    capability(cap)
    for layout in ("linear", "swizzled"):
        assert resolved(registry, cuda_call(layout)) != "flashinfer"
        assert resolved(registry, cuda_call(layout, F16)) != "flashinfer"
    # some of its codes allowed is not enough: every declared deviation must be
    assert resolved(registry, cuda_call(), frozenset({"flashinfer:nan-ignored", "flashinfer:inf-saturates"})) != "flashinfer"
    every_code = frozenset(f"flashinfer:{d.code}" for d in fib().DEVIATIONS)
    for allowed in (frozenset({"flashinfer"}), every_code, frozenset({"*"})):
        # allowed, it wins on Blackwell (priority 100 > triton's 50); below SM100 never
        assert (resolved(registry, cuda_call(), allowed) == "flashinfer") is (cap >= (10, 0))
    if resolved(registry, cuda_call()) is None:
        with pytest.raises(NoBackendError) as err:
            registry.resolve(cuda_call())
        row = next(c for c in err.value.candidates if c[0] == "flashinfer")
        assert ("declares deviations" in row[2]) if cap >= (10, 0) else ("compiled out below SM100" in row[2])
    assert fake.calls == []


def test_contract_automatic_selection_env_opt_in(registry, capability, fake, monkeypatch):
    capability((10, 0))
    monkeypatch.setenv(ENV_ALLOW, "flashinfer")
    fn = registry.lookup("quantize", CUDA0, BF16, E4M3, "rceil", "linear", None)
    assert fn is fib().quantize
    # fp32 input, e5m2, floor: outside its capabilities, never flashinfer
    for args in ((torch.float32, E4M3, "rceil"), (BF16, torch.float8_e5m2, "rceil"), (BF16, E4M3, "floor")):
        try:
            assert registry.lookup("quantize", CUDA0, *args, "linear", None) is not fib().quantize
        except NoBackendError:
            pass


# ---- the declared deviations against a model of the kernel's arithmetic -------------------------

@pytest.mark.parametrize("rcp448", [RN_RCP448, ULP_UP_RCP448], ids=["rcp-exact", "rcp-one-ulp-up"])
@pytest.mark.parametrize("dtype", [BF16, F16])
def test_contract_modelled_kernel_differs_only_as_declared(fake, monkeypatch, dtype, rcp448):
    """mxquant verify's check, on the fake serving the kernel model: every difference from the
    reference is explained by a declared deviation. rcp.approx.ftz(448) was measured on an
    H100 equal to RN(1/448) (benchmarks/check_flashinfer_h100.py): then approx-scale is never
    needed; one ulp above, it is, and the declared code covers it."""
    from mxquant.conformance import check_quantize

    def modelled(input, is_sf_swizzled_layout=True, alignment=32, **kw):
        data, scale = kernel_model(input, rcp448)
        return data, (flashinfer_128x4(scale, input.shape[-1]) if is_sf_swizzled_layout else scale.reshape(-1))

    monkeypatch.setattr(fake, "mxfp8_quantize", modelled)
    for layout in ("linear", "swizzled"):
        r = check_quantize(fib().backend, torch.device("cpu"), dtype, E4M3, "rceil", layout, 0)
        assert r.status == "deviation" and r.unexplained_blocks == 0 and r.unattributed_blocks == 0, r.reason
        expected = {"nan-ignored", "inf-saturates"} | ({"tiny-flush"} if dtype == BF16 else set())
        expected |= {"approx-scale"} if rcp448 != RN_RCP448 else set()
        assert set(r.deviations) == expected
