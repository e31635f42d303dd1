"""The `triton` backend's K-groups (mxfp8_quantize_grouped(..., axis=-2): the column-wise kernel
with linear scales, then backends/_triton_training.py's kgroups_kernel), byte for byte against
the NumPy oracle's column-wise data and torchao's K-groups rearrange (`torch_to_blocked_2d_K_groups`)
of the oracle's linear scales, on conformance/training_inputs.kgroup_inputs (adversarial blocks
down the tokens, ragged / empty groups, odd N, no tokens, no columns), every input / element
dtype and scale mode, several tile counts per program and column-wise tile configurations;
offsets the GPU call cannot check are clamped into the buffers (the bytes those of the clamped
ends // 32, torchao's rule). Outputs are poisoned (test_triton_training.poisoned_outputs), so an
unwritten padding byte shows.

Run as tests/test_triton_training.py is: "cpu" under TRITON_INTERPRET=1 in the Triton side
environment (tests/test_triton_interpreter.py does), "cuda" on a GPU with the public call,
CUDA-graph capture (new offsets replayed) and torch.compile(fullgraph=True)."""

from __future__ import annotations

import pytest
import torch

import mxquant
from mxquant.backends import _triton_training_ops as ops
from mxquant.conformance.training_inputs import kgroup_inputs

import mx_oracle as oracle
from test_kgroup import torchao_kgroups
from test_triton_compile import _INTERPRET, _NO_TRITON, _aot_compile
from test_triton_training import DEVS, cuda_only, poisoned_outputs  # noqa: F401 (a fixture, autouse)
from training_helpers import GRID, assert_bytes, ids


def _check(x, ends, dtype, mode, name, config=None, scale_ends=None):
    data, scale = ops.quantize_grouped_colwise(x, ends, dtype, mode, config)
    want_data, linear = oracle.quantize_colwise(x.cpu(), dtype, mode, "linear")
    assert_bytes(data.cpu(), want_data, f"{name} data")
    assert scale.dtype == torch.float8_e8m0fnu
    assert_bytes(scale.cpu(), torchao_kgroups(linear, scale_ends if scale_ends is not None else ends.cpu()),
                 f"{name} scale vs torchao")


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("hp, dtype, mode", GRID, ids=[ids(c) for c in GRID])
def test_kgroups_against_torchao_and_the_oracle(dev, hp, dtype, mode):
    for name, x, ends in kgroup_inputs(hp, 0):
        _check(x.to(dev), ends.to(dev), dtype, mode, name)


@pytest.mark.parametrize("dev", DEVS)
@pytest.mark.parametrize("tiles", [1, 8])
def test_tiles_per_program_and_configs(dev, tiles, monkeypatch):
    monkeypatch.setattr(ops, "KGROUP_TILES", tiles)
    for name, x, ends in kgroup_inputs(torch.bfloat16, 2)[:5]:
        for config in (None, (32, 32, 4)):
            _check(x.to(dev), ends.to(dev), torch.float8_e4m3fn, "rceil", f"{name}, {tiles} tiles, config {config}",
                   config)


@pytest.mark.parametrize("dev", DEVS)
def test_offsets_clamped_into_the_buffers(dev):
    """Ends the GPU call does not validate: each clamped into [previous end, T], then // 32, so
    the kernel stays inside its buffers; data is still the whole column-wise data."""
    x = kgroup_inputs(torch.float32, 0)[3][1].to(dev)  # (544, 130)
    for raw, clamped in [((40, 30, 600), (40, 40, 544)), ((-7, 200, 150, 544), (0, 200, 200, 544)),
                         ((64, 96), (64, 96)), ((2**31 - 1,), (544,)), ((33, 65, 544), (33, 65, 544))]:
        ends = torch.tensor(raw, dtype=torch.int32, device=dev)
        _check(x, ends, torch.float8_e5m2, "floor", f"ends {raw}",
               scale_ends=torch.tensor(clamped, dtype=torch.int32) // 32 * 32)


@pytest.mark.parametrize("dev", DEVS)
def test_strided_and_misaligned_ends(dev):
    x = kgroup_inputs(torch.float16, 0)[3][1].to(dev)
    strided = torch.tensor([160, -1, 160, -1, 544, -1], dtype=torch.int32, device=dev)[::2]
    shifted = torch.tensor([7, 160, 160, 544], dtype=torch.int32, device=dev)[1:]  # 4 bytes into its storage
    for ends, name in ((strided, "strided ends"), (shifted, "ends 4 bytes off 16")):
        _check(x, ends, torch.float8_e4m3fn, "compressed-tensors", name)


@pytest.mark.cuda
@cuda_only
def test_public_call_graph_capture_and_compile_cuda():
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(4096, 1000, generator=g) * 8).to(torch.bfloat16).cuda()
    ends = torch.tensor([1024, 1024, 3072, 4096], dtype=torch.int32, device="cuda")
    e4 = torch.float8_e4m3fn
    got = mxquant.mxfp8_quantize_grouped(x, ends, axis=-2)
    assert_bytes(got.data.cpu(), oracle.quantize_colwise(x.cpu(), e4)[0], "public data")
    assert_bytes(got.scale.cpu(), torchao_kgroups(oracle.quantize_colwise(x.cpu(), e4)[1], ends.cpu()), "public scale")
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = mxquant.mxfp8_quantize_grouped(x, ends, axis=-2)
    for seed, new_ends in enumerate([(0, 32, 4000, 4096), (4096, 4096, 4096, 4096)]):
        x.copy_(torch.randn(x.shape, generator=g).to(torch.bfloat16))
        ends.copy_(torch.tensor(new_ends, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        data, linear = oracle.quantize_colwise(x.cpu(), e4)
        assert_bytes(out.data.cpu(), data, f"graph data, ends {new_ends}")
        assert_bytes(out.scale.cpu(), torchao_kgroups(linear, ends.cpu()), f"graph scale, ends {new_ends}")

    @torch.compile(fullgraph=True)
    def f(x, ends):
        return mxquant.mxfp8_quantize_grouped(x, ends, torch.float8_e5m2, scale_mode="floor", axis=-2)

    got = f(x, ends)
    data, linear = oracle.quantize_colwise(x.cpu(), torch.float8_e5m2, "floor")
    assert_bytes(got.data.cpu(), data, "compiled data")
    assert_bytes(got.scale.cpu(), torchao_kgroups(linear, ends.cpu()), "compiled scale")


@pytest.mark.skipif(bool(_NO_TRITON) or _INTERPRET, reason="needs triton importable and TRITON_INTERPRET unset "
                    "(Triton's compiler, no GPU needed)")
@pytest.mark.parametrize("g_pad", [2, 256])
def test_kgroups_kernel_compiles_for_sm90(g_pad):
    """kgroups_kernel at its shipped tile count compiles for Hopper (what the interpreter cannot check)."""
    from mxquant.backends import _triton_training

    _aot_compile(_triton_training.kgroups_kernel, ["*u8", "*i32", "*u8"], dict(TILES=ops.KGROUP_TILES, G_PAD=g_pad), 4)
