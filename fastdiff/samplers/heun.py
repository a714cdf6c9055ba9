"""Heun's second-order method on the VE probability-flow ODE (Karras et al. 2022, alg. 1), two model calls a step.

Stage 1 is an Euler step (`euler_coeffs`) from sigma to sigma_next, saving its input x. Stage 2 evaluates
the model on that Euler sample x_e at sigma_next and averages the two slopes; since x_e = x + dt d1,

    x' = x + dt (d1 + d2) / 2 = (x + x_e) / 2 + dt / 2 * d2,    d2 = (x_e - x0(x_e)) / sigma_next

so the correction is one generic step on x_e with the saved x as its only history tensor. The last step
into sigma = 0 is a plain Euler step (as diffusers and k-diffusion).

>>> c = heun_correction_coeffs(2.0, 1.0, "sample")
>>> c.px, c.ph, c.pe, c.ex
(0.5, (0.5,), -0.5, 1.0)
"""

from __future__ import annotations

import math

import torch

from .. import schedule as sch
from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .euler import _check_sigmas, euler_coeffs
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps, read_ve


def heun_correction_coeffs(sigma: float, sigma_next: float, prediction_type: str = "epsilon") -> StepCoeffs:
    """Heun's second stage: x is the Euler sample at sigma_next, history[0] the saved input at sigma."""
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "heun")
    sigma, sigma_next = _check_sigmas(sigma, sigma_next)
    if sigma_next == 0.0:
        raise ValueError("Heun's correction needs sigma_next > 0 (the step into sigma = 0 is an Euler step)")
    m = read_ve(p, sigma_next)
    dt = sigma_next - sigma
    return StepCoeffs(cx=m.cx, co=m.co, ex=1.0 / sigma_next, e0=-1.0 / sigma_next, px=0.5, pe=0.5 * dt, ph=(0.5,))


def heun(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    sigmas=None,
) -> Sampler:
    """Heun over the ladder of diffusers' HeunDiscreteScheduler: 2n - 1 model calls for n steps."""
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "heun")
    if sigmas is None:
        check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.euler_ladder(
        schedule,
        num_inference_steps,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        sigma_schedule=sigma_schedule,
        sigmas=sigmas,
    )
    # model time of each sigma (the final one too, for a custom ladder that does not end at 0)
    all_times = [float(t) for t in times] + [float(sch.sigma_to_timestep(sig[-1:], schedule)[0])]
    steps = []
    for i in range(len(times)):
        s, s_next = float(sig[i]), float(sig[i + 1])
        second = s_next > 0.0
        steps.append(
            PlannedStep(
                coeffs=euler_coeffs(s, s_next, p),
                model_time=float(times[i]),
                input_scale=1.0 / math.sqrt(s * s + 1.0),
                sigma=s,
                sigma_next=s_next,
            )
        )
        if second:
            steps.append(
                PlannedStep(
                    coeffs=heun_correction_coeffs(s, s_next, p),
                    model_time=all_times[i + 1],
                    input_scale=1.0 / math.sqrt(s_next * s_next + 1.0),
                    history=(("x", len(steps) - 1),),
                    sigma=s_next,
                    sigma_next=s_next,
                )
            )
    options = dict(timestep_spacing=timestep_spacing, sigma_schedule=sigma_schedule)
    return Sampler("heun", p, tuple(steps), math.sqrt(float(sig[0]) ** 2 + 1.0), torch.float32, options, "ve")
