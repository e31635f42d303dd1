"""The python of a cached side environment (.ci/cached-venv.sh, through one of its wrapper
scripts), built when missing, for tests that need packages the main environment must not hold.
A skip is not a pass: with CI=true an environment that cannot be built fails the test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def env_python(script: str, what: str, timeout: float = 1800) -> str:
    """bin/python of the environment `.ci/<script>` builds (printing how long it took)."""
    start = time.time()
    try:
        proc = subprocess.run(["bash", str(REPO / ".ci" / script)], capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHON": sys.executable}, timeout=timeout)
        failed = proc.returncode and f"exit {proc.returncode}:\n" + "\n".join(proc.stderr.strip().splitlines()[-15:])
    except subprocess.TimeoutExpired:
        failed = f"still building after {timeout:.0f} s"
    if failed:
        msg = f"{what} could not be built (.ci/{script}, {failed})"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)  # CI must run the test, never skip it
        pytest.skip(msg)
    print(f"\n{what} ready in {time.time() - start:.1f} s: {proc.stdout.strip()}")
    return proc.stdout.strip()
