"""Euler and Euler-ancestral steps of the probability-flow ODE in VE form (Karras et al. 2022, eq. 3 and alg. 1).

The sample is x = x0 + sigma eps (the VP sample divided by alpha); the model sees x / sqrt(1 + sigma^2)
and its output is read as x0 by `plan.read_ve`. A step from sigma to sigma_next:

    d  = (x - x0) / sigma                                   (the ODE derivative dx/dsigma)
    x' = x + (sigma_next - sigma) d

Churn (`gamma > 0`, s_churn) raises the noise level to sigma_hat = (1 + gamma) sigma with fresh noise z
first. Two orders of churn and model call exist, and they are not the same method:

    Karras et al. 2022, alg. 2 (k-diffusion's sample_euler, `kdiffusion.sample_euler` here): churn, then call
        the model on x_hat = x + sqrt(sigma_hat^2 - sigma^2) s_noise z at sigma_hat;
    diffusers' EulerDiscreteScheduler.step (`euler_coeffs(gamma=...)`, the native `euler` sampler): the model was
        already called on the un-churned x at sigma; its output is then read as if it belonged to x_hat at
        sigma_hat:  x0 = read(x_hat, out) at sigma_hat,  x' = x_hat + (sigma_next - sigma_hat)(x_hat - x0) / sigma_hat.

With the same noise the two differ by O(gamma): by 38% of the sample's largest value on 12 steps with s_churn = 3
(tests/test_samplers.py, test_native_euler_churn_is_diffusers_variant).

Euler-ancestral steps down to sigma_down and adds noise of std sigma_up
(sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)), sigma_down = sqrt(sigma'^2 - sigma_up^2)):

    x' = x + (sigma_down - sigma) d + sigma_up z

>>> c = euler_coeffs(2.0, 1.0, "sample")     # x0 = out, d = (x - x0) / 2, x' = x - d
>>> c.co, c.ex, c.e0, c.px, c.pe
(1.0, 0.5, -0.5, 1.0, -1.0)
"""

from __future__ import annotations

import math

import torch

from .. import param
from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps, read_ve


def _check_sigmas(sigma: float, sigma_next: float) -> tuple[float, float]:
    sigma, sigma_next = float(sigma), float(sigma_next)
    if not (math.isfinite(sigma) and sigma > 0.0 and math.isfinite(sigma_next) and sigma_next >= 0.0):
        raise ValueError(f"need sigma > 0 and sigma_next >= 0, both finite; got sigma={sigma}, sigma_next={sigma_next}")
    return sigma, sigma_next


def churn_gamma(sigma: float, s_churn: float, num_steps: int, s_tmin: float = 0.0, s_tmax: float = math.inf) -> float:
    """Karras et al.'s gamma_i = min(S_churn / N, sqrt(2) - 1) for sigma in [S_tmin, S_tmax], else 0."""
    return min(s_churn / num_steps, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0


def euler_step(read: param.X0EpsMap, sigma: float, sigma_next: float, churn: float = 0.0) -> StepCoeffs:
    """x_hat = x + churn z;  x0 = read.cx x_hat + read.co out;  x' = x_hat + (sigma_next - sigma) (x_hat - x0c) / sigma.

    `read`: the model output -> x0 map at the level the caller reads it (`plan.read_ve`, `param.edm_precondition`).
    """
    sigma, sigma_next = _check_sigmas(sigma, sigma_next)
    return StepCoeffs(
        cx=read.cx,
        co=read.co,
        cn=read.cx * churn,
        ex=1.0 / sigma,
        e0=-1.0 / sigma,
        en=churn / sigma,
        px=1.0,
        pe=sigma_next - sigma,
        pn=churn,
    )


def euler_coeffs(
    sigma: float,
    sigma_next: float,
    prediction_type: str = "epsilon",
    gamma: float = 0.0,
    s_noise: float = 1.0,
) -> StepCoeffs:
    """One Euler step from sigma to sigma_next, as diffusers' EulerDiscreteScheduler.step (module docstring).

    gamma > 0 is diffusers' churn: the model output was computed at the un-churned x at sigma; epsilon /
    sample outputs are read at sigma_hat and v_prediction at sigma (identical without churn). This is not
    Karras et al.'s algorithm 2, which calls the model after the churn (`kdiffusion.sample_euler`).
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "euler")
    sigma, sigma_next = _check_sigmas(sigma, sigma_next)
    sigma_hat = sigma * (1.0 + gamma)
    churn = math.sqrt(sigma_hat**2 - sigma**2) * s_noise if gamma > 0 else 0.0  # x_hat = x + churn z
    return euler_step(read_ve(p, sigma if p == "v_prediction" else sigma_hat), sigma_hat, sigma_next, churn)


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step (k-diffusion's get_ancestral_step)."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0)), sigma_up


def euler_ancestral_coeffs(
    sigma: float, sigma_next: float, prediction_type: str = "epsilon", eta: float = 1.0, s_noise: float = 1.0
) -> StepCoeffs:
    """One Euler-ancestral step (module docstring), as diffusers' EulerAncestralDiscreteScheduler.step (eta = 1)."""
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "euler_ancestral")
    sigma, sigma_next = _check_sigmas(sigma, sigma_next)
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    m = read_ve(p, sigma)
    return StepCoeffs(
        cx=m.cx, co=m.co, ex=1.0 / sigma, e0=-1.0 / sigma, px=1.0, pe=sigma_down - sigma, pn=sigma_up * s_noise
    )


def _ve_times(model_times: torch.Tensor, sigmas: torch.Tensor, timestep_type: str, prediction_type: str) -> list:
    if timestep_type not in ("discrete", "continuous"):
        raise ValueError(f"timestep_type={timestep_type!r} is not supported; accepted: 'discrete', 'continuous'")
    if timestep_type == "continuous":  # diffusers: only with v_prediction, t = log(sigma) / 4
        if prediction_type != "v_prediction":
            raise ValueError("timestep_type='continuous' is defined for prediction_type='v_prediction' only")
        return [0.25 * math.log(float(s)) for s in sigmas[:-1]]
    return [float(t) for t in model_times]


def euler(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    final_sigmas_type: str = "zero",
    timestep_type: str = "discrete",
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    sigmas=None,
) -> Sampler:
    """Euler over the ladder of diffusers' EulerDiscreteScheduler (karras/exponential/beta via `sigma_schedule`).

    `s_churn`, `s_tmin`, `s_tmax`, `s_noise` are diffusers' EulerDiscreteScheduler.step options with its maths:
    the churn noise is added after the model call (module docstring), which is not Karras et al.'s algorithm 2;
    for that one use `kdiffusion.sample_euler` on `sampler.sigmas`.

    >>> from fastdiff.schedule import Schedule
    >>> s = euler(Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), 10)
    >>> round(s.sigmas[0], 4), s.sigmas[-1]
    (14.6146, 0.0)
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "euler")
    if sigmas is None:
        check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.euler_ladder(
        schedule,
        num_inference_steps,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        sigma_schedule=sigma_schedule,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        final_sigmas_type=final_sigmas_type,
        sigmas=sigmas,
    )
    model_times = _ve_times(times, sig, timestep_type, p)
    n = len(model_times)
    steps = []
    for i in range(n):
        s, s_next = float(sig[i]), float(sig[i + 1])
        gamma = churn_gamma(s, s_churn, n, s_tmin, s_tmax)
        steps.append(
            PlannedStep(
                coeffs=euler_coeffs(s, s_next, p, gamma, s_noise),
                model_time=model_times[i],
                input_scale=1.0 / math.sqrt(s * s + 1.0),
                sigma=s,
                sigma_next=s_next,
            )
        )
    options = dict(
        timestep_spacing=timestep_spacing,
        sigma_schedule=sigma_schedule,
        final_sigmas_type=final_sigmas_type,
        s_churn=s_churn,
    )
    return Sampler("euler", p, tuple(steps), math.sqrt(float(sig[0]) ** 2 + 1.0), torch.float32, options, "ve")


def euler_ancestral(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    eta: float = 1.0,
    s_noise: float = 1.0,
    sigmas=None,
) -> Sampler:
    """Euler-ancestral over the ladder of diffusers' EulerAncestralDiscreteScheduler (stochastic: pass a generator)."""
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "euler_ancestral")
    if sigmas is None:
        check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.euler_ladder(
        schedule, num_inference_steps, timestep_spacing=timestep_spacing, steps_offset=steps_offset, sigmas=sigmas
    )
    steps = tuple(
        PlannedStep(
            coeffs=euler_ancestral_coeffs(float(sig[i]), float(sig[i + 1]), p, eta, s_noise),
            model_time=float(times[i]),
            input_scale=1.0 / math.sqrt(float(sig[i]) ** 2 + 1.0),
            sigma=float(sig[i]),
            sigma_next=float(sig[i + 1]),
        )
        for i in range(len(times))
    )
    options = dict(timestep_spacing=timestep_spacing, eta=eta)
    return Sampler("euler_ancestral", p, steps, math.sqrt(float(sig[0]) ** 2 + 1.0), torch.float32, options, "ve")
