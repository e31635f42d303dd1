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
otherwise the interpreter's own call runs, patching included. It also skips the int32 overflow check
that the interpreter computes for every integer +, - and * and then discards
(`_skip_discarded_overflow_checks`): 41% of the training kernels' run and 42% of the FP4 run
(2026-12-07, the same EPYC, this session's case selection: 199 s -> 117 s and
274 s -> 160 s, the same cases passing). Only for Triton 3.6 (the side environment's,
.ci/triton-env.sh), whose interpreter this was read against; elsewhere nothing is installed."""

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
    _skip_discarded_overflow_checks(it)
    it._mxquant_shim = True
    return True


def _skip_discarded_overflow_checks(it) -> bool:
    """Every int32 +, - and * of an interpreted kernel is redone in int64 and compared with
    int32's range (`binary_op_sanitize_overflow_impl`, InterpreterOptions.sanitize_overflow),
    only to hand the result to `device_assert`, which returns at once unless options.debug is
    set (Triton 3.6): the check's outcome is never read. Skipped there, under the interpreter
    only (the compiler's IR is left as it is); with debug on, the interpreter's own check runs.
    True if installed (only where device_assert reads as Triton 3.6's)."""
    from triton.language import semantic

    cls = getattr(semantic, "TritonSemantic", None)
    check = getattr(cls, "binary_op_sanitize_overflow_impl", None)
    assert_ = getattr(cls, "device_assert", None)
    if check is None or assert_ is None or not hasattr(it, "InterpreterBuilder"):
        return False
    try:
        body, uses = inspect.getsource(assert_), inspect.getsource(check)
    except (OSError, TypeError):  # no source to read (a wheel of .pyc files): leave the check alone
        return False
    if "if not self.builder.options.debug:\n            return\n" not in body or \
            uses.count("self.device_assert(cond, msg, None)") != 1:
        return False  # a device_assert that may act without debug, or a check put to other use

    def sanitize(self, lhs, rhs, binary_op):
        if isinstance(self.builder, it.InterpreterBuilder) and not self.builder.options.debug:
            return None
        return check(self, lhs, rhs, binary_op)

    cls.binary_op_sanitize_overflow_impl = sanitize
    return True
