"""What the `cpu-native` and `cpu-eager` backends share: their (full) capabilities, the
checks of caller-provided buffers (`*_into`), and their calls into fresh outputs. Each backend
has two kernels that write into given buffers, `_quantize(x, data, scale, dtype, scale_mode,
scale_layout)` and `_dequantize(data, scale, scale_layout, out)`."""

from __future__ import annotations

import math

import torch

from mxquant.backend import Capabilities
from mxquant.formats import ELEMENT_FORMATS, INPUT_DTYPES, SCALE_LAYOUTS
from mxquant.layouts import scale_shape

from ._cpu_pool import HUGE_PAGE, advise, contiguous_strides as _contiguous_strides, empty_tensor

CPU_CAPABILITIES = Capabilities(
    devices=frozenset({"cpu"}),
    element_dtypes=frozenset(ELEMENT_FORMATS),
    # listed by name, not SCALE_MODES: a mode the contract gains later is not claimed unheard
    scale_modes=frozenset({"rceil", "floor", "compressed-tensors"}),
    scale_layouts=frozenset(SCALE_LAYOUTS),
    input_dtypes=frozenset(INPUT_DTYPES),
)

def advise_huge_pages(t) -> None:
    """Ask Linux for transparent huge pages on a fresh output of 4 MiB or more before its first
    write (what backends/csrc/mxq_cpu.c does for cpu-native): a fresh 32 MiB tensor otherwise
    costs 8192 page faults, ~20 ms on the 2-core development machine. Only a hint: no effect
    where THP is off, on memory already touched, or off Linux; any failure is ignored."""
    nbytes = t.numel() * t.element_size()
    if nbytes >= 2 * HUGE_PAGE:
        advise(t.data_ptr(), nbytes)


def check_buffer(name: str, t: torch.Tensor, shape, dtypes) -> None:
    """A caller-provided buffer: contiguous, on the CPU, `shape`'s element count, one of `dtypes`."""
    if t.device.type != "cpu" or t.dtype not in dtypes or not t.is_contiguous() or t.numel() != math.prod(shape):
        want = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} must be a contiguous CPU tensor of {math.prod(shape)} elements of {want}; "
                         f"got {t.dtype} {tuple(t.shape)} on {t.device} (contiguous={t.is_contiguous()})")


def check_quantize_buffers(x, data, scale, dtype, scale_layout) -> None:
    """quantize_into's buffers: `data` of x's element count (uint8 or `dtype`), `scale` of the
    layout's (uint8 or float8_e8m0fnu)."""
    check_buffer("data", data, x.shape, (dtype, torch.uint8))
    check_buffer("scale", scale, scale_shape(tuple(x.shape), scale_layout), (torch.float8_e8m0fnu, torch.uint8))


def check_dequantize_buffer(data, scale, scale_layout, out) -> None:
    """dequantize_into's arguments: data of an element dtype on the CPU, scale the layout's element
    count for it (backend form; the kernel reads that many bytes), out of data's element count and
    an output dtype."""
    if data.device.type != "cpu" or data.dtype not in ELEMENT_FORMATS:
        raise ValueError(f"data must be a CPU tensor of an MXFP8 element dtype; got {data.dtype} on {data.device}")
    want = math.prod(scale_shape(tuple(data.shape), scale_layout))
    if scale.device.type != "cpu" or scale.dtype not in (torch.float8_e8m0fnu, torch.uint8) or scale.numel() != want:
        raise ValueError(f"scale must be a CPU tensor of {want} float8_e8m0fnu (or uint8) elements for data "
                         f"{tuple(data.shape)} ({scale_layout}); got {scale.dtype} {tuple(scale.shape)} on {scale.device}")
    check_buffer("out", out, data.shape, INPUT_DTYPES)


def quantize_fresh(kernel, x, dtype, scale_mode, scale_layout):
    """`kernel` into fresh outputs; our own buffers, so no checks."""
    data, scale = new_outputs(x.shape, dtype, scale_shape(tuple(x.shape), scale_layout))
    kernel(x, data, scale, dtype, scale_mode, scale_layout)
    return data, scale


def dequantize_fresh(kernel, data, scale, scale_layout, out_dtype):
    """`kernel` into a fresh output; our own buffer, so no check."""
    out = new_tensor(data.shape, out_dtype)
    kernel(data, scale, scale_layout, out)
    return out


def new_outputs(shape, dtype, scale_dims) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh (data, scale) for a quantize call. Scale first: allocated after data, its small
    block sat on top of the large one in the heap and freeing both handed the pages back
    (about 4x the page faults per call, measured). empty_strided, because Python's argument
    parser tries torch.empty's several signatures (~3 µs)."""
    scale = torch.empty_strided(scale_dims, _contiguous_strides(tuple(scale_dims)), dtype=torch.float8_e8m0fnu, device="cpu")
    return new_tensor(shape, dtype), scale


def new_tensor(shape, dtype) -> torch.Tensor:
    """A contiguous CPU tensor for an output: over memory a freed output left in the CPU output
    cache where large (_cpu_pool.py), else fresh (advised for huge pages where large)."""
    t = empty_tensor(tuple(shape), dtype)
    if t is None:
        t = torch.empty_strided(shape, _contiguous_strides(tuple(shape)), dtype=dtype, device="cpu")
        advise_huge_pages(t)
    return t
