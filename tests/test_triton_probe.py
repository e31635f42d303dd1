"""CPU-side checks of the `triton` backend: lazy import and availability reasons.

The capability cases fake torch.cuda's answers (contract tests: they check the probe's logic,
not a GPU; tests/test_triton_cuda.py runs the kernel on a real one)."""

import subprocess
import sys

import pytest
import torch


def test_backend_module_does_not_import_triton():
    code = ("import sys; import mxquant.backends.triton as t; import mxquant.backends.cpu; "
            "assert 'triton' not in sys.modules, 'triton imported'; "
            "print(t.probe(__import__('torch').device('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "serves cuda and xpu, not cpu" in out


def test_probe_without_cuda(monkeypatch):
    from mxquant.backends import triton as tb

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device" in tb.probe(torch.device("cuda", 0))
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    assert "no Intel XPU device" in tb.probe(torch.device("xpu", 0))


def test_contract_probe_old_gpu(monkeypatch):
    from mxquant.backends import triton as tb

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    reason = tb.probe(torch.device("cuda", 0))
    assert "8.0 < 8.9" in reason


def test_contract_probe_triton_missing(monkeypatch):
    from mxquant.backends import triton as tb

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    reason = tb.probe(torch.device("cuda", 0))
    assert reason.startswith("cannot import triton")


@pytest.mark.parametrize("shape", [(4, 64), (3, 5, 64)])
def test_as_rows_views_without_copy(shape):
    from mxquant.backends.triton import as_rows

    x = torch.randn(*shape[:-1], 2 * shape[-1])[..., : shape[-1]]  # row-strided, last dim contiguous
    rows = as_rows(x)
    assert rows.data_ptr() == x.data_ptr() and rows.shape == (x.numel() // shape[-1], shape[-1])
    t = torch.randn(8, 4, 64).transpose(0, 1)  # leading dims not mergeable: copied once
    r = as_rows(t)
    assert r.is_contiguous() and torch.equal(r, t.reshape(-1, 64))
