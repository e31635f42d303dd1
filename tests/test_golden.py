"""Golden tables: the expected bytes of the named special blocks (mxquant/cases.py), derived
by hand from the contract (docs/semantics.md). Nothing below computes an expected value with
the reference or with a torch cast; each case carries the arithmetic in its comment.

Notation. M = largest finite element (e4m3: 448 = 1.75*2**8, e5m2: 57344 = 1.75*2**15).
floor: s = floor(log2 amax) - emax.  rceil: smallest s with 2**s >= amax / M, i.e. floor + 1
when amax's mantissa is above 1.75's.  Scale byte = 127 + s, s clamped to [-127, 127].
Element byte = RNE(clamp(x * 2**-s, +-M)).
  e4m3 byte = sign<<7 | (e + 7)<<3 | m (3 mantissa bits); subnormals k*2**-9 are byte k.
  e5m2 byte = sign<<7 | (e + 15)<<2 | m (2 mantissa bits); subnormals k*2**-16 are byte k.
  So 1.0 is 0x38 (e4m3) / 0x3C (e5m2); 0.5 is 0x30 / 0x38; 2.0 is 0x40 in both.

Reuse on another device: `check_golden(quantize_fn, device)` with quantize_fn(x, dtype,
scale_mode, scale_layout) -> (data, scale), e.g. a backend's `quantize`; the tests at the
bottom run it for the CPU reference and (marked cuda) for the Triton backend on cuda:0.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import mxquant
from mxquant.conformance import cases
from mxquant.layouts import unswizzle

from golden_tables import ALL, BF16, E4, E5, ELEMS, F16, F32, GOLDEN, LAYOUTS, MODES, NARROW  # tests/ is on sys.path

def _expand(data) -> list[int]:
    if isinstance(data, list):
        return data
    return [data.get(i, data["*"]) for i in range(32)]


def golden_mismatches(quantize_fn, device, elem, mode, input_dtype, layout) -> list[str]:
    """Run every golden case for one signature through quantize_fn on `device`; describe each
    wrong byte. quantize_fn(x, dtype, scale_mode, scale_layout) -> (data, scale)."""
    blocks = cases.special_blocks(elem)
    names, want = [], []
    for name, rows in GOLDEN[elem].items():
        for inputs, modes in rows:
            if input_dtype in inputs:
                names.append(name)
                want.append(modes[mode])
    x = torch.stack([blocks[n] for n in names]).to(input_dtype).to(device)  # (n, 32): one block per row
    data, scale = quantize_fn(x, elem, mode, layout)
    assert data.dtype == elem and scale.dtype == torch.float8_e8m0fnu, (data.dtype, scale.dtype)
    got_d = data.cpu().view(torch.uint8)
    got_s = scale.cpu().view(torch.uint8)
    if layout == "swizzled":
        # round_up(n, 128) x round_up(1, 4): 2-D from a backend's quantize, flat from mxfp8_quantize
        assert tuple(got_s.shape) in ((128, 4), (512,)), got_s.shape
        got_s = unswizzle(got_s.reshape(-1), len(names), 1)
    got_s = got_s.reshape(-1)
    bad = []
    for i, (name, (s_byte, d_spec)) in enumerate(zip(names, want)):
        d_bytes = _expand(d_spec)
        if got_s[i].item() != s_byte:
            bad.append(f"{name}: scale byte {got_s[i].item():#04x}, expected {s_byte:#04x}")
        for j in range(32):
            if got_d[i, j].item() != d_bytes[j]:
                bad.append(f"{name}[{j}] (x={x[i, j].item()!r}): element byte {got_d[i, j].item():#04x}, expected {d_bytes[j]:#04x}")
    tag = f"{elem}, {mode}, {input_dtype} input, {layout}"
    return [f"{tag}: {b}" for b in bad]


GOLDEN_PARAMS = list(itertools.product(ELEMS, MODES, ALL, LAYOUTS))


def _id(p) -> str:
    return "-".join(str(v).replace("torch.", "") for v in p)


def check_golden(quantize_fn, device="cpu", params=GOLDEN_PARAMS) -> None:
    """Assert that quantize_fn gives every golden byte, for every (element dtype, scale mode,
    input dtype, layout) in `params`. For GPU test modules: `check_golden(backend.quantize, "cuda:0")`."""
    bad = [m for p in params for m in golden_mismatches(quantize_fn, device, *p)]
    assert not bad, f"{len(bad)} golden bytes differ:\n" + "\n".join(bad[:40])


def _public(backend):
    def fn(x, dtype, mode, layout):
        return mxquant.mxfp8_quantize(x, dtype, scale_mode=mode, scale_layout=layout, backend=backend)
    return fn


@pytest.mark.parametrize("params", GOLDEN_PARAMS, ids=_id)
def test_golden_reference(params):
    bad = golden_mismatches(_public("cpu"), "cpu", *params)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("elem", ELEMS, ids=str)
def test_golden_covers_every_special_block(elem):
    assert set(GOLDEN[elem]) == set(cases.special_blocks(elem))
    # and every case has an expectation for each input dtype, exactly once
    for name, rows in GOLDEN[elem].items():
        covered = [d for inputs, _ in rows for d in inputs]
        assert sorted(map(str, covered)) == sorted(map(str, ALL)), name


@pytest.mark.parametrize("elem", ELEMS, ids=str)
def test_golden_inputs_are_what_the_comments_say(elem):
    # The cases that the tables treat as unchanged by bf16/fp16 conversion (same rows as fp32)
    # are exactly those cases.representable_in reports, except where the comments explain that
    # the rounded value gives the same bytes.
    blocks = cases.special_blocks(elem)
    same_bytes_anyway = {"rceil_just_below", "worked_example", "signed_underflow", "fp32_subnormals"}
    for narrow in NARROW:
        shared = {n for n, rows in GOLDEN[elem].items() for inputs, _ in rows if F32 in inputs and narrow in inputs}
        assert shared - same_bytes_anyway == cases.representable_in(blocks, narrow) - same_bytes_anyway, narrow


# ---- the 128x4 swizzled layout, by hand ---------------------------------------------------


def test_swizzle_layout_by_hand():
    # 130 rows x 5 blocks: block (r, c) holds 2**(b - 119) with b = 1 + (7r + 3c) % 240, so its
    # floor e4m3 scale byte is b (s = (b - 119) - 8 = b - 127). Expected swizzled bytes, by the
    # contract's formula: 256 * 8 bytes, (round_up(130, 128), round_up(5, 4)), flat; tile (r//128,
    # c//4) starts at ((r//128) * 2 + c//4) * 512; inside it (r%32)*16 + ((r//32)%4)*4 + c%4;
    # every other byte (padding) is 0.
    rows, cols = 130, 5
    byte = [[1 + (7 * r + 3 * c) % 240 for c in range(cols)] for r in range(rows)]
    x = torch.tensor([[2.0 ** (byte[r][c] - 119)] * 32 for r in range(rows) for c in range(cols)])
    x = x.reshape(rows, cols * 32)
    _, scale = mxquant.mxfp8_quantize(x, E4, scale_mode="floor", scale_layout="swizzled", backend="cpu")
    assert scale.shape == (256 * 8,) and scale.dtype == torch.float8_e8m0fnu and scale.is_contiguous()
    want = [0] * (256 * 8)
    for r in range(rows):
        for c in range(cols):
            tile = (r // 128) * 2 + c // 4
            want[tile * 512 + (r % 32) * 16 + ((r // 32) % 4) * 4 + c % 4] = byte[r][c]
    assert scale.view(torch.uint8).reshape(-1).tolist() == want


# ---- dequantize, by hand -------------------------------------------------------------------

NAN = float("nan")
# A NaN's bits per out dtype, whatever the signs (element -NaN, scale 0xFF): docs/semantics.md, "Dequantize"
NAN_OUT = {F32: 0x7FC00000, BF16: 0xFFFF, F16: 0x7E00}
# (element dtype, element byte, scale byte, {out dtype: expected value}); value = element * 2**(scale - 127)
DEQUANT_GOLDEN = [
    (E4, 0x7E, 0x7F, {F32: 448.0, BF16: 448.0, F16: 448.0}),           # 448 * 2**0
    (E4, 0x7E, 0x80, {F32: 896.0, BF16: 896.0, F16: 896.0}),           # 448 * 2**1
    (E4, 0xBD, 0x81, {F32: -6.5, BF16: -6.5, F16: -6.5}),              # -1.625 * 2**2
    (E4, 0x80, 0x7F, {F32: -0.0, BF16: -0.0, F16: -0.0}),              # -0 keeps its sign
    # 2**-9 * 2**-127 = 2**-136: an fp32 subnormal; below half of bf16's 2**-133 and of fp16's 2**-24 -> 0
    (E4, 0x01, 0x00, {F32: 2.0**-136, BF16: 0.0, F16: 0.0}),
    # 1.875 * 2**-127 = 120 * 2**-133: exact in fp32 and in bf16 (a subnormal); fp16 -> 0
    (E4, 0x3F, 0x00, {F32: 1.875 * 2.0**-127, BF16: 1.875 * 2.0**-127, F16: 0.0}),
    # 1.875 * 2**-23 = 3.75 * 2**-24: exact in fp32/bf16; fp16 rounds once, to 4 * 2**-24 = 2**-22
    (E4, 0x3F, 0x68, {F32: 1.875 * 2.0**-23, BF16: 1.875 * 2.0**-23, F16: 2.0**-22}),
    # 448 * 2**9 = 229376 = 1.75 * 2**17: exact in fp32 and bf16, above fp16's 65504 -> Inf
    (E4, 0x7E, 0x88, {F32: 229376.0, BF16: 229376.0, F16: float("inf")}),
    (E4, 0x7F, 0x7F, {F32: NAN, BF16: NAN, F16: NAN}),                 # a NaN element
    (E4, 0x00, 0xFF, {F32: NAN, BF16: NAN, F16: NAN}),                 # scale 0xFF: NaN, even for 0
    (E4, 0xFF, 0x7F, {F32: NAN, BF16: NAN, F16: NAN}),                 # -NaN element: the one NaN
    (E4, 0xFF, 0xFF, {F32: NAN, BF16: NAN, F16: NAN}),                 # -NaN element, NaN scale
    (E5, 0x7B, 0x7F, {F32: 57344.0, BF16: 57344.0, F16: 57344.0}),     # 1.75 * 2**15
    (E5, 0x01, 0x00, {F32: 2.0**-143, BF16: 0.0, F16: 0.0}),           # 2**-16 * 2**-127
    # 57344 * 2**127 = 1.75 * 2**142 is beyond every output format: Inf
    (E5, 0x7B, 0xFE, {F32: float("inf"), BF16: float("inf"), F16: float("inf")}),
    (E5, 0xFC, 0x7F, {F32: -float("inf"), BF16: -float("inf"), F16: -float("inf")}),  # -Inf element
    (E5, 0x7D, 0x80, {F32: NAN, BF16: NAN, F16: NAN}),
    (E5, 0xFE, 0x7F, {F32: NAN, BF16: NAN, F16: NAN}),                 # -NaN (another payload)
    (E5, 0xFF, 0xFF, {F32: NAN, BF16: NAN, F16: NAN}),
    (E5, 0x3D, 0x6C, {F32: 1.25 * 2.0**-19, BF16: 1.25 * 2.0**-19, F16: 1.25 * 2.0**-19}),  # 5 * 2**-21, exact in fp16
]


def dequant_golden_mismatches(dequantize_fn, device) -> list[str]:
    """dequantize_fn(data, scale, scale_layout, out_dtype) -> tensor, run on `device`."""
    bad = []
    for elem, d_byte, s_byte, outs in DEQUANT_GOLDEN:
        data = torch.tensor([d_byte] + [0] * 31, dtype=torch.uint8).view(elem).reshape(1, 32).to(device)
        scale = torch.tensor([[s_byte]], dtype=torch.uint8).view(torch.float8_e8m0fnu).to(device)
        for out_dtype, want in outs.items():
            got = dequantize_fn(data, scale, "linear", out_dtype).cpu()
            assert got.dtype == out_dtype and got.shape == (1, 32)
            g = got[0, 0].item()
            bits = got.view({F32: torch.int32}.get(out_dtype, torch.int16)).reshape(-1).tolist()
            bits = [b & (0xFFFFFFFF if out_dtype == F32 else 0xFFFF) for b in bits]
            is_nan = [b == NAN_OUT[out_dtype] for b in bits]
            ok = is_nan[0] if want != want else (g == want and math.copysign(1, g) == math.copysign(1, want))
            rest_ok = all(is_nan[1:]) if s_byte == 0xFF else bool((got[0, 1:] == 0).all())
            if not (ok and rest_ok):
                bad.append(f"{elem} byte {d_byte:#04x} scale {s_byte:#04x} -> {out_dtype}: got {g!r} "
                           f"(bits {bits[0]:#x}, rest {sorted(set(bits[1:]))}), expected {want!r}")
    return bad


@pytest.mark.parametrize("backend", ["cpu", "cpu-native", "cpu-eager"])
def test_dequantize_golden_reference(backend):
    """The reference and the CPU backends (cpu-native on the CPU's best variant; every variant
    against the reference in tests/test_cpu_backends.py)."""
    def fn(data, scale, layout, out_dtype):
        return mxquant.mxfp8_dequantize(data, scale, scale_layout=layout, out_dtype=out_dtype, backend=backend)
    bad = dequant_golden_mismatches(fn, "cpu")
    assert not bad, "\n".join(bad)


# ---- the same tables on a GPU backend -------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("params", GOLDEN_PARAMS, ids=_id)
def test_golden_triton_cuda(params):
    bad = golden_mismatches(_public("triton"), "cuda:0", *params)
    assert not bad, "\n".join(bad)


@pytest.mark.cuda
def test_dequantize_golden_triton_cuda():
    def fn(data, scale, layout, out_dtype):
        return mxquant.mxfp8_dequantize(data, scale, scale_layout=layout, out_dtype=out_dtype, backend="triton")
    bad = dequant_golden_mismatches(fn, "cuda:0")
    assert not bad, "\n".join(bad)
