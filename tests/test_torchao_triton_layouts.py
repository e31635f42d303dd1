"""mxquant's grouped scales against torchao's own Triton rearrange kernels, the GPU code a
training stack runs: `triton_mx_block_rearrange_2d_M_groups` (token groups),
`triton_mx_block_rearrange_2d_K_groups` (K-groups) and `triton_mx_block_rearrange_per_group_3d`
(3-D experts), executed by Triton's interpreter on the CPU from the NumPy oracle's linear scales.
tests/test_grouped.py and tests/test_kgroup.py compare with torchao's torch references, which
cover token groups only where K/32 is a multiple of 4 (elsewhere that test rebuilds the Triton
kernel's layout by hand); here the kernels themselves decide, K/32 = 3 and 5 included.

torchao defines these functions only where `torch.utils._triton.has_triton()` is true, which asks
for a GPU; a child process makes it true before importing torchao (so this process's torch is
untouched) and runs them under TRITON_INTERPRET=1. Runs in the Triton side environment
(tests/test_triton_interpreter.py, the "kgroup" run); skips where triton or torchao is missing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

import mxquant
from mxquant.conformance.training_inputs import grouped_inputs, kgroup_inputs

import mx_oracle as oracle
from subproc import child_env
from training_helpers import assert_bytes

pytest.importorskip("triton", reason="needs triton (the Triton side environment runs this module)")
if importlib.util.find_spec("torchao") is None:  # (not imported here: the child process imports it)
    pytest.skip("needs torchao, the peer whose kernels this compares with", allow_module_level=True)

E4 = torch.float8_e4m3fn

_CHILD = """
import sys, warnings
warnings.filterwarnings("ignore")
import torch
import torch.utils._triton as tt
tt.has_triton = lambda: True  # torchao's module defines its Triton functions only then
from torchao.prototype.moe_training.kernels.mxfp8 import quant as q
cases = torch.load(sys.argv[1])
out = []
for kind, scale, ends in cases:
    if kind == "M":
        out.append(q.triton_mx_block_rearrange_2d_M_groups(scale.view(torch.float8_e8m0fnu), ends))
    elif kind == "K":
        out.append(q.triton_mx_block_rearrange_2d_K_groups(scale.view(torch.float8_e8m0fnu), ends))
    else:
        out.append(q.triton_mx_block_rearrange_per_group_3d(scale.view(torch.float8_e8m0fnu)))
torch.save([t.view(torch.uint8) for t in out], sys.argv[2])
"""


def torchao_triton(cases, tmp_path) -> list[torch.Tensor]:
    """torchao's Triton rearranges of cases [(kind "M" / "K" / "3d", linear uint8 scales, ends)],
    run in a child process under Triton's interpreter."""
    src, dst = tmp_path / "cases.pt", tmp_path / "out.pt"
    torch.save(cases, src)
    env = child_env()
    env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(dst)


def pow2_groups(ends: torch.Tensor) -> torch.Tensor:
    """ends with empty groups appended up to a power-of-two count: torchao's Triton kernels find a
    group's start with tl.arange(0, num_groups), which Triton allows for powers of two only (3, 5
    or 6 groups do not compile there; mxquant takes any count)."""
    n = ends.numel()
    return torch.cat([ends, ends[-1:].expand((1 << (n - 1).bit_length()) - n)])


def test_grouped_scales_are_torchaos_triton_kernels_bytes(tmp_path):
    """Token groups (ragged, empty, one group, 128-row groups, K/32 = 3 and 5) and 3-D experts
    (mxfp8_quantize_grouped) and K-groups (axis=-2), bf16, e4m3, rceil, group counts made powers
    of two (pow2_groups): mxquant's scale bytes equal the torchao kernel's output on the oracle's
    linear scales, the whole buffer, padding included."""
    cases, got, names = [], [], []
    for name, x, ends in grouped_inputs(torch.bfloat16, 0):
        if x.numel() == 0:
            continue  # torchao's kernels take no empty scale tensor
        ends = None if ends is None else pow2_groups(ends)
        linear = oracle.quantize(x, E4, "rceil", "linear")[1].reshape(*x.shape[:-1], x.shape[-1] // 32)
        cases.append(("3d", linear, None) if ends is None else ("M", linear, ends))
        got.append(mxquant.mxfp8_quantize_grouped(x, ends, E4).scale)
        names.append(name)
    for name, x, ends in kgroup_inputs(torch.bfloat16, 0):
        if x.numel() == 0:
            continue
        ends = pow2_groups(ends)
        linear = oracle.quantize_colwise(x, E4, "rceil", "linear")[1].reshape(x.shape[-1], x.shape[-2] // 32)
        cases.append(("K", linear, ends // 32))
        got.append(mxquant.mxfp8_quantize_grouped(x, ends, E4, axis=-2).scale)
        names.append(f"K-groups: {name}")
    want = torchao_triton(cases, tmp_path)
    assert {c[0] for c in cases} == {"M", "K", "3d"}
    assert any(c[0] == "M" and c[1].shape[-1] % 4 for c in cases)  # the cases torchao's torch reference cannot take
    for name, g, w in zip(names, got, want):
        assert_bytes(g.reshape(-1), w.reshape(-1), f"{name}: scale vs torchao's Triton kernel")
