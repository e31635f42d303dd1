"""Errors raised when no backend can serve a call. Each lists every candidate and its status."""

from __future__ import annotations


def _table(candidates) -> str:
    if not candidates:
        return "  (no backends are registered)"
    width = max(len(n) for n, _, _ in candidates)
    return "\n".join(f"  {name:<{width}}  [{origin}]  {status}" for name, origin, status in candidates)


class BackendError(RuntimeError):
    """Base class: no backend could serve an mxquant call."""

    def __init__(self, message: str, candidates):
        self.candidates = list(candidates)
        super().__init__(f"{message}\ncandidates for this call:\n{_table(self.candidates)}\n"
                         "Run `mxquant info` for the full report.")


class UnknownBackendError(BackendError, ValueError):
    def __init__(self, name, forced_by, call, candidates, unloaded_plugins=()):
        self.backend = name
        note = "".join(f"\n  plugin {p}" for p in unloaded_plugins)
        note = f"; not loaded, so their backends are unknown here:{note}" if note else ""
        super().__init__(f"mxquant: unknown backend {name!r} (forced by {forced_by}) for {call.describe()}{note}",
                         candidates)


class BackendUnavailableError(BackendError):
    def __init__(self, name, forced_by, call, reason, candidates):
        self.backend, self.reason = name, reason
        super().__init__(f"mxquant: backend {name!r} (forced by {forced_by}) cannot run {call.describe()}: "
                         f"{reason}. No fallback is made from a forced backend.", candidates)


class BackendIncapableError(BackendUnavailableError):
    """The forced backend is available but does not support this call's dtype/mode/layout."""


class NoBackendError(BackendError):
    def __init__(self, call, candidates):
        super().__init__(f"mxquant: no backend can run {call.describe()}", candidates)


class BackendOutputError(RuntimeError):
    """A backend's outputs broke the backend contract (docs/writing-a-backend.md, "Outputs"):
    not a tensor, or a wrong dtype, shape, device or strides, or it wrote into its input. A bug
    of that backend; mxquant raises rather than hand such outputs to the caller."""

    def __init__(self, backend: str, origin: str, call: str, problem: str):
        self.backend, self.origin, self.problem = backend, origin, problem
        super().__init__(f"mxquant: backend {backend!r} ({origin}) broke the output contract in {call}: {problem}. "
                         "This is a bug of that backend: report it to its authors; meanwhile force another "
                         "backend with backend=... or MXQUANT_BACKEND.")


class BackendCallError(RuntimeError):
    """A backend that mxquant calls but does not own (a plugin's, or a built-in one wrapping
    another library: flashinfer, xpu) raised inside quantize or dequantize. The message names
    the backend and its plugin; the original exception is chained (`__cause__`). A MemoryError or
    torch.OutOfMemoryError is not wrapped: it passes through as raised."""

    def __init__(self, backend: str, origin: str, call: str, exc: BaseException, wrote_input: bool = False):
        self.backend, self.origin = backend, origin
        try:
            text = str(exc)
        except Exception:  # an exception whose str() raises must not hide whose it was
            text = "(its message could not be read)"
        wrote = " It had written into its input before raising: the input is changed." if wrote_input else ""
        super().__init__(f"mxquant: backend {backend!r} ({origin}) raised {type(exc).__name__} in {call}: {text}.{wrote} "
                         "Force another backend with backend=... or MXQUANT_BACKEND to work around it.")
