"""The backend interface: what a backend declares and the two callables it provides.

A backend is a `Backend` object. Plugins hand one (or a lazy `BackendSpec` naming where
one lives) to the `register` callback of the `register_backends` hook; see
docs/writing-a-backend.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .formats import (BASELINE_ELEMENT_DTYPES, BASELINE_INPUT_DTYPES, BASELINE_SCALE_LAYOUTS, BASELINE_SCALE_MODES,
                      BASELINE_NVFP4_SCALE_MODES, describe_dtype)

QuantizeFn = Callable[[torch.Tensor, torch.dtype, str, str], "tuple[torch.Tensor, torch.Tensor]"]
"""quantize(x, dtype, scale_mode, scale_layout) -> (data, scale). Arguments are already
validated; outputs must be contiguous and shaped as docs/semantics.md says."""

DequantizeFn = Callable[[torch.Tensor, torch.Tensor, str, torch.dtype], torch.Tensor]
"""dequantize(data, scale, scale_layout, out_dtype) -> tensor. Arguments are already validated."""

TRAINING_OPS = ("quantize_colwise", "quantize_rowcol", "quantize_2d", "quantize_grouped", "quantize_grouped_colwise")
"""Calls beyond quantize / dequantize (docs/semantics.md, "Training and MoE calls"). A backend
serves one only if it lists it in `Capabilities.ops` and gives the callable of that name:
  quantize_colwise(x, dtype, scale_mode, scale_layout) -> (data, scale), as quantize returns
      them for x.mT.contiguous() (swizzled: 2-D)
  quantize_rowcol(x, dtype, scale_mode, scale_layout) -> (row_data, row_scale, col_data, col_scale)
  quantize_2d(x, dtype, scale_mode) -> (data, scale (..., M/32, K/32))
  quantize_grouped(x, group_ends, dtype, scale_mode) -> (data, scale) in the public shapes
      (group_ends None for 3-D expert weights; validated already where that needs no sync)
  quantize_grouped_colwise(x, group_ends, dtype, scale_mode) -> (data (N, T), scale 1-D): K-groups,
      mxfp8_quantize_grouped(..., axis=-2) for x (T, N) (a separate claim: a backend serving
      quantize_grouped does not serve this unless it lists it too)."""

PUBLIC_NAMES = {"quantize_colwise": "mxfp8_quantize(axis=-2)", "quantize_rowcol": "mxfp8_quantize_rowcol",
                "quantize_2d": "mxfp8_quantize_2d", "quantize_grouped": "mxfp8_quantize_grouped",
                "quantize_grouped_colwise": "mxfp8_quantize_grouped(axis=-2)"}
"""The public call behind each of TRAINING_OPS, as errors name it."""


def public_call(op: str, args: str) -> str:
    """`name(args)` of TRAINING_OPS' `op` as its public call spells it (column-wise ones end with
    `, axis=-2`)."""
    name, _, axis = PUBLIC_NAMES[op].partition("(")
    return f"{name}({args}{', ' + axis[:-1] if axis else ''})"

FP4_OPS = ("mxfp4_quantize", "mxfp4_dequantize", "nvfp4_quantize", "nvfp4_dequantize")
"""The MXFP4 / NVFP4 calls (docs/semantics.md, "MXFP4 and NVFP4"), claimed like TRAINING_OPS:
  mxfp4_quantize(x, scale_mode, scale_layout) -> (data uint8 (..., K/2), scale e8m0 (swizzled: 2-D))
  mxfp4_dequantize(data, scale, scale_layout, out_dtype) -> tensor (..., K)
  nvfp4_quantize(x, global_scale, scale_mode, scale_layout) -> (data uint8 (..., K/2),
      scale float8_e4m3fn (swizzled: 2-D), global_scale float32 (1,)); global_scale None: compute it
  nvfp4_dequantize(data, scale, global_scale, scale_layout, out_dtype) -> tensor (..., K)
Their element dtype is e2m1 (Capabilities.element_dtypes is not consulted for them)."""

CLAIMABLE_OPS = TRAINING_OPS + FP4_OPS
"""Every call a backend serves only when it lists it in Capabilities.ops."""

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
"""What a backend name and a deviation code may be: no blank, comma or colon (MXQUANT_BACKEND and
MXQUANT_ALLOW_DEVIATIONS take "name" and "name:code" lists), one line in `mxquant info`."""


def check_name(what: str, name) -> str:
    """`name` if it is a valid backend name or deviation code (NAME), else TypeError / ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} is not a valid name: letters, digits and . _ + - only, starting with a "
                         "letter or digit, at most 64 characters")
    return name


def _set_of(owner: str, field_name: str, value, kind: type) -> frozenset:
    """`value` (a set, frozenset, tuple or list of `kind`) as a frozenset, else TypeError: a bare
    str or None here would break every call's resolution, not only this backend's."""
    if isinstance(value, (set, frozenset, tuple, list)) and all(isinstance(v, kind) for v in value):
        return frozenset(value)
    raise TypeError(f"{owner}.{field_name} must be a set of {kind.__name__}, got {value!r:.200}")


def _check_str(owner: str, field_name: str, value) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{owner}.{field_name} must be a str, got {type(value).__name__}")


ProbeFn = Callable[[torch.device], Optional[str]]
"""probe(device) -> None if the backend can run on `device`, else a human-readable reason.
It must never raise: the registry turns an exception into a reason anyway."""


@dataclass(frozen=True)
class Deviation:
    """A documented difference from docs/semantics.md that the backend cannot avoid.

    `code` is a short identifier (`nan-ignored`, `inf-saturates`, ...) that users name in
    MXQUANT_ALLOW_DEVIATIONS / `mxquant.allow_deviations()` to let automatic selection pick
    the backend anyway. `summary` says what differs, in one sentence.
    """

    code: str
    summary: str

    def __post_init__(self):
        check_name("Deviation.code", self.code)
        _check_str("Deviation", "summary", self.summary)


@dataclass(frozen=True)
class Capabilities:
    devices: frozenset
    """Device types served, e.g. {"cuda"}."""
    element_dtypes: frozenset = frozenset(BASELINE_ELEMENT_DTYPES)
    scale_modes: frozenset = frozenset(BASELINE_SCALE_MODES)
    scale_layouts: frozenset = frozenset(BASELINE_SCALE_LAYOUTS)
    input_dtypes: frozenset = frozenset(BASELINE_INPUT_DTYPES)
    """High-precision dtypes accepted by quantize (and produced by dequantize).

    Each default is mxquant 0.1's contract, frozen (formats.BASELINE_*): a mode, format or
    layout the contract gains later is claimed only by a backend that lists it."""
    ops: frozenset = frozenset()
    """The calls of CLAIMABLE_OPS (TRAINING_OPS, FP4_OPS) this backend claims (each with its callable on the Backend).
    None by default: a backend written for the quantize / dequantize contract claims none."""

    def __post_init__(self):  # every field a frozenset of its kind, checked where it is made
        for name, kind in (("devices", str), ("element_dtypes", torch.dtype), ("scale_modes", str),
                           ("scale_layouts", str), ("input_dtypes", torch.dtype), ("ops", str)):
            object.__setattr__(self, name, _set_of("Capabilities", name, getattr(self, name), kind))

    def describe(self) -> dict:
        return {
            "devices": sorted(self.devices),
            "element_dtypes": sorted(describe_dtype(d) for d in self.element_dtypes),
            "scale_modes": sorted(self.scale_modes),
            "scale_layouts": sorted(self.scale_layouts),
            "input_dtypes": sorted(describe_dtype(d) for d in self.input_dtypes),
            "ops": sorted(self.ops),
        }


@dataclass(frozen=True)
class Call:
    """One call signature; the registry resolves and caches one backend per signature."""

    op: str  # "quantize", "dequantize" or one of CLAIMABLE_OPS
    device: torch.device
    hp_dtype: torch.dtype  # input of quantize, output of dequantize
    element_dtype: torch.dtype
    scale_mode: Optional[str]  # None for dequantize
    scale_layout: str

    def describe(self) -> str:
        if self.op in FP4_OPS:
            mode = f", {self.scale_mode}" if self.scale_mode else ""
            return f"{self.op}({self.device}, {describe_dtype(self.hp_dtype)}{mode}, {self.scale_layout})"
        if self.op in TRAINING_OPS:
            return public_call(self.op, f"{self.device}, {describe_dtype(self.hp_dtype)} -> "
                                        f"{describe_dtype(self.element_dtype)}, {self.scale_mode}, {self.scale_layout}")
        if self.op == "quantize":
            return (f"mxfp8_quantize({self.device}, {describe_dtype(self.hp_dtype)} -> "
                    f"{describe_dtype(self.element_dtype)}, {self.scale_mode}, {self.scale_layout})")
        return (f"mxfp8_dequantize({self.device}, {describe_dtype(self.element_dtype)} -> "
                f"{describe_dtype(self.hp_dtype)}, {self.scale_layout})")


@dataclass
class Backend:
    name: str
    capabilities: Capabilities
    probe: ProbeFn
    quantize: Optional[QuantizeFn] = None
    """(x, dtype, scale_mode, scale_layout) -> (data, scale). An in-tree backend that allocates
    its own outputs (outputs.own_outputs) may give it a `prepare(x, dtype, scale_mode,
    scale_layout)` attribute: a call for every input of x's signature (shape, strides, dtype,
    device, 16-byte alignment) returning (data, public scale) or None to decline, or None; ops.py
    caches and uses it (docs/backends.md, "Launch cost"). A plugin's is never asked."""
    dequantize: Optional[DequantizeFn] = None
    priority: int = 0
    """Higher wins among available, capable backends."""
    deviations: tuple = ()
    """`Deviation`s from docs/semantics.md; such a backend is picked automatically only when
    the caller allows every one of them."""
    description: str = ""
    install_hint: str = ""
    quantize_colwise: Optional[Callable] = None
    quantize_rowcol: Optional[Callable] = None
    quantize_2d: Optional[Callable] = None
    quantize_grouped: Optional[Callable] = None
    quantize_grouped_colwise: Optional[Callable] = None
    """The calls of TRAINING_OPS, served only when also listed in capabilities.ops."""
    mxfp4_quantize: Optional[Callable] = None
    mxfp4_dequantize: Optional[Callable] = None
    nvfp4_quantize: Optional[Callable] = None
    nvfp4_dequantize: Optional[Callable] = None
    """The calls of FP4_OPS, served only when also listed in capabilities.ops."""

    def incapable_reason(self, call: Call) -> Optional[str]:
        """None if this backend implements `call`, else why not (never probes the device)."""
        caps = self.capabilities
        if call.op in CLAIMABLE_OPS and call.op not in caps.ops:
            return f"does not claim {call.op} (capabilities.ops: {', '.join(sorted(caps.ops)) or 'none'})"
        fn = getattr(self, call.op)
        if fn is None:
            return f"does not implement {call.op}"
        if call.device.type not in caps.devices:
            return f"does not serve device type '{call.device.type}' (serves {', '.join(sorted(caps.devices))})"
        dequant = call.op in ("dequantize", "mxfp4_dequantize", "nvfp4_dequantize")
        checks = [] if call.op in FP4_OPS else [("element dtype", call.element_dtype, caps.element_dtypes)]
        checks += [
            ("output dtype" if dequant else "input dtype", call.hp_dtype, caps.input_dtypes),
            ("scale layout", call.scale_layout, caps.scale_layouts),
        ]
        if not dequant:  # claiming nvfp4_quantize claims its one mode of today (formats.BASELINE_NVFP4_SCALE_MODES)
            modes = caps.scale_modes | frozenset(BASELINE_NVFP4_SCALE_MODES) if call.op == "nvfp4_quantize" else caps.scale_modes
            checks.append(("scale mode", call.scale_mode, modes))
        for what, value, accepted in checks:
            if value not in accepted:
                show = describe_dtype if isinstance(value, torch.dtype) else str
                return f"does not support {what} {show(value)} (supports {', '.join(sorted(map(show, accepted)))})"
        return None


@dataclass(frozen=True)
class BackendSpec:
    """A backend known by name before it is imported: `target` is "module:attribute" of a
    `Backend` object (or of a zero-argument callable returning one). The registry imports it
    only when a call for one of `devices` needs it, or when `mxquant info` asks."""

    name: str
    target: str
    devices: tuple = field(default=())
    install_hint: str = ""

    def __post_init__(self):
        check_name("BackendSpec.name", self.name)
        _check_str("BackendSpec", "target", self.target)
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.target):
            raise ValueError(f"BackendSpec.target must be 'module:attribute', got {self.target!r:.200}")
        object.__setattr__(self, "devices", tuple(sorted(_set_of("BackendSpec", "devices", self.devices, str))))
        _check_str("BackendSpec", "install_hint", self.install_hint)
