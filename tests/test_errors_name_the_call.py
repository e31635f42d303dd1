"""Every argument error begins with the public call it belongs to (docs/semantics.md, "Errors of
the new calls"): the checks the MXFP8 calls share named `mxfp8_quantize` for the grouped, row+column,
32x32 and fake-quantize calls (review, twenty-eighth session), and some named no call at all."""

import pytest
import torch

import mxquant

I32 = torch.ones(64, 64, dtype=torch.int32)
ENDS = torch.tensor([64], dtype=torch.int32)
E8 = torch.ones(2, 2).to(torch.float8_e8m0fnu)

CASES = [
    ("mxfp8_quantize", lambda: mxquant.mxfp8_quantize(torch.ones(4, 33))),
    ("mxfp8_quantize", lambda: mxquant.mxfp8_quantize(torch.ones(4, 32), scale_layout="foo")),
    ("mxfp8_quantize", lambda: mxquant.mxfp8_quantize(torch.ones(4, 32), backend=3)),
    ("mxfp8_dequantize", lambda: mxquant.mxfp8_dequantize(torch.ones(4, 32), torch.ones(4, 1))),
    ("mxfp8_quantize_grouped", lambda: mxquant.mxfp8_quantize_grouped(I32, ENDS)),
    ("mxfp8_quantize_grouped(axis=-2)", lambda: mxquant.mxfp8_quantize_grouped(I32, ENDS, axis=-2)),
    ("mxfp8_quantize_rowcol", lambda: mxquant.mxfp8_quantize_rowcol(I32)),
    ("mxfp8_quantize_2d", lambda: mxquant.mxfp8_quantize_2d(torch.ones(64, 64), scale_mode="x")),
    ("mxfp8_fake_quantize", lambda: mxquant.mxfp8_fake_quantize(I32)),
    ("mxfp8_fake_quantize", lambda: mxquant.mxfp8_fake_quantize(I32.float().requires_grad_(), scale_mode="x")),
    ("nvfp4_quantize", lambda: mxquant.nvfp4_quantize(torch.ones(64, 64), scale_mode="rceil")),
    ("mxfp4_dequantize", lambda: mxquant.mxfp4_dequantize(torch.ones(4, 16, dtype=torch.uint8), E8,
                                                          scale_layout="foo")),
    ("tile_scales_to_rowwise", lambda: mxquant.tile_scales_to_rowwise(E8, layout="foo")),
]


@pytest.mark.parametrize("call, fn", CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_an_argument_error_begins_with_its_public_call(call, fn):
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    assert str(info.value).startswith(call + ": "), str(info.value)
