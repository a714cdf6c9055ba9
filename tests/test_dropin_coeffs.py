"""The coefficient functions the drop-in schedulers gained: zero-length steps and repeated noise levels, the
noise-prediction solver forms, inverted flow ladders, diffusers' whole thresholding range.

Each property is checked on the formula itself (float64), not against diffusers (tests/test_dropin*.py do that).
"""

from __future__ import annotations

import math

import pytest
import torch

import fastdiff as fd
from fastdiff import reference
from fastdiff.samplers import dpmpp_coeffs, flow_euler_coeffs
from fastdiff.samplers.dpmsolver import dpm_solver_coeffs
from fastdiff.samplers.unipc import unipc_coeffs
from fastdiff.step import DynamicThreshold


def vp(lam: float) -> tuple[float, float]:
    """VP (alpha, sigma) at lam = log(alpha / sigma)."""
    return 1.0 / math.sqrt(1.0 + math.exp(-2 * lam)), 1.0 / math.sqrt(1.0 + math.exp(2 * lam))


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("n_prev", [0, 1, 2])
def test_dpmpp_zero_length_step(eta, n_prev):
    """h = 0 (a repeated sigma, as the final one of final_sigmas_type="sigma_min") is x' = x at every order."""
    a, s = vp(0.3)
    c = dpmpp_coeffs("epsilon", a, s, a, s, tuple(vp(0.3 - k - 1) for k in range(n_prev)), eta=eta)
    assert (c.px, c.p0, c.pe, c.pn, c.ph) == (1.0, 0.0, 0.0, 0.0, (0.0,) * n_prev)
    c = dpm_solver_coeffs(
        "epsilon", a, s, a, s, tuple(vp(0.3 - k - 1) for k in range(n_prev)), sde=eta > 0 and n_prev < 2
    )
    assert (c.px, c.p0, c.pe, c.pn, c.ph) == (1.0, 0.0, 0.0, 0.0, (0.0,) * n_prev)


@pytest.mark.parametrize("solver", ["dpmpp", "dpm_solver", "unipc"])
def test_repeated_history_level_drops_to_lower_order(solver):
    """History from the current noise level (r = 0, a 0 / 0 divided difference) gets weight 0: the step is the
    lower-order one; with the repeat further back, the order drops only that far."""
    lam_s, lam_t = 0.5, 1.0
    (a_s, s_s), (a_t, s_t) = vp(lam_s), vp(lam_t)

    def coeffs(lams_prev):
        if solver == "dpmpp":
            c = dpmpp_coeffs("sample", a_s, s_s, a_t, s_t, tuple(vp(v) for v in lams_prev), solver_type="heun")
            return c.px, c.p0, c.ph
        if solver == "dpm_solver":
            c = dpm_solver_coeffs("epsilon", a_s, s_s, a_t, s_t, tuple(vp(v) for v in lams_prev), solver_type="heun")
            return c.px, c.pe, c.ph
        c = unipc_coeffs(lam_s, lam_t, tuple(lams_prev), alpha_t=a_t, sigma_t=s_t, sigma_s0=s_s)
        return c.px, c.w0, c.wk

    assert coeffs([lam_s]) == coeffs([])[:2] + ((0.0,),)
    assert coeffs([lam_s, -1.0]) == coeffs([])[:2] + ((0.0, 0.0),)
    px, w0, (w1,) = coeffs([0.0])
    assert coeffs([0.0, 0.0]) == (px, w0, (w1, 0.0))


@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpm_solver_first_order_is_ddim(sde, solver_type):
    """The noise-prediction DPM-Solver-1 is DDIM (eta = 0): x_t = alpha_t x0 + sigma_t eps; its SDE form is
    diffusers' x_t = (alpha_t / alpha_s) x - 2 sigma_t (e^h - 1) eps + sigma_t sqrt(e^{2h} - 1) z."""
    (a_s, s_s), (a_t, s_t) = vp(0.2), vp(0.9)
    h = 0.7
    c = dpm_solver_coeffs("epsilon", a_s, s_s, a_t, s_t, sde=sde, solver_type=solver_type)
    x, eps = 0.37, -1.3
    x0 = (x - s_s * eps) / a_s
    got = c.px * x + c.pe * eps
    if sde:
        assert got == pytest.approx(a_t / a_s * x - 2 * s_t * math.expm1(h) * eps, rel=1e-12)
        assert c.pn == pytest.approx(s_t * math.sqrt(math.expm1(2 * h)), rel=1e-12)
    else:
        assert got == pytest.approx(a_t * x0 + s_t * eps, rel=1e-12) and c.pn == 0.0
    assert (c.cx, c.co) == pytest.approx((1 / a_s, -s_s / a_s))  # the x0 slot: the x0 of the eps (for stats)


def test_dpm_solver_is_dpmpp_under_duality():
    """Without noise, the noise-prediction updates are DPM-Solver++'s under (alpha, sigma, lambda, x0) ->
    (sigma, alpha, -lambda, eps), at every order and solver type."""
    lams = [1.1, 0.6, 0.2, -0.4]  # t, s, s1, s2
    dual = [vp(-v) for v in lams]  # (alpha', sigma') at -lambda = (sigma, alpha) at lambda
    for order in (1, 2, 3):
        for solver_type in ("midpoint", "heun"):
            prev = tuple(vp(v) for v in lams[2 : 1 + order])
            c = dpm_solver_coeffs("epsilon", *vp(lams[1]), *vp(lams[0]), prev, solver_type=solver_type)
            d = dpmpp_coeffs("sample", *dual[1], *dual[0], tuple(dual[2 : 1 + order]), solver_type=solver_type)
            assert c.px == pytest.approx(d.px, rel=1e-12) and c.pe == pytest.approx(d.p0, rel=1e-12)
            assert c.ph == pytest.approx(d.ph, rel=1e-12)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_dpm_solver_reads_eps_from_any_prediction(prediction_type):
    """The model output read as eps (its x term folded into px) gives the step of the eps model."""
    (a_s, s_s), (a_t, s_t) = vp(-4.0), vp(0.5)  # from near sigma_max, where the noise-prediction update cancels
    prev = (vp(-4.5),)
    g = torch.Generator().manual_seed(2)
    x, out, m1 = (torch.randn(16, dtype=torch.float64, generator=g) for _ in range(3))
    eps = (x - a_s * out) / s_s if prediction_type == "sample" else a_s * out + s_s * x
    want, _, _ = reference.generic_step(x, eps, dpm_solver_coeffs("epsilon", a_s, s_s, a_t, s_t, prev), history=(m1,))
    c = dpm_solver_coeffs(prediction_type, a_s, s_s, a_t, s_t, prev)
    got, x0, _ = reference.generic_step(x, out, c, history=(m1,))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x0, (x - s_s * eps) / a_s, rtol=1e-12, atol=1e-12)


def test_unipc_noise_prediction_into_sigma_zero():
    """The noise-prediction UniP-1 into sigma = 0 is its limit x_t = alpha_t x0 (diffusers' own float32 evaluation
    gives inf * 0 there); higher orders diverge and raise."""
    a_s, s_s = vp(0.4)
    c = unipc_coeffs(0.4, math.inf, (), alpha_t=1.0, sigma_t=0.0, sigma_s0=s_s, alpha_s0=a_s, predict_x0=False)
    x, eps = 0.37, -1.3
    assert c.px * x + c.w0 * eps == pytest.approx((x - s_s * eps) / a_s, rel=1e-12)
    with pytest.raises(ValueError, match="h = inf"):
        unipc_coeffs(0.4, math.inf, (0.1,), alpha_t=1.0, sigma_t=0.0, sigma_s0=s_s, alpha_s0=a_s, predict_x0=False)


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("sigmas", [(0.2, 0.7), (0.0, 0.3), (0.5, 0.5), (0.8, 0.1)])
def test_flow_euler_any_direction(stochastic, sigmas):
    """Flow times in either order (an inverted schedule rises from 0 to 1) or equal: x' = x + (s' - s) v, or
    (1 - s') x0 + s' z with x0 = x - s v."""
    s, s_next = sigmas
    g = torch.Generator().manual_seed(0)
    x, v, z = (torch.randn(16, dtype=torch.float64, generator=g) for _ in range(3))
    got, _, _ = reference.generic_step(x, v, flow_euler_coeffs(s, s_next, stochastic=stochastic), noise=z)
    want = (1 - s_next) * (x - s * v) + s_next * z if stochastic else x + (s_next - s) * v
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        flow_euler_coeffs(s, 1.5)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("ratio, max_value", [(0.0, 1.0), (0.9, 0.5), (0.0, 0.25)])
def test_threshold_below_one_and_ratio_zero(backend, ratio, max_value):
    """diffusers' thresholding over its whole range: s = torch.clamp(quantile(|x0|, ratio), 1, max_value), so
    max_value < 1 gives s = max_value, and ratio 0 the smallest |x0|."""
    if backend not in fd.available_backends():
        pytest.skip(f"{backend} not built")
    g = torch.Generator().manual_seed(1)
    x, out = 2 * torch.randn(3, 2, 8, generator=g), torch.randn(3, 2, 8, generator=g)
    c = fd.StepCoeffs(cx=1.0, co=-0.5, p0=1.0)
    r = fd.fused_step(x, out, c, clip=DynamicThreshold(ratio, max_value), return_x0=True, backend=backend)
    x0 = (x - 0.5 * out).double()
    q = torch.quantile(x0.abs().reshape(3, -1), ratio, dim=1)
    s = torch.clamp(q, min=1.0, max=max_value).reshape(3, 1, 1)
    torch.testing.assert_close(r.pred_x0.double(), x0.clamp(-s, s) / s, rtol=1e-6, atol=1e-6)
    assert int(r.clipped) == int((x0.abs() > s).sum())
    with pytest.raises(ValueError, match="max_value must be > 0"):
        DynamicThreshold(0.9, 0.0)
