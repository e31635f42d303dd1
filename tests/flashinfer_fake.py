"""The injected fake of tests/test_flashinfer_contract.py (a contract test): a stand-in for
flashinfer 0.7.2's `mxfp8_quantize` that runs on any device, FlashInfer's 128x4 scale offsets
computed from its own formula, and a PyTorch model of its kernel's per-block arithmetic."""

from __future__ import annotations

import types

import torch

from mxquant import reference
from mxquant.layouts import round_up

E4M3, BF16, F16 = torch.float8_e4m3fn, torch.bfloat16, torch.float16


def flashinfer_128x4(linear: torch.Tensor, padded_k: int) -> torch.Tensor:
    """FlashInfer's swizzled scale bytes (1-D) from (m, padded_k // 32) row-major bytes:
    off = (r//128)*nKT*512 + (c//4)*512 + (r%32)*16 + ((r%128)//32)*4 + c%4, padding 0."""
    m, cols = linear.shape
    n_kt = round_up(padded_k // 32, 4) // 4
    out = torch.zeros(round_up(m, 128) * n_kt * 4, dtype=torch.uint8)
    r = torch.arange(m).unsqueeze(1)
    c = torch.arange(cols).unsqueeze(0)
    off = (r // 128) * n_kt * 512 + (c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
    out[off.reshape(-1)] = linear.reshape(-1)
    return out


class FakeFlashInfer(types.ModuleType):
    """Stands in for flashinfer 0.7.2's mxfp8_quantize (cuda backend), on any device."""

    __version__ = "0.7.2.post1-fake"

    def __init__(self):
        super().__init__("flashinfer")
        self.calls: list[dict] = []

    def mxfp8_quantize(self, input, is_sf_swizzled_layout=True, alignment=32, enable_pdl=None, backend="cuda",
                       sf_swizzle_layout=None):
        self.calls.append(dict(shape=tuple(input.shape), dtype=input.dtype, contiguous=input.is_contiguous(),
                               is_sf_swizzled_layout=is_sf_swizzled_layout, alignment=alignment, backend=backend,
                               enable_pdl=enable_pdl, sf_swizzle_layout=sf_swizzle_layout))
        assert input.dtype in (BF16, F16), "mxfp8_quantize only supports input tensor with dtypes fp16/bf16."
        assert input.is_contiguous(), "input must be contiguous"
        assert input.dim() >= 2, "Input should be >=2D tensor."
        k = input.shape[-1]
        assert k % 32 == 0 and alignment % 32 == 0
        m = input.numel() // k
        padded_k = (k + alignment - 1) // alignment * alignment
        x = torch.zeros((m, padded_k), dtype=input.dtype)
        x[:, :k] = input.reshape(m, k)
        data, scale = reference.quantize(x, E4M3, "rceil", "linear")
        data = data.view(*input.shape[:-1], padded_k)
        if is_sf_swizzled_layout:
            return data, flashinfer_128x4(scale.view(torch.uint8), padded_k)
        return data, scale.view(torch.uint8).reshape(-1)


def kernel_model(x: torch.Tensor, rcp448: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashInfer 0.7.2's cvt_warp_fp16_to_mxfp8 per block, in PyTorch (see backends/flashinfer.py):
    NaN-blind __hmax2 amax joined by (a > b) ? a : b, P = amax * rcp448 with FTZ, ue8m0 rounding up
    (NaN -> 0xFF, Inf -> 0xFE), factor = 1/scale (0 for scale 0x00 and, flushed, for 2**127),
    FTZ inputs, fminf/fmaxf clamp to +-448 (NaN -> +448), e4m3 RNE. Returns (m, k) data and
    (m, k // 32) scale bytes."""
    m, k = x.shape
    b = x.reshape(-1, 32).float()
    b = torch.where(b.abs() < 2.0**-126, b * 0, b)  # FTZ (keeps the sign of zero)

    def nan_blind_max(v):
        a = torch.where(v.isnan(), -1.0, v.abs()).amax(dim=-1)
        return torch.where(a < 0, float("nan"), a)

    even, odd = nan_blind_max(b[:, 0::2]), nan_blind_max(b[:, 1::2])
    amax = torch.where(even > odd, even, odd)  # NaN compares false: odd wins
    p = amax * torch.tensor(rcp448, dtype=torch.float32)
    p = torch.where(p < 2.0**-126, 0.0, p)
    bits = p.view(torch.int32)
    s = (bits >> 23) - 127 + ((bits & 0x7FFFFF) != 0).int()
    byte = torch.where(p == 0, 0, (s + 127).clamp(0, 254))
    byte = torch.where(p.isinf(), 254, byte)
    byte = torch.where(p.isnan(), 255, byte)
    factor = torch.exp2(127 - byte.float())
    factor = torch.where((byte == 0) | (factor < 2.0**-126), 0.0, factor)
    factor = torch.where(byte == 255, float("nan"), factor)
    y = b * factor.unsqueeze(-1)
    y = torch.where(y.isnan(), 448.0, y.clamp(-448.0, 448.0))
    return y.to(E4M3).reshape(m, k), byte.to(torch.uint8).reshape(m, k // 32)


RN_RCP448 = torch.tensor(1 / 448, dtype=torch.float32).item()
ULP_UP_RCP448 = (torch.tensor(1 / 448, dtype=torch.float32).view(torch.int32) + 1).view(torch.float32).item()
