"""Singlestep DPM-Solver++ (Lu et al. 2022, "DPM-Solver++", alg. 1; "DPM-Solver", alg. 1-2 for the 3rd order):
diffusers' DPMSolverSinglestepScheduler and k-diffusion's DPM++ 2S ancestral.

With lambda = log(alpha / sigma), a singlestep update of order k goes from the sample x_s at the group's start
s_{k-1} to t using the x0 predictions m at s_{k-1}, ..., s_0 (the later ones evaluated on the intermediate
samples of the same group). h = lambda_t - lambda_{s_{k-1}}, h_j = lambda_{s_j} - lambda_{s_{k-1}}, r_j = h_j / h:

    order 1   x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D0
    order 2   ... - 1/2 alpha_t (e^{-h} - 1) D1  (midpoint)  or  + alpha_t ((e^{-h} - 1) / h + 1) D1  (heun)
              D0 = m(s_1), D1 = (m(s_0) - m(s_1)) / r_0
    order 3   ... + alpha_t phi2 D1_1                                                   (midpoint)
              ... + alpha_t phi2 D1 - alpha_t ((e^{-h} - 1 + h) / h^2 - 1/2) D2               (heun)
              D0 = m(s_2), D1_0 = (m(s_1) - D0) / r_1, D1_1 = (m(s_0) - D0) / r_0,  phi2 = (e^{-h} - 1) / h + 1,
              D1 = (r_0 D1_0 - r_1 D1_1) / (r_0 - r_1), D2 = 2 (D1_1 - D1_0) / (r_0 - r_1)

and the "sde-dpmsolver++" forms (e^{-h} x_s scaling, 1 - e^{-2h} weights, + sigma_t sqrt(1 - e^{-2h}) z) as diffusers
writes them. Every term is linear in (x_s, m's, z): one generic step with the saved x_s and the group's
earlier x0s as history.

DPM++ 2S ancestral (k-diffusion's sample_dpmpp_2s_ancestral) is the order-2 singlestep with r = 1/2 on the
VE sample (alpha = 1, t = -log sigma) towards sigma_down, plus ancestral noise sigma_up:

    stage 1   x_2 = (sigma(s) / sigma) x - expm1(-h/2) D,     s = t + h/2, h = -log sigma_down - t
    stage 2   x'  = (sigma_down / sigma) x - expm1(-h) D_2 + sigma_up s_noise z

>>> a, w, n = singlestep_coeffs(0.8, 0.6, [(0.6, 0.8)])          # order 1 = DDIM: x_t = 0.75 x_s + 0.35 m
>>> round(a, 6), [round(v, 6) for v in w], n
(0.75, [0.35], 0.0)
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .dpm2 import two_stages
from .dpmsolver import SOLVER_TYPES
from .euler import _check_sigmas, ancestral_step, euler_coeffs
from .plan import (
    VP_PREDICTION_TYPES,
    PlannedStep,
    Sampler,
    check_prediction_type,
    check_steps,
    read_ve,
    ve_to_vp,
)


def singlestep_coeffs(
    alpha_t: float,
    sigma_t: float,
    points: list[tuple[float, float]],
    *,
    solver_type: str = "midpoint",
    sde: bool = False,
) -> tuple[float, tuple[float, ...], float]:
    """(a, w, n) with x_t = a x_s + sum_j w[j] m_j + n z for one singlestep update (module docstring).

    `points`: (alpha, sigma) of s_{k-1} (the group's start, where x_s was), ..., s_0 (this step), oldest first;
    m_j the x0 predicted at points[j]. The order is len(points) (1 to 3). A step into sigma_t = 0 is x_t = m_0;
    a first-order one over h = 0 (a repeated level) is x_t = x_s.
    """
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type={solver_type!r} is not supported; accepted: {', '.join(SOLVER_TYPES)}")
    k = len(points)
    if not 1 <= k <= 3:
        raise ValueError(f"singlestep DPM-Solver++ has orders 1 to 3; got {k} points")
    if sigma_t == 0.0:
        if k != 1:
            raise ValueError("a singlestep update into sigma = 0 is first order (x_t = x0)")
        return 0.0, (1.0,), 0.0
    lam = [math.log(a) - math.log(s) for a, s in points]
    lam_t = math.log(alpha_t) - math.log(sigma_t)
    alpha_s, sigma_s = points[0]
    h = lam_t - lam[0]
    if h == 0.0:  # a repeated level (e.g. a final sigma_min after a Karras ladder): the zero-length step
        if k != 1:
            raise ValueError("a singlestep update over h = 0 is first order (its divided differences are 0 / 0)")
        return sigma_t / sigma_s, (0.0,), 0.0
    em1 = math.expm1(-h)  # e^{-h} - 1
    if sde:
        a = sigma_t / sigma_s * math.exp(-h)
        c0 = -alpha_t * math.expm1(-2.0 * h)  # alpha_t (1 - e^{-2h})
        c_mid = 0.5 * c0
        c_phi2 = alpha_t * (-math.expm1(-2.0 * h) / (-2.0 * h) + 1.0)
        c_d2 = alpha_t * ((-math.expm1(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5)  # + c_d2 D2 (diffusers' form)
        n = sigma_t * math.sqrt(-math.expm1(-2.0 * h))
    else:
        a = sigma_t / sigma_s
        c0 = -alpha_t * em1
        c_mid = -0.5 * alpha_t * em1
        c_phi2 = alpha_t * (em1 / h + 1.0)
        c_d2 = -alpha_t * ((em1 + h) / h**2 - 0.5)
        n = 0.0
    w = [0.0] * k
    w[0] += c0  # D0 = m at the group's start
    if k == 2:
        r0 = (lam[1] - lam[0]) / h
        c1 = c_mid if solver_type == "midpoint" else c_phi2  # weight of D1 = (m_1 - m_0) / r0
        w[1] += c1 / r0
        w[0] -= c1 / r0
    elif k == 3:
        r1, r0 = (lam[1] - lam[0]) / h, (lam[2] - lam[0]) / h
        # D1_0 = (m_1 - m_0) / r1, D1_1 = (m_2 - m_0) / r0 as weights over (m_0, m_1, m_2)
        d1_0 = (-1.0 / r1, 1.0 / r1, 0.0)
        d1_1 = (-1.0 / r0, 0.0, 1.0 / r0)
        if solver_type == "midpoint":
            terms = [(c_phi2, d1_1)]
        else:
            d1 = tuple((r0 * u - r1 * v) / (r0 - r1) for u, v in zip(d1_0, d1_1))
            d2 = tuple(2.0 * (v - u) / (r0 - r1) for u, v in zip(d1_0, d1_1))
            terms = [(c_phi2, d1), (c_d2, d2)]
        for c, d in terms:
            for j in range(3):
                w[j] += c * d[j]
    return a, tuple(w), n


def singlestep_orders(
    num_steps: int, solver_order: int, *, lower_order_final: bool = True, final_is_zero: bool = True
) -> list[int]:
    """The order of each step of diffusers' DPMSolverSinglestepScheduler (`get_order_list`, with its forcing of
    lower_order_final when the steps do not divide into groups or the final sigma is 0)."""
    if solver_order not in (1, 2, 3):
        raise ValueError(f"solver_order must be 1, 2 or 3; got {solver_order!r}")
    n, k = num_steps, solver_order
    if not lower_order_final and (n % k != 0 or final_is_zero):
        lower_order_final = True
    group = list(range(1, k + 1))
    if not lower_order_final:
        orders = group * (n // k)
    elif k == 3:
        orders = {0: group * (n // 3 - 1) + [1, 2, 1], 1: group * (n // 3) + [1], 2: group * (n // 3) + [1, 2]}[n % 3]
    elif k == 2:
        orders = group * (n // 2 - 1) + [1, 1] if n % 2 == 0 else group * (n // 2) + [1]
    else:
        orders = [1] * n
    if final_is_zero:
        orders[-1] = 1
    return orders


def singlestep_plan(
    sigmas: list[float],
    model_times: list,
    prediction_type: str,
    orders: list[int],
    *,
    solver_type: str = "midpoint",
    sde: bool = False,
    alpha_sigma=ve_to_vp,
) -> list[PlannedStep]:
    """The steps of a singlestep DPM-Solver++ loop over `sigmas` with the given orders (`singlestep_orders`): an
    order-k step goes from the sample of step i - k + 1 (its group's start) with the x0s of steps i - k + 1 .. i."""
    steps = []
    for i, k in enumerate(orders):
        start = i - k + 1
        alpha_t, sigma_t = alpha_sigma(sigmas[i + 1])
        points = [alpha_sigma(sigmas[j]) for j in range(start, i + 1)]
        a, w, noise = singlestep_coeffs(alpha_t, sigma_t, points, solver_type=solver_type, sde=sde)
        read = StepCoeffs.from_prediction(prediction_type, *points[-1])
        if k == 1:
            coeffs = StepCoeffs(cx=read.cx, co=read.co, px=a, p0=w[0], pn=noise)
            history = ()
        else:  # x_t = a x_start + w_0 m_start + ... + w_{k-1} m_now
            coeffs = StepCoeffs(cx=read.cx, co=read.co, p0=w[-1], ph=(a,) + w[:-1], pn=noise)
            history = (("x", start),) + tuple(("x0", j) for j in range(start, i))
        steps.append(PlannedStep(coeffs, model_times[i], history=history, sigma=sigmas[i], sigma_next=sigmas[i + 1]))
    return steps


def dpm_singlestep(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    solver_order: int = 2,
    prediction_type: str = "epsilon",
    sde: bool = False,
    solver_type: str = "midpoint",
    lower_order_final: bool = True,
    sigma_schedule: str | None = None,
    final_sigmas_type: str = "zero",
    lambda_min_clipped: float = -math.inf,
) -> Sampler:
    """Singlestep DPM-Solver++ (`sde=True`: "sde-dpmsolver++") over the ladder of diffusers'
    DPMSolverSinglestepScheduler (linspace timesteps), one model call per timestep.

    >>> from fastdiff.schedule import Schedule
    >>> s = dpm_singlestep(Schedule.make("linear"), 7, solver_order=3)
    >>> [len(st.history) for st in s.steps]
    [0, 2, 3, 0, 2, 3, 0]
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpm_singlestep")
    check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.solver_ladder(
        schedule,
        num_inference_steps,
        sigma_schedule=sigma_schedule,
        final_sigmas_type=final_sigmas_type,
        lambda_min_clipped=lambda_min_clipped,
    )
    sig = [float(s) for s in sig]
    orders = singlestep_orders(
        len(times), solver_order, lower_order_final=lower_order_final, final_is_zero=sig[-1] == 0.0
    )
    steps = singlestep_plan(sig, [float(t) for t in times], p, orders, solver_type=solver_type, sde=sde)
    options = dict(solver_order=solver_order, sde=sde, solver_type=solver_type, sigma_schedule=sigma_schedule)
    return Sampler("dpm_singlestep", p, tuple(steps), 1.0, torch.int64, options)


# --------------------------------------------------------------------------------------------------
# DPM++ 2S ancestral (k-diffusion)


def dpmpp_2s_coeffs(
    sigma: float,
    sigma_down: float,
    prediction_type: str = "sample",
    sigma_up: float = 0.0,
    s_noise: float = 1.0,
) -> tuple[StepCoeffs, StepCoeffs, float]:
    """(stage 1, stage 2, sigma(s)) of one DPM++(2S) step from sigma to sigma_down > 0 (module docstring).

    Stage 2's history: the saved x. The model output is read through `plan.read_ve` at sigma and sigma(s).
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpmpp_2s_ancestral")
    sigma, sigma_down = _check_sigmas(sigma, sigma_down)
    if sigma_down == 0.0:
        raise ValueError("a DPM++(2S) step into sigma = 0 is an Euler step (euler_coeffs)")
    t, t_next = -math.log(sigma), -math.log(sigma_down)
    h = t_next - t
    s = t + 0.5 * h
    sigma_s, sigma_t = math.exp(-s), math.exp(-t)  # sigma_fn(t): k-diffusion divides by exp(log sigma)
    m1, m2 = read_ve(p, sigma), read_ve(p, sigma_s)
    stage1 = StepCoeffs(cx=m1.cx, co=m1.co, px=sigma_s / sigma_t, p0=-math.expm1(-0.5 * h))
    stage2 = StepCoeffs(
        cx=m2.cx, co=m2.co, p0=-math.expm1(-h), ph=(math.exp(-t_next) / sigma_t,), pn=float(sigma_up) * s_noise
    )
    return stage1, stage2, sigma_s


def dpmpp_2s_plan(
    sigmas: list[float],
    prediction_type: str,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    time_of=None,
    input_scale_of=None,
) -> tuple[list[PlannedStep], list[int]]:
    """The steps of a DPM++ 2S ancestral loop over `sigmas` and the outer step of each (`dpm2.dpm2_plan`'s hooks)."""
    time_of = time_of or (lambda s, i=None: s)
    input_scale_of = input_scale_of or (lambda s: 1.0)
    steps, outer = [], []
    for i in range(len(sigmas) - 1):
        s, s_next = _check_sigmas(sigmas[i], sigmas[i + 1])
        down, up = ancestral_step(s, s_next, eta)
        noise_at = (s, s_next) if s_next > 0.0 else None
        up = up if s_next > 0.0 else 0.0
        if down == 0.0:  # Euler into 0, then the ancestral noise (when sigma_next > 0)
            c = replace(euler_coeffs(s, 0.0, prediction_type), pn=up * s_noise)
            steps.append(
                PlannedStep(c, time_of(s, i), input_scale_of(s), sigma=s, sigma_next=s_next, noise_at=noise_at)
            )
            outer.append(i)
            continue
        c1, c2, mid = dpmpp_2s_coeffs(s, down, prediction_type, up, s_noise)
        steps += two_stages(c1, c2, i, s, mid, s_next, len(steps), time_of, input_scale_of, noise_at)
        outer += [i, i]
    return steps, outer


def dpmpp_2s_ancestral(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    eta: float = 1.0,
    s_noise: float = 1.0,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
) -> Sampler:
    """DPM++ 2S ancestral over the ladder of diffusers' EulerDiscreteScheduler (model calls at fractional
    timesteps, input x / sqrt(1 + sigma^2)); stochastic: pass a generator to `sample`.

    >>> from fastdiff.schedule import Schedule
    >>> len(dpmpp_2s_ancestral(Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), 10))
    19
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpmpp_2s_ancestral")
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

    steps, _ = dpmpp_2s_plan(sig, p, eta=eta, s_noise=s_noise, time_of=time_of, input_scale_of=ladders.ve_input_scale)
    options = dict(eta=eta, timestep_spacing=timestep_spacing, sigma_schedule=sigma_schedule)
    return Sampler("dpmpp_2s_ancestral", p, tuple(steps), math.sqrt(sig[0] ** 2 + 1.0), torch.float32, options, "ve")
