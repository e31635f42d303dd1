"""`cpu-native` and `cpu-eager` against the reference (mxquant/reference.py), byte for byte.

Every scale mode, element dtype, input dtype and layout on the adversarial batch and the
special blocks; random data over the whole fp32 range; fuzzed shapes and strides (rank 1,
3-D, rows not a multiple of 128, empty, transposed, row- and column-sliced, expanded,
permuted); dequantize to every output dtype from both layouts, including NaN scales. The
reference is the oracle: an independent, line-by-line implementation of docs/semantics.md.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import mxquant
from mxquant import reference
from mxquant.conformance import cases
from mxquant.formats import ELEMENT_FORMATS, INPUT_DTYPES, OUTPUT_DTYPES, SCALE_LAYOUTS, SCALE_MODES
from mxquant.registry import get_registry

from cpu_auto import AUTO_CPU, loaded_backend
from mx_oracle import assert_same_values
from native_isa import NATIVE_VARIANTS, native_isa
from subproc import child_env, forked_child_result

ELEMS = list(ELEMENT_FORMATS)
BACKENDS = ["cpu-native", "cpu-eager"]


_backend = loaded_backend


@pytest.fixture(params=[*NATIVE_VARIANTS, "cpu-eager"])
def backend(request):
    """cpu-native once per instruction-set variant of its kernel (the CPU's best, AVX2, baseline;
    a variant this CPU cannot run skips), and cpu-eager."""
    name, _, isa = request.param.partition("@")
    with native_isa(isa or None):
        yield _backend(name)


def u8(t):
    return t.view(torch.uint8)


def assert_quantize_exact(be, x, dtype, mode, layout, what=""):
    data, scale = be.quantize(x, dtype, mode, layout)
    want_d, want_s = reference.quantize(x, dtype, mode, layout)
    label = f"{be.name} {what} {tuple(x.shape)} {x.dtype} -> {dtype} {mode} {layout}"
    assert data.dtype == dtype and scale.dtype == torch.float8_e8m0fnu, label
    assert data.shape == want_d.shape and scale.shape == want_s.shape, label
    assert data.is_contiguous() and scale.is_contiguous(), label
    bad_d = (u8(data) != u8(want_d)).nonzero()
    bad_s = (u8(scale) != u8(want_s)).nonzero()
    assert bad_d.numel() == 0 and bad_s.numel() == 0, (
        f"{label}: {bad_d.shape[0]} element bytes differ (first at {bad_d[:1].tolist()}), "
        f"{bad_s.shape[0]} scale bytes differ (first at {bad_s[:1].tolist()})")


def assert_dequantize_exact(be, data, scale, layout, out_dtype, what=""):
    """The reference's bits exactly, NaN included (one NaN per out_dtype, docs/semantics.md)."""
    got = be.dequantize(data, scale, layout, out_dtype)
    want = reference.dequantize(data, scale, layout, out_dtype)
    label = f"{be.name} dequantize {what} {tuple(data.shape)} {data.dtype} -> {out_dtype} {layout}"
    assert_same_values(got, want, label)


def special_batch(hp):
    rows = [b for dt in ELEMS for b in cases.special_blocks(dt).values()]
    rows += rows[:2] if len(rows) % 2 else []  # two blocks per row
    return torch.stack(rows).reshape(-1, 64).to(hp)


def random_wide(shape, hp, seed):
    """Blocks of random magnitude across the input dtype's range, a few NaN/Inf planted."""
    g = torch.Generator().manual_seed(seed)
    fin = torch.finfo(hp)
    n = torch.Size(shape).numel()
    if n == 0:
        return torch.empty(shape, dtype=hp)
    lo, hi = fin.smallest_normal * fin.eps, fin.max
    e = torch.empty(n // 32 + 1).uniform_(torch.tensor(lo).log2().item(), torch.tensor(hi).log2().item() - 1,
                                          generator=g)
    x = torch.randn(n // 32 + 1, 32, generator=g, dtype=torch.float64) * torch.exp2(e.double()).unsqueeze(-1)
    x = x.reshape(-1)[:n].clamp(-fin.max, fin.max).to(hp)
    if n > 100:
        x[torch.randint(n, (3,), generator=g)] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=hp)
    return x.reshape(shape)


@pytest.mark.parametrize("hp", INPUT_DTYPES, ids=str)
def test_adversarial_and_special_blocks_every_mode_and_layout(backend, hp):
    inputs = {"adversarial": cases.adversarial_batch(hp, seed=3), "special": special_batch(hp)}
    for (name, x), dtype, mode, layout in itertools.product(inputs.items(), ELEMS, SCALE_MODES, SCALE_LAYOUTS):
        assert_quantize_exact(backend, x, dtype, mode, layout, name)


def strided_inputs(hp):
    """Inputs whose memory layout is not a plain contiguous (rows, K)."""
    r = lambda *s, seed=0: random_wide(s, hp, seed)  # noqa: E731
    return {
        "rank1": r(96, seed=1),
        "rank3": r(3, 5, 64, seed=2),
        "rows_not_128": r(131, 96, seed=3),
        "empty_rows": r(0, 64),
        "empty_k": r(4, 0),
        "empty_rank1": r(0),
        "transposed": r(64, 40, seed=4).t(),
        "row_sliced": r(300, 96, seed=5)[::3],
        "col_sliced": r(50, 160, seed=6)[:, 32:128],
        "expanded_rows": r(1, 64, seed=7).expand(6, 64),
        "rank3_unmergeable": r(4, 6, 64, seed=8)[:, :5, :],
        "permuted": r(5, 4, 64, seed=9).permute(1, 0, 2),
        "storage_offset": r(10, 64, seed=10)[3:],
    }


@pytest.mark.parametrize("hp", INPUT_DTYPES, ids=str)
def test_shapes_and_strides(backend, hp):
    for (name, x), dtype in itertools.product(strided_inputs(hp).items(), ELEMS):
        for mode, layout in (("rceil", "linear"), ("floor", "swizzled"), ("compressed-tensors", "swizzled")):
            assert_quantize_exact(backend, x, dtype, mode, layout, name)


def test_fuzzed_shapes_and_strides(backend):
    """Seeded random ranks (1-4), sizes (0-9 per leading dim, K = 0..160), input and element
    dtypes, modes, layouts, and a random view: as is, a row slice with a step, a narrowed last
    dimension, or leading dimensions permuted."""
    g = torch.Generator().manual_seed(20261130)
    pick = lambda seq: seq[int(torch.randint(len(seq), (1,), generator=g))]  # noqa: E731
    for case in range(40):
        lead = [int(torch.randint(0, 10, (1,), generator=g)) for _ in range(int(torch.randint(0, 4, (1,), generator=g)))]
        k = 32 * int(torch.randint(0, 6, (1,), generator=g))
        hp = pick(INPUT_DTYPES)
        view = pick(["plain", "step", "narrow", "permute"])
        base_shape = list(lead) + [k + (64 if view == "narrow" else 0)]
        if view == "step" and lead:
            base_shape[0] *= 2
        x = random_wide(tuple(base_shape), hp, seed=case)
        if view == "step" and lead:
            x = x[::2]
        elif view == "narrow":
            x = x[..., 32: 32 + k]
        elif view == "permute" and len(lead) >= 2:
            x = x.transpose(0, 1)
        assert_quantize_exact(backend, x, pick(ELEMS), pick(SCALE_MODES), pick(SCALE_LAYOUTS), f"fuzz{case}:{view}")


def test_large_random_threads_and_chunks(backend):
    """Big enough for several threads (native) and several chunks (eager)."""
    x = random_wide((700, 1024), torch.bfloat16, seed=11)
    for dtype, mode, layout in ((torch.float8_e4m3fn, "rceil", "linear"), (torch.float8_e5m2, "floor", "swizzled")):
        assert_quantize_exact(backend, x, dtype, mode, layout, "large")


def test_eager_many_small_chunks(monkeypatch):
    """Chunk boundaries (and whole 128-row tiles for swizzled) on small inputs."""
    from mxquant.backends import cpu_eager

    monkeypatch.setattr(cpu_eager, "CHUNK_ELEMS", 2048)
    be = _backend("cpu-eager")
    for shape in ((131, 64), (300, 96), (2, 3, 64)):
        x = random_wide(shape, torch.float32, seed=sum(shape))
        for mode, layout in itertools.product(SCALE_MODES, SCALE_LAYOUTS):
            assert_quantize_exact(be, x, torch.float8_e4m3fn, mode, layout, "chunked")
    # NaN/Inf blocks in some chunks and not others (they are written by a second pass, run only
    # when the scales say one may be there), NaN payloads whose bits overflow amax + bump if
    # added before the emax offset, and finite blocks near fp32's maximum, whose rceil scale
    # byte equals a NaN block's (the second pass must leave them alone)
    x = random_wide((300, 96), torch.float32, seed=3)
    x[7, 40], x[7, 70], x[150, 0], x[299, 95] = float("nan"), float("inf"), float("-inf"), float("nan")
    x.view(torch.int32)[200, 5] = 0x7FFFFFFF
    x.view(torch.int32)[201, 64] = -0x1FFFFF  # 0xFFE00001: a negative NaN, mantissa all but full
    x[100, 33], x[260, 2] = 3.3e38, -3.39e38
    for hp, mode, layout in itertools.product(INPUT_DTYPES, SCALE_MODES, SCALE_LAYOUTS):
        assert_quantize_exact(be, x.to(hp), torch.float8_e5m2 if hp == torch.float16 else torch.float8_e4m3fn,
                              mode, layout, "chunked special")
    huge = random_wide((64, 96), torch.float32, seed=4)
    huge[~torch.isfinite(huge)] = 1.0  # random_wide plants NaN and Inf: none here
    huge[10, 0] = 3.3e38  # the second pass runs (rceil, compressed-tensors) and changes nothing
    for mode in SCALE_MODES:
        assert_quantize_exact(be, huge, torch.float8_e4m3fn, mode, "linear", "huge, no special")
    data, scale = reference.quantize(random_wide((300, 96), torch.float32, 1), torch.float8_e5m2, "rceil", "swizzled")
    assert_dequantize_exact(be, data, scale, "swizzled", torch.bfloat16, "chunked")


@pytest.mark.parametrize("chunk, rows, k", [(8192, 300, 128), (8192, 320, 256), (32768, 300, 128),
                                           (32768, 640, 128), (32768, 288, 128), (32768, 200, 96)])
def test_eager_swizzled_chunks(monkeypatch, chunk, rows, k):
    """Swizzled scales written and read by one strided copy per chunk (whole 128-row tiles, or
    64- or 32-row groups of one tile, also as the last chunk after whole tiles: 288 rows) and
    by offsets where not (a last chunk of part of a group; padding columns when K // 32 is not
    a multiple of 4)."""
    from mxquant.backends import cpu_eager

    monkeypatch.setattr(cpu_eager, "CHUNK_ELEMS", chunk)
    be = _backend("cpu-eager")
    x = random_wide((rows, k), torch.float32, seed=rows + k)
    x[rows - 1, 0], x[33, k - 1] = float("nan"), float("-inf")
    for mode in SCALE_MODES:
        assert_quantize_exact(be, x, torch.float8_e4m3fn, mode, "swizzled", f"swizzled chunks of {chunk}")
    data, scale = reference.quantize(x, torch.float8_e5m2, "rceil", "swizzled")
    assert_dequantize_exact(be, data, scale, "swizzled", torch.float32, f"swizzled chunks of {chunk}")


@pytest.mark.parametrize("dtype", ELEMS, ids=str)
def test_dequantize(backend, dtype):
    x = torch.cat([cases.adversarial_batch(torch.float32, seed=5), random_wide((140, 128), torch.float32, seed=6)])
    for layout in SCALE_LAYOUTS:
        data, scale = reference.quantize(x, dtype, "rceil", layout)
        data_all = (torch.arange(x.numel()) % 251).to(torch.uint8).reshape(x.shape)  # 251: prime, so each
        data_all[:, 0] = 0xFF  # block sees many bytes; every byte, NaN and Inf patterns included
        data_all[:, 1] = 0x7F
        data_all[0, :] = torch.arange(256, dtype=torch.uint8)[: x.shape[1]]
        data_all[1, :] = torch.arange(256, dtype=torch.uint8)[x.shape[1]:]
        data_all = data_all.view(dtype)
        for out_dtype in OUTPUT_DTYPES:
            assert_dequantize_exact(backend, data, scale, layout, out_dtype, "adversarial")
            assert_dequantize_exact(backend, data_all, scale, layout, out_dtype, "all bytes")


def test_dequantize_strided_and_empty(backend):
    dtype = torch.float8_e4m3fn
    base = random_wide((64, 40), torch.float32, seed=12)
    data_t, _ = reference.quantize(base.t().contiguous(), dtype, "rceil", "linear")
    data = data_t.t().contiguous().t()  # shape (40, 64), stride (1, 40)
    scale = torch.randint(100, 150, (2, 40), dtype=torch.uint8).t().view(torch.float8_e8m0fnu)  # strided scale
    scale.view(torch.uint8)[0, 0] = 0xFF  # a NaN scale
    assert_dequantize_exact(backend, data, scale, "linear", torch.bfloat16, "strided")
    _, sw = reference.quantize(base.t().contiguous(), dtype, "rceil", "swizzled")
    assert_dequantize_exact(backend, data, sw, "swizzled", torch.float16, "strided")
    empty = torch.empty(0, 64, dtype=dtype)
    assert_dequantize_exact(backend, empty, torch.empty(0, 2, dtype=torch.float8_e8m0fnu), "linear", torch.float32)
    rank1, s1 = reference.quantize(random_wide((64,), torch.float32, 13), dtype, "floor", "linear")
    assert_dequantize_exact(backend, rank1, s1, "linear", torch.float32, "rank1")


def test_public_api_routes_to_the_native_or_eager_path():
    """Automatic selection on CPU picks cpu-native where it is built, else cpu-eager; never
    the reference (`cpu`, kept as the oracle and still reachable by name)."""
    x = random_wide((4, 64), torch.float32, 14)
    from mxquant.backend import Call

    assert get_registry().resolved_name(Call("quantize", x.device, x.dtype, ELEMS[0], "rceil", "linear")) == AUTO_CPU
    data, scale = mxquant.mxfp8_quantize(x)
    want_d, want_s = mxquant.mxfp8_quantize(x, backend="cpu")
    assert torch.equal(u8(data), u8(want_d)) and torch.equal(u8(scale), u8(want_s))


@pytest.mark.parametrize("name", BACKENDS)
def test_into_rejects_bad_buffers_before_writing(name):
    be = _backend(name)
    module = __import__(f"mxquant.backends.{name.replace('-', '_')}", fromlist=["quantize_into"])
    x = random_wide((8, 64), torch.float32, 15)
    data = torch.full((8, 64), 7, dtype=torch.uint8)
    scale = torch.full((8, 3), 7, dtype=torch.uint8)  # wrong: needs 8 x 2
    with pytest.raises(ValueError, match="scale"):
        module.quantize_into(x, data, scale, torch.float8_e4m3fn, "rceil", "linear")
    assert bool((data == 7).all()) and bool((scale == 7).all())
    with pytest.raises(ValueError, match="data"):
        module.quantize_into(x, data.t(), scale[:, :2], torch.float8_e4m3fn, "rceil", "linear")
    # reused buffers (including stale swizzle padding) give the reference's bytes
    sw = torch.full((128, 4), 9, dtype=torch.uint8)
    module.quantize_into(x, data, sw, torch.float8_e4m3fn, "floor", "swizzled")
    want_d, want_s = reference.quantize(x, torch.float8_e4m3fn, "floor", "swizzled")
    assert torch.equal(data, u8(want_d)) and torch.equal(sw, u8(want_s)), be.name
    # dequantize_into: a scale too short for data was read past its end (cpu-native) before its check
    out = torch.full((8, 64), 5.0)
    with pytest.raises(ValueError, match="scale must be a CPU tensor of 16"):
        module.dequantize_into(want_d, want_s.reshape(-1)[:1].view(torch.float8_e8m0fnu), "linear", out)
    assert bool((out == 5).all())


def _quantize_in_child(x, want, queue):
    from mxquant.backends import cpu_eager

    threads = torch.get_num_threads()  # 2, inherited
    data, _ = cpu_eager.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
    restored = torch.get_num_threads() == threads
    torch.set_num_threads(1)  # torch.equal itself would hang on two threads here
    queue.put(restored and torch.equal(u8(data), u8(want)))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_eager_works_in_a_forked_child():
    """A forked child (DataLoader workers, say) of a parent whose cpu-eager ops ran on two
    intra-op threads gets the right bytes and does not hang, although its thread count is
    still 2 (any torch op on two threads would hang there: GNU OpenMP's pool does not survive
    fork), and finds its thread count unchanged afterwards."""
    from mxquant.backends import cpu_eager

    x = random_wide((128, 1024), torch.float32, seed=16)  # one chunk of 128K elements: ops above
    want, _ = reference.quantize(x, torch.float8_e4m3fn, "rceil", "linear")  # torch's grain size
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        parent, _ = cpu_eager.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(u8(parent), u8(want))
    assert forked_child_result(_quantize_in_child, (x, want), "cpu-eager") is True


FORK_BEFORE_IMPORT = """
import os, signal, sys, torch, mxquant
torch.set_num_threads(2)
(torch.randn(1024, 1024) * 2).sum()  # torch's OpenMP pool now has a worker
x = torch.randn(128, 1024)
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # a hang ends the child with SIGALRM
    from mxquant import reference
    from mxquant.backends import cpu_eager  # first imported here, after the fork
    d, _ = cpu_eager.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
    torch.set_num_threads(1)
    want, _ = reference.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
    os._exit(0 if torch.equal(d.view(torch.uint8), want.view(torch.uint8)) else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_eager_in_a_child_forked_before_the_backend_was_imported():
    """Backends load lazily, so the parent had imported mxquant but not cpu-eager when it
    forked; the child must still know it is one (mxquant/forking.py) and not hang."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORK_BEFORE_IMPORT], env=child_env(), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"child exit {done.returncode} (-14: hung, 3: wrong bytes): {done.stderr[-2000:]}"


def _huge_kib(addr):
    """AnonHugePages (kB) of the mapping of this process that holds `addr`."""
    lines = open("/proc/self/smaps").read().splitlines()
    inside = False
    for line in lines:
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


HUGE_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from mxquant import reference
from cpu_auto import loaded_backend
from test_cpu_backends import _huge_kib, random_wide, u8

be = loaded_backend("cpu-eager")
x = random_wide((1024, 8192), torch.bfloat16, seed=21)  # 8 MiB of e4m3 out
data, scale = be.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
want_d, want_s = reference.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
plain = torch.empty(data.shape, dtype=torch.uint8).fill_(1)  # the same size, not advised
print(json.dumps({"exact": torch.equal(u8(data), u8(want_d)) and torch.equal(u8(scale), u8(want_s)),
                  "advised": _huge_kib(data.data_ptr() + data.numel() // 2),
                  "plain": _huge_kib(plain.data_ptr() + plain.numel() // 2)}))
"""


def test_eager_fresh_outputs_ask_for_huge_pages():
    """cpu-eager's fresh outputs of 4 MiB or more get madvise(MADV_HUGEPAGE) (as cpu-native's
    do): with THP in "madvise" mode the output's mapping then holds huge pages, which it would
    not otherwise. Also byte-exact, since the hint must change nothing else. In a fresh
    interpreter: in a long-running one, glibc's dynamic mmap threshold may serve 8 MiB from
    memory already faulted in with small pages, where the hint (rightly) changes nothing."""
    import json
    import os
    import subprocess
    import sys

    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        pytest.skip("no /sys/kernel/mm/transparent_hugepage (not Linux, or THP not built)")
    if "[madvise]" not in mode:
        pytest.skip(f"THP mode is {mode.strip()!r}: the hint is observable only in 'madvise' mode")
    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("no /proc/self/smaps")
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", HUGE_CHILD, here], env=child_env(here), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["exact"] and got["advised"] > 0 and got["plain"] == 0, got
