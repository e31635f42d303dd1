"""The `triton` backend: our own one-pass Triton kernel, for CUDA (compute capability 8.9+,
where fp8 conversion is in hardware) and declared for Intel XPU where Intel's Triton exists.

Nothing here imports triton at module import; the kernels (backends/_triton_kernels.py) load
on the first call. It also serves the training and MoE calls (column-wise, row+column, 32x32
tiles, grouped scales): backends/_triton_training_ops.py launches backends/_triton_training.py
(and, for column-wise and row+column on CUDA, the Gluon kernel of backends/_gluon_training.py);
and the MXFP4 / NVFP4 calls: backends/_triton_fp4_ops.py launches backends/_triton_fp4.py. Inputs: any leading shape; a 2-D row-strided view is used as is, so
row-sliced and transposed-leading-dim tensors cost no copy; a tensor whose last dimension is
not contiguous (stride != 1), or whose leading dimensions cannot be merged into one stride,
is copied once with .contiguous() first.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch

from mxquant import layouts
from mxquant.backend import FP4_OPS, TRAINING_OPS, Backend, Capabilities
from mxquant.formats import BLOCK, ELEMENT_FORMATS
from mxquant.outputs import own_outputs

from . import _triton_launch as _launch
from ._common import as_rows, cuda_probe, device_guard


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_kernels

    return _triton_kernels


@functools.lru_cache(maxsize=None)
def _dequant_kernels():
    from . import _triton_dequant

    return _triton_dequant


def probe(device: torch.device) -> Optional[str]:
    if device.type == "cuda":
        reason = cuda_probe(device, (8, 9), "Triton has no fp8e4nv conversion there")
        if reason:
            return reason
    elif device.type == "xpu":
        if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            return "no Intel XPU device (torch.xpu.is_available() is False)"
        try:
            from triton.runtime import driver

            target = driver.active.get_current_target().backend
        except Exception as exc:
            return f"cannot import Intel's Triton (triton-xpu): {type(exc).__name__}: {exc}"
        if target != "xpu":
            return f"the installed Triton targets '{target}', not Intel XPU (install triton-xpu)"
    else:
        return f"serves cuda and xpu, not {device.type}"
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"cannot import triton: {type(exc).__name__}: {exc}"
    knobs = getattr(triton, "knobs", None)
    if knobs is not None and getattr(knobs.runtime, "interpret", False):  # TRITON_INTERPRET=1
        return ("Triton's interpreter is on (TRITON_INTERPRET=1); mxquant's kernels run interpreted on CPU "
                "tensors only (tests), their conversions on device tensors would differ from the compiled ones")
    return None


class Config(NamedTuple):
    """A launch configuration: tile BLOCK_M x BLOCK_K, warps per program, load eviction policy,
    programs per SM of a persistent grid (0: one tile per program), Triton's pipelining depth
    of that grid's loop, and (swizzled only) whether a program's rows lie 32 apart, so that
    their scale words are adjacent in the 128x4 layout (BLOCK_M must divide 128 and be a
    multiple of 4; otherwise it has no effect)."""

    block_m: int
    block_k: int
    warps: int
    evict: str = "evict_last"
    persist: int = 0
    stages: int = 1
    spread: bool = False


@functools.lru_cache(maxsize=None)
def card(device: torch.device) -> tuple[str, int]:
    """(card class, SM count) of a CUDA device. "fast-hbm": memory bandwidth per SM of 30 GB/s
    or more (an H200; an H100 SXM is below), where a program must keep more bytes in flight;
    "default" otherwise, and for other device types."""
    if device.type != "cuda":
        return "default", 0
    props = torch.cuda.get_device_properties(device)
    sms = props.multi_processor_count
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        per_sm = 2 * clock_khz * 1e3 * bus_bits / 8 / sms
    else:
        per_sm = 36e9 if "H200" in props.name else 0.0
    return ("fast-hbm" if per_sm >= 30e9 else "default"), sms


# Per card class: (elements per program, warps) for linear tiles, (elements, warps, rows) for
# swizzled tiles, (elements, warps) for dequantize. "default" is the H100 sweep of 2026-11-25;
# "fast-hbm" the H200 sweeps of 2026-11-30 (docs/performance.md).
CONFIGS = {
    "default": {"linear": (2048, 4), "swizzled": (2048, 4, 4), "dequantize": (2048, 4)},
    "fast-hbm": {"linear": (4096, 8), "swizzled": (4096, 4, 4), "dequantize": (8192, 8)},
}
SPREAD = {"fast-hbm": (4096, 8)}
"""Card classes whose swizzled programs take rows 32 apart, and from how many rows of input
they take 8 rows per program instead of the configured count (the H200 ablation of
2026-11-30, docs/performance.md; the H100 keeps its measured configuration)."""


@functools.lru_cache(maxsize=4096)
def quantize_config(m: int, k: int, swizzled: bool = False, card_class: str = "default") -> Config:
    """Launch configuration, chosen by the sweeps in docs/performance.md: input loads marked
    evict_last (a cache hint only); linear: one row-chunk per program (shorter rows stack
    several); swizzled: 4 rows per program (16 bytes of each 128x4 scale tile); on fast-HBM
    cards rows 32 apart, 8 of them from 4096 rows (SPREAD); the program size and warps per
    card class (CONFIGS)."""
    conf = CONFIGS.get(card_class, CONFIGS["default"])
    if swizzled:  # the scale store packs 4 blocks: BLOCK_K >= 128
        elems, warps, rows = conf["swizzled"]
        spread = SPREAD.get(card_class)
        if spread and m >= spread[0]:
            rows = spread[1]
        block_k = min(elems // rows, max(128, next_pow2(k)))
        return Config(elems // block_k, block_k, warps, spread=spread is not None)
    return _row_chunks(m, k, *conf["linear"])


def _row_chunks(m, k, elems, warps):
    block_k = min(elems, max(32, next_pow2(k)))
    block_m = max(1, min(next_pow2(m), elems // block_k))
    return Config(block_m, block_k, max(1, min(warps, block_m * block_k // 512)))


@functools.lru_cache(maxsize=4096)
def dequantize_config(m: int, k: int, card_class: str = "default") -> Config:
    """Launch configuration of the dequantize kernel: row-chunks as the linear quantize."""
    return _row_chunks(m, k, *CONFIGS.get(card_class, CONFIGS["default"])["dequantize"])


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _grid(n_tiles: int, cfg: Config, sms: int) -> int:
    return min(n_tiles, cfg.persist * sms) if cfg.persist and sms else n_tiles


def _quantize_plan(m, k, stride, dtype, scale_mode, swizzled, scale_rows, scale_cols, config, device):
    fmt = ELEMENT_FORMATS[dtype]
    cls, sms = card(device)
    cfg = Config(*config) if config else quantize_config(m, k, swizzled, cls)
    assert not swizzled or cfg.block_k >= 128, "the swizzled scale store packs 4 blocks: BLOCK_K >= 128"
    n_m, n_k = cdiv(scale_rows, cfg.block_m), cdiv(scale_cols * BLOCK, cfg.block_k)
    grid = _grid(n_m * n_k, cfg, sms)
    constexprs = dict(
        EMAX=fmt.emax, RCEIL=scale_mode == "rceil",
        TIE_UP=scale_mode == "compressed-tensors",
        E5M2=dtype == torch.float8_e5m2, SWIZZLED=swizzled, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
        MASK_M=n_m * cfg.block_m != m, MASK_K=n_k * cfg.block_k != k, EVICT=cfg.evict,
        PERSISTENT=grid < n_m * n_k, STAGES=cfg.stages, BIG=n_m * cfg.block_m * max(stride, k) + n_k * cfg.block_k >= 2**31,
        SPREAD=swizzled and cfg.spread and cfg.block_m % 4 == 0 and 128 % cfg.block_m == 0,
        INTERPRETED=device.type == "cpu",  # CPU tensors: Triton's interpreter (tests)
    )
    ints = (m, k, stride, scale_rows, scale_cols, n_k, n_m * n_k)
    return _launch.Plan(_kernels().mxfp8_quantize_kernel, grid, ints, constexprs, cfg.warps)


_QFAST: dict = {}  # signature -> (plan, data strides, scale shape and strides): CUDA calls whose plan is armed
_DFAST: dict = {}


def _qkey(x, dtype, scale_mode, scale_layout, config):
    """_QFAST's key: x's signature (shape, strides, dtype, device, 16-byte alignment) and the call's."""
    return x.shape, x.stride(), x.dtype, dtype, scale_mode, scale_layout, x.device, x.data_ptr() % 16 == 0, config


def quantize(x, dtype, scale_mode, scale_layout, config=None):
    device = x.device
    key = _qkey(x, dtype, scale_mode, scale_layout, config)
    hit = _QFAST.get(key)
    if hit is not None and device.index == torch._C._cuda_getDevice():
        p, dstride, sshape, sstride = hit
        # empty_strided: one signature for Python's argument parser (torch.empty has several), ~half the host time
        data = torch.empty_strided(x.shape, dstride, dtype=dtype, device=device)
        scale = torch.empty_strided(sshape, sstride, dtype=torch.float8_e8m0fnu, device=device)
        p.launch(device, x, data, scale)
        return data, scale
    guard = device_guard(device)
    if guard is not None:
        with guard:
            return quantize(x, dtype, scale_mode, scale_layout, config)
    k = x.shape[-1]
    x2 = as_rows(x)
    m = x2.shape[0]
    swizzled = scale_layout == "swizzled"
    scale_shape = layouts.scale_shape(tuple(x.shape), scale_layout)
    scale_rows, scale_cols = scale_shape if swizzled else (m, k // BLOCK)
    data = torch.empty(x.shape, dtype=dtype, device=device)
    scale = torch.empty(scale_shape, dtype=torch.uint8, device=device)
    if scale_rows and scale_cols:
        stride = x2.stride(0)
        pkey = (m, k, stride, x.dtype, dtype, scale_mode, swizzled, x2.data_ptr() % 16 == 0, device, config)
        p = _launch.plan(pkey, lambda: _quantize_plan(m, k, stride, dtype, scale_mode, swizzled, scale_rows,
                                                      scale_cols, config, device))
        p.launch(device, x2, data, scale)
        if p.raw is not None and x2.data_ptr() == x.data_ptr():
            _launch.remember(_QFAST, key, (p, data.stride(), scale_shape, scale.stride()))
    return data, scale.view(torch.float8_e8m0fnu)


def prepare_quantize(x, dtype, scale_mode, scale_layout):
    """`quantize` for every input with x's signature (shape, strides, dtype, device, 16-byte
    alignment), once quantize has run for it and armed its raw launch: the two allocations and
    the launch only, the scale in its public shape (flat when swizzled, layouts.to_public). The
    call returns None where quantize itself must run (another current device). None before.
    ops.py caches it per signature: one key and one lookup per call instead of two of each."""
    device = x.device
    hit = _QFAST.get(_qkey(x, dtype, scale_mode, scale_layout, None))
    if hit is None:
        return None
    p, dstride, sshape, sstride = hit
    if scale_layout == "swizzled":
        sshape, sstride = layouts.public_scale_shape(tuple(x.shape), scale_layout), (1,)
    shape, index, launch, empty, current = x.shape, device.index, p.bound(device), torch.empty_strided, \
        torch._C._cuda_getDevice
    e8m0 = torch.float8_e8m0fnu

    def call(x):
        if current() != index:
            return None
        data = empty(shape, dstride, dtype=dtype, device=device)
        scale = empty(sshape, sstride, dtype=e8m0, device=device)
        launch(x, data, scale)
        return data, scale

    return call


quantize.prepare = prepare_quantize


def clear_plans() -> None:
    """Forget every launch plan (benchmarks that swap the kernels module use this), and the calls
    ops.py prepared from them (the registry's cache)."""
    from mxquant.registry import get_registry

    get_registry().reset_cache()
    _launch._PLANS.clear()
    _QFAST.clear()
    _DFAST.clear()


def dequantize(data, scale, scale_layout, out_dtype, config=None):
    device = data.device
    key = (data.shape, data.stride(), data.dtype, scale.shape, scale.stride(), scale_layout, out_dtype, device,
           data.data_ptr() % 16 == 0, scale.data_ptr() % 16 == 0, config)
    hit = _DFAST.get(key)
    if hit is not None and device.index == torch._C._cuda_getDevice():
        p, ostride = hit
        out = torch.empty_strided(data.shape, ostride, dtype=out_dtype, device=device)
        p.launch(device, data, scale, out)
        return out
    guard = device_guard(device)
    if guard is not None:
        with guard:
            return dequantize(data, scale, scale_layout, out_dtype, config)
    k = data.shape[-1]
    d2 = as_rows(data)
    m = d2.shape[0]
    out = torch.empty(data.shape, dtype=out_dtype, device=device)
    swizzled = scale_layout == "swizzled"
    scale_cols = layouts.swizzled_scale_shape(m, k)[1] if swizzled else k // BLOCK
    if out.numel():
        stride = d2.stride(0)
        scale_bytes = scale.contiguous().view(torch.uint8)

        def make():
            cls, sms = card(device)
            cfg = Config(*config) if config else dequantize_config(m, k, cls)
            n_m, n_k = cdiv(m, cfg.block_m), cdiv(k, cfg.block_k)
            grid = _grid(n_m * n_k, cfg, sms)
            constexprs = dict(E5M2=data.dtype == torch.float8_e5m2, SWIZZLED=swizzled, BLOCK_M=cfg.block_m,
                              BLOCK_K=cfg.block_k, MASK_M=n_m * cfg.block_m != m, MASK_K=n_k * cfg.block_k != k,
                              EVICT=cfg.evict, PERSISTENT=grid < n_m * n_k, STAGES=cfg.stages,
                              INTERPRETED=device.type == "cpu")
            return _launch.Plan(_dequant_kernels().mxfp8_dequantize_kernel, grid,
                                (m, k, stride, scale_cols, n_k, n_m * n_k), constexprs, cfg.warps)

        pkey = ("dq", m, k, stride, data.dtype, out_dtype, swizzled, d2.data_ptr() % 16 == 0,
                scale_bytes.data_ptr() % 16 == 0, device, config)
        p = _launch.plan(pkey, make)
        p.launch(device, d2.view(torch.uint8), scale_bytes, out)
        if p.raw is not None and d2.data_ptr() == data.data_ptr() and scale_bytes.data_ptr() == scale.data_ptr():
            _launch.remember(_DFAST, key, (p, out.stride()))
    return out


# The training and MoE calls (backend.TRAINING_OPS): their launch side needs the names above.
from . import _triton_fp4_ops as _fp4  # noqa: E402  (the MXFP4 / NVFP4 calls, backend.FP4_OPS)
from . import _triton_training_ops as _training  # noqa: E402

backend = Backend(
    name="triton",
    capabilities=Capabilities(devices=frozenset({"cuda", "xpu"}),
                              scale_modes=frozenset({"rceil", "floor", "compressed-tensors"}),
                              ops=frozenset(TRAINING_OPS + FP4_OPS)),
    probe=probe,
    quantize=quantize,
    dequantize=dequantize,
    quantize_colwise=_training.quantize_colwise,
    quantize_rowcol=_training.quantize_rowcol,
    quantize_2d=_training.quantize_2d,
    quantize_grouped=_training.quantize_grouped,
    quantize_grouped_colwise=_training.quantize_grouped_colwise,
    mxfp4_quantize=_fp4.mxfp4_quantize,
    mxfp4_dequantize=_fp4.mxfp4_dequantize,
    nvfp4_quantize=_fp4.nvfp4_quantize,
    nvfp4_dequantize=_fp4.nvfp4_dequantize,
    priority=50,
    description="one-pass Triton kernel (mxquant's own); bit-exact with the reference",
    install_hint="pip install triton (or, from an mxquant checkout, pip install -e '.[cuda]'); on XPU, PyTorch's XPU wheels bring Intel's Triton",
)

own_outputs(backend)  # outputs allocated here: no per-call check (mxquant/outputs.py)
