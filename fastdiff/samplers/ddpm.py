"""DDPM ancestral sampling (Ho et al. 2020, eq. 6-7): the posterior q(x_{t'} | x_t, x0) with x0 from the model.

    x' = sqrt(abar') beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar') / (1 - abar_t) x_t + std z
    alpha_t = abar_t / abar',  beta_t = 1 - alpha_t  (t' the next timestep of the loop, abar' = 1 past 0)
    fixed_small: std^2 = (1 - abar') / (1 - abar_t) beta_t (the posterior variance, floored at 1e-20)
    fixed_large: std^2 = beta_t

>>> c = ddpm_coeffs(0.5, 0.8, "epsilon")
>>> round(c.p0, 6), round(c.px, 6), round(c.pn, 6)
(0.67082, 0.316228, 0.387298)
"""

from __future__ import annotations

import math

import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type
from .vp import prev_alphas_cumprod, vp_timesteps

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")
LEARNED_VARIANCE_TYPES = ("learned", "learned_range")


def check_variance_type(variance_type: str) -> str:
    if variance_type in LEARNED_VARIANCE_TYPES:
        raise NotImplementedError(
            f"variance_type={variance_type!r}: a learned variance is a per-element nonlinear function (exp of an "
            "interpolated log-variance) of a second model output, which the affine generic step cannot express; "
            f"supported: {', '.join(VARIANCE_TYPES)}"
        )
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"variance_type={variance_type!r} is not supported; accepted: {', '.join(VARIANCE_TYPES)}")
    return variance_type


def ddpm_coeffs(
    alpha_cumprod_t: float,
    alpha_cumprod_prev: float,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    add_noise: bool = True,
    alpha_t: float | None = None,
) -> StepCoeffs:
    """One DDPM step from abar_t to abar' (module docstring), as diffusers' DDPMScheduler.step.

    `alpha_t`: this step's alpha abar_t / abar' when the caller has it already rounded: diffusers divides
    in float32, and beta_t = 1 - alpha_t magnifies that rounding (1e-4 relative for small beta_t), so the
    drop-in scheduler passes the parent's float32 quotient to land on the parent's result.

    `add_noise` is diffusers' `t > 0`. The `_log` variance types give the same std (computed in log space);
    note that diffusers' own `fixed_large_log` step takes sqrt(log beta) and returns NaN, while this is sqrt(beta).
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "ddpm")
    check_variance_type(variance_type)
    ac_t, ac_prev = float(alpha_cumprod_t), float(alpha_cumprod_prev)
    if not (0.0 <= ac_t < 1.0 and ac_t <= ac_prev <= 1.0):
        raise ValueError(
            f"need 0 <= abar_t <= abar_prev <= 1 and abar_t < 1 (a step towards less noise); "
            f"got abar_t={ac_t}, abar_prev={ac_prev}"
        )
    alpha_t = ac_t / ac_prev if alpha_t is None else float(alpha_t)  # this step's alpha and beta
    beta_t = 1.0 - alpha_t
    p0 = math.sqrt(ac_prev) * beta_t / (1.0 - ac_t)
    px = math.sqrt(alpha_t) * (1.0 - ac_prev) / (1.0 - ac_t)
    std = 0.0
    if add_noise:
        if variance_type.startswith("fixed_small"):
            std = math.sqrt(max((1.0 - ac_prev) / (1.0 - ac_t) * beta_t, 1e-20))
        else:
            std = math.sqrt(beta_t)
    return StepCoeffs.from_prediction(p, math.sqrt(ac_t), math.sqrt(1.0 - ac_t), px=px, p0=p0, pn=std)


def ddpm(
    schedule: Schedule,
    num_inference_steps: int | None = None,
    *,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    timesteps=None,
) -> Sampler:
    """DDPM over the schedule's timesteps (all T by default), spaced and offset as diffusers' DDPMScheduler.

    >>> from fastdiff.schedule import Schedule
    >>> s = ddpm(Schedule.make("linear", 1000), 4)
    >>> s.model_times
    [750, 500, 250, 0]
    """
    check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "ddpm")
    check_variance_type(variance_type)
    ts = vp_timesteps(schedule, num_inference_steps, timestep_spacing, steps_offset, timesteps)
    prev = prev_alphas_cumprod(schedule, ts, 1.0)
    ac, ks = schedule.alphas_cumprod, schedule.karras_sigmas
    steps = tuple(
        PlannedStep(
            coeffs=ddpm_coeffs(float(ac[t]), a_prev, prediction_type, variance_type, add_noise=t > 0),
            model_time=t,
            sigma=float(ks[t]),
            sigma_next=float(ks[ts[i + 1]]) if i + 1 < len(ts) else 0.0,
        )
        for i, (t, a_prev) in enumerate(zip(ts, prev))
    )
    options = dict(variance_type=variance_type, timestep_spacing=timestep_spacing, steps_offset=steps_offset)
    return Sampler("ddpm", prediction_type, steps, 1.0, torch.int64, options)
