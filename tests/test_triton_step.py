"""The Triton fused step beyond the shared contract: tiles, layouts, tables, aliasing, stats of stored values.

Every case is compared with the `torch` backend (itself checked against the float64 oracle by the
contract tests) or with the oracle directly. `tiny_tiles` makes small tensors cross tile, program and
row boundaries (2 x 32-element super-tiles, 3 programs).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from oracle import assert_tensor_stats, low_precision_ok

import fastdiff as fd
from fastdiff import kernels, reference
from fastdiff.step import MAX_HISTORY, ClipRange, CoeffTable, DynamicThreshold, StepCoeffs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not kernels.availability("triton", DEVICE)[0], reason=kernels.availability("triton", DEVICE)[1]
)


@pytest.fixture
def tiny_tiles(monkeypatch):
    from fastdiff.kernels.triton import config

    tile = config.Tile(sub=2, vec=1, num_warps=1)
    monkeypatch.setattr(config, "_override", {"stats": tile, "pair": tile, "step": tile})
    monkeypatch.setattr(config, "_programs_override", 3)


def _coeffs(n_hist=0, noise=False, recompute=False, pred="epsilon"):
    return StepCoeffs.from_prediction(
        pred,
        0.6,
        0.8,
        px=0.3 if n_hist else 0.0,
        p0=0.7,
        pe=0.5,
        pn=0.2 if noise else 0.0,
        ph=(0.1, -0.2, 0.05, -0.15)[:n_hist],
        recompute_eps=recompute,
    )


def _both(x, mo, c, **kw):
    """The same step on the torch and triton backends (fresh output buffers)."""
    ref = fd.fused_step(x, mo, c, backend="torch", **kw)
    got = fd.fused_step(x.to(DEVICE), mo.to(DEVICE), c, backend="triton", **{k: _dev(v) for k, v in kw.items()})
    return ref, got


def _dev(v):
    if isinstance(v, torch.Tensor):
        return v.to(DEVICE)
    if isinstance(v, tuple):
        return tuple(_dev(t) for t in v)
    return v


def _same_result(ref, got, dtype):
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(got.prev_sample.cpu(), ref.prev_sample, rtol=tol, atol=tol, equal_nan=True)
    if ref.pred_x0 is not None:
        torch.testing.assert_close(got.pred_x0.cpu(), ref.pred_x0, rtol=tol, atol=tol, equal_nan=True)
    assert abs(int(got.clipped) - int(ref.clipped)) <= (0 if dtype == torch.float64 else 2)
    # stats describe the values the kernel stored
    assert_tensor_stats(got.stats, got.prev_sample.cpu())
    if got.pred_x0 is not None:
        assert_tensor_stats(got.x0_stats, got.pred_x0.cpu())


SHAPES = [(1,), (31,), (64,), (65,), (3, 65), (2, 3, 33), (5, 7, 11)]


@pytest.mark.parametrize(
    "clip", [None, ClipRange(-1.0, 1.0), DynamicThreshold(0.9, 1.5)], ids=["none", "static", "dynamic"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_tile_and_row_boundaries(tiny_tiles, clip, dtype):
    g = torch.Generator().manual_seed(3)
    for shape in SHAPES:
        if isinstance(clip, DynamicThreshold) and len(shape) == 1 and shape[0] > 1:
            continue  # per-sample rows of one element: one program each, slow in the interpreter
        x = (torch.randn(shape, generator=g) * 1.5).to(dtype)
        mo = torch.randn(shape, generator=g).to(dtype)
        hist = (torch.randn(shape, generator=g).to(dtype),)
        c = _coeffs(n_hist=1)
        ref, got = _both(x, mo, c, clip=clip, history=hist, return_x0=True)
        _same_result(ref, got, dtype)


def test_every_option_at_once(tiny_tiles):
    g = torch.Generator().manual_seed(5)
    shape = (4, 3, 29)
    t = lambda: torch.randn(shape, generator=g)  # noqa: E731
    c = _coeffs(n_hist=MAX_HISTORY, noise=True, recompute=True, pred="v_prediction")
    history = tuple(t() for _ in range(MAX_HISTORY))
    kw = dict(uncond=t(), guidance_scale=4.5, clip=DynamicThreshold(0.8, 2.0), history=history, noise=t())
    ref, got = _both(t(), t(), c, return_x0=True, **kw)
    _same_result(ref, got, torch.float32)


def test_mixed_layouts_and_strided_outputs(tiny_tiles):
    # x transposed, model output broadcast, history sliced, outputs into permuted and plain buffers
    x = torch.randn(6, 9, 40).transpose(1, 2)
    mo = torch.randn(1, 40, 9).expand(6, 40, 9)  # broadcast model output (stride 0)
    h = torch.randn(12, 40, 9)[::2]
    out = torch.empty(9, 40, 6).permute(2, 1, 0)
    x0_out = torch.empty(6, 40, 9)
    c = _coeffs(n_hist=1)
    ref = fd.fused_step(x, mo, c, history=(h,), clip=1.0, return_x0=True, backend="torch")
    got = fd.fused_step(
        x.to(DEVICE), mo.to(DEVICE), c, history=(h.to(DEVICE),), clip=1.0, out=out.to(DEVICE), x0_out=x0_out.to(DEVICE),
        backend="triton",
    )  # fmt: skip
    _same_result(ref, got, torch.float32)


def test_irreducible_five_dim_views_fall_back_to_copies(tiny_tiles):
    big = torch.randn(2, 6, 3, 6, 2, 6)
    x = big[:, ::2, :, ::2, :, ::2].permute(4, 2, 0, 3, 1, 5)  # no two dims merge
    mo = torch.randn(x.shape)
    out = torch.empty_like(big)[:, ::2, :, ::2, :, ::2].permute(4, 2, 0, 3, 1, 5)
    c = _coeffs()
    ref = fd.fused_step(x, mo, c, clip=(-0.5, 0.5), backend="torch")
    got = fd.fused_step(x.to(DEVICE), mo.to(DEVICE), c, clip=(-0.5, 0.5), out=out.to(DEVICE), backend="triton")
    _same_result(ref, got, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_out_aliasing_x_updates_in_place(tiny_tiles, dtype):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 70, generator=g).to(dtype)
    mo = torch.randn(3, 70, generator=g).to(dtype)
    c = _coeffs()
    ref = fd.fused_step(x, mo, c, clip=1.0, backend="torch")
    xd = x.clone().to(DEVICE)
    got = fd.fused_step(xd, mo.to(DEVICE), c, clip=1.0, out=xd, return_x0=True, backend="triton")
    assert got.prev_sample.data_ptr() == xd.data_ptr()
    _same_result(ref, got, dtype)
    # x0 was computed from x before it was overwritten
    want_x0 = reference.generic_step(x, mo, c, clip=ClipRange(-1, 1))[1]
    ok, msg = low_precision_ok(
        got.pred_x0.cpu(), want_x0, reference.generic_step(x, mo, c, clip=ClipRange(-1, 1), compute_dtype=dtype)[1]
    )
    assert ok, msg


def test_coeff_table_is_bit_identical_to_scalars(tiny_tiles):
    steps = [_coeffs(n_hist=2, noise=True), _coeffs(n_hist=1, noise=True, pred="sample"), StepCoeffs(cx=1.0, px=1.0)]
    table = CoeffTable.from_coeffs(steps, device=DEVICE)
    g = torch.Generator().manual_seed(2)
    x, mo, z, h0, h1 = (torch.randn(2, 77, generator=g).to(DEVICE) for _ in range(5))
    for c in steps:
        hist = (h0, h1)
        c_full = replace(c, ph=c.ph + (0.0,) * (2 - len(c.ph)))  # same step, two history terms
        a = fd.fused_step(x, mo, c_full, history=hist, noise=z, clip=(-1, 1.2), return_x0=True, backend="triton")
        b = fd.fused_step(x, mo, table, history=hist, noise=z, clip=(-1, 1.2), return_x0=True, backend="triton")
        assert torch.equal(a.prev_sample, b.prev_sample) and torch.equal(a.pred_x0, b.pred_x0)
        assert torch.equal(a.stats.moments, b.stats.moments) and int(a.clipped) == int(b.clipped)
        table.advance()


def test_zero_coefficient_terms_are_absent(tiny_tiles):
    # inf/NaN in tensors whose coefficients are 0 must not leak (0 * inf would be NaN)
    x = torch.randn(3, 40)
    bad = torch.full((3, 40), math.inf)
    c = StepCoeffs(cx=1.0, px=1.0, ph=(0.0,))
    r = fd.fused_step(x.to(DEVICE), bad.to(DEVICE), c, history=(bad.to(DEVICE) * -1,), backend="triton")
    assert torch.equal(r.prev_sample.cpu(), x)
    assert int(r.stats.nan_count) == 0 and int(r.stats.posinf_count) == 0


def test_stats_are_of_the_rounded_stored_values():
    # fp16 overflow: x' = 4e4 + 4e4 is stored as +inf; the stats must say so
    x = torch.full((4, 20), 4e4, dtype=torch.float16)
    r = fd.fused_step(x.to(DEVICE), x.to(DEVICE), StepCoeffs(cx=1.0, px=1.0, p0=1.0), backend="triton")
    assert int(r.stats.posinf_count) == 80 and int(r.x0_stats.posinf_count) == 0
    assert_tensor_stats(r.x0_stats, x)


def test_step_results_are_bit_identical_when_repeated(tiny_tiles):
    x, mo = torch.randn(5, 100).to(DEVICE), torch.randn(5, 100).to(DEVICE)
    c = _coeffs()
    a = fd.fused_step(x, mo, c, clip=DynamicThreshold(0.9, 1.5), return_x0=True, backend="triton")
    b = fd.fused_step(x, mo, c, clip=DynamicThreshold(0.9, 1.5), return_x0=True, backend="triton")
    assert torch.equal(a.prev_sample, b.prev_sample) and torch.equal(a.stats.moments, b.stats.moments)
    assert torch.equal(a.x0_stats.counts, b.x0_stats.counts) and int(a.clipped) == int(b.clipped)


def test_launch_count(tiny_tiles):
    from fastdiff.kernels.triton import stats as triton_stats

    x, mo = torch.randn(4, 300).to(DEVICE), torch.randn(4, 300).to(DEVICE)
    before = triton_stats.launches
    fd.fused_step(x, mo, _coeffs(), clip=1.0, backend="triton")
    assert triton_stats.launches - before == 2  # the step, then the merge of stats and clipped counts
    before = triton_stats.launches
    fd.fused_step(x, mo, _coeffs(), stats=False, backend="triton")
    assert triton_stats.launches - before == 1


def test_bad_inputs_are_refused_before_launch():
    import numpy as np

    x = torch.randn(2, 8)
    raw = np.zeros(80, dtype=np.uint8)
    misaligned = torch.from_numpy(raw[2:66].view(np.float32)).view(2, 8)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="aligned"):
            fd.fused_step(x, x, _coeffs(), out=misaligned, backend="triton")
    with pytest.raises(TypeError, match="int64"):
        fd.fused_step(x.long(), x.long(), _coeffs(), backend="triton")


# --------------------------------------------------------------------------------------------------
# a whole sampling loop (model + step) captured in one CUDA graph


@pytest.mark.gpu
def test_sampling_loop_in_a_cuda_graph():
    from fastdiff.models.unet1d import UNet1D
    from fastdiff.schedule import Schedule
    from fastdiff.step import PhiloxNoise

    torch.manual_seed(0)
    net = UNet1D(channels=(8, 16)).cuda().eval()
    sched = Schedule.make(num_train_timesteps=1000)
    ts = list(range(999, -1, -100))
    steps = []
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        a_t, s_t = sched.alpha_sigma(t)
        a_p, s_p = sched.alpha_sigma(t_prev) if t_prev >= 0 else (1.0, 0.0)
        eta_sigma = 0.5 * s_p
        pe = math.sqrt(max(s_p**2 - eta_sigma**2, 0.0))
        steps.append(StepCoeffs.from_prediction("epsilon", a_t, s_t, p0=a_p, pe=pe, pn=eta_sigma))
    t_dev = torch.tensor(ts, device="cuda")
    x_init = torch.randn(4, 1, 64, device="cuda")

    def run(graph: bool):
        table = CoeffTable.from_coeffs(steps, device="cuda")
        noise = PhiloxNoise(seed=7, offset=torch.zeros((), dtype=torch.int64, device="cuda"))
        x = x_init.clone()

        def body():
            with torch.no_grad():
                eps = net(x, t_dev[table.index].expand(x.shape[0]))
            fd.fused_step(x, eps, table, noise=noise, clip=1.0, out=x, stats=False, backend="triton")
            table.advance()

        if not graph:
            for _ in steps:
                body()
            return x
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            body()  # warm-up: compiles the kernels outside the capture
        torch.cuda.current_stream().wait_stream(s)
        table.index.zero_()
        noise.offset.zero_()
        x.copy_(x_init)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            body()
        table.index.zero_()
        noise.offset.zero_()
        x.copy_(x_init)
        for _ in steps:
            g.replay()
        return x

    eager, replayed = run(False), run(True)
    torch.testing.assert_close(replayed, eager, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(replayed).all()
