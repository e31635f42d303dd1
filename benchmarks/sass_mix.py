"""The FP4 quantize kernel's sm_90 SASS, instruction mix per element, with no GPU: compiled as a
launch specializes it (tests/test_triton_compile.py's helper: Triton's own compiler and the
wheel's ptxas) at the H100's shipped tile (1 x 8192, 8 warps; bf16 NVFP4 under its register
cap), disassembled by the wheel's nvdisasm. The kernel is straight-line code, so its static count
per thread over the 32 elements a thread holds is what each element costs (the NVFP4 division's
slow path aside). ALU-pipe and FMA-pipe instructions are counted apart: the ALU pipe (16 lanes)
bounded MXFP4 on an H100 (Nsight Compute, docs/performance.md, twelfth session).

    python benchmarks/sass_mix.py [-v]      # in an environment with triton (.ci/triton-env.sh's)
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile

import triton

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))  # test_triton_compile's compile helper
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
ALU = {"FMNMX", "PRMT", "LOP3", "SEL", "LEA", "ISETP", "IADD3", "SHF", "SGXT", "FSETP", "VIADDMNMX", "IMNMX", "FSEL",
       "BMSK", "PLOP3", "FLO", "POPC", "BREV", "IABS"}
FMA = {"FFMA", "FMUL", "FADD", "IMAD", "HFMA2", "HMUL2", "HADD2"}


def compile_kernel(nv: bool, swizzled: bool, x_kind: int, maxnreg=None):
    """fp4_quantize_kernel compiled as a launch specializes it (tests/test_triton_compile.py's
    _aot_compile_as_launched) at the shipped tile, 8 warps."""
    from mxquant.backends import _triton_fp4
    from test_triton_compile import _aot_compile_as_launched

    c = dict(NV=nv, GIVEN=True, RCEIL=True, TIE_UP=False, X_KIND=x_kind, SWIZZLED=swizzled, BLOCK_M=1, BLOCK_K=8192,
             MASK=False, EVICT="evict_last", BIG=False, INTERPRETED=False, NK_SHIFT=0)
    ptrs = [{0: "*fp32", 1: "*bf16", 2: "*fp16"}[x_kind], "*u8", "*u8", "*fp32", "*fp32"]
    divisible = {"M", "K", "stride_xm", "scale_rows", "scale_cols", "n_k"}
    return _aot_compile_as_launched(_triton_fp4.fp4_quantize_kernel, ptrs, c, 8, divisible,
                                    options={"maxnreg": maxnreg} if maxnreg else None)


def opcode_mix(kernel) -> collections.Counter:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as t:
        t.write(kernel.asm["cubin"])
        t.flush()
        sass = subprocess.run([os.path.join(BIN, "nvdisasm"), "-c", t.name], capture_output=True, text=True,
                              check=True).stdout
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m:
            ops[m.group(2)] += 1
    return ops


def main(argv=None) -> int:
    verbose = "-v" in (argv if argv is not None else sys.argv[1:])
    per_thread = 8192 // 256
    for name, nv, swz, kind in (("mxfp4 bf16 linear", False, False, 1), ("mxfp4 bf16 swizzled", False, True, 1),
                                ("mxfp4 fp32 linear", False, False, 0), ("nvfp4 bf16 linear", True, False, 1)):
        ops = opcode_mix(compile_kernel(nv, swz, kind, 64 if nv and kind == 1 else None))
        total, alu = sum(ops.values()), sum(v for o, v in ops.items() if o in ALU)
        fma = sum(v for o, v in ops.items() if o in FMA)
        print(f"{name}: {total / per_thread:.2f} instructions an element, ALU {alu / per_thread:.2f}, "
              f"FMA {fma / per_thread:.2f}")
        if verbose:
            print("   ", ", ".join(f"{o} {v}" for o, v in ops.most_common(24)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
