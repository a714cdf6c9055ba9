"""The generic fused step (step.py / ops.fused_step) for every backend, against the float64 oracle."""

from __future__ import annotations

import math

import pytest
import torch
from backends import backend_params, examples_for
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import assert_tensor_stats, low_precision_ok
from strategies import FLOAT_DTYPES, fill_random, make_view

import fastdiff as fd
from fastdiff import ops, reference
from fastdiff.step import MAX_HISTORY, ClipRange, CoeffTable, DynamicThreshold, StepCoeffs

BACKENDS = backend_params()
# 0, or a coefficient of a realistic size (1e-300 would push outputs below where squares underflow)
finite_coef = st.one_of(st.just(0.0), st.floats(1e-3, 2.0), st.floats(-2.0, -1e-3))


@st.composite
def step_case(draw, dtypes=FLOAT_DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    # inputs of other dtypes than x (a float32 sample with a bfloat16 model output) are read as they are
    mixed = draw(st.booleans())

    def tensor(same_dtype=False):
        layout = draw(st.sampled_from(("contiguous", "transposed", "strided", "offset")))
        t_dtype = dtype if same_dtype or not mixed else draw(st.sampled_from(dtypes))
        return make_view(shape, layout, t_dtype, gen, fill_random)

    alpha = draw(st.floats(0.05, 1.0))
    sigma = draw(st.floats(0.05, 1.0))
    pred = draw(st.sampled_from(["epsilon", "sample", "v_prediction", "flow"]))
    n_hist = draw(st.integers(0, MAX_HISTORY))
    c = StepCoeffs.from_prediction(
        pred,
        alpha,
        sigma,
        px=draw(finite_coef),
        p0=draw(finite_coef),
        pe=draw(finite_coef),
        pn=draw(finite_coef) if draw(st.booleans()) else 0.0,
        ph=tuple(draw(finite_coef) for _ in range(n_hist)),
        recompute_eps=draw(st.booleans()),
    )
    clip = draw(st.sampled_from([None, "static", "dynamic"]))
    clip = {None: None, "static": ClipRange(-1.0, 1.5), "dynamic": DynamicThreshold(0.9, 1.5)}[clip]
    case = dict(
        x=tensor(same_dtype=True),
        model_output=tensor(),
        coeffs=c,
        clip=clip,
        history=tuple(tensor() for _ in range(n_hist)),
        noise=tensor() if c.uses_noise else None,
        uncond=tensor() if draw(st.booleans()) else None,
        guidance_scale=draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(1e-2, 8.0))),
        special=draw(st.sampled_from([False, False, True])),
        out_mode=draw(st.sampled_from(["new", "buffer", "alias_x"])),
        return_x0=draw(st.booleans()),
    )
    if case["special"]:  # a NaN and an Inf in the model output, keeping its layout
        mo = case["model_output"].clone()
        mo[(0,) * mo.dim()] = math.nan
        if mo.numel() > 1:
            mo[(-1,) * mo.dim()] = math.inf
        case["model_output"] = mo
    return case


def run_case(case, backend):
    x = case["x"]
    kw = dict(
        uncond=case["uncond"],
        guidance_scale=case["guidance_scale"],
        clip=case["clip"],
        history=case["history"],
        noise=case["noise"],
        return_x0=case["return_x0"],
    )
    # the oracle, fed the same per-sample threshold as the op computes (a quantile of rounded values)
    scale = None
    if isinstance(case["clip"], DynamicThreshold):
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        o = case["model_output"].to(ct)
        if case["uncond"] is not None:
            o = case["uncond"].to(ct) + case["guidance_scale"] * (o - case["uncond"].to(ct))
        c = case["coeffs"].vector()
        x0_pre = c[0] * x.to(ct) + c[1] * o
        if case["noise"] is not None:
            x0_pre = x0_pre + c[2] * case["noise"].to(ct)
        scale = ops.threshold_scale(x0_pre, case["clip"].ratio, case["clip"].max_value)
    ref_kw = {k: v for k, v in kw.items() if k != "return_x0"}
    want_prev, want_x0, want_clipped = reference.generic_step(
        x, case["model_output"], case["coeffs"], threshold_scale=scale, **ref_kw
    )
    same_prev, same_x0, _ = reference.generic_step(
        x, case["model_output"], case["coeffs"], threshold_scale=scale, compute_dtype=x.dtype, **ref_kw
    )
    x_before = x.clone()
    out = None
    if case["out_mode"] == "buffer":
        out = torch.empty_like(x)
    elif case["out_mode"] == "alias_x":
        x = x.clone()
        out = x
    r = fd.fused_step(x, case["model_output"], case["coeffs"], out=out, backend=backend, **kw)

    assert r.prev_sample.dtype == x_before.dtype and r.prev_sample.shape == x_before.shape
    if out is not None:
        assert r.prev_sample.data_ptr() == out.data_ptr()
    mag_prev, mag_x0 = reference.step_magnitude(x_before, case["model_output"], case["coeffs"], **ref_kw)
    ok, msg = low_precision_ok(r.prev_sample, want_prev, same_prev, magnitude=mag_prev)
    assert ok, f"prev_sample: {msg}"
    if case["return_x0"]:
        ok, msg = low_precision_ok(r.pred_x0, want_x0, same_x0, magnitude=mag_x0)
        assert ok, f"pred_x0: {msg}"
        assert_tensor_stats(r.x0_stats, r.pred_x0)
    else:
        assert r.pred_x0 is None
    assert_tensor_stats(r.stats, r.prev_sample)
    # clipped count: exact, except for elements whose x0 lies within rounding distance of a bound — the
    # kernel computes x0 in fp32 (fp64 for fp64), the oracle in float64, so either side may call those
    if case["clip"] is None:
        assert int(r.clipped) == 0
    else:
        _, x0_exact, _ = reference.generic_step(
            x_before, case["model_output"], case["coeffs"], **{k: v for k, v in ref_kw.items() if k != "clip"}
        )
        u = 2.0**-53 if x.dtype == torch.float64 else 2.0**-24
        tol = 8 * u * mag_x0
        if isinstance(case["clip"], ClipRange):
            near = ((x0_exact - case["clip"].lo).abs() <= tol) | ((x0_exact - case["clip"].hi).abs() <= tol)
        else:
            s = scale.double().reshape((-1,) + (1,) * (x0_exact.dim() - 1))
            near = (x0_exact.abs() - s).abs() <= tol + 2.0**-24 * s  # s itself is a rounded fp32 quantile
        assert abs(int(r.clipped) - want_clipped) <= int(near.sum()), (int(r.clipped), want_clipped, int(near.sum()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_matches_oracle(backend):
    @settings(max_examples=examples_for(backend, 80))
    @given(case=step_case())
    def run(case):
        run_case(case, backend)

    run()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_ddim_with_clipping_each_dtype(backend, dtype):
    # a DDIM eta=0 step with clip [-1, 1], at an odd size, against the oracle with the 2x rule
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 5, 77, generator=g) * 1.3).to(dtype)
    eps = torch.randn(3, 5, 77, generator=g).to(dtype)
    a_t, s_t, a_p, s_p = 0.3, math.sqrt(1 - 0.09), 0.6, 0.8
    c = StepCoeffs.from_prediction("epsilon", a_t, s_t, p0=a_p, pe=s_p)
    r = fd.fused_step(x, eps, c, clip=1.0, return_x0=True, backend=backend)
    want, want_x0, n_clip = reference.generic_step(x, eps, c, clip=ClipRange(-1, 1))
    same, _, _ = reference.generic_step(x, eps, c, clip=ClipRange(-1, 1), compute_dtype=dtype)
    ok, msg = low_precision_ok(r.prev_sample, want, same, magnitude=reference.step_magnitude(x, eps, c)[0])
    assert ok, msg
    assert r.pred_x0.abs().max() <= 1
    assert abs(int(r.clipped) - n_clip) <= (0 if dtype == torch.float64 else 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_model_output_propagates_and_is_counted(backend):
    x = torch.randn(4, 10)
    eps = torch.randn(4, 10)
    eps[1, 3] = math.nan
    eps[2, 0] = math.inf
    c = StepCoeffs.from_prediction("epsilon", 0.5, math.sqrt(0.75), p0=0.7, pe=0.7)
    r = fd.fused_step(x, eps, c, clip=1.0, return_x0=True, backend=backend)
    assert math.isnan(r.prev_sample[1, 3])
    assert int(r.stats.nan_count) >= 1
    assert int(r.x0_stats.nan_count) == 1  # the clamp does not hide a NaN; -inf clamps to -1
    assert r.pred_x0[2, 0] == -1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_coeff_table_equals_scalars(backend):
    steps = [
        StepCoeffs.from_prediction("v_prediction", a, math.sqrt(1 - a * a), px=0.1, p0=0.9, pe=0.3, ph=(0.2,))
        for a in (0.2, 0.5, 0.9)
    ]
    table = CoeffTable.from_coeffs(steps)
    x, v, h = torch.randn(2, 33), torch.randn(2, 33), torch.randn(2, 33)
    for i, c in enumerate(steps):
        r_scalar = fd.fused_step(x, v, c, history=(h,), clip=(-2, 2), backend=backend)
        r_table = fd.fused_step(x, v, table, history=(h,), clip=(-2, 2), backend=backend)
        torch.testing.assert_close(r_table.prev_sample, r_scalar.prev_sample, rtol=1e-6, atol=1e-6)
        table.index += 1
        assert int(table.index) == i + 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_generator_noise_is_reproducible(backend):
    c = StepCoeffs(cx=1.0, px=1.0, pn=0.5)
    x = torch.zeros(3, 8)
    r1 = fd.fused_step(x, x, c, generator=torch.Generator().manual_seed(7), backend=backend)
    r2 = fd.fused_step(x, x, c, generator=torch.Generator().manual_seed(7), backend=backend)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(r1.prev_sample, r2.prev_sample, rtol=0, atol=0)
    torch.testing.assert_close(r1.prev_sample, 0.5 * z)


def test_step_bad_inputs():
    c = StepCoeffs(cx=1.0, px=1.0)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"model_output has shape \(2, 4\)"):
        fd.fused_step(x, torch.randn(2, 4), c)
    with pytest.raises(TypeError, match="int64"):
        fd.fused_step(x.long(), x.long(), c)
    with pytest.raises(ValueError, match="history"):
        fd.fused_step(x, x, c, history=(x,))
    with pytest.raises(ValueError, match="overlaps"):
        buf = torch.randn(7)
        fd.fused_step(buf[:6].view(2, 3), x, c, out=buf[1:7].view(2, 3))
    with pytest.raises(ValueError, match="overlapping elements"):
        fd.fused_step(x, x, c, out=torch.zeros(1, 3).expand(2, 3))
    with pytest.raises(ValueError, match="dtype"):
        fd.fused_step(x, x, c, out=torch.empty(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="prediction_type"):
        StepCoeffs.from_prediction("x_start", 0.5, 0.5)
    with pytest.raises(ValueError, match="clip"):
        fd.fused_step(x, x, c, clip="yes")
    with pytest.raises(ValueError, match="finite"):
        StepCoeffs(cx=math.nan)
    with pytest.raises(TypeError, match="coeffs"):
        fd.fused_step(x, x, (1.0, 2.0))


def test_logging_does_not_change_inputs():
    x = torch.randn(3, 9)
    eps = torch.randn(3, 9)
    x_c, eps_c = x.clone(), eps.clone()
    fd.fused_step(
        x, eps, StepCoeffs.from_prediction("epsilon", 0.4, math.sqrt(0.84), p0=0.5, pe=0.5), clip=1.0, backend="torch"
    )
    assert torch.equal(x, x_c) and torch.equal(eps, eps_c)
