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
