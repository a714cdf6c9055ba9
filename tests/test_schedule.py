"""schedule.py against diffusers (its float32 values: within float32 rounding); check_schedule on broken schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdiff import schedule as sch
from fastdiff.samplers import ladders
from fastdiff.schedule import Schedule, check_schedule

diffusers = pytest.importorskip("diffusers")

F32_RTOL = 4e-6  # a few float32 ulps: diffusers computes its schedules in float32


def close_f32(ours: torch.Tensor, theirs, rtol: float = F32_RTOL, atol: float = 0.0) -> None:
    theirs = torch.as_tensor(np.asarray(theirs), dtype=torch.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    torch.testing.assert_close(ours.to(torch.float64), theirs, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------
# betas and alphas_cumprod


@pytest.mark.parametrize(
    "beta_schedule, cls, kw",
    [
        ("linear", "DDPMScheduler", {}),
        ("scaled_linear", "DDPMScheduler", dict(beta_start=0.00085, beta_end=0.012)),
        ("squaredcos_cap_v2", "DDPMScheduler", {}),
        ("sigmoid", "DDPMScheduler", {}),
        ("laplace", "DDPMScheduler", {}),
        ("exp", "HeunDiscreteScheduler", {}),
    ],
)
@pytest.mark.parametrize("T", [1000, 37])
def test_betas_match_diffusers(beta_schedule, cls, kw, T):
    d = getattr(diffusers, cls)(num_train_timesteps=T, beta_schedule=beta_schedule, **kw)
    ours = Schedule.make(beta_schedule, T, **kw)
    assert ours.alphas_cumprod.dtype == torch.float64
    close_f32(ours.betas, d.betas)
    # a cumulative product of T float32 factors (1 - beta, itself rounded): diffusers' rounding grows along t
    # to a few 1e-5 relative (more where beta is near its 0.999 cap)
    close_f32(ours.alphas_cumprod, d.alphas_cumprod, rtol=3e-5, atol=1e-9)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"])
def test_rescale_zero_terminal_snr_matches_diffusers(beta_schedule):
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    kw = dict(beta_start=0.00085, beta_end=0.012) if beta_schedule == "scaled_linear" else {}
    ours = Schedule.make(beta_schedule, rescale_betas_zero_snr=True, **kw)
    # the algorithm: diffusers' function evaluated in float64 gives our betas exactly
    want = rescale_zero_terminal_snr(Schedule.make(beta_schedule, **kw).betas)
    torch.testing.assert_close(ours.betas, want, rtol=1e-12, atol=1e-15)
    # the scheduler's float32 values: 1 - alpha_t cancels in float32, so compare alphas_cumprod (abs. rounding)
    d = diffusers.DDPMScheduler(beta_schedule=beta_schedule, rescale_betas_zero_snr=True, **kw)
    close_f32(ours.alphas_cumprod, d.alphas_cumprod, rtol=1e-5, atol=2e-6)


def test_zero_terminal_snr_is_zero_and_keeps_abar0():
    s = Schedule.make("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True)
    plain = Schedule.make("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012)
    assert float(s.alphas_cumprod[-1]) == 0.0
    assert float(s.alphas_cumprod[0]) == pytest.approx(float(plain.alphas_cumprod[0]), rel=1e-12)
    assert bool((s.alphas_cumprod[1:] <= s.alphas_cumprod[:-1]).all())
    # the Euler-family ladder starts at diffusers' finite stand-in sigma for abar_T = 0 (abar_T := 2^-24)
    assert float(ladders.train_sigmas(s)[-1]) == pytest.approx(math.sqrt((1 - 2**-24) / 2**-24))


# --------------------------------------------------------------------------------------------------
# timesteps


@settings(max_examples=40)
@given(
    T=st.integers(2, 1200),
    frac=st.floats(0.0, 1.0),
    spacing=st.sampled_from(["leading", "trailing", "linspace"]),
    offset=st.integers(0, 1),
)
def test_timesteps_match_ddpm_and_euler(T, frac, spacing, offset):
    n = max(1, round(frac * T))
    if spacing == "leading" and (T // n) * (n - 1) + offset >= T:
        offset = 0  # diffusers would index past the schedule
    d = diffusers.DDPMScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
    d.set_timesteps(n)
    ours = sch.timesteps(T, n, spacing, offset)
    assert ours.dtype == torch.int64 and ours.tolist() == d.timesteps.tolist()
    e = diffusers.EulerDiscreteScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
    e.set_timesteps(n)
    close_f32(sch.timesteps(T, n, spacing, offset, rounded=False), e.timesteps, rtol=1e-6)


@settings(max_examples=40)
@given(
    T=st.integers(20, 1200),
    frac=st.floats(0.0, 0.5),
    spacing=st.sampled_from(["leading", "trailing", "linspace"]),
    offset=st.integers(0, 1),
)
def test_solver_timesteps_match_dpm_solver(T, frac, spacing, offset):
    n = max(1, round(frac * T))
    d = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset)
    d.set_timesteps(n)
    assert sch.solver_timesteps(T, n, spacing, offset).tolist() == d.timesteps.tolist()


def test_solver_timesteps_lambda_min_clipped():
    d = diffusers.DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1)
    d.set_timesteps(20)
    times, _ = ladders.solver_ladder(Schedule.make("squaredcos_cap_v2"), 20, lambda_min_clipped=-5.1)
    assert times.tolist() == d.timesteps.tolist()
    assert int(times[0]) < 999  # the clipped end


def test_timesteps_errors():
    with pytest.raises(ValueError, match="num_inference_steps=11 is larger than num_train_timesteps=10"):
        sch.timesteps(10, 11)
    with pytest.raises(ValueError, match="timestep_spacing='log'"):
        sch.timesteps(10, 5, "log")
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        sch.timesteps(10, 0)


# --------------------------------------------------------------------------------------------------
# sigma ladders


@pytest.mark.parametrize("ladder, flag", [("karras", "use_karras_sigmas"), ("exponential", "use_exponential_sigmas"),
                                          ("beta", "use_beta_sigmas"), (None, None)])  # fmt: skip
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("n", [4, 25])
def test_euler_ladder_matches_diffusers(ladder, flag, spacing, n):
    kw = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing=spacing)
    if flag:
        kw[flag] = True
    d = diffusers.EulerDiscreteScheduler(**kw)
    d.set_timesteps(n)
    times, sigmas = ladders.euler_ladder(
        Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), n, timestep_spacing=spacing,
        sigma_schedule=ladder,
    )  # fmt: skip
    close_f32(sigmas, d.sigmas, rtol=2e-5)  # float64 schedule vs diffusers' float32 one
    close_f32(times, d.timesteps, rtol=2e-5, atol=2e-4)


def test_karras_and_exponential_formulas():
    s = sch.karras_sigmas(0.02, 80.0, 10, rho=7.0)
    assert float(s[0]) == pytest.approx(80.0) and float(s[-1]) == pytest.approx(0.02)
    inv = s ** (1 / 7)
    torch.testing.assert_close(inv[1:] - inv[:-1], torch.full((9,), float(inv[1] - inv[0]), dtype=torch.float64))
    e = sch.exponential_sigmas(0.02, 80.0, 10)
    torch.testing.assert_close(e[1:] / e[:-1], torch.full((9,), float(e[1] / e[0]), dtype=torch.float64))


@settings(max_examples=25)
@given(sigma=st.floats(0.03, 14.0))  # inside the training range [0.0292, 14.61]
def test_sigma_to_timestep_inverts_interpolation(sigma):
    s = Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = sch.sigma_to_timestep(torch.tensor([sigma], dtype=torch.float64), s)
    log_sig = s.karras_sigmas.log().numpy()
    back = math.exp(np.interp(float(t[0]), np.arange(1000), log_sig))
    assert back == pytest.approx(sigma, rel=1e-9)


@pytest.mark.parametrize(
    "kw, ours_kw, set_kw",
    [
        ({}, {}, {}),
        (dict(shift=3.0), dict(shift=3.0), {}),
        (dict(shift=3.0, shift_terminal=0.02), dict(shift=3.0, shift_terminal=0.02), {}),
        (dict(use_dynamic_shifting=True), dict(mu=0.7), dict(mu=0.7)),
        (dict(use_dynamic_shifting=True, time_shift_type="linear"), dict(mu=1.2, time_shift_type="linear"),
         dict(mu=1.2)),
    ],
)  # fmt: skip
@pytest.mark.parametrize("n", [1, 7, 28])
def test_flow_sigmas_match_diffusers(kw, ours_kw, set_kw, n):
    if n == 1 and "shift_terminal" in kw:
        with pytest.raises(ValueError, match="shift_terminal needs num_inference_steps >= 2"):
            sch.flow_sigmas(n, 1000, **ours_kw)
        return  # (diffusers returns NaN there)
    d = diffusers.FlowMatchEulerDiscreteScheduler(**kw)
    d.set_timesteps(n, **set_kw)
    ours = sch.flow_sigmas(n, 1000, **ours_kw)
    close_f32(ours, d.sigmas, rtol=1e-6, atol=1e-7)
    assert float(ours[-1]) == 0.0


def test_calculate_shift_is_linear():
    assert sch.calculate_shift(256) == pytest.approx(0.5) and sch.calculate_shift(4096) == pytest.approx(1.15)
    assert sch.calculate_shift(2176) == pytest.approx(0.825)


# --------------------------------------------------------------------------------------------------
# check_schedule (report 000, hypothesis F)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_check_schedule_accepts_standard_schedules(name):
    r = check_schedule(Schedule.make(name))
    assert r.ok, str(r)


def test_check_schedule_catches_broken_schedules():
    ac = Schedule.make("linear").alphas_cumprod.clone()
    nan = ac.clone()
    nan[500] = math.nan
    r = check_schedule(nan)
    assert not r.ok and "non-finite" in str(r) and "t=500" in str(r)

    bumpy = ac.clone()
    bumpy[300] = bumpy[299] * 1.01
    r = check_schedule(bumpy)
    assert not r.ok and "not decreasing" in str(r) and "t=300" in str(r)

    r = check_schedule(ac[200:])  # starts already noisy: abar_0 = 0.67
    assert not r.ok and "alphas_cumprod[0]" in str(r)

    r = check_schedule(Schedule.make("linear", 1000, beta_end=0.002))  # terminal SNR too high
    assert not r.ok and "terminal SNR" in str(r) and r.evidence["terminal_snr"] > 0.01

    r = check_schedule(ac * 1.5)
    assert not r.ok and "leaves [0, 1]" in str(r)

    r = check_schedule(torch.tensor([], dtype=torch.float64))
    assert not r.ok and "empty" in str(r)


def test_schedule_construction_errors():
    with pytest.raises(ValueError, match="beta_schedule='cosine' is not supported"):
        Schedule.make("cosine")
    with pytest.raises(ValueError, match="num_train_timesteps must be an integer >= 1"):
        Schedule.make("linear", 0)
    with pytest.raises(ValueError, match="timestep 1000 is not in the schedule"):
        Schedule.make("linear").check_timestep(1000)
    with pytest.raises(ValueError, match="shift must be > 0"):
        sch.shift_sigmas(torch.tensor([0.5]), 0.0)
    with pytest.raises(ValueError, match="shift_terminal must be in"):
        sch.flow_sigmas(5, shift_terminal=1.5)


def test_add_noise_is_the_forward_process():
    s = Schedule.make("linear")
    x0, eps = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    want = s.alpha[t][:, None] * x0 + s.sigma[t][:, None] * eps
    torch.testing.assert_close(s.add_noise(x0, eps, t), want)
    torch.testing.assert_close(s.alpha**2 + s.sigma**2, torch.ones(1000, dtype=torch.float64))
