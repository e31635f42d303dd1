"""The in-tree kernels whose per-call output check is skipped (mxquant/outputs.py, OWN_OUTPUTS).

The public call skips `check_outputs` for triton, cpu-native, cpu-eager and cpu, which allocate
their outputs themselves (a host-time cut, docs/performance.md). These tests are what replaces
that check for them: every output of theirs, over shapes, ranks, strides, dtypes, modes and
layouts, is checked here against the contract with the checker plugins get on every call; and
the exemption covers exactly those four (flashinfer's and xpu's outputs come from another
library, and every plugin's are checked)."""

from __future__ import annotations

import itertools

import pytest
import torch

import mxquant
from mxquant import outputs, reference
from mxquant.formats import ELEMENT_FORMATS, INPUT_DTYPES, OUTPUT_DTYPES, SCALE_LAYOUTS, SCALE_MODES
from mxquant.registry import get_registry

from cpu_auto import loaded_backend
from inline_plugin import Plugin

OWN = {"triton", "cpu-native", "cpu-eager", "cpu"}
SHAPES = [(4, 64), (3, 5, 96), (130, 256), (1, 32), (0, 64), (7, 0)]


def test_the_exemption_covers_exactly_the_in_tree_kernels():
    reg = get_registry()
    seen = set()
    for entry in reg.entries():
        if entry.origin != "built-in":
            continue
        try:
            be = reg.load(entry)
        except Exception:  # a vendor backend whose module cannot load here is not exempt either
            continue
        seen.add(entry.name)
        exempt = outputs.is_own(be.quantize) and outputs.is_own(be.dequantize)
        assert exempt == (entry.name in OWN), entry.name
    assert OWN <= seen  # all four modules load anywhere (triton imports triton only on a call)


def _check_backend(be, device):
    gen = torch.Generator().manual_seed(5)
    for shape, hp, dtype, mode, layout in itertools.product(SHAPES, INPUT_DTYPES, ELEMENT_FORMATS, SCALE_MODES,
                                                            SCALE_LAYOUTS):
        if mode not in be.capabilities.scale_modes:
            continue
        x = (torch.randn(shape, generator=gen) * 8).to(hp).to(device)
        if x.dim() == 2 and shape[0] > 1:
            x = x[::1, :]  # a view
        before = outputs.versions(x)
        out = be.quantize(x, dtype, mode, layout)
        assert outputs._problem(out, (x,), before, dtype, layout) is None, (be.name, shape, hp, dtype, mode, layout)
        data, scale = out
        for out_dtype in OUTPUT_DTYPES:
            before = outputs.versions(data, scale)
            deq = be.dequantize(data, scale, layout, out_dtype)
            assert outputs._problem(deq, (data, scale), before, out_dtype, layout) is None, (be.name, shape, out_dtype)
    # strided input: a column slice (rows stay contiguous) and a transposed leading pair
    x = (torch.randn(6, 8, 128, generator=gen)).to(device)
    for view in (x[:, :, 32:96], x.transpose(0, 1)):
        out = be.quantize(view, torch.float8_e4m3fn, "rceil", "swizzled")
        assert outputs._problem(out, (view,), outputs.versions(view), torch.float8_e4m3fn, "swizzled") is None


@pytest.mark.parametrize("name", ["cpu-native", "cpu-eager", "cpu"])
def test_cpu_own_output_backends_meet_the_output_contract(name):
    _check_backend(loaded_backend(name), torch.device("cpu"))


@pytest.mark.cuda
def test_triton_outputs_meet_the_output_contract():
    _check_backend(loaded_backend("triton", torch.device("cuda")), torch.device("cuda"))


def test_contract_a_plugin_reusing_an_exempt_function_name_is_still_checked(registry):
    """Exemption is by function identity, not by name: a plugin's own function with the same
    name as an in-tree one, returning a broken output, is caught."""

    def quantize(x, dtype, mode, layout):  # same __name__ as the in-tree functions
        data, scale = reference.quantize(x, dtype, mode, layout)
        return data.reshape(-1), scale

    backend = mxquant.Backend("lookalike", mxquant.Capabilities(devices=frozenset({"cpu"})), lambda device: None,
                              quantize, None, priority=-5)
    registry.register_plugin(Plugin(backend), "plugin-of-lookalike")
    with pytest.raises(mxquant.BackendOutputError, match="data has shape"):
        mxquant.mxfp8_quantize(torch.randn(4, 64), backend="lookalike")
