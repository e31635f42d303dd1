"""A speed-up of Triton 3.6's interpreter (TRITON_INTERPRET=1) for this suite's side-environment
runs (tests/test_triton_interpreter.py), installed by tests/conftest.py; it changes no result.

The interpreter maps triton.language's builtins to interpreted ones (`_patch_lang`) when a
kernel launch starts, and undoes that when the launch ends. It also calls `_patch_lang` on
every call of a @triton.jit device function inside the kernel, which walks the language modules
with inspect.getmembers again although they are already patched (the builtins it would patch
are replaced by then, so the walk finds nothing to do). The kernels here call helpers per tile,
so that walk took 15-28% of an interpreted test's time (2026-12-07, a 2-core AMD EPYC:
test_triton_training.py's test_grouped_shapes[bfloat16-cpu] 27.6 s -> 19.9 s,
test_triton_fp4.py's test_small_tiles_odd_shapes_and_strided_rows[swizzled-bfloat16-cpu] 27.9 s
-> 24.4 s, both passing). Here a device function call skips it when every language module its
globals name (triton.language, triton.language.core) was patched in the launch in progress;
otherwise the interpreter's own call runs, patching included. Only for Triton 3.6 (the side
environment's, .ci/triton-env.sh), whose interpreter this was read against; elsewhere nothing
is installed."""

from __future__ import annotations

import inspect


def install() -> bool:
    """Install the shim where TRITON_INTERPRET's interpreter is Triton 3.6's; True if installed."""
    try:
        import triton
        import triton.language as tl
        from triton.runtime import interpreter as it
    except ImportError:
        return False
    if not triton.__version__.startswith("3.6.") or getattr(it, "_mxquant_shim", False):
        return False
    if not all(hasattr(it, name) for name in ("GridExecutor", "InterpretedFunction", "InterpreterError")):
        return False
    launches: list[set[int]] = []  # per launch in progress: the language modules it patched

    def langs(fn) -> set[int]:
        return {id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and (v is tl or v is tl.core)}

    grid_call = it.GridExecutor.__call__

    def launch(self, *args, **kwargs):
        launches.append(langs(self.fn))  # what the launch's own _patch_lang(self.fn) patches
        try:
            return grid_call(self, *args, **kwargs)
        finally:
            launches.pop()

    device_call = it.InterpretedFunction.__call__

    def call(self, *args, **kwargs):
        mine = langs(self.fn)
        if not launches or not mine <= launches[-1]:
            if launches:
                launches[-1] |= mine
            return device_call(self, *args, **kwargs)  # patches, as the interpreter always does
        fn = self.rewrite()  # the rest of InterpretedFunction.__call__ (Triton 3.6)
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise it.InterpreterError(repr(e)) from e

    it.GridExecutor.__call__ = launch
    it.InterpretedFunction.__call__ = call
    it._mxquant_shim = True
    return True
