"""What the call path remembers between calls (a fully checked call signature: the registry's
cache for MXFP8, call_path.checked_outputs for the training and FP4 calls) never lets a later
call skip a check that could fail for it: each bad call below comes right after a good one of the
same signature, and a backend's outputs are checked at every call, not only the first."""

import pytest
import torch

import mxquant
from mxquant.errors import BackendOutputError

E4 = torch.float8_e4m3fn


def test_dequantize_checks_scale_after_a_cached_call():
    x = torch.randn(256, 128)
    lin, swz = mxquant.mxfp8_quantize(x), mxquant.mxfp8_quantize(x, scale_layout="swizzled")
    good = lambda: mxquant.mxfp8_dequantize(lin.data, lin.scale)  # noqa: E731
    good()
    bad = [
        (lambda: mxquant.mxfp8_dequantize(lin.data, lin.scale.view(torch.uint8)), TypeError, "float8_e8m0fnu"),
        (lambda: mxquant.mxfp8_dequantize(lin.data, lin.scale[:-1]), ValueError, "does not match"),
        (lambda: mxquant.mxfp8_dequantize(lin.data, swz.scale), ValueError, "scale_layout='swizzled'"),
        (lambda: mxquant.mxfp8_dequantize(lin.data, lin.scale, out_dtype=torch.int32), TypeError, "out_dtype"),
        (lambda: mxquant.mxfp8_dequantize(lin.data.view(torch.uint8), lin.scale), TypeError, "data has dtype"),
        (lambda: mxquant.mxfp8_dequantize(lin.data, lin.scale.tolist()), TypeError, "scale must be a torch.Tensor"),
    ]
    for call, error, match in bad:
        with pytest.raises(error, match=match):
            call()
        good()
    y = mxquant.mxfp8_dequantize(swz.data, swz.scale, scale_layout="swizzled")
    assert torch.equal(y, good())  # the same bytes in either layout dequantize alike


@pytest.mark.parametrize("call, shape, bad_shape", [
    (lambda x, **kw: mxquant.mxfp8_quantize(x, axis=-2, **kw), (64, 96), (48, 96)),
    (lambda x, **kw: mxquant.mxfp8_quantize_rowcol(x, **kw), (64, 96), (64, 80)),
    (lambda x, **kw: mxquant.mxfp8_quantize_2d(x, **kw), (64, 96), (64, 40)),
    (lambda x, **kw: mxquant.mxfp4_quantize(x, **kw), (4, 64), (4, 48)),
    (lambda x, **kw: mxquant.nvfp4_quantize(x, **kw), (4, 64), (4, 40)),
])
def test_training_and_fp4_checks_after_a_cached_call(call, shape, bad_shape):
    x = torch.randn(shape)
    call(x)
    call(x)
    with pytest.raises(ValueError, match="multiple of"):
        call(torch.randn(bad_shape))
    with pytest.raises(ValueError, match="scale_mode='ceil'"):
        call(x, scale_mode="ceil")
    with pytest.raises(TypeError, match="dtype int32"):
        call(x.to(torch.int32))
    with pytest.raises(TypeError, match="backend must be"):
        call(x, backend=3)


def test_nvfp4_global_scale_checked_at_every_call():
    x = torch.randn(4, 64)
    mxquant.nvfp4_quantize(x, torch.tensor([2.0]))
    with pytest.raises(ValueError, match="finite and positive"):
        mxquant.nvfp4_quantize(x, torch.tensor([-1.0]))
    with pytest.raises(TypeError, match="float32"):
        mxquant.nvfp4_quantize(x, torch.tensor([2.0], dtype=torch.float64))


def test_backend_outputs_checked_at_every_call():
    x = torch.randn(64, 96)
    right = mxquant.mxfp8_quantize(x.mT.contiguous(), scale_layout="linear")
    served = []

    def colwise(x, dtype, scale_mode, scale_layout):
        served.append(1)
        data = right.data if len(served) == 1 else right.data[:, :-32]  # right, then one block short
        return data.clone(), right.scale.clone()

    class Plugin:
        @mxquant.hookimpl
        def register_backends(self, register):
            register(mxquant.Backend("shifty", mxquant.Capabilities(devices=frozenset({"cpu"}),
                                                                    ops=frozenset({"quantize_colwise"})),
                                     lambda device: None, quantize_colwise=colwise))

    registry = mxquant.get_registry()
    registry.register_plugin(Plugin(), "shifty-plugin")
    try:
        first = mxquant.mxfp8_quantize(x, axis=-2, backend="shifty")
        assert torch.equal(first.data.view(torch.uint8), right.data.view(torch.uint8))
        with pytest.raises(BackendOutputError, match=r"data has shape \(96, 32\), expected \(96, 64\)"):
            mxquant.mxfp8_quantize(x, axis=-2, backend="shifty")
    finally:
        registry.unregister_plugin("shifty-plugin")


# ---- a prepared call per input signature (ops.run_quantize, an in-tree quantize's `prepare`) ----
# Contract tests: the backend below is a stand-in for the triton backend, whose prepare
# (backends/triton.py prepare_quantize) runs only on a GPU; tests/test_triton_cuda.py's repeated
# public calls go through the real one there. The oracle for the bytes is the reference backend
# called directly (mxquant/reference.py), once per input.

class _Prepared:
    """An in-tree-like quantize (marked as allocating its own outputs) with a `prepare`: counts
    which path served each call; `fallback` makes the prepared call decline (return None)."""

    def __init__(self):
        from mxquant import reference

        self.full, self.fast, self.prepared, self.fallback = [], [], [], False

        def quantize(x, dtype, scale_mode, scale_layout):
            self.full.append(tuple(x.shape))
            return reference.quantize(x, dtype, scale_mode, scale_layout)

        def prepare(x, dtype, scale_mode, scale_layout):
            self.prepared.append((tuple(x.shape), x.stride(), x.dtype, x.data_ptr() % 16 == 0))

            def call(x):
                if self.fallback:
                    return None
                self.fast.append(tuple(x.shape))
                data, scale = reference.quantize(x, dtype, scale_mode, scale_layout)
                return data, scale.reshape(-1) if scale_layout == "swizzled" else scale

            return call

        quantize.prepare = prepare
        self.quantize = quantize


@pytest.fixture
def prepared_backend():
    from mxquant.outputs import OWN_OUTPUTS, own_outputs

    fake = _Prepared()
    backend = own_outputs(mxquant.Backend("prepped", mxquant.Capabilities(devices=frozenset({"cpu"})),
                                          lambda device: None, quantize=fake.quantize))

    class Plugin:
        @mxquant.hookimpl
        def register_backends(self, register):
            register(backend)

    registry = mxquant.get_registry()
    registry.register_plugin(Plugin(), "prepped-plugin")
    try:
        yield fake
    finally:
        registry.unregister_plugin("prepped-plugin")
        OWN_OUTPUTS.pop(id(fake.quantize), None)


def _same(got, x, **kw):
    from mxquant import reference

    data, scale = reference.quantize(x, kw.get("dtype", E4), kw.get("scale_mode", "rceil"),
                                      kw.get("scale_layout", "linear"))
    assert torch.equal(got.data.view(torch.uint8), data.view(torch.uint8))
    assert torch.equal(got.scale.view(torch.uint8).reshape(-1), scale.view(torch.uint8).reshape(-1))


@pytest.mark.parametrize("layout", ["linear", "swizzled"])
def test_contract_a_prepared_call_serves_the_same_signature_only(prepared_backend, layout):
    fake = prepared_backend
    base = torch.randn(64, 256)
    x = base[:, :128]  # strided rows
    for _ in range(3):
        _same(mxquant.mxfp8_quantize(x, backend="prepped", scale_layout=layout), x, scale_layout=layout)
    assert len(fake.full) == 1 and len(fake.fast) == 2 and len(fake.prepared) == 1
    others = [x.contiguous(), base[:, 1:129], base[:, 1:129].contiguous()[:, :96], torch.randn(32, 128),
              x.to(torch.bfloat16)]  # other strides, alignment, shape, dtype
    for y in others:
        _same(mxquant.mxfp8_quantize(y, backend="prepped", scale_layout=layout), y, scale_layout=layout)
    assert len(fake.full) == 1 + len(others) and len(fake.fast) == 2  # each new signature: the full call first
    y = torch.randn(64, 256)[:, :128]  # x's signature, other values
    _same(mxquant.mxfp8_quantize(y, backend="prepped", scale_layout=layout), y, scale_layout=layout)
    assert len(fake.fast) == 3
    with pytest.raises(ValueError, match="multiple of"):  # a bad call right after: still checked
        mxquant.mxfp8_quantize(torch.randn(64, 120), backend="prepped")


def test_contract_a_prepared_call_follows_overrides_and_registrations(prepared_backend, monkeypatch):
    fake = prepared_backend
    x = torch.randn(32, 64)
    with mxquant.use_backend("prepped"):
        mxquant.mxfp8_quantize(x)
        mxquant.mxfp8_quantize(x)
    assert (len(fake.full), len(fake.fast)) == (1, 1)
    mxquant.mxfp8_quantize(x)  # no override: the automatic choice, not the prepared call of the forced one
    mxquant.mxfp8_quantize(x, backend="cpu")
    monkeypatch.setenv("MXQUANT_BACKEND", "cpu")
    mxquant.mxfp8_quantize(x)
    assert len(fake.fast) == 1
    monkeypatch.delenv("MXQUANT_BACKEND")
    fake.fallback = True  # a prepared call that declines: the full call serves
    _same(mxquant.mxfp8_quantize(x, backend="prepped"), x)
    assert (len(fake.full), len(fake.fast)) == (2, 1)
    fake.fallback = False
    mxquant.get_registry().reset_cache()  # forgets prepared calls with the resolutions
    mxquant.mxfp8_quantize(x, backend="prepped")
    assert (len(fake.full), len(fake.fast)) == (3, 1)


def test_contract_a_signature_the_backend_prepares_nothing_for_is_asked_once(prepared_backend):
    fake = prepared_backend
    real_prepare = fake.quantize.prepare
    fake.quantize.prepare = lambda *a: (fake.prepared.append(a[0].shape), None)[1]  # (no raw launch here, say)
    try:
        x = torch.randn(32, 64)
        for _ in range(4):
            _same(mxquant.mxfp8_quantize(x, backend="prepped"), x)
        assert len(fake.full) == 4 and len(fake.prepared) == 1 and not fake.fast
    finally:
        fake.quantize.prepare = real_prepare


def test_a_backend_that_allocates_nothing_of_its_own_is_never_prepared():
    fake = _Prepared()

    class Plugin:
        @mxquant.hookimpl
        def register_backends(self, register):
            register(mxquant.Backend("foreign", mxquant.Capabilities(devices=frozenset({"cpu"})),
                                     lambda device: None, quantize=fake.quantize))

    registry = mxquant.get_registry()
    registry.register_plugin(Plugin(), "foreign-plugin")
    try:
        x = torch.randn(32, 64)
        for _ in range(3):
            _same(mxquant.mxfp8_quantize(x, backend="foreign"), x)
        assert len(fake.full) == 3 and not fake.prepared  # a plugin's outputs are checked at every call
    finally:
        registry.unregister_plugin("foreign-plugin")
