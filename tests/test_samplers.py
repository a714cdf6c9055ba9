"""Native samplers: they solve the right problem (analytic Gaussian data, a T=2 toy), report 002's
eps<->x0 mix-up reproduced, the maths of DPM-Solver++ checked against the exponential integrator,
the k-diffusion-style functions against k-diffusion's algorithms, and the loop's features and errors.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import pytest
import torch

import fastdiff as fd
from fastdiff import param
from fastdiff.data import gaussian_data, gaussian_denoiser
from fastdiff.samplers import (
    SAMPLERS,
    PlannedStep,
    Sampler,
    change_variables,
    ddim,
    ddim_coeffs,
    ddpm,
    deis,
    dpm_2,
    dpm_singlestep,
    dpmpp,
    dpmpp_2s_ancestral,
    dpmpp_coeffs,
    dpmpp_sde,
    edm_dpmpp,
    edm_euler,
    euler,
    euler_ancestral,
    flow_euler,
    heun,
    lcm,
    lms,
    make_sampler,
    pndm,
    sample,
    sampler_options,
    unipc,
    ve_to_vp,
)
from fastdiff.samplers import kdiffusion as kd
from fastdiff.schedule import Schedule, karras_sigmas
from fastdiff.train import train_denoiser

BACKEND = "torch"
MEAN, STD = 0.5, 0.3  # gaussian_data's defaults


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return Schedule.make("linear", 1000)


@pytest.fixture(scope="module")
def x_T() -> torch.Tensor:
    """Standard-normal start, standardised so that sample means/stds carry no start-noise error."""
    x = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
    return (x - x.mean()) / x.std()


def exact_model(smp: Sampler, prediction_type: str | None = None, denoiser=None):
    """The exact model of a prediction type for data with a known denoiser E[x0 | x_t] (default: N(MEAN, STD^2)).

    It reads the noise level of each call from the sampler's plan (model time -> sigma) and answers in the
    sampler's own path (VP, VE-scaled input, EDM-preconditioned, or flow), converting with param.py.
    """
    p = prediction_type or smp.prediction_type
    level = {float(torch.tensor(st.model_time, dtype=smp.time_dtype)): st.sigma for st in smp.steps}
    denoiser = denoiser or (lambda x, a, s: gaussian_denoiser(x, a, s, mean=MEAN, std=STD))
    if smp.name.startswith("edm"):  # input x_ve / sqrt(s^2 + s_d^2), output F with x0 = c_skip x_ve + c_out F
        return _exact_edm_model(smp, level, denoiser)

    def model(x, t):
        s = level[float(t[0])]
        a, sg = (1.0 - s, s) if smp.path == "flow" else ve_to_vp(s)
        x0 = denoiser(x.double(), a, sg)
        eps = (x.double() - a * x0) / sg
        return param.target(p, x0, eps, a, sg).to(x.dtype)

    return model


def _exact_edm_model(smp: Sampler, level: dict, denoiser):
    sigma_data = smp.options["sigma_data"]

    def model(x, t):
        s = level[float(t[0])]
        x_ve = x.double() / param.edm_input_scale(s, sigma_data)
        m = param.edm_precondition(smp.prediction_type, s, sigma_data)
        return ((denoiser(x_ve, 1.0, s) - m.cx * x_ve) / m.co).to(x.dtype)

    return model


def mixture_denoiser(x: torch.Tensor, a: float, s: float, mu: float = 0.8, std: float = 0.1) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ (N(-mu, std^2) + N(mu, std^2)) / 2 elementwise (bimodal, symmetric data)."""
    var = a * a * std * std + s * s
    logp = torch.stack([-((x - a * m) ** 2) / (2 * var) for m in (-mu, mu)])
    post = torch.stack([m + a * std * std * (x - a * m) / var for m in (-mu, mu)])
    return (torch.softmax(logp, dim=0) * post).sum(0)


def moments(x: torch.Tensor) -> dict:
    x = x.double().reshape(-1)
    z = (x - x.mean()) / x.std()
    return {"mean": float(x.mean()), "std": float(x.std()), "skew": float((z**3).mean()), "kurt": float((z**4).mean())}


def run(model, smp, x, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("backend", BACKEND)
    return sample(model, smp, x, **kw)


# --------------------------------------------------------------------------------------------------
# analytic Gaussian data: the samplers land on the true distribution


DETERMINISTIC = [
    # (sampler, std rtol): first-order samplers shrink the variance by O(1/steps)
    (lambda s: ddim(s, 100), 0.05),
    (lambda s: ddim(s, 100, prediction_type="v_prediction"), 0.05),
    (lambda s: ddim(s, 100, prediction_type="sample"), 0.05),
    (lambda s: euler(s, 100), 0.05),
    (lambda s: euler(s, 100, prediction_type="v_prediction"), 0.05),
    (lambda s: heun(s, 40), 0.02),
    (lambda s: heun(s, 30, sigma_schedule="karras", prediction_type="sample"), 0.04),
    (lambda s: dpmpp(s, 100, solver_order=1), 0.05),
    (lambda s: dpmpp(s, 25, sigma_schedule="karras"), 0.04),
    (lambda s: dpmpp(s, 20, solver_order=3, sigma_schedule="karras", prediction_type="v_prediction"), 0.04),
    (lambda s: flow_euler(100), 0.03),
    (lambda s: flow_euler(100, prediction_type="sample", shift=2.0), 0.04),
    (lambda s: dpmpp(None, 25, use_flow_sigmas=True, prediction_type="flow"), 0.02),
    # issue 17's samplers (measured std errors: 0.5%, 0.5%, 0.6%, 0.7%, 0.5%, 0.6%, 1.0%, 3.0%, 3.5%, 0.2%)
    (lambda s: pndm(s, 25), 0.02),
    (lambda s: pndm(s, 25, skip_prk_steps=True, prediction_type="v_prediction"), 0.02),
    (lambda s: lms(s, 40, sigma_schedule="karras"), 0.02),
    (lambda s: dpm_2(s, 40, sigma_schedule="karras"), 0.02),
    (lambda s: deis(s, 20, sigma_schedule="karras", solver_order=3), 0.02),
    (lambda s: dpm_singlestep(s, 30, sigma_schedule="karras", solver_order=3), 0.02),
    (lambda s: unipc(s, 20, sigma_schedule="karras", solver_order=3), 0.02),
    (lambda s: edm_euler(100), 0.05),
    (lambda s: edm_dpmpp(25), 0.05),
    (lambda s: edm_dpmpp(25, solver_order=3, prediction_type="v_prediction"), 0.02),
]


@pytest.mark.parametrize("build, std_rtol", DETERMINISTIC)
def test_gaussian_data_deterministic(schedule, x_T, build, std_rtol):
    smp = build(schedule)
    x = run(exact_model(smp), smp, x_T).sample
    m = moments(x)
    assert abs(m["mean"] - MEAN) < 0.005, m
    assert abs(m["std"] - STD) < std_rtol * STD, m
    data = gaussian_data(x.shape[0], x.shape[1], mean=MEAN, std=STD, seed=1)
    assert abs(m["mean"] - float(data.mean())) < 0.01


@pytest.mark.parametrize(
    "build, std_rtol",
    [
        (lambda s: ddpm(s, 500), 0.06),
        (lambda s: ddim(s, 200, eta=1.0), 0.06),
        (lambda s: euler_ancestral(s, 300), 0.06),
        (lambda s: dpmpp(s, 50, sde=True, sigma_schedule="karras"), 0.03),
        (lambda s: dpmpp(s, 40, sde=True, solver_order=3, sigma_schedule="karras"), 0.03),
        (lambda s: euler(s, 200, s_churn=20.0, s_tmin=0.05, s_tmax=10.0), 0.06),
        # measured: 0.5%, 1.4%, 1.4% (DPM++ SDE with stage noises of one Brownian path; independent ones: 13%)
        (lambda s: dpm_2(s, 80, ancestral=True, sigma_schedule="karras"), 0.03),
        (lambda s: dpmpp_2s_ancestral(s, 60, sigma_schedule="karras"), 0.03),
        (lambda s: dpmpp_sde(s, 40, sigma_schedule="karras"), 0.03),
    ],
)
def test_gaussian_data_stochastic(schedule, x_T, build, std_rtol):
    smp = build(schedule)
    x = run(exact_model(smp), smp, x_T, generator=torch.Generator().manual_seed(1)).sample
    m = moments(x)
    assert abs(m["mean"] - MEAN) < 0.01, m
    assert abs(m["std"] - STD) < std_rtol * STD, m


def test_more_steps_converge(schedule, x_T):
    """The first-order samplers' variance error shrinks as O(1/steps), towards the true std."""
    errs = []
    for n in (10, 40, 160):
        smp = ddim(schedule, n)
        errs.append(abs(moments(run(exact_model(smp), smp, x_T).sample)["std"] - STD))
    assert errs[0] > 2.5 * errs[1] > 2.5 * 2.5 * errs[2] > 0


# --------------------------------------------------------------------------------------------------
# report 002: the eps <-> x0 mix-up gives noise, not data


def test_report_002_eps_model_sampled_as_x0(schedule, x_T):
    """An exact eps-model of N(0.5, 0.3^2) data, sampled as if it predicted x0 (the real bug's DDPM loop):
    the output is Gaussian noise unrelated to the data, although the model itself is perfect."""
    right = ddpm(schedule, 250)
    wrong = ddpm(schedule, 250, prediction_type="sample")
    model = exact_model(right, "epsilon")
    good = moments(run(model, right, x_T, generator=torch.Generator().manual_seed(1)).sample)
    bad = moments(run(model, wrong, x_T, generator=torch.Generator().manual_seed(1)).sample)
    assert abs(good["mean"] - MEAN) < 0.01 and abs(good["std"] - STD) < 0.1 * STD
    assert abs(bad["skew"]) < 0.05 and abs(bad["kurt"] - 3.0) < 0.1  # Gaussian noise ...
    assert -0.5 < bad["mean"] < 0.0  # ... around 0, not around the data's 0.5


def test_report_002_mixture_data(schedule, x_T):
    x_T = x_T[:1024]
    """Bimodal data (+-0.8): matched samplers reproduce the two modes; mixed-up readouts give noise.

    A model of x0 read as eps gives exactly report 002's figure 4, a wide Gaussian centred at 0
    ("以 0 为中心的宽高斯分布"); a model of eps read as x0 gives heavy-tailed noise. Neither has the modes.
    """
    right = ddim(schedule, 100)
    for p in ("epsilon", "sample", "v_prediction"):
        smp = ddim(schedule, 100, prediction_type=p)
        x = run(exact_model(smp, p, mixture_denoiser), smp, x_T).sample.double()
        assert abs(float(x.abs().mean()) - 0.8) < 0.03 and moments(x)["kurt"] < 1.2  # two sharp modes
    x0_read_as_eps = moments(run(exact_model(right, "sample", mixture_denoiser), right, x_T).sample)
    assert abs(x0_read_as_eps["mean"]) < 0.05 * x0_read_as_eps["std"]
    assert abs(x0_read_as_eps["skew"]) < 0.05 and abs(x0_read_as_eps["kurt"] - 3.0) < 0.5
    assert x0_read_as_eps["std"] > 10.0
    wrong = ddim(schedule, 100, prediction_type="sample")
    eps_read_as_x0 = moments(run(exact_model(right, "epsilon", mixture_denoiser), wrong, x_T).sample)
    assert eps_read_as_x0["kurt"] > 4.0 and eps_read_as_x0["std"] > 10.0


class _MLP(torch.nn.Module):
    def __init__(self, dim: int, num_train_timesteps: int, hidden: int = 64):
        super().__init__()
        self.T = num_train_timesteps
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 2, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )  # fmt: skip

    def forward(self, x, t):
        tt = math.pi * t.to(x.dtype).reshape(-1, 1) / self.T
        return self.net(torch.cat([x, torch.sin(tt), torch.cos(tt)], dim=1))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_toy_one_timestep_diffusion(prediction_type):
    """Report 002's minimal toy: T = 1, a single noise level (abar = 1/2). Train (fastdiff.train) on bimodal
    data, then check x_t -> x0 against the exact posterior mean: only the readout that training defined
    (param.py, which is also what the sampler uses) denoises; the mixed-up readouts do not."""
    schedule = Schedule.from_alphas_cumprod([0.5])
    g = torch.Generator().manual_seed(0)

    def bimodal(n):
        return (torch.randint(0, 2, (n, 4), generator=g) * 2 - 1) * 0.8 + 0.1 * torch.randn(n, 4, generator=g)

    data = bimodal(2048)
    torch.manual_seed(0)
    net = _MLP(4, 1)
    train_denoiser(net, data, schedule, prediction_type=prediction_type, steps=300, batch_size=256, lr=5e-3)
    x0, noise = bimodal(1024), torch.randn(1024, 4, generator=g)
    a, s = schedule.alpha_sigma(0)
    x_t = a * x0 + s * noise
    exact = mixture_denoiser(x_t.double(), a, s)
    with torch.no_grad():
        out = net(x_t, torch.zeros(1024, dtype=torch.long))
    errors = {}
    for read_as in ("epsilon", "sample", "v_prediction"):
        m = param.to_x0_eps(read_as, a, s)
        errors[read_as] = float(((m.cx * x_t + m.co * out).double() - exact).pow(2).mean())
    assert errors[prediction_type] < 0.05 * float(data.var()), errors  # the right readout denoises ...
    for other, err in errors.items():
        if other != prediction_type:
            assert err > 5 * errors[prediction_type], errors  # ... a mixed-up one does not
    # the one-step sampler (DDPM with T = 1 returns its x0) gives the same denoised values
    got = run(net, ddpm(schedule, prediction_type=prediction_type), x_t).sample
    m = param.to_x0_eps(prediction_type, a, s)
    torch.testing.assert_close(got, m.cx * x_t + m.co * out, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# maths: DPM-Solver++ is the exponential integrator; VP steps in VE variables; DDIM(eta=1) is DDPM


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpmpp_is_exact_for_polynomial_x0(eta, order):
    """With x0(lambda) a polynomial of degree order-1 in lambda = log(alpha/sigma), the multistep update
    equals the exponential integrator's mean

        E x_t = (sigma_t/sigma_s) e^{-eta h} x_s + alpha_t (1+eta) int_{l_s}^{l_t} e^{-(1+eta)(l_t - l)} x0(l) dl

    exactly for orders 1 and 2 ("heun" form). The 3rd-order (3M) update of DPM-Solver++ as published and
    as diffusers / k-diffusion implement it (and as here, to match them) gives the quadratic part of x0
    exactly half the integrator's weight (-phi3 D2 with D2 = h^2 x0''/2, where the integral is -2 phi3 D2).
    """
    g = torch.Generator().manual_seed(order * 10 + int(eta * 2))
    for _ in range(5):
        lams = torch.cumsum(0.2 + torch.rand(order + 1, generator=g, dtype=torch.float64), 0) - 2.0
        coef = torch.randn(order, generator=g, dtype=torch.float64).tolist()
        _check_polynomial_step(lams.tolist(), coef, eta)


def _vp(lam: float) -> tuple[float, float]:
    """VP (alpha, sigma) at lam = log(alpha / sigma)."""
    return 1.0 / math.sqrt(1.0 + math.exp(-2 * lam)), 1.0 / math.sqrt(1.0 + math.exp(2 * lam))


def _check_polynomial_step(lams: list[float], coef: list[float], eta: float) -> None:
    from scipy.integrate import quad

    order = len(coef)
    lam_prev, lam_s, lam_t = lams[: order - 1][::-1], lams[order - 1], lams[order]
    weight = (1.0, 1.0, 0.5)  # the 3M update weighs the quadratic part by 1/2

    def x0(lam: float, w=(1.0, 1.0, 1.0)) -> float:  # c0 + c1 u + c2 u^2 / 2, u = lam - lam_s
        return sum(w[k] * c * (lam - lam_s) ** k / math.factorial(k) for k, c in enumerate(coef))

    (as_, ss), (at, st) = _vp(lam_s), _vp(lam_t)
    c = dpmpp_coeffs("sample", as_, ss, at, st, tuple(_vp(lp) for lp in lam_prev), eta=eta, solver_type="heun")
    x_s = 0.37
    got = c.px * x_s + c.p0 * x0(lam_s) + sum(ph * x0(lp) for ph, lp in zip(c.ph, lam_prev))
    integral = quad(lambda lam: math.exp(-(1 + eta) * (lam_t - lam)) * x0(lam, weight), lam_s, lam_t, epsabs=1e-14)
    want = st / ss * math.exp(-eta * (lam_t - lam_s)) * x_s + at * (1 + eta) * integral[0]
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(c.pn, st * math.sqrt(-math.expm1(-2 * eta * (lam_t - lam_s))), abs_tol=1e-15)


def test_change_variables_matches_ve_loop(schedule):
    """A VP step used on VE samples (change_variables) is the VP step seen through x_ve = x_vp / alpha."""
    c = ddim_coeffs(float(schedule.alphas_cumprod[600]), float(schedule.alphas_cumprod[400]), eta=0.3)
    a_t, a_n = schedule.alpha_sigma(600)[0], schedule.alpha_sigma(400)[0]
    cv = change_variables(c, a_t, 1.0 / a_n)
    g = torch.Generator().manual_seed(0)
    x_vp, out, z = (torch.randn(64, dtype=torch.float64, generator=g) for _ in range(3))
    from fastdiff import reference

    want, x0_want, _ = reference.generic_step(x_vp, out, c, noise=z)
    got, x0_got, _ = reference.generic_step(x_vp / a_t, out, cv, noise=z)
    torch.testing.assert_close(got, want / a_n, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x0_got, x0_want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_eta1_clipped_output_is_ddpm(schedule, spacing):
    """DDIM with eta = 1 and eps re-derived from the clipped x0 is the DDPM posterior step, for any spacing."""
    a = ddim(schedule, 17, eta=1.0, use_clipped_model_output=True, timestep_spacing=spacing)
    b = ddpm(schedule, 17, timestep_spacing=spacing)
    g = torch.Generator().manual_seed(1)
    for sa, sb in zip(a.steps, b.steps):
        x, out, z = (torch.randn(256, dtype=torch.float64, generator=g) for _ in range(3))
        from fastdiff import reference

        xa, _, _ = reference.generic_step(x, out, sa.coeffs, clip=fd.ClipRange(-1, 1), noise=z)
        xb, _, _ = reference.generic_step(x, out, sb.coeffs, clip=fd.ClipRange(-1, 1), noise=z)
        torch.testing.assert_close(xa, xb, rtol=1e-9, atol=1e-9)


def test_dpmpp_3m_sde_differs_from_diffusers_third_order():
    """The native 3rd-order SDE weight of D2 is the integrator's (-> 0 as h -> 0, test above); diffusers'
    `sde-dpmsolver++` 3rd-order weight alpha_t ((1 - e^{-2h} - 2h) / (2h)^2 - 1/2) tends to -alpha_t."""
    h = 1e-3
    diffusers_weight = (1 - math.exp(-2 * h) - 2 * h) / (2 * h) ** 2 - 0.5
    assert abs(diffusers_weight + 1.0) < 1e-2


# --------------------------------------------------------------------------------------------------
# k-diffusion-style functions


def _denoiser(x, sigma):
    s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return 0.6 * torch.tanh(x / (1 + s)) + 0.1 * torch.sin(s)


def _ref_loop(kind, x, sigmas, gen=None, eta=1.0, s_churn=0.0):
    """k-diffusion's algorithms written out in plain torch (noise drawn in the order the fused loop draws it)."""
    sig = sigmas.tolist()
    n = len(sig) - 1
    old, h_1, h_2, old2 = None, None, None, None
    randn = lambda: torch.randn(x.shape, generator=gen)  # noqa: E731
    for i in range(n):
        s, sn = sig[i], sig[i + 1]
        if kind in ("euler", "heun"):
            gamma = min(s_churn / n, 2**0.5 - 1)
            hat = s * (gamma + 1)
            if gamma > 0 and i == 0:
                x = x + randn() * (hat**2 - s**2) ** 0.5
            d = (x - _denoiser(x, torch.full((x.shape[0],), hat))) / hat
            if kind == "heun" and sn > 0:
                x2 = x + d * (sn - hat)
                d2 = (x2 - _denoiser(x2, torch.full((x.shape[0],), sn))) / sn
                x = x + (d + d2) / 2 * (sn - hat)
            else:
                x = x + d * (sn - hat)
            if gamma > 0 and i + 1 < n:  # the next step's churn, drawn now (fused into this step)
                nh = sn * (gamma + 1)
                x = x + randn() * (nh**2 - sn**2) ** 0.5
        elif kind == "euler_ancestral":
            den = _denoiser(x, torch.full((x.shape[0],), s))
            up = min(sn, eta * (sn**2 * (s**2 - sn**2) / s**2) ** 0.5)
            down = (sn**2 - up**2) ** 0.5
            x = x + (x - den) / s * (down - s)
            if up > 0:
                x = x + randn() * up
        else:  # dpmpp 2m / 2m_sde / 3m_sde (k-diffusion's forms)
            den = _denoiser(x, torch.full((x.shape[0],), s))
            if sn == 0:
                x = den
            else:
                h = math.log(s) - math.log(sn)
                e = 0.0 if kind == "2m" else eta
                he = h * (1 + e)
                x = sn / s * math.exp(-e * h) * x - math.expm1(-he) * den
                if kind in ("2m", "2m_sde") and old is not None:
                    r = h_1 / h
                    x = x + 0.5 * (-math.expm1(-he)) * (1 / r) * (den - old)
                elif kind == "3m_sde" and h_2 is not None:
                    r0, r1 = h_1 / h, h_2 / h
                    d1_0, d1_1 = (den - old) / r0, (old - old2) / r1
                    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    phi2 = math.expm1(-he) / he + 1
                    x = x + phi2 * d1 - (phi2 / he - 0.5) * d2
                elif kind == "3m_sde" and h_1 is not None:
                    phi2 = math.expm1(-he) / he + 1
                    x = x + phi2 * (den - old) / (h_1 / h)
                if e > 0:
                    x = x + randn() * sn * math.sqrt(-math.expm1(-2 * e * h))
            old2, old = old, den
            h_2, h_1 = h_1, (math.log(s) - math.log(sn)) if sn > 0 else None
    return x


@pytest.mark.parametrize(
    "fn, kind, kw",
    [
        (kd.sample_euler, "euler", {}),
        (kd.sample_euler, "euler", {"s_churn": 3.0}),
        (kd.sample_heun, "heun", {}),
        (kd.sample_heun, "heun", {"s_churn": 3.0}),
        (kd.sample_euler_ancestral, "euler_ancestral", {}),
        (kd.sample_euler_ancestral, "euler_ancestral", {"eta": 0.5}),
        (kd.sample_dpmpp_2m, "2m", {}),
        (kd.sample_dpmpp_2m_sde, "2m_sde", {}),
        (kd.sample_dpmpp_3m_sde, "3m_sde", {}),
        (kd.sample_dpmpp_3m_sde, "3m_sde", {"eta": 0.5}),
    ],
)
def test_kdiffusion_functions_match_k_diffusion(fn, kind, kw):
    sigmas = torch.cat([karras_sigmas(0.03, 14.6, 12), torch.zeros(1, dtype=torch.float64)])
    x = 14.6 * torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    got = fn(_denoiser, x, sigmas, disable=True, generator=torch.Generator().manual_seed(5), **kw)
    ref_kw = {k: v for k, v in kw.items() if k in ("eta", "s_churn")}
    want = _ref_loop(kind, x, sigmas, gen=torch.Generator().manual_seed(5), **ref_kw)
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5


def _as_denoiser(model, smp):
    """A native sampler's model seen as a k-diffusion denoiser of the VE sample (model called as the loop does)."""
    levels = [(st.sigma, st.model_time) for st in smp.steps]

    def den(x, sigma):
        s, time = min(levels, key=lambda lv: abs(lv[0] - float(sigma[0])))  # sigma arrives in float32
        a, sg = ve_to_vp(s)
        t = torch.full((x.shape[0],), time, dtype=smp.time_dtype)
        out = model(x * a, t)
        m = param.to_x0_eps(smp.prediction_type, a, sg)
        return m.cx * (x * a) + m.co * out

    return den


@pytest.mark.parametrize(
    "fn, build, kw",
    [
        (kd.sample_ddim, lambda s: ddim(s, 20, prediction_type="v_prediction"), {}),
        (kd.sample_ddim, lambda s: ddim(s, 20, eta=0.7), {"eta": 0.7}),
        (kd.sample_ddpm, lambda s: ddpm(s, 20), {}),
        (kd.sample_euler, lambda s: euler(s, 12), {}),
        (kd.sample_heun, lambda s: heun(s, 8), {}),
        (kd.sample_dpmpp_2m, lambda s: dpmpp(s, 12, lower_order_final=False), {}),
        (kd.sample_lms, lambda s: lms(s, 12), {}),
        (kd.sample_dpm_2, lambda s: dpm_2(s, 8), {}),
        (kd.sample_dpm_2_ancestral, lambda s: dpm_2(s, 8, ancestral=True), {}),
        (kd.sample_dpmpp_2s_ancestral, lambda s: dpmpp_2s_ancestral(s, 8), {}),
        (kd.sample_unipc, lambda s: unipc(s, 12, solver_order=3), {"order": 3}),
        (kd.sample_unipc, lambda s: unipc(s, 12, solver_type="bh1", disable_corrector=[2]), {"solver_type": "bh1",
                                                                                             "disable_corrector": [2]}),
    ],
)  # fmt: skip
def test_kdiffusion_functions_match_native(schedule, fn, build, kw):
    """Same maths, other packaging: the functional form on the native plan's sigmas equals the native loop."""
    smp = build(schedule)
    x_T = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    model = exact_model(smp)
    want = run(model, smp, x_T, generator=torch.Generator().manual_seed(9)).sample
    # the outer ladder: a second stage starts from its first stage's saved sample
    first = [st for st in smp.steps if not any(kind == "x" for kind, _ in st.history)]
    sigmas = torch.tensor([st.sigma for st in first] + [smp.steps[-1].sigma_next])
    x_ve = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
    if "generator" in inspect.signature(fn).parameters:
        kw = dict(kw, generator=torch.Generator().manual_seed(9))
    got = fn(_as_denoiser(model, smp), x_ve, sigmas, disable=True, **kw)
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5


def test_kdiffusion_flow_euler_matches_native():
    smp = flow_euler(15, shift=3.0)
    x_T = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    model = exact_model(smp)
    want = run(model, smp, x_T).sample
    levels = [(st.sigma, st.model_time) for st in smp.steps]

    def den(x, sigma):
        s, time = min(levels, key=lambda lv: abs(lv[0] - float(sigma[0])))
        return x - s * model(x, torch.full((x.shape[0],), time))  # flow output -> x0

    got = kd.sample_flow_euler(den, x_T, torch.tensor(smp.sigmas), disable=True)
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5


def test_kdiffusion_callback_and_errors():
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    seen = []
    kd.sample_heun(_denoiser, torch.randn(2, 3), sigmas, callback=seen.append, disable=True)
    assert [c["i"] for c in seen] == [0, 1, 2] and set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    with pytest.raises(ValueError, match="strictly decreasing"):
        kd.sample_euler(_denoiser, torch.randn(2, 3), torch.tensor([1.0, 2.0, 0.0]), disable=True)
    with pytest.raises(ValueError, match="at least 2"):
        kd.sample_euler(_denoiser, torch.randn(2, 3), torch.tensor([1.0]), disable=True)
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        kd.sample_dpmpp(_denoiser, torch.randn(2, 3), sigmas, order=4, disable=True)


# --------------------------------------------------------------------------------------------------
# the loop: CFG, callback, stats without host syncs, clipping counts, NaN, coefficient tables


def test_cfg_is_combined_inside_the_step(schedule):
    smp = ddim(schedule, 8)
    x_T = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))

    def model(x, t, cond):
        return 0.1 * x + cond

    c, u, w = torch.full((3, 5), 0.2), torch.full((3, 5), -0.1), 3.0
    got = run(model, smp, x_T, extra_args={"cond": c}, uncond_args={"cond": u}, guidance_scale=w).sample
    want = run(lambda x, t: 0.1 * x + u + w * (c - u), smp, x_T).sample
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs uncond_args"):
        run(model, smp, x_T, extra_args={"cond": c}, guidance_scale=2.0)


def test_stats_clip_counts_and_callback(schedule):
    smp = dpmpp(schedule, 6)
    x_T = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    seen = []
    r = run(lambda x, t: 0.9 * x, smp, x_T, clip=0.5, callback=seen.append)
    rows = r.step_stats()
    assert len(rows) == len(seen) == len(smp)
    for row, info in zip(rows, seen):
        want_x = fd.tensor_stats(info["x_next"], backend="torch").to_dict()
        assert row["x_mean"] == pytest.approx(want_x["mean"], rel=1e-9) and row["x_max"] == want_x["max"]
        assert row["x0_absmax"] <= 0.5
        x0_raw = smp.steps[info["i"]].coeffs.cx * info["x"] + smp.steps[info["i"]].coeffs.co * 0.9 * info["x"]
        assert row["clipped"] == int((x0_raw.abs() > 0.5).sum())
        assert 0 <= row["clipped_frac"] <= 1 and row["x_nan_count"] == 0
        assert info["denoised"].abs().max() <= 0.5 and torch.equal(info["result"].prev_sample, info["x_next"])
    assert torch.equal(seen[-1]["x_next"], r.sample)


def test_nan_is_counted_not_raised(schedule):
    smp = ddim(schedule, 5)

    def model(x, t):
        out = 0.5 * x
        if int(t[0]) == smp.model_times[2]:
            out = out.clone()
            out[0, 0] = float("nan")
        return out

    rows = run(model, smp, torch.randn(2, 4, generator=torch.Generator().manual_seed(0))).step_stats()
    assert [r["x_nan_count"] for r in rows][:2] == [0, 0] and rows[2]["x_nan_count"] >= 1


def test_loop_never_syncs_the_host(schedule, monkeypatch):
    """No .item()/.tolist()/bool()/float() of a tensor anywhere in the loop: every stat stays on the device."""
    smp = make_sampler("dpmpp_2m_sde", 6, schedule)
    x_T = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))

    def boom(*_a, **_k):
        raise AssertionError("host sync inside the sampling loop")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    r = run(lambda x, t: 0.5 * x, smp, x_T, clip=fd.DynamicThreshold(0.9, 2.0), generator=torch.Generator())
    monkeypatch.undo()
    assert len(r.step_stats()) == len(smp)


def test_coeff_table_loop_equals_host_coeffs(schedule):
    """The plan as a device-side CoeffTable (CUDA-graph form) gives the same loop as host coefficients."""
    smp = ddim(schedule, 7, eta=0.5)
    table = smp.coeff_table()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    for st in smp.steps:
        z = torch.randn(3, 4, generator=torch.Generator().manual_seed(len(st.coeffs.ph) + 1))
        x = fd.fused_step(x, 0.3 * x, st.coeffs, noise=z, backend=BACKEND).prev_sample
        y = fd.fused_step(y, 0.3 * y, table, noise=z, backend=BACKEND).prev_sample
        table.advance()
    torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


def test_model_output_forms(schedule):
    smp = ddim(schedule, 3)
    x_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    want = run(lambda x, t: 0.5 * x, smp, x_T).sample

    class Out:
        def __init__(self, s):
            self.sample = s

    torch.testing.assert_close(run(lambda x, t: Out(0.5 * x), smp, x_T).sample, want)
    torch.testing.assert_close(run(lambda x, t: (0.5 * x,), smp, x_T).sample, want)


def test_every_registered_sampler_runs(schedule):
    x_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    for name in SAMPLERS:
        smp = make_sampler(name, 5, None if name.startswith("flow") else schedule)
        pt = "flow" if smp.path == "flow" else "epsilon"
        x = run(exact_model(smp, pt), smp, x_T, generator=torch.Generator().manual_seed(0)).sample
        assert torch.isfinite(x).all(), name
        assert "prediction_type" in sampler_options(name)


# --------------------------------------------------------------------------------------------------
# bad input: a clear error naming it


def test_bad_input(schedule):
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
        make_sampler("dpm", 10, schedule)
    with pytest.raises(ValueError, match="unknown option.*'etta'.*accepted"):
        make_sampler("ddim", 10, schedule, etta=0.5)
    with pytest.raises(ValueError, match="needs a schedule"):
        make_sampler("euler", 10)
    with pytest.raises(ValueError, match="cannot take prediction_type='flow'"):
        ddim(schedule, 10, prediction_type="flow")
    with pytest.raises(ValueError, match="cannot take prediction_type='v_prediction'"):
        flow_euler(10, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="prediction_type='x1'"):
        euler(schedule, 10, prediction_type="x1")
    for n in (0, -3, 1001, 2.5):
        for build in (ddim, ddpm, euler, euler_ancestral, heun, dpmpp):
            with pytest.raises(ValueError, match="num_inference_steps"):
                build(schedule, n)
    with pytest.raises(ValueError, match="num_inference_steps"):
        flow_euler(0)
    with pytest.raises(NotImplementedError, match="learned_range"):
        ddpm(schedule, 10, variance_type="learned_range")
    with pytest.raises(ValueError, match="variance_type='tiny'"):
        ddpm(schedule, 10, variance_type="tiny")
    with pytest.raises(ValueError, match="eta=5.0 is too large"):
        ddim(schedule, 10, eta=5.0)
    with pytest.raises(ValueError, match="timestep_spacing='uniform'"):
        ddim(schedule, 10, timestep_spacing="uniform")
    with pytest.raises(ValueError, match="sigma_schedule='polyexponential'"):
        euler(schedule, 10, sigma_schedule="polyexponential")
    with pytest.raises(ValueError, match="final_sigmas_type='one'"):
        euler(schedule, 10, final_sigmas_type="one")
    with pytest.raises(ValueError, match="solver_order must be 1, 2 or 3"):
        dpmpp(schedule, 10, solver_order=4)
    with pytest.raises(ValueError, match="must decrease strictly"):
        ddim(schedule, timesteps=[10, 500])
    with pytest.raises(ValueError, match="must decrease strictly"):
        euler(schedule, None, sigmas=[1.0, 2.0, 0.0])
    with pytest.raises(ValueError, match="model returned shape \\(2, 8, 5\\).*twice the channels"):
        run(lambda x, t: torch.cat([x, x], 1), ddim(schedule, 3), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="model returned shape \\(3,\\) at step 0"):
        run(lambda x, t: torch.zeros(3), ddim(schedule, 3), x)
    with pytest.raises(TypeError, match="model returned str"):
        run(lambda x, t: "oops", ddim(schedule, 3), x)
    with pytest.raises(TypeError, match="x_T must be a floating-point tensor"):
        run(lambda x, t: x, ddim(schedule, 3), torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="sampler must be"):
        sample(lambda x, t: x, "ddim", x)
    with pytest.raises(ValueError, match="cannot be converted"):
        ddim(Schedule.make("linear", 1000, rescale_betas_zero_snr=True), 10, timestep_spacing="trailing")


def test_timestep_conventions(schedule):
    """The documented model-call convention: integer t for VP samplers, fractional for the Euler family
    (with the input scaled by 1 / sqrt(1 + sigma^2)), sigma * T for flow."""
    seen = []

    def model(x, t):
        seen.append((t.dtype, t.shape, x.clone()))
        return torch.zeros_like(x)

    x_T = torch.ones(2, 3)
    run(model, ddim(schedule, 4), x_T)
    assert seen[0][0] == torch.int64 and seen[0][1] == (2,)
    seen.clear()
    smp = euler(schedule, 4)
    run(model, smp, x_T)
    assert seen[0][0] == torch.float32
    torch.testing.assert_close(seen[0][2], x_T)  # x_T * init_noise_sigma * input_scale = x_T
    seen.clear()
    run(model, flow_euler(4), x_T)
    assert seen[0][0] == torch.float32


# --------------------------------------------------------------------------------------------------
# issue 17: the maths each new sampler relies on, and the conventions around the model call


def _consistency_model(smp: Sampler):
    """The exact consistency function of N(MEAN, STD^2) data: the probability-flow ODE maps x_t to
    x0 = MEAN + STD (x_t - alpha MEAN) / sqrt(alpha^2 STD^2 + sigma^2) (it keeps the standardised value),
    answered as an epsilon model at the call's level."""
    level = {float(torch.tensor(st.model_time, dtype=smp.time_dtype)): st.sigma for st in smp.steps}

    def model(x, t):
        a, s = ve_to_vp(level[float(t[0])])
        x0 = MEAN + STD * (x.double() - a * MEAN) / math.sqrt(a * a * STD * STD + s * s)
        return ((x.double() - a * x0) / s).to(x.dtype)

    return model


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_lcm_with_an_exact_consistency_model(schedule, x_T, n):
    """LCM samples a consistency model: with the exact one (the PF-ODE's endpoint map) it lands on the data
    distribution in any number of steps (up to its c_skip ~ 1e-5 mixing of x_t into the result). (TCD moves along
    the DDIM path to an intermediate level, which is not this data's PF-ODE, and ends at abar_0 < 1: it is
    compared with diffusers only, in test_samplers_diffusers.py and test_coeffs_diffusers_f64.py.)"""
    build = lambda s: lcm(s, n)  # noqa: E731
    smp = build(schedule)
    m = moments(run(_consistency_model(smp), smp, x_T, generator=torch.Generator().manual_seed(1)).sample)
    assert abs(m["mean"] - MEAN) < 0.005 and abs(m["std"] - STD) < 0.01 * STD, m


def test_pndm_reads_each_v_output_at_its_own_level(schedule, x_T):
    """The native PNDM converts each output to eps at its own level; diffusers' reading (`v_combined`) converts the
    combination of raw v outputs at the transfer's start, which biases a v-model; an eps-model is the same in both."""
    native = pndm(schedule, 25, prediction_type="v_prediction")
    combined = pndm(schedule, 25, prediction_type="v_prediction", v_combined=True)
    good = moments(run(exact_model(native), native, x_T).sample)
    bad = moments(run(exact_model(combined), combined, x_T).sample)
    assert abs(good["mean"] - MEAN) < 0.005 and abs(good["std"] - STD) < 0.02 * STD
    assert abs(bad["mean"] - MEAN) > 0.01 and abs(bad["std"] - STD) > 0.05 * STD
    eps_a, eps_b = pndm(schedule, 10), pndm(schedule, 10, v_combined=True)
    for a, b in zip(eps_a.steps, eps_b.steps):
        assert a.coeffs == b.coeffs


def test_dpmpp_sde_stages_share_one_brownian_path():
    """The native DPM++ SDE draws its second stage's noise correlated with the first's as increments of one
    Brownian path (what k-diffusion's and diffusers' Brownian tree give): the noise std is unchanged and
    corr(z_1, z_2) = sqrt((sigma - sigma_s) / (sigma - sigma_next))."""
    from fastdiff.samplers.sde import brownian_correlation, dpmpp_sde_coeffs, dpmpp_sde_plan

    sig = [10.0, 4.0, 1.5, 0.0]
    steps, _ = dpmpp_sde_plan(sig, "epsilon", brownian_stages=True)
    plain, _ = dpmpp_sde_plan(sig, "epsilon")
    for k in (1, 3):  # the second stages
        st, ref = steps[k], plain[k]
        assert st.history[-1] == ("z", k - 1)
        rho = brownian_correlation(steps[k - 1].sigma, steps[k - 1].sigma_next, st.sigma_next)
        assert math.isclose(st.coeffs.ph[-1], ref.coeffs.pn * rho, rel_tol=1e-14)
        assert math.isclose(st.coeffs.pn**2 + st.coeffs.ph[-1] ** 2, ref.coeffs.pn**2, rel_tol=1e-14)
    # r = 1/2 (diffusers' value): the second stage does not read the first stage's x0
    _, c2 = dpmpp_sde_coeffs(10.0, 4.0)
    assert len(c2.ph) == 1


def test_dpmpp_sde_brownian_stages_in_the_loop(schedule):
    """Measured in the loop: with x0 = 0 each stage adds only its noise to a multiple of x, and the two stages'
    added noises have the planned correlation (10^5 samples: +-0.01)."""
    from fastdiff.samplers.sde import brownian_correlation

    smp = dpmpp_sde(schedule, 3, prediction_type="sample")
    seen = []
    run(lambda x, t: torch.zeros_like(x), smp, torch.randn(100_000, 1, generator=torch.Generator().manual_seed(0)),
        generator=torch.Generator().manual_seed(1), callback=seen.append)  # fmt: skip
    for k in (1, 3):
        first, second = smp.steps[k - 1].coeffs, smp.steps[k].coeffs
        x = seen[k - 1]["x"].double()
        n1 = seen[k - 1]["x_next"].double() - first.px * x
        n2 = seen[k]["x_next"].double() - second.ph[0] * x
        corr = float((n1 * n2).mean() / (n1.std() * n2.std()))
        rho = brownian_correlation(smp.steps[k - 1].sigma, smp.steps[k - 1].sigma_next, smp.steps[k].sigma_next)
        assert abs(corr - rho) < 0.01, (corr, rho)
        assert abs(float(n2.std()) - math.hypot(second.pn, second.ph[-1])) < 0.01 * float(n2.std())


def test_model_may_edit_its_time_in_place(schedule):
    """The time / sigma handed to the model is a fresh tensor of its own (no stride-0 view of a shared one):
    a model that edits it in place works, and its edit does not leak into later calls."""
    x_T = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    seen = []

    def model(x, t):
        seen.append(t.clone())
        t.mul_(0.0)  # an in-place edit (fails on an expand() view)
        return 0.5 * x

    smp = euler(schedule, 4)
    got = run(model, smp, x_T).sample
    torch.testing.assert_close(got, run(lambda x, t: 0.5 * x, smp, x_T).sample)
    assert [float(t[0]) for t in seen] == pytest.approx(smp.model_times)
    seen.clear()
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.0])
    kd.sample_euler(lambda x, s: model(x, s), 10.0 * x_T, sigmas, disable=True)
    assert [float(s[0]) for s in seen] == [10.0, 3.0, 1.0]


def test_flow_matching_converter(x_T):
    """A velocity model of the flow_matching convention (t: 0 noise -> 1 data, u = x1 - x0) sampled through
    `param.from_flow_matching` equals fastdiff's own exact flow model, and lands on the data."""
    smp = flow_euler(100)

    def u(x, t):  # exact velocity of N(MEAN, STD^2) data at flow_matching time t: x_t = t x1 + (1 - t) x0
        t = t.double().reshape(-1, 1)
        x1 = gaussian_denoiser(x.double(), t, 1.0 - t, mean=MEAN, std=STD)
        return ((x1 - x.double()) / (1.0 - t)).to(x.dtype)

    got = run(param.from_flow_matching(u), smp, x_T).sample
    want = run(exact_model(smp), smp, x_T).sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    m = moments(got)
    assert abs(m["mean"] - MEAN) < 0.005 and abs(m["std"] - STD) < 0.03 * STD


def test_native_euler_churn_is_diffusers_variant(schedule):
    """Native `euler(s_churn)` follows diffusers (model called before the churn, its output read at sigma_hat);
    Karras et al.'s algorithm 2 (k-style sample_euler, equal to k-diffusion's) calls it after the churn. With
    the same noise the two differ; without churn they are the same method."""
    smp = euler(schedule, 12, s_churn=3.0)
    x_T = torch.randn(64, 8, generator=torch.Generator().manual_seed(2))
    model = exact_model(smp)
    native = run(model, smp, x_T, generator=torch.Generator().manual_seed(9)).sample
    sigmas = torch.tensor(smp.sigmas)
    x_ve = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
    karras = kd.sample_euler(_as_denoiser(model, smp), x_ve, sigmas, disable=True, s_churn=3.0,
                             generator=torch.Generator().manual_seed(9))  # fmt: skip
    assert float((native - karras).abs().max() / karras.abs().max()) > 0.1
    plain = run(model, euler(schedule, 12), x_T).sample
    same = kd.sample_euler(_as_denoiser(model, smp), x_ve, sigmas, disable=True)
    torch.testing.assert_close(plain, same, rtol=1e-5, atol=1e-5)


def test_history_names_earlier_steps():
    from fastdiff.step import MAX_HISTORY, StepCoeffs

    with pytest.raises(ValueError, match="history entries are"):
        PlannedStep(StepCoeffs(ph=(1.0,)), 0.0, history=("x0_1",))
    with pytest.raises(ValueError, match="only earlier steps"):
        Sampler("bad", "epsilon", (PlannedStep(StepCoeffs(ph=(1.0,)), 0.0, history=(("x0", 0),)),))
    with pytest.raises(ValueError, match=f"at most {MAX_HISTORY} history terms"):
        StepCoeffs(ph=(1.0,) * (MAX_HISTORY + 1))
    with pytest.raises(ValueError, match="cannot clip x0"):
        run(lambda x, t: x, lms(Schedule.make("linear"), 4), torch.zeros(1, 2), clip=1.0)


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_four_history_terms_on_every_backend(schedule, backend):
    """PNDM's Runge-Kutta step combines four history tensors (the saved x and three outputs) with the new one;
    LMS order 4 three derivatives: both loops give the oracle's result on the compiled backends."""
    if backend not in fd.available_backends() and not (backend == "triton" and _triton_on_cpu()):
        pytest.skip(f"backend {backend!r} is not available here")
    x_T = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    # PNDM's first Runge-Kutta step (its 4th call takes 4 history terms), LMS's first steps up to order 4
    for full, n in ((pndm(schedule, 4), 4), (lms(schedule, 6), 5)):
        smp = replace(full, steps=full.steps[:n])
        assert max(len(st.history) for st in smp.steps) == (4 if smp.name == "pndm" else 3)
        model = exact_model(smp)
        want = run(model, smp, x_T, backend="torch").sample
        got = run(model, smp, x_T, backend=backend).sample
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


def _triton_on_cpu() -> bool:
    import os

    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.parametrize(
    "fn, kw",
    [
        (kd.sample_euler, {"s_churn": 2.0}),
        (kd.sample_heun, {"s_churn": 2.0}),
        (kd.sample_dpm_2, {"s_churn": 2.0}),
        (kd.sample_euler_ancestral, {}),
        (kd.sample_dpm_2_ancestral, {}),
        (kd.sample_dpmpp_2s_ancestral, {}),
        (kd.sample_dpmpp_sde, {}),
        (kd.sample_dpmpp_2m_sde, {}),
        (kd.sample_dpmpp_3m_sde, {}),
        (kd.sample_dpmpp, {"eta": 0.5}),
        (kd.sample_ddim, {"eta": 0.7}),
        (kd.sample_ddpm, {}),
        (kd.sample_flow_euler, {"stochastic": True}),
    ],
)
def test_every_stochastic_kstyle_function_draws_from_noise_sampler(fn, kw):
    """All the noise of a stochastic k-style function comes from `noise_sampler(sigma, sigma_next)`, asked with
    levels of the ladder in decreasing order: zero noise makes it independent of every RNG."""
    sigmas = (
        torch.tensor([0.9, 0.6, 0.3, 0.1, 0.0])
        if fn is kd.sample_flow_euler
        else torch.tensor([8.0, 3.0, 1.0, 0.3, 0.0])
    )
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    asked = []

    def zeros(sigma, sigma_next):
        asked.append((float(sigma), float(sigma_next)))
        return torch.zeros_like(x)

    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        outs.append(fn(_denoiser, x, sigmas, disable=True, noise_sampler=zeros, **kw))
    assert torch.equal(outs[0], outs[1]) and asked
    top = float(sigmas[0]) * (1 + 1e-12)
    assert all(0.0 <= s_next < s <= top for s, s_next in asked)
