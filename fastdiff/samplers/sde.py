"""DPM-Solver++ SDE (Crowson's sample_dpmpp_sde in k-diffusion; diffusers' DPMSolverSDEScheduler): a two-stage
stochastic DPM-Solver++ step on the VE sample x = x0 + sigma eps, with t = -log sigma.

From sigma to sigma_next (t to t_next, h = t_next - t) through s = t + r h, each stage an ancestral
DPM-Solver++(1) step (Lu et al. 2022, "DPM-Solver++", eq. 9 with alpha = 1) whose target level is split
into sigma_down and fresh noise sigma_up (`euler.ancestral_step` with eta):

    stage 1   x_2 = (sigma_d1 / sigma) x - expm1(-(t_d1 - t)) D_1 + sigma_u1 s_noise z_1      into sigma(s)
    stage 2   x'  = (sigma_d2 / sigma) x - expm1(-(t_d2 - t)) ((1 - 1/(2r)) D_1 + 1/(2r) D_2) + sigma_u2 s_noise z_2

D_1 = x0 at (x, sigma), D_2 = x0 at (x_2, sigma(s)); (sigma_d1, sigma_u1) = ancestral_step(sigma, sigma(s), eta),
(sigma_d2, sigma_u2) = ancestral_step(sigma, sigma_next, eta), t_dk = -log sigma_dk. Stage 2 is one generic
step on x_2 with history (the saved x, and D_1 when r != 1/2). diffusers fixes r = 1/2 and eta = 1. A step
into sigma_next = 0 is an Euler step.

k-diffusion draws the two stages' noise from a Brownian tree at (sigma, sigma(s)) and (sigma, sigma_next):
`PlannedStep.noise_at`; `noise.BrownianTreeNoiseSampler`.

>>> c1, c2 = dpmpp_sde_coeffs(2.0, 1.0, eta=0.0)     # eta = 0: DPM-Solver++(2S) with r = 1/2
>>> round(c1.px, 6), round(c1.p0, 6), c2.ph, round(c2.p0, 6)
(0.707107, 0.292893, (0.5,), 0.5)
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .euler import _check_sigmas, ancestral_step, euler_coeffs
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps, read_ve


def sde_midpoint(sigma: float, sigma_next: float, r: float = 0.5) -> float:
    """sigma(s) = exp(-s) with s = t + r (t_next - t), t = -log sigma: the level of stage 2's model call."""
    t, t_next = -math.log(sigma), -math.log(sigma_next)
    return math.exp(-(t + (t_next - t) * r))


def dpmpp_sde_coeffs(
    sigma: float,
    sigma_next: float,
    prediction_type: str = "sample",
    *,
    r: float = 0.5,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> tuple[StepCoeffs, StepCoeffs]:
    """(stage 1, stage 2) of one DPM++ SDE step from sigma to sigma_next > 0 (module docstring).

    Stage 2's history: (the saved x,) and, for r != 1/2, D_1 (the x0 of stage 1) after it. The model output
    is read through `plan.read_ve` at sigma (stage 1) and at sigma(s) (stage 2), as diffusers' scheduler.
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpmpp_sde")
    sigma, sigma_next = _check_sigmas(sigma, sigma_next)
    if sigma_next == 0.0:
        raise ValueError("a DPM++ SDE step into sigma = 0 is an Euler step (euler_coeffs)")
    if not 0.0 < r <= 1.0:
        raise ValueError(f"r must be in (0, 1]; got {r!r}")
    t = -math.log(sigma)
    sigma_s = sde_midpoint(sigma, sigma_next, r)
    fac = 1.0 / (2.0 * r)

    def ancestral(sigma_to: float) -> tuple[float, float, float]:
        down, up = ancestral_step(sigma, sigma_to, eta)
        if down == 0.0:  # eta > 1 can take all of sigma_to as noise: the step lands on the x0 estimate
            return 0.0, 1.0, up * s_noise
        return down / sigma, -math.expm1(t + math.log(down)), up * s_noise  # px, weight of x0, noise std

    m1, m2 = read_ve(p, sigma), read_ve(p, sigma_s)
    px1, w1, n1 = ancestral(sigma_s)
    stage1 = StepCoeffs(cx=m1.cx, co=m1.co, px=px1, p0=w1, pn=n1)
    px2, w2, n2 = ancestral(sigma_next)
    earlier = (w2 * (1.0 - fac),) if fac != 1.0 else ()
    stage2 = StepCoeffs(cx=m2.cx, co=m2.co, p0=w2 * fac, ph=(px2,) + earlier, pn=n2)
    return stage1, stage2


def brownian_correlation(sigma: float, sigma_s: float, sigma_next: float) -> float:
    """Correlation of the two stages' noises when both are increments of one Brownian path W from sigma:
    z_1 ~ W(sigma_s) - W(sigma), z_2 ~ W(sigma_next) - W(sigma) share the part from sigma to sigma_s, so
    corr(z_1, z_2) = sqrt((sigma - sigma_s) / (sigma - sigma_next))."""
    return math.sqrt((sigma - sigma_s) / (sigma - sigma_next))


def dpmpp_sde_plan(
    sigmas: list[float],
    prediction_type: str,
    *,
    r: float = 0.5,
    eta: float = 1.0,
    s_noise: float = 1.0,
    brownian_stages: bool = False,
    time_of=None,
    input_scale_of=None,
) -> tuple[list[PlannedStep], list[int]]:
    """The steps of a DPM++ SDE loop over `sigmas` and the outer step of each (see `dpm2.dpm2_plan` for the
    model-call hooks).

    The method needs the two stages' noises to be increments of one Brownian path (k-diffusion and diffusers
    draw them from a Brownian tree; with independent noises the sample variance is off by O(1/steps), e.g.
    -14% instead of -2% on 20 Karras steps of Gaussian data). With a noise sampler that does this itself (the
    k-style functions) leave `brownian_stages` False; with i.i.d. draws (the native loop's generator) set it:
    stage 2 then takes stage 1's noise as history, z_2 = rho z_1 + sqrt(1 - rho^2) z' (`brownian_correlation`),
    which has the Brownian joint law exactly.
    """
    time_of = time_of or (lambda s, i=None: s)
    input_scale_of = input_scale_of or (lambda s: 1.0)
    steps, outer = [], []
    for i in range(len(sigmas) - 1):
        s, s_next = _check_sigmas(sigmas[i], sigmas[i + 1])
        if s_next == 0.0:
            steps.append(PlannedStep(euler_coeffs(s, 0.0, prediction_type), time_of(s, i), input_scale_of(s), sigma=s,
                                     sigma_next=0.0))  # fmt: skip
            outer.append(i)
            continue
        c1, c2 = dpmpp_sde_coeffs(s, s_next, prediction_type, r=r, eta=eta, s_noise=s_noise)
        mid = sde_midpoint(s, s_next, r)
        # k-diffusion asks for the noise at (sigma_fn(t), sigma_fn(s)) and (sigma_fn(t), sigma_fn(t_next)),
        # sigma_fn(t_fn(sigma)) = exp(log(sigma)) as it rounds
        s_fn = math.exp(math.log(s))
        steps.append(PlannedStep(c1, time_of(s, i), input_scale_of(s), sigma=s, sigma_next=mid, noise_at=(s_fn, mid)))
        first = len(steps) - 1
        history = (("x", first),) + ((("x0", first),) if len(c2.ph) > 1 else ())
        if brownian_stages and c1.pn and c2.pn:
            rho = brownian_correlation(s, mid, s_next)
            c2 = replace(c2, pn=c2.pn * math.sqrt(1.0 - rho * rho), ph=c2.ph + (c2.pn * rho,))
            history += (("z", first),)
        steps.append(
            PlannedStep(
                c2,
                time_of(mid),
                input_scale_of(mid),
                history=history,
                sigma=mid,
                sigma_next=s_next,
                noise_at=(s_fn, math.exp(math.log(s_next))),
            )
        )
        outer += [i, i]
    return steps, outer


def dpmpp_sde(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    s_noise: float = 1.0,
) -> Sampler:
    """DPM++ SDE over the ladder of diffusers' DPMSolverSDEScheduler (r = 1/2, eta = 1): 2n - 1 model calls,
    the second of each step at the fractional timestep of sigma(s). Stochastic: pass a generator to `sample`;
    the two stages' noises are drawn with a Brownian path's correlation (`dpmpp_sde_plan`), as the Brownian
    tree of diffusers and k-diffusion gives them (not the same numbers: a tree draws them differently).

    >>> from fastdiff.schedule import Schedule
    >>> len(dpmpp_sde(Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), 10))
    19
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpmpp_sde")
    check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.euler_ladder(
        schedule,
        num_inference_steps,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        sigma_schedule=sigma_schedule,
    )
    sig = [float(s) for s in sig]
    time_of = ladders.level_times(times, schedule)

    steps, _ = dpmpp_sde_plan(
        sig, p, s_noise=s_noise, brownian_stages=True, time_of=time_of, input_scale_of=ladders.ve_input_scale
    )
    options = dict(timestep_spacing=timestep_spacing, sigma_schedule=sigma_schedule, s_noise=s_noise)
    return Sampler("dpmpp_sde", p, tuple(steps), math.sqrt(sig[0] ** 2 + 1.0), torch.float32, options, "ve")
