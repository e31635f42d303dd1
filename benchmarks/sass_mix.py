"""The FP4 quantize kernel's sm_90 SASS, instruction mix per element, with no GPU: compiled by
Triton's own compiler and the wheel's ptxas at the H100's shipped tile (1 x 8192, 8 warps; bf16
NVFP4 under its register cap), disassembled by the wheel's nvdisasm. The kernel is straight-line
code, so its static count per thread over the 32 elements a thread holds is what each element
costs (the NVFP4 division's slow path aside). ALU-pipe and FMA-pipe instructions are counted
apart: the ALU pipe (16 lanes) bounded MXFP4 on an H100 (Nsight Compute, docs/performance.md,
twelfth session).

    python benchmarks/sass_mix.py [-v]      # in an environment with triton (.ci/triton-env.sh's)
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
ALU = {"FMNMX", "PRMT", "LOP3", "SEL", "LEA", "ISETP", "IADD3", "SHF", "SGXT", "FSETP", "VIADDMNMX", "IMNMX", "FSEL",
       "BMSK", "PLOP3", "FLO", "POPC", "BREV", "IABS"}
FMA = {"FFMA", "FMUL", "FADD", "IMAD", "HFMA2", "HMUL2", "HADD2"}


def _kernels():
    """backends/_triton_fp4.py of this checkout (mxquant.backends is mapped to backends/)."""
    sys.path.insert(0, REPO)
    import mxquant  # noqa: F401

    spec = importlib.util.spec_from_file_location("mxquant.backends", os.path.join(REPO, "backends", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(REPO, "backends")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mxquant.backends"] = mod
    spec.loader.exec_module(mod)
    from mxquant.backends import _triton_fp4

    return _triton_fp4


def compile_kernel(nv: bool, swizzled: bool, x_kind: int, maxnreg=None):
    fn = _kernels().fp4_quantize_kernel
    c = dict(NV=nv, GIVEN=True, RCEIL=True, TIE_UP=False, X_KIND=x_kind, SWIZZLED=swizzled, BLOCK_M=1, BLOCK_K=8192,
             MASK=False, EVICT="evict_last", BIG=False, INTERPRETED=False)
    ptrs = iter([{0: "*fp32", 1: "*bf16", 2: "*fp16"}[x_kind], "*u8", "*u8", "*fp32", "*fp32"])
    sig = {n: "constexpr" if n in c else (next(ptrs) if n.endswith("_ptr") else "i32") for n in fn.arg_names}
    div = {"M", "K", "stride_xm", "scale_rows", "scale_cols", "n_k"}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if sig[n] != "constexpr" and (n.endswith("_ptr") or n in div)}
    opts = {"num_warps": 8, **({"maxnreg": maxnreg} if maxnreg else {})}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=c, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                          options=opts)


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
