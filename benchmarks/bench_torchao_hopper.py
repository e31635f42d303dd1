"""torchao's Triton MXFP8 kernels on Hopper, past the gate that keeps them to SM100+, side by side
with ours in one process and run (issue 21's "<= 1.0x torchao's Triton kernels", which
bench_training.py cannot measure on an H100 or H200):

    python3 benchmarks/bench_torchao_hopper.py --out bench-out [--shapes 8192x8192 16384x8192]

torchao 0.18 defines `triton_to_mxfp8_dim0` / `dim1` only where `is_sm_at_least_100()` holds
(mx_formats/kernels.py, `_triton_kernels_available`). The kernels themselves are plain Triton but
for one instruction: rceil's scale by `cvt.rp.satfinite.ue8m0x2.f32` (PTX for SM100+), with a
`tl.log2` / `tl.ceil` fallback that torchao compiles on ROCm. This script, before torchao's kernel
module is imported, makes its gate say yes and sets the module's IS_ROCM so that rceil takes that
fallback, and puts the gate back once the module is imported (the module keeps what it saw, so
its other SM100 pieces, e.g. the CUDA `mxfp8_quantize` op it registers, are not to be called here).
So:
- floor is torchao's own code path, the one it runs on SM100 for `ScaleCalculationMode.FLOOR`;
- rceil is torchao's ROCm path, not its SM100 path (its scales may differ from the exact rceil's:
  the byte comparison says whether they did here).
The grouped rearranges (`triton_mx_block_rearrange_*`) need no gate; each grouped call is chained
from torchao's Triton pieces as bench_training.py chains them.

Contenders per shape (bf16 x, e4m3, linear scales; bench_training.run: CUDA-event medians, L2
flushed, interleaved rounds, the lowest kept): a copy (ceiling); ours (the triton backend,
called directly) row-wise, column-wise, row+column, token groups, K-groups and 3-D experts,
floor and rceil; torchao's dim0, dim1, dim0 + dim1 (its way to both), and each grouped chain.
% of copy counts useful bytes (bench_training's): 2 read + 1 written + 1/32 per element, twice the
written for row+column, whose two torchao calls move 6 + 2/32 bytes an element.
Before timing, at 4096x4096 on randn input, each torchao output is compared byte for byte with
ours of the same mode (data and scales: torchao's dim1 data is the (K, M) buffer behind its
transposed view, our column-wise data). Writes bench_torchao_hopper.json to --out.
"""

from __future__ import annotations

import functools
import sys

import torch

import bench_training  # noqa: E402  (benchmarks/ on sys.path)

E4M3 = torch.float8_e4m3fn


@functools.cache
def _torchao_past_the_gate():
    """torchao's kernel modules, imported with the SM100 gate answered yes and IS_ROCM set, or None
    and the reason."""
    if "torchao.prototype.mx_formats.kernels" in sys.modules:
        return None, "torchao's kernel module was imported before the gate could be bypassed"
    try:
        import torchao.utils as tu
        import triton.language as tl

        gate = tu.is_sm_at_least_100
        tu.is_sm_at_least_100 = lambda: True
        try:
            from torchao.prototype.mx_formats import kernels as ao_kernels
            from torchao.prototype.moe_training.kernels.mxfp8 import quant as ao_quant
        finally:
            tu.is_sm_at_least_100 = gate
    except Exception as exc:  # pragma: no cover - depends on the machine
        return None, f"torchao not importable: {type(exc).__name__}: {exc}"
    if not getattr(ao_kernels, "_triton_kernels_available", False):
        return None, "torchao's Triton kernels are still unavailable past the gate"
    ao_kernels.IS_ROCM = tl.constexpr(True)  # rceil's scale by tl.log2 / tl.ceil, not SM100 PTX
    return (ao_kernels, ao_quant), None


def _pairs(x, mode, ao):
    """{name: (ours, torchao's, bytes)}: each a callable giving (data, scale) pairs to compare."""
    from mxquant.backends import _triton_training_ops as ops
    from mxquant.backends import triton as tb

    ao_kernels, ao_quant = ao
    m, k = x.shape
    ends, kends, experts = bench_training.groups_of(x)
    u8 = lambda t: t.view(torch.uint8)
    dim0 = lambda: ao_kernels.triton_to_mxfp8_dim0(x, 32, mode)
    dim1 = lambda: ao_kernels.triton_to_mxfp8_dim1(x, 32, mode)

    def ao_dim1():
        d, s = dim1()
        return d.t(), s  # the (K, M) buffer behind torchao's transposed view

    def ao_both():
        return (*dim0(), *ao_dim1())

    def ao_tokens():
        d, s = dim0()
        return d, ao_quant.triton_mx_block_rearrange_2d_M_groups(u8(s), ends)

    def ao_kgroups():
        d, s = ao_dim1()
        return d, ao_quant.triton_mx_block_rearrange_2d_K_groups(u8(s), kends // 32)

    def ao_experts():
        d, s = dim0()
        return d, ao_quant.triton_mx_block_rearrange_per_group_3d(u8(s).view(8, m // 8, k // 32))

    n = x.numel()
    one, two = n * (3 + 1 / 32), n * (2 + 2 + 2 / 32)
    return {
        "row-wise": (lambda: tb.quantize(x, E4M3, mode, "linear"), dim0, one),
        "column-wise": (lambda: ops.quantize_colwise(x, E4M3, mode, "linear"), ao_dim1, one),
        "row+column": (lambda: ops.quantize_rowcol(x, E4M3, mode, "linear"), ao_both, two),
        "token groups": (lambda: ops.quantize_grouped(x, ends, E4M3, mode), ao_tokens, one),
        "K-groups": (lambda: ops.quantize_grouped_colwise(x, kends, E4M3, mode), ao_kgroups, one),
        "experts": (lambda: ops.quantize_grouped(experts, None, E4M3, mode), ao_experts, one),
    }


def _flat(out):
    """A call's outputs as flat uint8 tensors ((data, scale) or (row, col) of them)."""
    items = []
    for t in out:
        items.extend(_flat(t) if isinstance(t, (tuple, list)) else [t])
    return [t.contiguous().view(torch.uint8).reshape(-1) for t in items]


def same_bytes(ours, theirs) -> str:
    try:
        a, b = _flat(ours()), _flat(theirs())
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    if len(a) != len(b) or any(u.numel() != v.numel() for u, v in zip(a, b)):
        return f"sizes differ: {[u.numel() for u in a]} vs {[v.numel() for v in b]}"
    diff = [int((u != v).sum()) for u, v in zip(a, b)]
    return "yes" if not any(diff) else f"no ({diff} bytes differ)"


@functools.cache
def _byte_comparison(dtype, device) -> tuple:
    """Each torchao output against ours of the same mode at 4096x4096 (randn): notes."""
    ao, _ = _torchao_past_the_gate()
    small = torch.randn(4096, 4096, dtype=dtype, device=device)
    return tuple(f"bytes, torchao {name} {mode} == ours: {same_bytes(ours, theirs)}"
                 for mode in ("floor", "rceil") for name, (ours, theirs, _) in _pairs(small, mode, ao).items())


def contenders(x, notes):
    """bench_training.run's make: the copy, then ours and torchao's per call and mode (torchao
    imported past its gate on the first call; the byte comparison once, in notes)."""
    n = x.numel()
    copy_dst = torch.empty_like(x)
    out = {"copy (ceiling)": (lambda: copy_dst.copy_(x), 4 * n, None)}
    ao, why = _torchao_past_the_gate()
    if ao is None:
        notes.append(why)
        return out
    notes.extend(_byte_comparison(x.dtype, x.device))
    if x.shape[0] % 128 or x.shape[1] % 128:
        notes.append(f"{tuple(x.shape)}: torchao's dim1 kernel needs M and K multiples of 128; not run")
        return out
    for mode in ("floor", "rceil"):
        for name, (ours, theirs, nbytes) in _pairs(x, mode, ao).items():
            out[f"ours {name} {mode}"] = (ours, nbytes, None)
            out.update(bench_training.runnable({f"torchao {name} {mode}": (theirs, nbytes)}, notes))
    return out


if __name__ == "__main__":
    sys.exit(bench_training.main(name="bench_torchao_hopper", make=contenders, shapes=[(8192, 8192), (16384, 8192)],
                                 doc=__doc__))
