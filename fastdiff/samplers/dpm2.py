"""DPM-Solver-2 steps on the VE probability-flow ODE (Lu et al. 2022, "DPM-Solver", alg. 1 with r = 1/2), as
k-diffusion's sample_dpm_2 / sample_dpm_2_ancestral (Crowson) and diffusers' KDPM2(Ancestral)DiscreteScheduler.

A step from sigma to sigma_to evaluates the derivative d = (x - x0) / sigma at sigma and at the geometric
midpoint sigma_mid = exp((log sigma + log sigma_to) / 2), and uses the midpoint's (the midpoint method in
log sigma, which is DPM-Solver-2 in the data-prediction form of the VE ODE):

    stage 1   x_mid = x + (sigma_mid - sigma) d(x, sigma)                      (an Euler step: `euler_coeffs`)
    stage 2   x'    = x + (sigma_to - sigma) d(x_mid, sigma_mid)  [+ sigma_up z]

Stage 2 is one generic step on x_mid with the saved x as its history term. The ancestral variant steps to
sigma_to = sigma_down and adds noise of std sigma_up (`euler.ancestral_step`); a step into sigma_to = 0 is a
plain Euler step.

>>> c = dpm2_correction_coeffs(4.0, 2.0, 1.0, "sample")    # x' = x_saved + (1 - 4) (x_mid - x0) / 2
>>> c.ph, c.pe, c.ex
((1.0,), -3.0, 0.5)
"""

from __future__ import annotations

import math

import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .euler import _check_sigmas, ancestral_step, euler_coeffs
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps, read_ve


def dpm2_midpoint(sigma: float, sigma_to: float) -> float:
    """exp of the midpoint of log sigma and log sigma_to, rounded as torch's lerp(log sigma, log sigma_to, 0.5)."""
    a, b = math.log(sigma), math.log(sigma_to)
    return math.exp(b - (b - a) * 0.5)


def dpm2_correction_coeffs(
    sigma: float,
    sigma_mid: float,
    sigma_to: float,
    prediction_type: str = "epsilon",
    sigma_up: float = 0.0,
    s_noise: float = 1.0,
) -> StepCoeffs:
    """Stage 2 (module docstring): x is x_mid at sigma_mid, history[0] the saved x at sigma; x' at sigma_to."""
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpm_2")
    sigma, sigma_mid = _check_sigmas(sigma, sigma_mid)
    if sigma_mid == 0.0:
        raise ValueError("DPM-Solver-2's second stage needs sigma_mid > 0 (a step into sigma = 0 is an Euler step)")
    m = read_ve(p, sigma_mid)
    return StepCoeffs(
        cx=m.cx,
        co=m.co,
        ex=1.0 / sigma_mid,
        e0=-1.0 / sigma_mid,
        pe=float(sigma_to) - sigma,
        ph=(1.0,),
        pn=float(sigma_up) * s_noise,
    )


def dpm2_plan(
    sigmas: list[float],
    prediction_type: str,
    *,
    ancestral: bool = False,
    eta: float = 1.0,
    s_noise: float = 1.0,
    midpoints: list[float] | None = None,
    ancestral_levels: list[tuple[float, float]] | None = None,
    time_of=None,
    input_scale_of=None,
) -> tuple[list[PlannedStep], list[int]]:
    """The steps of a DPM-2 (ancestral) loop over `sigmas` and the outer step of each: two model calls per step,
    one into sigma = 0 (or sigma_down = 0). `time_of(sigma, i)` / `input_scale_of(sigma)`: the model's time and
    input scale at a level, i its index in `sigmas` or None for an intermediate level (default: sigma itself and
    1, the k-diffusion denoiser convention). The midpoint can coincide with a ladder level (DPM-2 ancestral with
    eta = 1: sqrt(sigma sigma_down) = sigma_next) and still gets its own, intermediate time, as in diffusers.

    `midpoints` / `ancestral_levels` (sigma_down, sigma_up): each step's levels as the caller has them already
    (diffusers' KDPM2 schedulers compute them in float32), instead of `dpm2_midpoint` / `ancestral_step`."""
    time_of = time_of or (lambda s, i=None: s)
    input_scale_of = input_scale_of or (lambda s: 1.0)
    steps, outer = [], []
    for i in range(len(sigmas) - 1):
        s, s_next = _check_sigmas(sigmas[i], sigmas[i + 1])
        if not ancestral:
            down, up = s_next, 0.0
        elif ancestral_levels is not None:
            down, up = (float(v) for v in ancestral_levels[i])
        else:
            down, up = ancestral_step(s, s_next, eta)
        noise_at = (s, s_next) if ancestral else None
        if down == 0.0:
            c = euler_coeffs(s, 0.0, prediction_type)
            steps.append(PlannedStep(c, time_of(s, i), input_scale_of(s), sigma=s, sigma_next=s_next))
            outer.append(i)
            continue
        mid = dpm2_midpoint(s, down) if midpoints is None else float(midpoints[i])
        c1 = euler_coeffs(s, mid, prediction_type)
        c2 = dpm2_correction_coeffs(s, mid, down, prediction_type, up, s_noise)
        steps += two_stages(c1, c2, i, s, mid, s_next, len(steps), time_of, input_scale_of, noise_at)
        outer += [i, i]
    return steps, outer


def two_stages(c1, c2, i, s, mid, s_next, first, time_of, input_scale_of, noise_at) -> list[PlannedStep]:
    """Outer step i of a two-stage sampler (DPM-2, DPM++ 2S a): c1 from level s to the midpoint `mid`, then c2
    from `mid` to s_next reading the sample before the first stage (step `first`) as its history."""
    return [
        PlannedStep(c1, time_of(s, i), input_scale_of(s), sigma=s, sigma_next=mid),
        PlannedStep(
            c2,
            time_of(mid),
            input_scale_of(mid),
            history=(("x", first),),
            sigma=mid,
            sigma_next=s_next,
            noise_at=noise_at,
        ),  # fmt: skip
    ]


def dpm_2(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    ancestral: bool = False,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    s_noise: float = 1.0,
) -> Sampler:
    """DPM-2 (`ancestral=True`: DPM-2 ancestral) over the ladder of diffusers' KDPM2(Ancestral)DiscreteScheduler:
    2n - 1 model calls for n steps; the midpoint calls at the fractional timestep of sigma_mid.

    >>> from fastdiff.schedule import Schedule
    >>> len(dpm_2(Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), 10))
    19
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpm_2")
    check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.euler_ladder(
        schedule,
        num_inference_steps,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        sigma_schedule=sigma_schedule,
    )
    if sigma_schedule == "karras":  # diffusers' KDPM2 rounds these (and only these) timesteps
        times = times.round()
    sig = [float(s) for s in sig]
    time_of = ladders.level_times(times, schedule)

    steps, _ = dpm2_plan(
        sig, p, ancestral=ancestral, s_noise=s_noise, time_of=time_of, input_scale_of=ladders.ve_input_scale
    )
    options = dict(ancestral=ancestral, timestep_spacing=timestep_spacing, sigma_schedule=sigma_schedule)
    name = "dpm_2_ancestral" if ancestral else "dpm_2"
    return Sampler(name, p, tuple(steps), math.sqrt(sig[0] ** 2 + 1.0), torch.float32, options, "ve")
