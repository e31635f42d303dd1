"""The Triton backend's kernels checked on a machine without a GPU, so that CI runs them: the
main environment holds no triton (on purpose: it would change what the rest of the suite
sees), so this runs tests/test_triton_training.py, tests/test_triton_kgroup.py (with
tests/test_torchao_triton_layouts.py), tests/test_triton_fp4.py
(with test_triton_fp4_rounding.py and test_triton_nvfp4.py),
tests/test_triton_dequant.py and tests/test_triton_compile.py in a side environment that adds Triton 3.6
to the main one (.ci/triton-env.sh, cached; built in seconds from PyPI):
- under TRITON_INTERPRET=1: every training kernel, byte for byte against the NumPy oracle and
  the transpose identities on CPU tensors (the module's "cpu" cases; its fp8 conversion is
  interpreted from the fp32 bits, everything else is the GPU code);
- without it: every kernel at its shipped configuration compiles for sm_90 (Triton's compiler,
  no GPU needed).
What this cannot show (a GPU's fp8 conversion instruction, speed, CUDA graphs) is left to the
modules' `cuda` cases on a GPU (first run on an H100 on 2026-12-05; they found an NVFP4 fp32
scale-byte bug in the hardware conversion's path, which the interpreter could not show)."""

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from cached_env import REPO, env_python
from subproc import child_env

RUNS = {  # name: (module, extra pytest arguments, interpret, the test here that reads it); the longest first
    "training": ("tests/test_triton_training.py", ("tests/test_triton_gluon_config.py",), True,
                 "test_triton_kernels_bytes_under_the_interpreter"),
    "fp4": ("tests/test_triton_fp4.py", ("tests/test_triton_fp4_rounding.py", "tests/test_triton_nvfp4.py"), True,
            "test_triton_fp4_kernels_under_the_interpreter_and_for_hopper"),
    "compile": ("tests/test_triton_compile.py", (), False, "test_triton_kernels_compile_for_hopper"),
    "kgroup": ("tests/test_triton_kgroup.py", ("tests/test_torchao_triton_layouts.py",), True,
               "test_triton_kgroups_under_the_interpreter_and_for_hopper"),
    "dequant": ("tests/test_triton_dequant.py", (), True,
                "test_triton_mxfp8_dequantize_under_the_interpreter_and_for_hopper"),
    "fp4 compile": ("tests/test_triton_fp4.py", ("tests/test_triton_nvfp4.py", "-k", "compile"), False,
                    "test_triton_fp4_kernels_under_the_interpreter_and_for_hopper"),
    "kgroup compile": ("tests/test_triton_kgroup.py", ("-k", "sm90"), False,
                       "test_triton_kgroups_under_the_interpreter_and_for_hopper"),
    "dequant compile": ("tests/test_triton_dequant.py", ("-k", "compile"), False,
                        "test_triton_mxfp8_dequantize_under_the_interpreter_and_for_hopper"),
}
"""Every side-environment pytest run of this module. The runs of the tests selected here are
started together, two at a time (a CI machine has 2 cores, and this process only waits on
them), when the first test needs one: each is single-threaded interpretation or compilation, so
the pair takes about half the time of running them one after another."""


def _pytest(python, module, *args, interpret):
    env = child_env()
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # two runs side by side on two cores
    try:
        proc = subprocess.run([python, "-m", "pytest", "-q", "-rpfEsxX", "--color=no", "-p", "no:cacheprovider", module,
                               *args], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=1500)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise AssertionError(f"{module} {' '.join(args)} still running after 1500 s:\n{out[-3000:]}") from None
    tail = re.sub(r"(?m)^PASSED .*\n", "", proc.stdout)[-3000:] + proc.stderr[-2000:]  # failures, not the passed list
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    names = set(re.findall(r"^PASSED (.+?)\s*$", proc.stdout, re.M))  # -rp's summary: each passed test's id
    return int(passed.group(1)) if passed else 0, tail, names


@pytest.fixture(scope="module")
def runs(request):
    selected = {item.name for item in request.session.items if item.module is request.module}
    python = env_python("triton-env.sh", "Triton environment")
    pool = ThreadPoolExecutor(2)
    try:
        yield {name: pool.submit(_pytest, python, module, *args, interpret=interpret)
               for name, (module, args, interpret, test) in RUNS.items() if test in selected}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an interrupted session starts no further run


def test_triton_kernels_bytes_under_the_interpreter(runs):
    passed, tail, _ = runs["training"].result()
    assert passed >= 158, tail  # 168 on 2026-12-05, 169 later; 160 since 2026-12-07 (grouped adversarial: PAIRWISE)


def test_triton_kernels_compile_for_hopper(runs):
    passed, tail, _ = runs["compile"].result()
    assert passed == 7, tail  # every kernel at its shipped config, the Gluon PTX per input dtype, the raw-launch shapes


def test_triton_fp4_kernels_under_the_interpreter_and_for_hopper(runs):
    """tests/test_triton_fp4.py, test_triton_fp4_rounding.py and test_triton_nvfp4.py: the MXFP4 /
    NVFP4 kernels byte for byte under the interpreter, then (without it) compiled for sm_90."""
    passed, tail, _ = runs["fp4"].result()
    assert passed >= 65, tail  # 58 cases on 2026-12-05 (1:42 on a shared 2-core box); 69 on 2026-12-06
    passed, tail, _ = runs["fp4 compile"].result()
    assert passed == 9, tail  # the kernels compile (the NVFP4 2-byte one and its table's too); the packed bytes' store needs no shared memory


def test_triton_kgroups_under_the_interpreter_and_for_hopper(runs):
    """tests/test_triton_kgroup.py: K-groups (mxfp8_quantize_grouped(axis=-2)) byte for byte under
    the interpreter, then (without it) kgroups_kernel compiled for sm_90; with it
    tests/test_torchao_triton_layouts.py: every grouped scale against torchao's own Triton
    rearrange kernels, run by the interpreter."""
    passed, tail, names = runs["kgroup"].result()
    assert passed >= 23, tail  # 22 cases on 2026-12-05, and the torchao kernels' test since 2026-12-07
    torchao = "tests/test_torchao_triton_layouts.py::test_grouped_scales_are_torchaos_triton_kernels_bytes"
    assert torchao in names, tail  # that one ran and passed (not only a count that other cases could reach)
    passed, tail, _ = runs["kgroup compile"].result()
    assert passed == 2, tail


def test_triton_mxfp8_dequantize_under_the_interpreter_and_for_hopper(runs):
    """tests/test_triton_dequant.py: MXFP8 dequantize bit for bit (NaN included) under the
    interpreter, then (without it) mxfp8_dequantize_kernel compiled for sm_90."""
    passed, tail, _ = runs["dequant"].result()
    assert passed >= 14, tail  # 14 cases on 2026-12-05 (22 s on a shared 2-core box)
    passed, tail, _ = runs["dequant compile"].result()
    assert passed == 3, tail
