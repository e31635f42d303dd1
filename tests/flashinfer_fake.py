"""The injected fake of tests/test_flashinfer_contract.py and tests/test_flashinfer_fp4_contract.py
(contract tests): a stand-in for flashinfer 0.7.2's `mxfp8_quantize` and `fp4_quantize` that runs
on any device, FlashInfer's 128x4 scale offsets computed from its own formula, and PyTorch models
of its kernels' per-block arithmetic (cvt_warp_fp16_to_mxfp8, cvt_warp_fp16_to_fp4), written from
the kernel source and independent of mxquant's reference (see docs/backends.md)."""

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


_UNSET = object()


class FakeFlashInfer(types.ModuleType):
    """Stands in for flashinfer 0.7.2's mxfp8_quantize (cuda backend), on any device."""

    __version__ = "0.7.2.post1-fake"

    def __init__(self):
        super().__init__("flashinfer")
        self.calls: list[dict] = []
        self.rcp6 = RN_RCP6  # what the modelled rcp.approx.ftz.f32(6.0f) returns

    def fp4_quantize(self, input, global_scale=None, sf_vec_size=16, sf_use_ue8m0=False, is_sf_swizzled_layout=True,
                     is_sf_8x4_layout=False, is_global_scale_inversed=False, enable_pdl=None, backend="cuda",
                     nvfp4_4over6=_UNSET):
        """flashinfer 0.7.2's fp4_quantize (quantization/fp4_quantization.py) on its "cuda" path:
        a column-major input (stride(-2) == 1) is transposed first; out (M, K/2) uint8, scales 1-D
        from the kernel reshaped to (-1, round_up(K/vec, 4)) swizzled or (-1, K/vec) linear."""
        self.calls.append(dict(fn="fp4_quantize", shape=tuple(input.shape), dtype=input.dtype,
                               contiguous=input.is_contiguous(), column_major=input.stride(-2) == 1,
                               global_scale=global_scale, sf_vec_size=sf_vec_size, sf_use_ue8m0=sf_use_ue8m0,
                               is_sf_swizzled_layout=is_sf_swizzled_layout, is_sf_8x4_layout=is_sf_8x4_layout,
                               is_global_scale_inversed=is_global_scale_inversed, backend=backend,
                               nvfp4_4over6=nvfp4_4over6))
        assert sf_vec_size in (16, 32), "sf_vec_size can only be 16 or 32"
        assert backend == "cuda" and not is_sf_8x4_layout
        if input.stride(-2) == 1:
            input = input.transpose(-2, -1)  # what FlashInfer does; the wrapper must never get here
        assert input.dtype in (BF16, F16)
        k = input.shape[-1]
        assert k % sf_vec_size == 0
        rows = input.reshape(-1, k)
        if sf_use_ue8m0:
            assert sf_vec_size == 32 and global_scale is None
            data, scale = mxfp4_kernel_model(rows, self.rcp6)
        else:
            g = 1.0 if global_scale is None else float(global_scale.reshape(-1)[0])
            data, scale = nvfp4_kernel_model(rows, g, self.rcp6)
        data = data.view(*input.shape[:-1], k // 2)
        if is_sf_swizzled_layout:
            return data, flashinfer_128x4(scale, k // sf_vec_size * 32).reshape(-1, round_up(k // sf_vec_size, 4))
        return data, scale.reshape(-1, k // sf_vec_size)

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


def kernel_amax(b: torch.Tensor) -> torch.Tensor:
    """Per row of b (fp32 blocks): the even and the odd lanes' max |x| by __hmax2 (a NaN operand
    loses unless both are NaN), joined by (a > b) ? a : b (a NaN compares false: odd wins)."""

    def nan_blind_max(v):
        a = torch.where(v.isnan(), -1.0, v.abs()).amax(dim=-1)
        return torch.where(a < 0, float("nan"), a)

    even, odd = nan_blind_max(b[:, 0::2]), nan_blind_max(b[:, 1::2])
    return torch.where(even > odd, even, odd)


def kernel_model(x: torch.Tensor, rcp448: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FlashInfer 0.7.2's cvt_warp_fp16_to_mxfp8 per block, in PyTorch (see backends/flashinfer.py):
    NaN-blind __hmax2 amax joined by (a > b) ? a : b, P = amax * rcp448 with FTZ, ue8m0 rounding up
    (NaN -> 0xFF, Inf -> 0xFE), factor = 1/scale (0 for scale 0x00 and, flushed, for 2**127),
    FTZ inputs, fminf/fmaxf clamp to +-448 (NaN -> +448), e4m3 RNE. Returns (m, k) data and
    (m, k // 32) scale bytes."""
    m, k = x.shape
    b = x.reshape(-1, 32).float()
    b = torch.where(b.abs() < 2.0**-126, b * 0, b)  # FTZ (keeps the sign of zero)

    amax = kernel_amax(b)
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


# ---- FP4: cvt_warp_fp16_to_fp4 (flashinfer 0.7.2.post1, csrc/nv_internal/tensorrt_llm/kernels/quantization_utils.cuh)

E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)
RN_RCP6 = torch.tensor(1 / 6, dtype=torch.float32).item()
ULP_UP_RCP6 = (torch.tensor(1 / 6, dtype=torch.float32).view(torch.int32) + 1).view(torch.float32).item()
TINY = 2.0**-126


def ftz(v: torch.Tensor) -> torch.Tensor:
    """-use_fast_math's flush of fp32 subnormals to zero (sign kept)."""
    return torch.where(v.abs() < TINY, v * 0, v)


def cvt_e2m1(y: torch.Tensor) -> torch.Tensor:
    """cvt.rn.satfinite.e2m1x2.f32 per value: nearest of the e2m1 grid, ties to the even code,
    |y| > 6 -> 6, sign bit kept (also for -0 and for values that round to 0); NaN -> +6 (0x7),
    as the PTX ISA states for .satfinite conversions to a format without NaN."""
    a = y.double().abs().clamp(max=6.0).unsqueeze(-1)
    d = (a - E2M1_GRID).abs()
    best = d == d.amin(dim=-1, keepdim=True)
    even = best & (torch.arange(8) % 2 == 0)
    code = torch.where(even.any(-1), even.int().argmax(-1), best.int().argmax(-1)).to(torch.uint8)
    code = code | (torch.signbit(y).to(torch.uint8) << 3)
    return torch.where(y.isnan(), 0x7, code).to(torch.uint8)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """(m, k) codes -> (m, k/2) bytes, element 2j in the low nibble (how the cvt packs its pair)."""
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def mxfp4_kernel_model(x: torch.Tensor, rcp6: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The UE8M0_SF branch, per block of 32: vecMax as kernel_amax; vecMax *= rcp6 (mul.ftz);
    scale = cvt.rp.satfinite.ue8m0 (NaN -> 0xFF, Inf -> 0xFE, 0 -> 0x00); outputScale = vecMax != 0 ?
    exp2f_rcp(scale) : 0 with exp2f_rcp(0) = 1 and ex2.approx.ftz otherwise (2**-127, 2**-128 -> 0);
    elements cvt_e2m1(x * outputScale) with FTZ on the input and the product. Returns (m, k/2) data
    and (m, k/32) scale bytes."""
    m, k = x.shape
    b = x.reshape(-1, 32).float()
    p = ftz(ftz(kernel_amax(b)) * torch.tensor(rcp6, dtype=torch.float32))
    bits = p.view(torch.int32)
    up = (bits >> 23) - 127 + ((bits & 0x7FFFFF) != 0).int()
    byte = torch.where(p == 0, 0, (up + 127).clamp(0, 254))
    byte = torch.where(p.isinf(), 254, byte)
    byte = torch.where(p.isnan(), 255, byte)
    factor = torch.where(byte == 0, 1.0, torch.exp2(127 - byte.float()))
    factor = torch.where((p == 0) | (factor < TINY), 0.0, factor)
    y = ftz(ftz(b) * factor.unsqueeze(-1))
    return pack_nibbles(cvt_e2m1(y).reshape(m, k)), byte.to(torch.uint8).reshape(m, k // 32)


def nvfp4_kernel_model(x: torch.Tensor, g: float, rcp6: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The default (fast-math, no 4over6) E4M3 branch, per group of 16, with SFScaleVal = g:
    SF = e4m3_rn_satfinite(g * (vecMax * rcp6)); outputScale = vecMax != 0 ?
    rcp(float(SF) * rcp(g)) : 0 (rcp.approx modelled as the correctly rounded reciprocal);
    elements cvt_e2m1(x * outputScale). Used to show why NVFP4 is not claimed."""
    m, k = x.shape
    b = ftz(x.reshape(-1, 16).float())
    vmax = kernel_amax(b)
    g32 = torch.tensor(g, dtype=torch.float32)
    sf = ftz(g32 * ftz(vmax * torch.tensor(rcp6, dtype=torch.float32)))
    e4m3 = torch.where(sf.isnan(), sf, sf.clamp(max=448.0)).to(E4M3)
    rcp_g = torch.reciprocal(g32)
    scale = torch.where(vmax != 0, torch.reciprocal(ftz(e4m3.float() * rcp_g)), 0.0)
    y = ftz(b * scale.unsqueeze(-1))
    return pack_nibbles(cvt_e2m1(y).reshape(m, k)), e4m3.view(torch.uint8).reshape(m, k // 16)
