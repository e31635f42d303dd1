"""What the built-in backends share: the CUDA availability preamble of the GPU backends'
probes, the guard that makes a tensor's device the current one for a launch, and addressing
an input as rows without copying it where its strides allow."""

from __future__ import annotations

import math
from typing import Optional

import torch


def cuda_probe(device: torch.device, min_capability: tuple[int, int], why: str) -> Optional[str]:
    """None if `device` is an NVIDIA CUDA device of at least `min_capability`, else the reason
    (`why` says what goes wrong below it)."""
    if device.type != "cuda":
        return f"serves cuda only, not {device.type}"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    if torch.version.hip:
        return "ROCm is not supported (the kernel uses NVIDIA-only fp8 conversions)"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < min_capability:
        return f"compute capability {major}.{minor} < {min_capability[0]}.{min_capability[1]}: {why}"
    return None


def device_guard(device: torch.device):
    """A context manager making `device` current, or None when it already is (the common case,
    kept free of a context switch on the hot path)."""
    if device.type == "cuda":  # (torch._C._cuda_getDevice: torch.cuda.current_device without its checks)
        if device.index is not None and device.index != torch._C._cuda_getDevice():
            return torch.cuda.device(device)
    elif device.type == "xpu" and device.index is not None and device.index != torch.xpu.current_device():
        return torch.xpu.device(device)
    return None


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """`t` as (rows, K) with unit stride along K: a view where the leading dimensions merge
    into one row stride (row slices, expanded rows), else a contiguous copy (transposes)."""
    k = t.shape[-1]
    rows = math.prod(t.shape[:-1])
    if t.stride(-1) != 1 and k > 1:
        t = t.contiguous()
    try:
        return t.view(rows, k)
    except RuntimeError:  # leading dimensions whose strides do not merge
        return t.contiguous().view(rows, k)
