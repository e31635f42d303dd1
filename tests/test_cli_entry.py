"""How the `mxquant` command starts: `mxquant --version`, `python -m mxquant`, and no NumPy
warning from torch's import where numpy is absent (what a wheel ships: tests/test_packaging.py)."""

import re
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

import mxquant.cli
from hidden_modules import hide

VERSION = metadata.version("mxquant")


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        mxquant.cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"mxquant {VERSION}\n"


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_version_command(how):
    script = shutil.which("mxquant") if how == "console script" else None
    if how == "console script" and script is None:
        pytest.skip("the mxquant console script is not on PATH")
    cmd = [script] if script else [sys.executable, "-m", "mxquant"]
    proc = subprocess.run(cmd + ["--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"mxquant {VERSION}\n"


NO_NUMPY = hide("numpy")  # as in a fresh venv without it (torch does not depend on it)


def test_no_numpy_warning_without_numpy():
    run = "import mxquant.cli; sys.exit(mxquant.cli.main(['info']))"
    control = "import torch"  # torch alone warns there: the premise of the test
    procs = [subprocess.run([sys.executable, "-W", "default", "-c", NO_NUMPY + code], capture_output=True,
                            text=True, timeout=120) for code in (run, control)]
    assert procs[0].returncode == 0, procs[0].stderr
    assert "Failed to initialize NumPy" not in procs[0].stderr, procs[0].stderr
    assert re.search(r"^cpu\s+built-in\s+0\s+cpu\s+available", procs[0].stdout, re.M), procs[0].stdout
    assert "UserWarning: Failed to initialize NumPy" in procs[1].stderr, procs[1].stderr


def test_numpy_is_a_dependency_so_torch_never_warns():
    """Issue 19: between `pip install -e .` and the test extras, `import torch` before `import
    mxquant` warned "Failed to initialize NumPy" (torch's wheels do not require numpy, and mxquant
    can only silence the warning in an import it makes itself). numpy is now a dependency, so an
    environment with mxquant's dependencies has it, and torch imported first is quiet too."""
    import tomllib
    from pathlib import Path

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "numpy" in {re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() for d in deps}, deps
    proc = subprocess.run([sys.executable, "-W", "default", "-c", "import torch; import mxquant"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Failed to initialize NumPy" not in proc.stderr, proc.stderr
