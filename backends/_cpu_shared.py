"""What the `cpu-native` and `cpu-eager` backends share: their (full) capabilities."""

from __future__ import annotations

from mxquant.backend import Capabilities
from mxquant.formats import ELEMENT_FORMATS, INPUT_DTYPES, SCALE_LAYOUTS

CPU_CAPABILITIES = Capabilities(
    devices=frozenset({"cpu"}),
    element_dtypes=frozenset(ELEMENT_FORMATS),
    # listed by name, not SCALE_MODES: a mode the contract gains later is not claimed unheard
    scale_modes=frozenset({"rceil", "floor", "compressed-tensors"}),
    scale_layouts=frozenset(SCALE_LAYOUTS),
    input_dtypes=frozenset(INPUT_DTYPES),
)

_MADV_HUGEPAGE = 14  # Linux's value on every architecture
_HUGE = 2 << 20
_madvise = []  # [libc.madvise or None], looked up on first use


def advise_huge_pages(t) -> None:
    """Ask Linux for transparent huge pages on a fresh output of 4 MiB or more before its first
    write (what backends/csrc/mxq_cpu.c does for cpu-native): a fresh 32 MiB tensor otherwise
    costs 8192 page faults, ~20 ms on the 2-core development machine. Only a hint: no effect
    where THP is off, on memory already touched, or off Linux; any failure is ignored."""
    nbytes = t.numel() * t.element_size()
    if nbytes < 2 * _HUGE:
        return
    if not _madvise:
        try:
            import ctypes
            import sys

            fn = ctypes.CDLL(None).madvise if sys.platform.startswith("linux") else None
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
        except Exception:
            fn = None
        _madvise.append(fn)
    fn = _madvise[0]
    if fn is not None:
        p = t.data_ptr()
        a, e = (p + _HUGE - 1) & ~(_HUGE - 1), (p + nbytes) & ~(_HUGE - 1)
        if e > a:
            fn(a, e - a, _MADV_HUGEPAGE)
