"""Hand-derived golden bytes for scale_mode="compressed-tensors" (docs/semantics.md).

The rule: s = floor(log2 amax) - emax, plus one when amax's significand is >= 1.75. It agrees
with rceil everywhere but on the tie amax = max_finite * 2**k, where rceil keeps s = k (the
block's largest element lands exactly on max_finite) and this mode takes s = k + 1. Each
expectation below is worked out by hand in its comment, not computed by mxquant.
"""

import pytest
import torch

import mxquant

E4, E5 = torch.float8_e4m3fn, torch.float8_e5m2
MODE = "compressed-tensors"

# (name, element dtype, input dtypes, first value, fill value, expected scale byte,
#  expected first element byte, expected fill element byte)
CASES = [
    # 448 = 1.75*2**8 (the e4m3 tie). s = 8-8+1 = 1 (0x80); 448/2 = 224 = 1.75*2**7:
    # exponent field 7+7 = 14, mantissa 0b110 -> 0x76; 1/2 -> 0x30. (rceil: 0x7F, 0x7E, 0x38)
    ("e4m3_tie", E4, (torch.float32, torch.bfloat16, torch.float16), 448.0, 1.0, 0x80, 0x76, 0x30),
    # -448 * 2**-10 = -0.4375 (a tie at k = -10). s = -9 (0x76); -224 -> 0x80|0x76 = 0xF6;
    # 2**-10 * 2**9 = 0.5 -> 0x30.
    ("e4m3_tie_negative_small", E4, (torch.float32, torch.bfloat16, torch.float16), -0.4375, 2.0**-10,
     0x76, 0xF6, 0x30),
    # 446 (bf16 neighbour below 448; also exact in fp16 and fp32): significand 1.7421875 < 1.75,
    # s = 0 (0x7F) as in rceil; 446 -> nearest e4m3: 448 (0x7E; 416 and 448 straddle it); 1 -> 0x38.
    ("e4m3_below_tie", E4, (torch.float32, torch.bfloat16, torch.float16), 446.0, 1.0, 0x7F, 0x7E, 0x38),
    # 449 (> 448, exact in fp32/fp16; bf16 rounds it to 448 and is left out). s = 1 as in rceil
    # (0x80); 224.5 -> 224 = 0x76; 1/2 -> 0x30.
    ("e4m3_above_tie", E4, (torch.float32, torch.float16), 449.0, 1.0, 0x80, 0x76, 0x30),
    # 57344 = 1.75*2**15 (the e5m2 tie). s = 15-15+1 = 1 (0x80); 28672 = 1.75*2**14: exponent
    # field 14+15 = 29, mantissa 0b11 -> (29<<2)|3 = 0x77; 1/2 = 2**-1 -> (14<<2) = 0x38.
    ("e5m2_tie", E5, (torch.float32, torch.bfloat16), 57344.0, 1.0, 0x80, 0x77, 0x38),
    # 3.5 = 1.75*2**1 with e5m2: s = 1-15+1 = -13 (127-13 = 114 = 0x72); 3.5*2**13 = 28672 ->
    # 0x77; 1*2**13 -> exponent field 13+15 = 28 -> 0x70.
    ("e5m2_tie_small", E5, (torch.float32, torch.bfloat16, torch.float16), 3.5, 1.0, 0x72, 0x77, 0x70),
]


def _backends_here():
    out = [("cpu", "cpu")]
    if torch.cuda.is_available():
        out.append(("triton", "cuda"))
    return out


@pytest.mark.parametrize("backend,device", _backends_here())
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_compressed_tensors_golden(case, backend, device):
    name, elem, inputs, first, fill, want_scale, want_first, want_fill = case
    for hp in inputs:
        x = torch.full((2, 64), fill, dtype=torch.float32)
        x[:, 0] = first
        x[:, 32] = first
        x = x.to(hp).to(device)
        assert x[0, 0].item() == first, f"{first} not exact in {hp}"
        data, scale = mxquant.mxfp8_quantize(x, elem, scale_mode=MODE, backend=backend)
        d = data.view(torch.uint8).cpu()
        assert scale.view(torch.uint8).cpu().tolist() == [[want_scale] * 2] * 2, (name, hp)
        assert d[:, 0].tolist() == [want_first] * 2 and d[:, 32].tolist() == [want_first] * 2, (name, hp)
        rest = torch.cat([d[:, 1:32], d[:, 33:]], dim=1)
        assert (rest == want_fill).all(), (name, hp)


def test_backends_that_do_not_list_the_mode_do_not_get_it():
    """A Capabilities with no scale_modes keeps mxquant 0.1's two: the new mode is not claimed."""
    caps = mxquant.Capabilities(devices=frozenset({"cpu"}))
    assert caps.scale_modes == frozenset({"rceil", "floor"})
