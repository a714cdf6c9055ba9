"""Each native sampler equals the matching diffusers scheduler over whole loops (float32, <= 1e-5 relative).

Both loops run the same deterministic fake model (a nonlinear function of its input and of the timestep
it is given, so a wrong timestep, input scaling or noise level shows) from the same x_T, and stochastic
samplers draw from identically seeded generators. The native schedule is built from the scheduler's own
float32 alphas_cumprod (`Schedule.from_alphas_cumprod`) so that float32-vs-float64 schedule rounding does
not mask or fake a difference; tests/test_schedule.py checks the float64 schedules against diffusers.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastdiff.samplers import (
    ddim,
    ddpm,
    deis,
    dpm_2,
    dpm_singlestep,
    dpmpp,
    dpmpp_sde,
    edm_dpmpp,
    edm_euler,
    euler,
    euler_ancestral,
    flow_euler,
    heun,
    lcm,
    lms,
    pndm,
    sample,
    tcd,
    unipc,
)
from fastdiff.schedule import Schedule

diffusers = pytest.importorskip("diffusers")

RTOL = 1e-5
SHAPE = (2, 3, 8)
BACKEND = "torch"


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Deterministic, nonlinear in x and dependent on t: any mismatch of inputs shows in the output."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *([1] * (x.dim() - 1)))
    return 0.3 * x + 0.2 * torch.sin(3.0 * x + t / 300.0) + 0.05 * torch.cos(t / 100.0)


def fake_flow_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -0.7 * x + fake_model(x, t) - 0.3 * x


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1234))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.isfinite(want).all()
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


def diffusers_loop(sched, n, x, *, model=fake_model, seed=None, set_kw=None, step_kw=None):
    sched.set_timesteps(n, **(set_kw or {}))
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    x = x * getattr(sched, "init_noise_sigma", 1.0)
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        out = model(x_in, t.expand(x.shape[0]))
        kw = dict(step_kw or {})
        if gen is not None:
            kw["generator"] = gen
        x = sched.step(out, t, x, **kw).prev_sample
    return x


def native_loop(smp, noise, d_sched=None, *, model=fake_model, seed=None, clip=None):
    # diffusers starts from noise * its init_noise_sigma; the native loop from x_T * smp.init_noise_sigma
    x_T = noise if d_sched is None else noise * float(d_sched.init_noise_sigma) / smp.init_noise_sigma
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return sample(model, smp, x_T, clip=clip, generator=gen, progress=False, backend=BACKEND).sample


PTYPES = ("epsilon", "sample", "v_prediction")


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize(
    "spacing, offset, n",
    [("leading", 0, 10), ("leading", 1, 7), ("trailing", 0, 10), ("trailing", 0, 20)],
)
@pytest.mark.parametrize("config", ["plain", "clip", "threshold", "no_alpha_one", "zero_snr"])
def test_ddim(noise, prediction_type, spacing, offset, n, config):
    kw = dict(prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=offset, clip_sample=False)
    clip = None
    if config == "clip":
        kw.update(clip_sample=True, clip_sample_range=0.8)
        clip = 0.8
    elif config == "threshold":
        kw.update(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5)
        from fastdiff import DynamicThreshold

        clip = DynamicThreshold(0.9, 1.5)
    elif config == "no_alpha_one":
        kw.update(set_alpha_to_one=False)
    elif config == "zero_snr":
        if prediction_type == "epsilon":
            pytest.skip("epsilon cannot be read at zero terminal SNR (sigma = 1, alpha = 0)")
        kw.update(rescale_betas_zero_snr=True)
    d = diffusers.DDIMScheduler(**kw)
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, n, noise)
    smp = ddim(s, n, prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=offset,
               set_alpha_to_one=config != "no_alpha_one")  # fmt: skip
    assert rel_err(native_loop(smp, noise, clip=clip), want) <= RTOL


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize("eta, clipped_output", [(0.5, False), (1.0, True), (0.3, True)])
def test_ddim_eta(noise, prediction_type, eta, clipped_output):
    d = diffusers.DDIMScheduler(prediction_type=prediction_type, clip_sample=True, clip_sample_range=0.5)
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, 10, noise, seed=7, step_kw=dict(eta=eta, use_clipped_model_output=clipped_output))
    smp = ddim(s, 10, prediction_type=prediction_type, eta=eta, use_clipped_model_output=clipped_output)
    assert rel_err(native_loop(smp, noise, seed=7, clip=0.5), want) <= RTOL


def test_ddim_linspace_quirk(noise):
    """diffusers' DDIMScheduler steps to t - T // n; for linspace spacing that is not the next timestep.

    The native DDIM steps to the next timestep of its list, like diffusers' DDPMScheduler: so DDIM with
    eta = 1 and use_clipped_model_output equals diffusers' DDPM (fixed_small) on linspace spacing, while
    diffusers' own DDIM does not.
    """
    kw = dict(timestep_spacing="linspace", clip_sample=True)
    d_ddpm = diffusers.DDPMScheduler(**kw)
    s = Schedule.from_alphas_cumprod(d_ddpm.alphas_cumprod)
    want = diffusers_loop(d_ddpm, 10, noise, seed=3)
    smp = ddim(s, 10, timestep_spacing="linspace", eta=1.0, use_clipped_model_output=True)
    assert rel_err(native_loop(smp, noise, seed=3, clip=1.0), want) <= RTOL
    d_ddim = diffusers.DDIMScheduler(**kw)
    d_ddim.set_timesteps(10)
    t0 = int(d_ddim.timesteps[0])
    assert t0 - 1000 // 10 != int(d_ddim.timesteps[1])  # the quirk itself: 999 - 100 = 899, next is 888


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large"])
@pytest.mark.parametrize("spacing, offset", [("leading", 1), ("trailing", 0), ("linspace", 0)])
def test_ddpm(noise, prediction_type, variance_type, spacing, offset):
    d = diffusers.DDPMScheduler(prediction_type=prediction_type, variance_type=variance_type,
                                timestep_spacing=spacing, steps_offset=offset)  # fmt: skip
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, 12, noise, seed=11)
    smp = ddpm(s, 12, prediction_type=prediction_type, variance_type=variance_type, timestep_spacing=spacing,
               steps_offset=offset)  # fmt: skip
    assert rel_err(native_loop(smp, noise, seed=11, clip=1.0), want) <= RTOL


def test_ddpm_fixed_large_log_quirk():
    """diffusers' `fixed_large_log` step takes sqrt(log(beta)): NaN. The native std is sqrt(beta), its meaning."""
    d = diffusers.DDPMScheduler(variance_type="fixed_large_log")
    d.set_timesteps(10)
    x = torch.randn(1, 4)
    t = d.timesteps[0]
    assert torch.isnan(d.step(fake_model(x, t), t, x).prev_sample).all()
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    c = ddpm(s, 10, variance_type="fixed_large_log").steps[0].coeffs
    beta = 1 - float(d.alphas_cumprod[int(t)] / d.alphas_cumprod[int(d.timesteps[1])])
    assert math.isclose(c.pn, math.sqrt(beta), rel_tol=1e-6)


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("ladder", [None, "karras", "exponential", "beta"])
def test_euler(noise, prediction_type, spacing, ladder):
    d = diffusers.EulerDiscreteScheduler(
        prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0,
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        use_karras_sigmas=ladder == "karras", use_exponential_sigmas=ladder == "exponential",
        use_beta_sigmas=ladder == "beta",
    )  # fmt: skip
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, 10, noise)
    smp = euler(s, 10, prediction_type=prediction_type, timestep_spacing=spacing, sigma_schedule=ladder,
                steps_offset=1 if spacing == "leading" else 0)  # fmt: skip
    assert rel_err(native_loop(smp, noise, d), want) <= RTOL


@pytest.mark.parametrize(
    "kw, native_kw, step_kw",
    [
        (dict(final_sigmas_type="sigma_min"), dict(final_sigmas_type="sigma_min"), {}),
        (dict(use_karras_sigmas=True, sigma_min=0.1, sigma_max=10.0),
         dict(sigma_schedule="karras", sigma_min=0.1, sigma_max=10.0), {}),
        (dict(prediction_type="v_prediction", timestep_type="continuous"),
         dict(prediction_type="v_prediction", timestep_type="continuous"), {}),
        (dict(prediction_type="v_prediction", rescale_betas_zero_snr=True),
         dict(prediction_type="v_prediction"), {}),
        ({}, dict(s_churn=2.0, s_noise=1.003), dict(s_churn=2.0, s_noise=1.003)),
        (dict(prediction_type="v_prediction"),
         dict(prediction_type="v_prediction", s_churn=1.0, s_tmin=0.5, s_tmax=5.0),
         dict(s_churn=1.0, s_tmin=0.5, s_tmax=5.0)),
    ],
)  # fmt: skip
def test_euler_options(noise, kw, native_kw, step_kw):
    d = diffusers.EulerDiscreteScheduler(**kw)
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, 10, noise, seed=5, step_kw=step_kw)
    smp = euler(s, 10, **native_kw)
    assert rel_err(native_loop(smp, noise, d, seed=5), want) <= RTOL


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_euler_ancestral(noise, prediction_type, spacing):
    d = diffusers.EulerAncestralDiscreteScheduler(prediction_type=prediction_type, timestep_spacing=spacing)
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, 10, noise, seed=9)
    smp = euler_ancestral(s, 10, prediction_type=prediction_type, timestep_spacing=spacing)
    assert rel_err(native_loop(smp, noise, d, seed=9), want) <= RTOL


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
@pytest.mark.parametrize("ladder", [None, "karras"])
def test_heun(noise, prediction_type, spacing, ladder):
    d = diffusers.HeunDiscreteScheduler(
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        use_karras_sigmas=ladder == "karras",
        clip_sample=True,
        clip_sample_range=2.0,
    )
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, 8, noise)
    smp = heun(s, 8, prediction_type=prediction_type, timestep_spacing=spacing, sigma_schedule=ladder)
    assert len(smp.steps) == len(d.timesteps) == 2 * 8 - 1  # model calls
    assert rel_err(native_loop(smp, noise, d, clip=2.0), want) <= RTOL


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize(
    "kw, native_kw, set_kw",
    [
        ({}, {}, {}),
        (dict(shift=3.0), dict(shift=3.0), {}),
        (dict(use_dynamic_shifting=True), dict(mu=0.8), dict(mu=0.8)),
        (dict(use_dynamic_shifting=True, time_shift_type="linear"), dict(mu=1.3, time_shift_type="linear"),
         dict(mu=1.3)),
        (dict(shift=2.0, shift_terminal=0.05), dict(shift=2.0, shift_terminal=0.05), {}),
        (dict(shift=3.0, use_karras_sigmas=True), dict(shift=3.0, sigma_schedule="karras"), {}),
        (dict(shift=3.0, use_exponential_sigmas=True), dict(shift=3.0, sigma_schedule="exponential"), {}),
    ],
)  # fmt: skip
def test_flow_euler(noise, stochastic, kw, native_kw, set_kw):
    d = diffusers.FlowMatchEulerDiscreteScheduler(stochastic_sampling=stochastic, **kw)
    want = diffusers_loop(d, 10, noise, model=fake_flow_model, seed=13, set_kw=set_kw)
    smp = flow_euler(10, stochastic=stochastic, **native_kw)
    assert rel_err(native_loop(smp, noise, model=fake_flow_model, seed=13), want) <= RTOL


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("n", [8, 20])
def test_dpmpp(noise, order, sde, solver_type, n):
    if sde and order == 3:
        pytest.skip("diffusers' 3rd-order SDE update differs from k-diffusion's dpmpp_3m_sde (test_samplers.py)")
    d = diffusers.DPMSolverMultistepScheduler(
        solver_order=order, algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++", solver_type=solver_type
    )
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, n, noise, seed=17)
    smp = dpmpp(s, n, solver_order=order, sde=sde, solver_type=solver_type)
    assert rel_err(native_loop(smp, noise, seed=17), want) <= RTOL


# diffusers casts DPM-Solver's model times to int64: rounded for karras / lu ladders (not for cosine
# schedules), truncated otherwise. The native sampler rounds (`round_timesteps`) or keeps them fractional;
# "trunc" cases compare fractional native times fed to a model that truncates them, as diffusers does.
@pytest.mark.parametrize(
    "kw, native_kw, trunc",
    [
        (dict(use_karras_sigmas=True), dict(sigma_schedule="karras"), False),
        (dict(use_exponential_sigmas=True), dict(sigma_schedule="exponential", round_timesteps=False), True),
        (dict(use_beta_sigmas=True), dict(sigma_schedule="beta", round_timesteps=False), True),
        (dict(use_lu_lambdas=True), dict(use_lu_lambdas=True), False),
        (dict(prediction_type="v_prediction", timestep_spacing="trailing"),
         dict(prediction_type="v_prediction", timestep_spacing="trailing"), False),
        (dict(prediction_type="sample", timestep_spacing="leading", steps_offset=1, thresholding=True),
         dict(prediction_type="sample", timestep_spacing="leading", steps_offset=1), False),
        (dict(final_sigmas_type="sigma_min", lower_order_final=False),
         dict(final_sigmas_type="sigma_min", lower_order_final=False), False),
        (dict(euler_at_final=True), dict(euler_at_final=True), False),
        (dict(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1), dict(lambda_min_clipped=-5.1), False),
        (dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"), dict(prediction_type="v_prediction"),
         False),
    ],
)  # fmt: skip
@pytest.mark.parametrize("n", [10, 25])
def test_dpmpp_options(noise, kw, native_kw, trunc, n):
    d = diffusers.DPMSolverMultistepScheduler(solver_order=3, **kw)
    s = Schedule.from_alphas_cumprod(d.alphas_cumprod)
    want = diffusers_loop(d, n, noise)
    smp = dpmpp(s, n, solver_order=3, **native_kw)
    times = [math.trunc(t) for t in smp.model_times] if trunc else smp.model_times
    assert [float(t) for t in d.timesteps] == times
    clip = None
    if kw.get("thresholding"):
        from fastdiff import DynamicThreshold

        clip = DynamicThreshold(0.995, 1.0)
    model = (lambda x, t: fake_model(x, t.trunc())) if trunc else fake_model
    assert rel_err(native_loop(smp, noise, clip=clip, model=model), want) <= RTOL


def test_dpmpp_flow_sigmas(noise):
    """DPM-Solver++ on the flow path. diffusers casts the flow model times sigma * T to int64; the fake model
    sees those, so the native model times are floored for the comparison (the native convention keeps them)."""
    d = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction")
    want = diffusers_loop(d, 12, noise, model=fake_flow_model)
    smp = dpmpp(None, 12, use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow")
    assert [float(t) for t in d.timesteps] == [math.floor(t) for t in smp.model_times]
    floored = lambda x, t: fake_flow_model(x, t.floor())  # noqa: E731
    assert rel_err(native_loop(smp, noise, model=floored), want) <= RTOL


# --------------------------------------------------------------------------------------------------
# the samplers of issue 17: native loops against the diffusers schedulers' loops (float32)

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


@pytest.mark.parametrize(
    "kw",
    [
        dict(skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False),  # Stable Diffusion 1.x
        dict(),
        dict(skip_prk_steps=True, prediction_type="v_prediction", timestep_spacing="trailing"),
    ],
)
def test_pndm(noise, kw):
    d = diffusers.PNDMScheduler(**SD, **kw)
    want = diffusers_loop(d, 20, noise)
    smp = pndm(Schedule.from_alphas_cumprod(d.alphas_cumprod), 20, v_combined=True, **kw)
    assert smp.model_times == [int(t) for t in d.timesteps]
    assert rel_err(native_loop(smp, noise), want) <= RTOL


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize("ladder", [None, "karras"])
def test_lms(noise, prediction_type, ladder):
    d = diffusers.LMSDiscreteScheduler(**SD, prediction_type=prediction_type, use_karras_sigmas=ladder == "karras")
    want = diffusers_loop(d, 12, noise)
    smp = lms(
        Schedule.from_alphas_cumprod(d.alphas_cumprod), 12, prediction_type=prediction_type, sigma_schedule=ladder
    )
    assert rel_err(native_loop(smp, noise, d), want) <= RTOL


@pytest.mark.parametrize("ancestral", [False, True])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("ladder", [None, "karras"])
def test_dpm_2(noise, ancestral, prediction_type, ladder):
    cls = diffusers.KDPM2AncestralDiscreteScheduler if ancestral else diffusers.KDPM2DiscreteScheduler
    d = cls(**SD, prediction_type=prediction_type, use_karras_sigmas=ladder == "karras")
    want = diffusers_loop(d, 10, noise, seed=21 if ancestral else None)
    smp = dpm_2(Schedule.from_alphas_cumprod(d.alphas_cumprod), 10, prediction_type=prediction_type,
                ancestral=ancestral, sigma_schedule=ladder)  # fmt: skip
    assert len(smp) == len(d.timesteps) == 19
    assert rel_err(native_loop(smp, noise, d, seed=21 if ancestral else None), want) <= RTOL


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("ladder", [None, "karras"])
def test_dpmpp_sde_without_noise(noise, prediction_type, ladder):
    """DPMSolverSDEScheduler draws from its own Brownian tree; with s_noise = 0 on both sides the two-stage maths,
    the midpoint model times and the input scaling are compared alone (the noise: test_samplers.py)."""
    d = diffusers.DPMSolverSDEScheduler(**SD, prediction_type=prediction_type, use_karras_sigmas=ladder == "karras")
    want = diffusers_loop(d, 10, noise, step_kw=dict(s_noise=0.0))
    smp = dpmpp_sde(Schedule.from_alphas_cumprod(d.alphas_cumprod), 10, prediction_type=prediction_type,
                    sigma_schedule=ladder, s_noise=0.0)  # fmt: skip
    assert rel_err(native_loop(smp, noise, d), want) <= RTOL


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize("n", [1, 4])
def test_lcm(noise, prediction_type, n):
    d = diffusers.LCMScheduler(**SD, prediction_type=prediction_type)
    want = diffusers_loop(d, n, noise, seed=5)
    smp = lcm(Schedule.from_alphas_cumprod(d.alphas_cumprod), n, prediction_type=prediction_type)
    assert rel_err(native_loop(smp, noise, seed=5), want) <= RTOL


@pytest.mark.parametrize("prediction_type", PTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.3])
def test_tcd(noise, prediction_type, gamma):
    d = diffusers.TCDScheduler(**SD, prediction_type=prediction_type)
    want = diffusers_loop(d, 4, noise, seed=5, step_kw=dict(eta=gamma))
    smp = tcd(Schedule.from_alphas_cumprod(d.alphas_cumprod), 4, prediction_type=prediction_type, gamma=gamma)
    assert rel_err(native_loop(smp, noise, seed=5), want) <= RTOL


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("kw", [{}, dict(prediction_type="v_prediction"), dict(use_karras_sigmas=True)])
def test_deis(noise, order, kw):
    d = diffusers.DEISMultistepScheduler(solver_order=order, **kw)
    want = diffusers_loop(d, 12, noise)
    smp = deis(Schedule.from_alphas_cumprod(d.alphas_cumprod), 12, solver_order=order,
               prediction_type=kw.get("prediction_type", "epsilon"),
               sigma_schedule="karras" if kw.get("use_karras_sigmas") else None)  # fmt: skip
    assert [float(t) for t in d.timesteps] == smp.model_times
    assert rel_err(native_loop(smp, noise), want) <= RTOL


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpm_singlestep(noise, order, sde, solver_type):
    if sde and order == 3 and solver_type == "heun":
        pytest.skip(
            "diffusers evaluates the D2 weight (1 - e^{-2h} - 2h) / (2h)^2 - 1/2 in float32, where it cancels (4e-5 "
            "relative on this loop); "
            "the coefficients are compared in float64 in test_coeffs_diffusers_f64.py"
        )
    d = diffusers.DPMSolverSinglestepScheduler(
        solver_order=order, solver_type=solver_type, algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++"
    )
    want = diffusers_loop(d, 11, noise, seed=3 if sde else None)
    smp = dpm_singlestep(Schedule.from_alphas_cumprod(d.alphas_cumprod), 11, solver_order=order, sde=sde,
                         solver_type=solver_type)  # fmt: skip
    assert rel_err(native_loop(smp, noise, seed=3 if sde else None), want) <= RTOL


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize("kw", [{}, dict(prediction_type="v_prediction", use_karras_sigmas=True)])
def test_unipc(noise, order, solver_type, kw):
    d = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=solver_type, final_sigmas_type="sigma_min",
                                          **kw)  # fmt: skip
    want = diffusers_loop(d, 12, noise)
    smp = unipc(Schedule.from_alphas_cumprod(d.alphas_cumprod), 12, solver_order=order, solver_type=solver_type,
                final_sigmas_type="sigma_min", prediction_type=kw.get("prediction_type", "epsilon"),
                sigma_schedule="karras" if kw.get("use_karras_sigmas") else None)  # fmt: skip
    assert [float(t) for t in d.timesteps] == smp.model_times
    assert rel_err(native_loop(smp, noise), want) <= RTOL


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sigma_schedule", ["karras", "exponential"])
def test_edm_euler(noise, prediction_type, sigma_schedule):
    d = diffusers.EDMEulerScheduler(prediction_type=prediction_type, sigma_schedule=sigma_schedule)
    want = diffusers_loop(d, 10, noise)
    smp = edm_euler(10, prediction_type=prediction_type, sigma_schedule=sigma_schedule)
    assert rel_err(native_loop(smp, noise, d), want) <= RTOL


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("kw", [{}, dict(prediction_type="v_prediction", solver_type="heun")])
def test_edm_dpmpp(noise, order, kw):
    d = diffusers.EDMDPMSolverMultistepScheduler(solver_order=order, **kw)
    want = diffusers_loop(d, 10, noise)
    smp = edm_dpmpp(10, solver_order=order, **kw)
    assert rel_err(native_loop(smp, noise, d), want) <= RTOL
