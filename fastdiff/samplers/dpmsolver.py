"""DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", alg. 2 and its 3rd-order form) and SDE-DPM-Solver++.

With lambda = log(alpha / sigma), h = lambda_t - lambda_s, the data-prediction update from s to t is

    x_t = (sigma_t / sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-(1 + eta) h}) D0 + (higher-order terms)
          + sigma_t sqrt(1 - e^{-2 eta h}) s_noise z

eta = 0 is the ODE solver (DPM-Solver++), eta = 1 SDE-DPM-Solver++ (diffusers' "sde-dpmsolver++";
k-diffusion's dpmpp_2m_sde). D0 = x0 now; with earlier x0s m1, m2 at lambda_{s1}, lambda_{s2}
(r0 = (lambda_s - lambda_{s1}) / h, r1 = (lambda_{s1} - lambda_{s2}) / h, hh = (1 + eta) h,
phi2 = (e^{-hh} - 1) / hh + 1, phi3 = phi2 / hh - 1/2):

    2nd order  D1 = (x0 - m1) / r0;  + alpha_t (1 - e^{-hh}) / 2 D1  (midpoint)  or  + alpha_t phi2 D1  (heun)
    3rd order  D1_0 = (x0 - m1) / r0, D1_1 = (m1 - m2) / r1, D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
               D2 = (D1_0 - D1_1) / (r0 + r1);   + alpha_t phi2 D1 - alpha_t phi3 D2

All terms are linear in (x, x0, m1, m2, z): one generic step with the earlier x0s as history. (alpha,
sigma) are the VP coefficients of the VE sigma (alpha = 1 / sqrt(1 + sigma^2)) or the flow path's (1 - s, s).

Orders 1 and 2 ("heun") integrate x0 polynomials of their degree exactly (the exponential integrator).
The 3rd-order update is the published one (DPM-Solver's code, diffusers, k-diffusion): D2 = h^2 x0''/2
gets the weight -phi3, half of the integrator's -2 phi3 (tests/test_samplers.py shows both facts).

`dpm_solver_coeffs` is the noise-prediction form (DPM-Solver, diffusers' "dpmsolver" / "sde-dpmsolver"), with eps
in place of x0 as model output and history.

>>> c = dpmpp_coeffs("sample", 1.0, 2.0, 1.0, 1.0)   # VE form, first order: x' = x / 2 + x0 / 2
>>> c.px, c.p0
(0.5, 0.5)
"""

from __future__ import annotations

import math

import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .plan import (
    FLOW_PREDICTION_TYPES,
    VP_PREDICTION_TYPES,
    PlannedStep,
    Sampler,
    check_prediction_type,
    check_steps,
    ve_to_vp,
)

SOLVER_TYPES = ("midpoint", "heun")


def _lam(alpha: float, sigma: float) -> float:
    return math.log(alpha) - math.log(sigma)


def dpmpp_coeffs(
    prediction_type: str,
    alpha_s: float,
    sigma_s: float,
    alpha_t: float,
    sigma_t: float,
    previous: tuple[tuple[float, float], ...] = (),
    *,
    eta: float = 0.0,
    solver_type: str = "midpoint",
    s_noise: float = 1.0,
    d2_weight: float | None = None,
) -> StepCoeffs:
    """One DPM-Solver++ step from (alpha_s, sigma_s) to (alpha_t, sigma_t) (module docstring).

    `previous`: the (alpha, sigma) at which the history x0s were predicted, most recent first; the order
    is 1 + len(previous) (at most 3). A step into sigma_t = 0 returns x0 (history unused: pass none).
    The x0 is read from the model output at (alpha_s, sigma_s) through `param.py`.

    A repeated noise level is no error (`usable_history`): a step with h = 0 is the zero-length step
    x' = (sigma_t / sigma_s) x, and history from the current level is left out (weight 0).

    `d2_weight`: a 3rd-order step's coefficient of D2 as the caller has it, instead of -alpha_t phi3.
    diffusers' 3rd-order "sde-dpmsolver++" uses alpha_t ((1 - e^{-2h} - 2h) / (2h)^2 - 1/2) (see `dpmpp`),
    in float32, where the O(h^2) cancellation is part of its result: the drop-in scheduler passes that value.
    """
    _check_solver(solver_type, previous)
    if not (eta >= 0.0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0; got {eta!r}")
    read = StepCoeffs.from_prediction(prediction_type, alpha_s, sigma_s)
    if sigma_t == 0.0:
        if previous:
            raise ValueError("a step into sigma = 0 is first order (x' = x0); pass no previous x0s")
        return StepCoeffs(cx=read.cx, co=read.co, p0=1.0)
    lam_s, lam_t = _lam(alpha_s, sigma_s), _lam(alpha_t, sigma_t)
    lams = [_lam(*p) for p in previous]
    h = lam_t - lam_s
    if h == 0.0:  # a zero-length step
        return StepCoeffs(cx=read.cx, co=read.co, px=sigma_t / sigma_s, ph=(0.0,) * len(previous))
    hh = (1.0 + eta) * h
    px = sigma_t / sigma_s * math.exp(-eta * h)
    c0 = -alpha_t * math.expm1(-hh)  # alpha_t (1 - e^{-hh})
    pn = sigma_t * math.sqrt(-math.expm1(-2.0 * eta * h)) * s_noise if eta > 0 else 0.0
    order = 1 + usable_history(lam_s, lams)
    d1 = d2 = 0.0
    if order > 1:
        phi2 = math.expm1(-hh) / hh + 1.0
        if order == 2:
            d1 = 0.5 * c0 if solver_type == "midpoint" else alpha_t * phi2
        else:
            d1 = alpha_t * phi2
            d2 = -alpha_t * (phi2 / hh - 0.5) if d2_weight is None else float(d2_weight)
    p0, ph = multistep_weights(c0, d1, d2, lam_s, lams[: order - 1], h)
    return StepCoeffs(cx=read.cx, co=read.co, px=px, p0=p0, pn=pn, ph=_pad(ph, len(previous)))


def dpm_solver_coeffs(
    prediction_type: str,
    alpha_s: float,
    sigma_s: float,
    alpha_t: float,
    sigma_t: float,
    previous: tuple[tuple[float, float], ...] = (),
    *,
    sde: bool = False,
    solver_type: str = "midpoint",
) -> StepCoeffs:
    """One step of the noise-prediction DPM-Solver (Lu et al. 2022, "DPM-Solver"; diffusers' "dpmsolver", and
    with `sde=True` its "sde-dpmsolver"): the model output read as eps (through `param.py`); history: the
    earlier eps, most recent first. With lambda = log(alpha / sigma), h = lambda_t - lambda_s, k = 2 for the SDE
    form (1 for the ODE):

        x_t = (alpha_t / alpha_s) x - k sigma_t (e^h - 1) D0 + (higher-order terms) + [SDE] sigma_t sqrt(e^{2h} - 1) z
        2nd order  - k sigma_t (e^h - 1) / 2 D1  (midpoint)   or   - k sigma_t ((e^h - 1) / h - 1) D1  (heun)
        3rd order (ODE only)  - sigma_t ((e^h - 1) / h - 1) D1 - sigma_t ((e^h - 1 - h) / h^2 - 1/2) D2

    (D1, D2 as in `multistep_weights`; the ODE updates are DPM-Solver++'s under (alpha, sigma, lambda, x0) ->
    (sigma, alpha, -lambda, eps).) The x term of eps = ex x + eo out is folded into px, in float64: the update
    cancels there (alpha_t / alpha_s ~ 150 after sigma_max, against -sigma_t (e^h - 1) ex). The x0 slot holds the
    model's x0 (for stats). A repeated noise level is handled as in `dpmpp_coeffs`.

    >>> c = dpm_solver_coeffs("epsilon", 0.8, 0.6, 0.6, 0.8)   # first order: the DDIM step
    >>> round(c.px, 6), round(c.pe, 6)
    (0.75, 0.35)
    """
    _check_solver(solver_type, previous)
    if sde and len(previous) == 2:
        raise ValueError("the SDE form of the noise-prediction DPM-Solver has no 3rd-order update (as diffusers)")
    read = StepCoeffs.from_prediction(prediction_type, alpha_s, sigma_s)
    k = 2.0 if sde else 1.0
    lam_s, lam_t = _lam(alpha_s, sigma_s), _lam(alpha_t, sigma_t)
    lams = [_lam(*p) for p in previous]
    h = lam_t - lam_s
    pe = pn = 0.0
    ph: tuple[float, ...] = ()
    if h != 0.0:  # (else a zero-length step)
        h_phi1 = math.expm1(h)  # e^h - 1
        c0 = -k * sigma_t * h_phi1
        pn = sigma_t * math.sqrt(math.expm1(2.0 * h)) if sde else 0.0
        order = 1 + usable_history(lam_s, lams)
        d1 = d2 = 0.0
        if order == 2:
            d1 = 0.5 * c0 if solver_type == "midpoint" else -k * sigma_t * (h_phi1 / h - 1.0)
        elif order == 3:
            d1, d2 = -sigma_t * (h_phi1 / h - 1.0), -sigma_t * ((h_phi1 - h) / h**2 - 0.5)
        pe, ph = multistep_weights(c0, d1, d2, lam_s, lams[: order - 1], h)
    px = alpha_t / alpha_s + pe * read.ex
    return StepCoeffs(cx=read.cx, co=read.co, eo=read.eo, px=px, pe=pe, pn=pn, ph=_pad(ph, len(previous)))


def _check_solver(solver_type: str, previous) -> None:
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type={solver_type!r} is not supported; accepted: {', '.join(SOLVER_TYPES)}")
    if len(previous) > 2:
        raise ValueError(f"DPM-Solver goes up to 3rd order (2 previous model outputs); got {len(previous)} previous")


def usable_history(lam_s: float, lams_prev) -> int:
    """How many of the earlier noise levels (most recent first) a multistep update can use: those before the
    first repeated level (a repeat makes a divided difference 0 / 0; the update drops to the lower order)."""
    chain = [lam_s, *lams_prev]
    return next((k for k in range(1, len(chain)) if chain[k] == chain[k - 1]), len(chain)) - 1


def multistep_weights(c0: float, d1: float, d2: float, lam_s: float, lams_prev, h: float):
    """Weights (w0, (w1, w2)) of the model outputs (m0, m1, m2) in c0 D0 + d1 D1 + d2 D2, the multistep terms:

    D0 = m0,  D1_0 = (m0 - m1) / r0,  r0 = (lambda_s - lambda_1) / h          (2nd order: D1 = D1_0)
    D1_1 = (m1 - m2) / r1,  r1 = (lambda_1 - lambda_2) / h,
    D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1) / (r0 + r1)  (3rd order)
    """
    if not lams_prev:
        return c0, ()
    r0 = (lam_s - lams_prev[0]) / h
    if len(lams_prev) == 1:
        return c0 + d1 / r0, (-d1 / r0,)
    r1 = (lams_prev[0] - lams_prev[1]) / h
    u = d1 * (1.0 + r0 / (r0 + r1)) + d2 / (r0 + r1)  # coefficient of D1_0
    w = -(d1 * r0 + d2) / (r0 + r1)  # coefficient of D1_1
    return c0 + u / r0, (-u / r0 + w / r1, -w / r1)


def _pad(weights: tuple[float, ...], n: int) -> tuple[float, ...]:
    return tuple(weights) + (0.0,) * (n - len(weights))


def solver_orders(
    num_steps: int,
    solver_order: int,
    *,
    lower_order_final: bool = True,
    euler_at_final: bool = False,
    final_is_zero: bool = True,
) -> list[int]:
    """The order of each step of diffusers' DPMSolverMultistepScheduler: warm-up from 1, and lower orders
    at the end (`lower_order_final` for fewer than 15 steps; always first order into sigma = 0)."""
    if solver_order not in (1, 2, 3):
        raise ValueError(f"solver_order must be 1, 2 or 3; got {solver_order!r}")
    orders = []
    for i in range(num_steps):
        last = i == num_steps - 1 and (euler_at_final or (lower_order_final and num_steps < 15) or final_is_zero)
        second_last = i == num_steps - 2 and lower_order_final and num_steps < 15
        warm = min(i, solver_order)  # earlier x0s available
        if solver_order == 1 or warm < 1 or last:
            orders.append(1)
        elif solver_order == 2 or warm < 2 or second_last:
            orders.append(2)
        else:
            orders.append(3)
    return orders


def plan_multistep(
    prediction_type: str,
    model_times: list,
    sigmas: list[float],
    alpha_sigma,
    orders: list[int],
    *,
    eta: float,
    solver_type: str,
    s_noise: float = 1.0,
    input_scales: list[float] | None = None,
) -> list[PlannedStep]:
    """The planned steps of a multistep DPM-Solver++ loop over `sigmas` with the given orders."""
    steps = []
    for i, order in enumerate(orders):
        a_s, s_s = alpha_sigma(sigmas[i])
        a_t, s_t = alpha_sigma(sigmas[i + 1])
        previous = tuple(alpha_sigma(sigmas[i - k]) for k in range(1, order))
        steps.append(
            PlannedStep(
                coeffs=dpmpp_coeffs(
                    prediction_type, a_s, s_s, a_t, s_t, previous, eta=eta, solver_type=solver_type, s_noise=s_noise
                ),
                model_time=model_times[i],
                input_scale=1.0 if input_scales is None else input_scales[i],
                history=tuple(("x0", i - k) for k in range(1, order)),
                sigma=sigmas[i],
                sigma_next=sigmas[i + 1],
            )
        )
    return steps


def flow_alpha_sigma(s: float) -> tuple[float, float]:
    return 1.0 - s, s


def dpmpp(
    schedule: Schedule | None,
    num_inference_steps: int,
    *,
    solver_order: int = 2,
    prediction_type: str = "epsilon",
    sde: bool = False,
    solver_type: str = "midpoint",
    lower_order_final: bool = True,
    euler_at_final: bool = False,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    use_lu_lambdas: bool = False,
    final_sigmas_type: str = "zero",
    lambda_min_clipped: float = -math.inf,
    round_timesteps: bool = True,
    use_flow_sigmas: bool = False,
    flow_shift: float = 1.0,
    num_train_timesteps: int = 1000,
    s_noise: float = 1.0,
) -> Sampler:
    """DPM-Solver++ (1/2/3M; `sde=True`: SDE-DPM-Solver++) over diffusers' DPMSolverMultistepScheduler ladder.

    VP schedule: model(x, t) with integer t. `use_flow_sigmas`: the flow path (schedule may be None),
    model time sigma * num_train_timesteps, prediction types flow/sample/epsilon.

    `sde=True, solver_order=3` is k-diffusion's dpmpp_3m_sde update (-alpha_t phi3 D2 with hh = 2h, the
    analogue of the ODE's). diffusers' 3rd-order "sde-dpmsolver++" differs: its D2 weight
    alpha_t ((1 - e^{-2h} - 2h) / (2h)^2 - 1/2) tends to -alpha_t (not 0) as h -> 0.
    """
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type={solver_type!r} is not supported; accepted: {', '.join(SOLVER_TYPES)}")
    if use_flow_sigmas:
        p = check_prediction_type(prediction_type, FLOW_PREDICTION_TYPES, "dpmpp")
        check_steps(num_inference_steps, num_train_timesteps)
        times, sig = ladders.flow_solver_ladder(
            num_inference_steps, num_train_timesteps=num_train_timesteps, flow_shift=flow_shift
        )
        alpha_sigma, time_dtype = flow_alpha_sigma, torch.float32
    else:
        if schedule is None:
            raise ValueError("sampler 'dpmpp' needs a schedule (or use_flow_sigmas=True for the flow path)")
        p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "dpmpp")
        check_steps(num_inference_steps, schedule.num_train_timesteps)
        times, sig = ladders.solver_ladder(
            schedule,
            num_inference_steps,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
            sigma_schedule=sigma_schedule,
            use_lu_lambdas=use_lu_lambdas,
            final_sigmas_type=final_sigmas_type,
            lambda_min_clipped=lambda_min_clipped,
            round_timesteps=round_timesteps,
        )
        alpha_sigma, time_dtype = ve_to_vp, torch.int64 if round_timesteps or sigma_schedule is None else torch.float32
    sigmas = [float(s) for s in sig]
    orders = solver_orders(
        len(times),
        solver_order,
        lower_order_final=lower_order_final,
        euler_at_final=euler_at_final,
        final_is_zero=sigmas[-1] == 0.0,
    )
    model_times = [float(t) for t in times]
    steps = plan_multistep(
        p,
        model_times,
        sigmas,
        alpha_sigma,
        orders,
        eta=1.0 if sde else 0.0,
        solver_type=solver_type,
        s_noise=s_noise,
    )
    options = dict(solver_order=solver_order, sde=sde, solver_type=solver_type, sigma_schedule=sigma_schedule)
    return Sampler("dpmpp", p, tuple(steps), 1.0, time_dtype, options, "flow" if use_flow_sigmas else "vp")
