"""Builds the optional native CPU kernel (backends/csrc/mxq_cpu.c) as mxquant.backends._mxq_cpu.

Everything else is declared in pyproject.toml. The library is plain C loaded with ctypes (no
Python or libtorch headers or ABI). Its build is optional: when it fails (no C compiler, say)
the install still succeeds, the reason is written next to where the library would be (and a
library an earlier build left there is removed), so the `cpu-native` backend reports it
(`mxquant info`); `cpu-eager` serves CPU calls instead. pip shows the build's own output only
with -v, so `mxquant info` is where the reason is seen.
"""

from __future__ import annotations

import glob
import importlib.machinery
import os
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE = "mxquant.backends._mxq_cpu"
ERROR_FILE = "_mxq_cpu.build-error.txt"  # backends/_native_lib.py reads it


class OptionalBuildExt(build_ext):
    """build_ext that records a failure instead of failing the install."""

    def run(self):
        # setuptools clears `inplace` while it builds and copies to the source tree afterwards;
        # the note must go to the source tree too in that case (and in editable installs).
        self._in_source = bool(self.inplace or getattr(self, "editable_mode", False))
        try:
            super().run()
        except Exception as exc:  # the compiler may be missing before any extension is tried
            self._record(f"no working C compiler at install time ({type(exc).__name__}: {exc})")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            cc = getattr(self.compiler, "compiler_so", None) or ["cc"]
            what = "no C compiler at install time" if shutil.which(cc[0]) is None else "C compiler failed at install time"
            self._record(f"{what} ({type(exc).__name__}: {exc})")
            return
        for path in self._note_paths():  # a stale note from an earlier failed build
            if os.path.exists(path):
                os.remove(path)

    def _note_paths(self) -> list[str]:
        paths = [os.path.join(os.path.dirname(self.get_ext_fullpath(NATIVE)), ERROR_FILE)]
        if getattr(self, "_in_source", False):
            src = self.get_finalized_command("build_py").get_package_dir("mxquant.backends")
            paths.append(os.path.join(os.path.abspath(src), ERROR_FILE))
        return paths

    def _record(self, reason: str) -> None:
        """Leave the reason where the library would be, and remove a library an earlier build
        left there: it is not what this source builds, so it must not load and be reported
        as available (backends/_native_lib.py also refuses a library older than the note)."""
        for path in self._note_paths():
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            for stale in glob.glob(os.path.join(glob.escape(folder), "_mxq_cpu*")):
                if stale.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                    os.remove(stale)
            with open(path, "w") as f:
                f.write(reason.strip() + "\n")
        # pip shows a successful build's output only with -v; `mxquant info` shows the reason
        print(f"WARNING: mxquant: native CPU kernel not built (cpu-eager serves CPU calls; "
              f"`mxquant info` says why): {reason}", file=sys.stderr)


# -O3 vectorises the block loops; -fno-trapping-math lets it if-convert them. Never
# -ffast-math: the kernel relies on IEEE rounding and subnormals.
FLAGS = [] if sys.platform == "win32" else ["-O3", "-std=c99", "-fno-trapping-math", "-pthread"]

def csrc(pattern: str) -> list[str]:
    """backends/csrc's files matching pattern, relative to this file's folder (setuptools wants
    relative paths; found from here, not the working directory), sorted: the build is reproducible.
    Every C file there is part of the one library."""
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(glob.escape(here), "backends", "csrc", pattern)))
    if not found:
        raise SystemExit(f"setup.py: no backends/csrc/{pattern} next to {__file__}")
    return found


setup(
    ext_modules=[Extension(NATIVE, csrc("*.c"), depends=csrc("*.h"), extra_compile_args=FLAGS,
                           extra_link_args=[] if sys.platform == "win32" else ["-pthread"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
