"""Launch plans of the `triton` backend: everything a launch needs but the tensors, per call
signature, and the lean launch path for signatures already seen.

The first launch of a signature goes through Triton's normal path (`kernel[grid](...)`), which
compiles (or loads) the kernel and returns it. Later launches on CUDA under Triton 3.6 call
the compiled kernel's C launcher directly: no Python-level argument binding, no scratch
allocation helper (only when the kernel needs no scratch memory), and pointers passed as
integers, which skips the launcher's `data_ptr()` call and its cuPointerGetAttribute
check per pointer (the tensors come from our own checked call path, on the plan's device).
The signature includes everything Triton specializes on: the input's 16-byte alignment and
every integer argument's exact value (outputs come from torch's allocator, always aligned).
Imports nothing from triton at module import.
"""

from __future__ import annotations

import inspect

import torch

_FAST_LAUNCH = [None]  # decided on the first CUDA launch: Triton 3.6's launcher ABI
_RUNTIME = [None]  # triton.knobs.runtime, whose launch hooks every raw launch checks
_PLANS: dict = {}  # plans per call signature (bounded below)
_EMPTY = inspect.Parameter.empty  # a parameter without a default (Triton's KernelParam.default)


def fast_launch_ok() -> bool:
    import triton

    _RUNTIME[0] = triton.knobs.runtime
    return triton.__version__.split(".")[:2] == ["3", "6"]


def hooks_idle() -> bool:
    """No launch hook installed (Triton 3.6 keeps them in HookChain objects, empty by default;
    a profiler adds to them): only then may a launch skip Triton's own path, which calls them."""
    rt = _RUNTIME[0]
    enter, exit_ = rt.launch_enter_hook, rt.launch_exit_hook
    return (enter is None or not getattr(enter, "calls", True)) and (exit_ is None or not getattr(exit_, "calls", True))


class Plan:
    """One call signature's launch: grid size, integer arguments, constexprs, warps, other compile
    options (`options`, e.g. maxnreg: given to the first, compiling launch only, they are not
    kernel arguments); after the first launch on CUDA, the compiled kernel's raw launcher (`raw`)
    and its fixed arguments."""

    __slots__ = ("kernel", "grid", "ints", "constexprs", "num_warps", "options", "raw", "head", "tail", "compiled")

    def __init__(self, kernel, grid, ints, constexprs, num_warps, options=None):
        self.kernel, self.grid, self.ints, self.constexprs, self.num_warps = kernel, grid, ints, constexprs, num_warps
        self.options = options or {}  # compile options beside num_warps (maxnreg): not kernel arguments
        self.raw = self.compiled = None
        self.head = self.tail = None

    def launch(self, device: torch.device, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
        """Launch on the current device (the caller made it `device`) and stream."""
        raw = self.raw
        if raw is not None and hooks_idle():
            g, fn, coop, pdl, meta = self.head
            raw(g, 1, 1, torch._C._cuda_getCurrentRawStream(device.index), fn, coop, pdl, None, None, meta,
                None, None, None, a.data_ptr(), b.data_ptr(), c.data_ptr(), *self.tail)
            return
        if self.head is not None:  # armed, but a launch hook is installed: Triton's path, with the hooks
            g, fn, _, _, meta = self.head
            stream = torch._C._cuda_getCurrentRawStream(device.index)
            meta_now = self.compiled.launch_metadata((g, 1, 1), stream, a, b, c, *self.tail)
            self.compiled.run(g, 1, 1, stream, fn, meta, meta_now, _RUNTIME[0].launch_enter_hook,
                              _RUNTIME[0].launch_exit_hook, a, b, c, *self.tail)
            return
        self._first(device, (a, b, c))

    def bound(self, device: torch.device):
        """launch(device, a, b, c) as a closure with this armed plan's fields bound (a prepared
        call's launch: no attribute reads or unpacking per call); Triton's path where a launch
        hook is installed, as in launch()."""
        raw, tail, index, launch = self.raw, self.tail, device.index, self.launch
        if raw is None:
            return lambda a, b, c: launch(device, a, b, c)
        g, fn, coop, pdl, meta = self.head
        stream = torch._C._cuda_getCurrentRawStream

        def go(a, b, c):
            if hooks_idle():
                raw(g, 1, 1, stream(index), fn, coop, pdl, None, None, meta, None, None, None,
                    a.data_ptr(), b.data_ptr(), c.data_ptr(), *tail)
            else:
                launch(device, a, b, c)

        return go

    def launch_n(self, device: torch.device, *tensors: torch.Tensor) -> None:
        """launch() for any number of tensor arguments (the training and MoE kernels)."""
        if self.head is None:
            self._first(device, tensors)
            return
        g, fn, coop, pdl, meta = self.head
        stream = torch._C._cuda_getCurrentRawStream(device.index)
        if hooks_idle():
            self.raw(g, 1, 1, stream, fn, coop, pdl, None, None, meta, None, None, None,
                     *[t.data_ptr() for t in tensors], *self.tail)
        else:
            rt = _RUNTIME[0]
            meta_now = self.compiled.launch_metadata((g, 1, 1), stream, *tensors, *self.tail)
            self.compiled.run(g, 1, 1, stream, fn, meta, meta_now,
                              rt.launch_enter_hook, rt.launch_exit_hook, *tensors, *self.tail)

    def _first(self, device: torch.device, tensors: tuple) -> None:
        """Triton's own launch (compiles or loads the kernel); on CUDA, arm the raw launcher."""
        compiled = self.kernel[(self.grid,)](*tensors, *self.ints, **self.constexprs, num_warps=self.num_warps,
                                             **self.options)
        if device.type == "cuda" and compiled is not None:  # None: Triton's interpreter ran it
            if _FAST_LAUNCH[0] is None:
                _FAST_LAUNCH[0] = fast_launch_ok()
            if _FAST_LAUNCH[0]:
                self._arm(compiled, len(tensors))

    def _arm(self, compiled, n_tensors: int) -> None:
        run = compiled.run  # triton.backends.nvidia.driver.CudaLauncher
        if getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1):
            return  # needs Triton's scratch allocation: keep the normal path
        launch = getattr(run, "launch", None)
        tail = launch_tail(self.kernel, n_tensors, self.ints, self.constexprs)
        if launch is None or tail is None:
            return
        self.head = (self.grid, compiled.function, run.launch_cooperative_grid, run.launch_pdl,
                     compiled.packed_metadata)
        self.tail = tail
        self.compiled = compiled
        self.raw = launch


def launch_tail(kernel, n_tensors: int, ints: tuple, constexprs: dict):
    """The raw launcher's arguments after the tensors' pointers: the integers, then every
    constexpr parameter in the kernel's order, as given or its default (the launcher takes them
    all, a defaulted one too: leaving one out is a TypeError at every raw launch, as a kernel
    with a defaulted constexpr showed on an H100, 2026-12-05). None (keep Triton's own launch)
    unless the kernel's parameters are n_tensors tensors, then the integers, then constexprs
    only, each given or defaulted."""
    params = getattr(kernel, "params", None)
    if params is None:
        return None
    tensors, runtime, rest = params[:n_tensors], params[n_tensors:n_tensors + len(ints)], params[n_tensors + len(ints):]
    if (len(runtime) != len(ints) or any(p.is_constexpr for p in (*tensors, *runtime))
            or not all(p.is_constexpr for p in rest)):
        return None
    names = {p.name for p in rest}
    if set(constexprs) - names or any(p.name not in constexprs and p.default is _EMPTY for p in rest):
        return None
    return (*ints, *(constexprs[p.name] if p.name in constexprs else p.default for p in rest))


def plan(key, make) -> Plan:
    p = _PLANS.get(key)
    if p is None:
        p = remember(_PLANS, key, make())
    return p


def remember(table: dict, key, value):
    """table[key] = value in a cache of call signatures, emptied when past 4096 entries (a
    program cycling through more shapes than that pays a re-plan, not unbounded memory)."""
    if len(table) > 4096:
        table.clear()
    table[key] = value
    return value
