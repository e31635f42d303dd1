"""The `triton` backend on a real CUDA GPU, byte for byte against the CPU reference.

Marked `cuda`: skipped where no CUDA device (and Triton) is present, as on CI. Run on the
device machine: `python3 -m pytest -m cuda tests/`.
"""

import itertools

import pytest
import torch

import mxquant
from mxquant import reference
from mxquant.layouts import to_public

from mx_oracle import assert_same_values

pytestmark = pytest.mark.cuda

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)
triton_backend = pytest.importorskip("mxquant.backends.triton")
if triton_backend.probe(torch.device("cuda", 0)) is not None:
    pytest.skip(f"triton backend unavailable: {triton_backend.probe(torch.device('cuda', 0))}", allow_module_level=True)

ELEMS = [torch.float8_e4m3fn, torch.float8_e5m2]
MODES = ["rceil", "floor"]
LAYOUTS = ["linear", "swizzled"]
INPUTS = [torch.float32, torch.bfloat16, torch.float16]
COMBOS = list(itertools.product(ELEMS, MODES, LAYOUTS, INPUTS))


def _ids(c):
    return "-".join(str(v).replace("torch.", "") for v in c)


def assert_same_bytes(x, dtype, mode, layout):
    data, scale = triton_backend.quantize(x, dtype, mode, layout)
    torch.cuda.synchronize()
    ref_data, ref_scale = reference.quantize(x.cpu(), dtype, mode, layout)
    assert data.shape == ref_data.shape and data.dtype == ref_data.dtype and data.is_contiguous()
    assert scale.shape == ref_scale.shape and scale.dtype == torch.float8_e8m0fnu and scale.is_contiguous()
    got_s, want_s = scale.cpu().view(torch.uint8), ref_scale.view(torch.uint8)
    got_d, want_d = data.cpu().view(torch.uint8), ref_data.view(torch.uint8)
    bad_s = (got_s != want_s).sum().item()
    bad_d = (got_d != want_d).sum().item()
    if bad_s or bad_d:
        idx = (got_d != want_d).nonzero()[:5].tolist()
        flat = x.float().cpu()
        detail = [(i, flat[tuple(i)].item(), got_d[tuple(i)].item(), want_d[tuple(i)].item()) for i in idx]
        pytest.fail(f"{bad_s} scale and {bad_d} element bytes differ; first elements (index, x, got, want): {detail}")


@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
def test_adversarial_batch(combo):
    from mxquant.conformance import cases

    dtype, mode, layout, idt = combo
    x = cases.adversarial_batch(idt, seed=1).cuda()
    assert_same_bytes(x, dtype, mode, layout)


@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
def test_golden_blocks(combo):
    from mxquant.conformance import cases

    dtype, mode, layout, idt = combo
    blocks = cases.special_blocks(dtype)
    x = torch.stack(list(blocks.values())).to(idt).cuda()
    assert_same_bytes(x, dtype, mode, layout)


SHAPES = [(1, 32), (1, 4096), (3, 96), (16, 4096), (5, 7, 160), (127, 288), (129, 32 * 37), (300, 2048), (2, 3, 4, 512)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
def test_random_shapes(shape, combo):
    dtype, mode, layout, idt = combo
    g = torch.Generator().manual_seed(hash((shape, _ids(combo))) % 2**31)
    mag = torch.exp2(torch.randint(-30, 30, shape, generator=g).float())
    x = (torch.randn(shape, generator=g) * mag).to(idt).cuda()
    assert_same_bytes(x, dtype, mode, layout)


SPREAD_CONFIGS = [(4, 1024, 4), (8, 512, 4), (16, 256, 4), (32, 128, 4), (1, 2048, 4), (2, 2048, 4)]


@pytest.mark.parametrize("shape", [(4100, 256), (200, 96), (3, 50, 32), (130, 7168)], ids=str)
@pytest.mark.parametrize("cfg", SPREAD_CONFIGS, ids=str)
def test_swizzled_programs_with_rows_32_apart(shape, cfg):
    """Config.spread (a swizzled program's rows 32 apart; the automatic choice on fast-HBM
    cards, 8 rows per program from 4096 rows) against the reference, with padding rows and
    columns, NaN/Inf blocks, and block counts that are not a multiple of 4; a BLOCK_M that is
    not a multiple of 4 ignores it. Run whatever the card, so the H100 checks it too."""
    g = torch.Generator().manual_seed(sum(shape) + cfg[0])
    mag = torch.exp2(torch.randint(-20, 20, shape, generator=g).float())
    x = (torch.randn(shape, generator=g) * mag).to(torch.bfloat16)
    x.view(-1)[7] = float("nan")
    x.view(-1)[-40] = float("inf")
    x = x.cuda()
    config = triton_backend.Config(*cfg, spread=True)
    data, scale = triton_backend.quantize(x, torch.float8_e4m3fn, "rceil", "swizzled", config=config)
    ref_data, ref_scale = reference.quantize(x.cpu(), torch.float8_e4m3fn, "rceil", "swizzled")
    assert torch.equal(data.cpu().view(torch.uint8), ref_data.view(torch.uint8)), (shape, cfg)
    assert torch.equal(scale.cpu().view(torch.uint8), ref_scale.view(torch.uint8)), (shape, cfg)
    assert_same_bytes(x, torch.float8_e5m2, "floor", "swizzled")  # the automatic configuration


def test_wide_dynamic_range_per_block():
    # Magnitudes spanning fp32's whole range, including subnormal inputs and 2**-127 scales.
    g = torch.Generator().manual_seed(7)
    e = torch.randint(-149, 128, (512, 256), generator=g).float()
    x = (torch.rand(512, 256, generator=g) + 1) * torch.exp2(e.clamp(max=127))
    x = torch.where(torch.rand(512, 256, generator=g) < 0.5, -x, x)
    x = torch.nan_to_num(x, posinf=3.0e38)
    for dtype, mode in itertools.product(ELEMS, MODES):
        assert_same_bytes(x.cuda(), dtype, mode, "linear")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_contiguous_inputs(layout):
    base = torch.randn(64, 3 * 256, dtype=torch.bfloat16, device="cuda")
    sliced = base[:, 256:512]  # row stride 768: no copy
    assert_same_bytes(sliced, torch.float8_e4m3fn, "rceil", layout)
    transposed = torch.randn(8, 16, 128, device="cuda").transpose(0, 1)  # leading dims permuted
    assert_same_bytes(transposed, torch.float8_e4m3fn, "floor", layout)
    strided_last = torch.randn(16, 256, device="cuda")[:, ::2]  # last-dim stride 2: copied
    assert_same_bytes(strided_last, torch.float8_e5m2, "rceil", layout)


@pytest.mark.parametrize("combo", list(itertools.product(ELEMS, LAYOUTS, INPUTS)), ids=_ids)
def test_dequantize_matches_reference(combo):
    dtype, layout, out_dtype = combo
    g = torch.Generator().manual_seed(3)
    x = torch.randn(130, 256, generator=g) * torch.exp2(torch.randint(-140, 120, (130, 8, 1), generator=g).float()).expand(130, 8, 32).reshape(130, 256)
    x[0, :32] = 0
    x[1, 5] = float("nan")
    x[2, 7] = float("-inf")
    data, scale = reference.quantize(x, dtype, "rceil", layout)
    got = triton_backend.dequantize(data.cuda(), scale.cuda(), layout, out_dtype).cpu()
    want = reference.dequantize(data, scale, layout, out_dtype)
    # Bits equal (so -0.0 vs +0.0 counts), NaN included: one NaN per out dtype (docs/semantics.md)
    assert_same_values(got, want, f"{dtype} {layout} -> {out_dtype}")


def test_public_call_picks_triton_and_is_exact():
    x = torch.randn(4, 1024, dtype=torch.bfloat16, device="cuda")
    reg = mxquant.get_registry()
    from mxquant.backend import Call

    call = Call("quantize", x.device, torch.bfloat16, torch.float8_e4m3fn, "rceil", "linear")
    assert reg.resolved_name(call) == "triton"
    data, scale = mxquant.mxfp8_quantize(x)
    ref_data, ref_scale = reference.quantize(x.cpu(), torch.float8_e4m3fn, "rceil", "linear")
    assert torch.equal(data.cpu().view(torch.uint8), ref_data.view(torch.uint8))
    assert torch.equal(scale.cpu().view(torch.uint8), ref_scale.view(torch.uint8))


def test_torch_compile_fullgraph_cuda():
    @torch.compile(fullgraph=True)
    def f(x):
        q = mxquant.mxfp8_quantize(x, scale_layout="swizzled")
        return q.data, q.scale, mxquant.mxfp8_dequantize(q.data, q.scale, scale_layout="swizzled") * 2

    x = torch.randn(256, 512, dtype=torch.bfloat16, device="cuda")
    data, scale, y = f(x)
    assert scale.dtype == torch.float8_e8m0fnu
    ref_data, ref_scale = reference.quantize(x.cpu(), torch.float8_e4m3fn, "rceil", "swizzled")
    assert torch.equal(data.cpu().view(torch.uint8), ref_data.view(torch.uint8))
    assert torch.equal(scale.cpu().view(torch.uint8), ref_scale.view(torch.uint8).reshape(-1))  # public: flat
    want = reference.dequantize(ref_data, ref_scale, "swizzled", torch.bfloat16) * 2
    assert torch.equal(y.cpu(), want)


def test_cuda_graph_capture_and_replay():
    x = torch.randn(128, 1024, dtype=torch.bfloat16, device="cuda")
    for layout in LAYOUTS:  # warm up: resolve, import, compile the kernels outside capture
        mxquant.mxfp8_quantize(x, scale_layout=layout)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        q_lin = mxquant.mxfp8_quantize(x)
        q_swz = mxquant.mxfp8_quantize(x, torch.float8_e5m2, scale_mode="floor", scale_layout="swizzled")
    for seed in range(3):  # new data in the captured input buffer, replay, compare
        torch.manual_seed(seed)
        x.copy_(torch.randn_like(x) * 10 ** seed)
        graph.replay()
        torch.cuda.synchronize()
        for q, args in ((q_lin, (torch.float8_e4m3fn, "rceil", "linear")),
                        (q_swz, (torch.float8_e5m2, "floor", "swizzled"))):
            ref_data, ref_scale = reference.quantize(x.cpu(), *args)
            assert torch.equal(q.data.cpu().view(torch.uint8), ref_data.view(torch.uint8))
            assert torch.equal(q.scale.cpu().view(torch.uint8), to_public(ref_scale, args[2]).view(torch.uint8))


def test_cached_launch_respects_specialization():
    # The second call of a signature goes through the cached compiled kernel; inputs that differ
    # in what Triton specializes on (alignment, M == 1, strides % 16) must not share a kernel.
    base = torch.randn(64 * 264, dtype=torch.bfloat16, device="cuda")
    aligned = base[: 64 * 256].view(64, 256)
    unaligned = base[1 : 1 + 64 * 256].view(64, 256)  # data_ptr % 16 == 2
    one_row = base[:256].view(1, 256)
    odd_stride = base[: 63 * 264].view(63, 264)[:, :256]  # row stride 264 (% 16 == 8)
    for _ in range(2):
        for x in (aligned, unaligned, one_row, odd_stride, aligned * 3):
            for layout in LAYOUTS:
                assert_same_bytes(x, torch.float8_e4m3fn, "rceil", layout)


def test_cached_path_follows_shapes_strides_and_data():
    # The lean path for seen signatures keys on shape, strides, dtypes, layout, device and
    # alignment; interleaving signatures, and new data under a seen signature, must each give
    # the reference's bytes (pointers are read per call, never cached).
    g = torch.Generator().manual_seed(11)
    shapes = [(16, 4096), (17, 4096), (16, 2048), (2, 8, 4096), (16, 4096)]
    for rnd in range(3):
        for shape in shapes:
            x = (torch.randn(shape, generator=g) * 4 ** rnd).to(torch.bfloat16).cuda()
            for layout in LAYOUTS:
                assert_same_bytes(x, torch.float8_e4m3fn, "compressed-tensors", layout)
        wide = torch.randn(16, 8192, generator=g).to(torch.bfloat16).cuda()
        assert_same_bytes(wide[:, :4096], torch.float8_e4m3fn, "rceil", "linear")  # row stride 8192
        assert_same_bytes(wide[:, 4096:], torch.float8_e4m3fn, "rceil", "linear")  # same signature, offset data


def test_cached_dequantize_follows_data():
    g = torch.Generator().manual_seed(12)
    for _ in range(3):
        for layout in LAYOUTS:
            x = torch.randn(64, 512, generator=g) * 100
            data, scale = reference.quantize(x, torch.float8_e5m2, "floor", layout)
            got = triton_backend.dequantize(data.cuda(), scale.cuda(), layout, torch.float32).cpu()
            assert torch.equal(got, reference.dequantize(data, scale, layout, torch.float32))


def test_launch_hooks_still_called():
    # A Triton launch hook (a profiler's) must see every launch: the raw launch path steps aside.
    import triton

    chain = getattr(triton.knobs.runtime, "launch_enter_hook", None)
    if not hasattr(chain, "add"):
        pytest.skip("this Triton has no HookChain launch hooks")
    x = torch.randn(32, 1024, dtype=torch.bfloat16, device="cuda")
    triton_backend.quantize(x, torch.float8_e4m3fn, "rceil", "linear")  # arm the cached path
    seen = []
    hook = seen.append
    chain.add(hook)
    try:
        assert_same_bytes(x, torch.float8_e4m3fn, "rceil", "linear")
    finally:
        chain.remove(hook)
    assert len(seen) == 1
    assert_same_bytes(x, torch.float8_e4m3fn, "rceil", "linear")


def test_public_prepared_call_follows_signatures_and_data():
    # From the second public call of a signature on, ops.run_quantize goes straight to the
    # backend's prepared call (backends/triton.py prepare_quantize): new data under a seen
    # signature, interleaved signatures (strides, alignment, layouts, modes) and a launch hook
    # must each give the reference's bytes, the scale in its public shape.
    import triton

    from mxquant.registry import get_registry

    g = torch.Generator().manual_seed(13)
    base = torch.randn(16 * 8200, generator=g).to(torch.bfloat16).cuda()
    wide = base.view(16, 8200)
    views = [wide[:, :4096], wide[:, 1:4097], base[:16 * 4096].view(16, 4096), base[1:1 + 16 * 4096].view(16, 4096)]
    assert len({(v.stride(), v.data_ptr() % 16 == 0) for v in views}) == 4  # four signatures of one shape
    for rnd in range(3):
        if rnd:
            base.mul_(3.0)  # new values under each seen signature
        for x in views:
            for layout, mode in (("linear", "rceil"), ("swizzled", "floor")):
                data, scale = mxquant.mxfp8_quantize(x, scale_layout=layout, scale_mode=mode)
                ref_data, ref_scale = reference.quantize(x.cpu(), torch.float8_e4m3fn, mode, layout)
                assert scale.shape == to_public(ref_scale, layout).shape and scale.is_contiguous()
                assert torch.equal(data.cpu().view(torch.uint8), ref_data.view(torch.uint8))
                assert torch.equal(scale.cpu().view(torch.uint8).reshape(-1), ref_scale.view(torch.uint8).reshape(-1))
    assert sum(k[0] == "prepared quantize" for k in get_registry().cache) >= 8  # prepared calls were made
    chain = getattr(triton.knobs.runtime, "launch_enter_hook", None)
    if hasattr(chain, "add"):  # a profiler's hook sees the prepared call's launches too
        seen = []
        hook = seen.append
        chain.add(hook)
        try:
            mxquant.mxfp8_quantize(views[0])
        finally:
            chain.remove(hook)
        assert len(seen) == 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cached_path_across_devices():
    x0 = torch.randn(16, 4096, dtype=torch.bfloat16, device="cuda:0")
    x1 = x0.to("cuda:1")
    for _ in range(2):
        for x in (x0, x1):
            data, scale = triton_backend.quantize(x, torch.float8_e4m3fn, "rceil", "linear")
            assert data.device == x.device and scale.device == x.device
            assert_same_bytes(x, torch.float8_e4m3fn, "rceil", "linear")
    with torch.cuda.device(1):  # current device differs from the tensor's
        assert_same_bytes(x0, torch.float8_e4m3fn, "rceil", "swizzled")
        for _ in range(2):  # the public call's prepared path declines there: the full call serves
            data, scale = mxquant.mxfp8_quantize(x0)
            assert data.device == x0.device
            ref_data, _ = reference.quantize(x0.cpu(), torch.float8_e4m3fn, "rceil", "linear")
            assert torch.equal(data.cpu().view(torch.uint8), ref_data.view(torch.uint8))
