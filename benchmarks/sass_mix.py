"""The FP4 quantize kernel's sm_90 SASS, instruction mix per element, with no GPU: compiled as a
launch specializes it (tests/test_triton_compile.py's helper: Triton's own compiler and the
wheel's ptxas) at 1 x 8192, 8 warps (MXFP4 linear's and fp32 NVFP4's tile; on the H100 MXFP4
swizzled and 2-byte NVFP4 take 4096 / 4 warps since the fifteenth session, the same 32 elements a
thread), disassembled by the wheel's
nvdisasm. The kernels are straight-line code, so the static count per thread over the 32
elements a thread holds is what each element costs (the fp32 NVFP4 division's slow path aside;
2-byte NVFP4 compiled with one path of its PTX block at a time, the unflagged one or the
flagged groups' Markstein quotient, see compile_kernel). ALU-pipe and FMA-pipe instructions are
counted apart: the ALU pipe (16 lanes) bounded MXFP4 on an H100 (Nsight Compute,
docs/performance.md, twelfth session).

    python benchmarks/sass_mix.py [-v]      # in an environment with triton (.ci/triton-env.sh's)
"""

from __future__ import annotations

import collections
import contextlib
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


def compile_kernel(nv: bool, swizzled: bool, x_kind: int, maxnreg=None, path: str = "unflagged", table: bool = True):
    """The FP4 quantize kernel a launch of these inputs takes, compiled as the launch specializes
    it (tests/test_triton_compile.py's _aot_compile_as_launched) at 1 x 8192, 8 warps:
    backends/_triton_fp4.py's (MXFP4, fp32 NVFP4), or for 2-byte NVFP4 backends/_triton_nvfp4.py's
    with one path of its PTX block (one_path): the one unflagged groups run, or the flagged
    groups' one (Markstein's quotient, "markstein", clamped as Y_BOUND's groups take it with
    "markstein clamped"), whose static count is then what an element costs; table: 2-byte
    NVFP4's r, flags, D and R read per scale byte (TABLE, what calls of >= NV_TABLE_MIN elements
    with scales in NV_TABLE_LAYOUTS, both layouts since the eighteenth session, take), else
    computed per group (D and R per flagged block). The unflagged path's count leaves out the
    table's D / R load (one 8-byte load and its unpacking per group of 16, live only for the
    flagged branch)."""
    from mxquant.backends import _triton_fp4, _triton_nvfp4
    from test_triton_compile import _aot_compile_as_launched

    ptrs = [{0: "*fp32", 1: "*bf16", 2: "*fp16"}[x_kind], "*u8", "*u8", "*fp32", "*fp32"]
    divisible = {"M", "K", "stride_xm", "scale_rows", "scale_cols", "n_k"}
    c = dict(GIVEN=True, X_KIND=x_kind, SWIZZLED=swizzled, BLOCK_M=1, BLOCK_K=8192, MASK=False, EVICT="evict_last",
             BIG=False, INTERPRETED=False, NK_SHIFT=0, SPREAD=False)
    options = {"maxnreg": maxnreg} if maxnreg else None
    if nv and x_kind:
        with one_path(_triton_nvfp4, path, table):
            return _aot_compile_as_launched(_triton_nvfp4.nvfp4_quantize_kernel, [*ptrs, "*i64"],
                                            {**c, "PACK": 8, "TABLE": table, "PDL": False}, 8, divisible,
                                            options=options)
    c.update(NV=nv, RCEIL=True, TIE_UP=False)
    return _aot_compile_as_launched(_triton_fp4.fp4_quantize_kernel, ptrs, c, 8, divisible, options=options)


@contextlib.contextmanager
def one_path(module, path: str = "unflagged", table: bool = True):
    """module's 8-element PTX block without its branches: the unflagged path (what most groups
    run), or the flagged groups' path ("markstein": Markstein's quotient; per group its div.rn /
    rcp.rn counted with their slow paths, which do not run for normal operands; "markstein
    clamped": with Y_BOUND's clamp). Never launched."""
    name = "NV_QUOTIENT8T" if table else "NV_QUOTIENT8"
    keep = getattr(module, name)
    ptx = module._nv_quotient_ptx(8, table)
    head, tail = ptx[:ptx.index("@p bra FLAGGED;")], ptx[ptx.index("DONE:"):]
    if path == "unflagged":
        mid = ptx[ptx.index("@p bra FLAGGED;") + len("@p bra FLAGGED;"):ptx.index("\nbra DONE;\nFLAGGED:")]
    else:
        mid = ptx[ptx.index("@p bra SLOW;") + len("@p bra SLOW;"):ptx.index("\nbra DONE;\nSLOW:")]
        cut = mid.index("setp.eq.s32 p, f, 1;")
        mid = mid[:cut] + (mid[cut:].replace("setp.eq.s32 p, f, 1;\n@p bra DONE;", "") if path == "markstein clamped"
                           else "")
    setattr(module, name, triton.language.constexpr(head + mid + tail))
    _forget_hashes(module)
    try:
        yield
    finally:
        setattr(module, name, keep)
        _forget_hashes(module)


def _forget_hashes(module):
    """A JIT function hashes its constexpr globals once a process (and the compile cache keys on
    that hash): dropped, so the block swapped above is what compiles."""
    for fn in vars(module).values():
        if isinstance(fn, triton.runtime.JITFunction):
            fn.hash, fn.used_global_vals = None, {}


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
    cases = [("mxfp4 bf16 linear", False, False, 1), ("mxfp4 bf16 swizzled", False, True, 1),
             ("mxfp4 fp32 linear", False, False, 0), ("nvfp4 fp32 linear", True, False, 0)]
    cases += [(f"nvfp4 {dt} {layout} ({path} path, {'table' if table else 'per group'})", True, layout == "swizzled",
               kind, path, table)
              for dt, kind, layout, path, table in (("bf16", 1, "linear", "unflagged", True),
                                                    ("bf16", 1, "swizzled", "unflagged", True),
                                                    ("bf16", 1, "linear", "unflagged", False),
                                                    ("bf16", 1, "swizzled", "unflagged", False),
                                                    ("bf16", 1, "linear", "markstein", True),
                                                    ("fp16", 2, "linear", "markstein", True),
                                                    ("bf16", 1, "linear", "markstein clamped", True),
                                                    ("bf16", 1, "linear", "markstein", False),
                                                    ("bf16", 1, "swizzled", "markstein", False))]
    for name, nv, swz, kind, *nv_path in cases:
        path, table = nv_path or ("unflagged", True)
        ops = opcode_mix(compile_kernel(nv, swz, kind, path=path, table=table))
        total, alu = sum(ops.values()), sum(v for o, v in ops.items() if o in ALU)
        fma = sum(v for o, v in ops.items() if o in FMA)
        print(f"{name}: {total / per_thread:.2f} instructions an element, ALU {alu / per_thread:.2f}, "
              f"FMA {fma / per_thread:.2f}")
        if verbose:
            print("   ", ", ".join(f"{o} {v}" for o, v in ops.most_common(24)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
