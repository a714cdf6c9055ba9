"""Samplers of EDM-preconditioned models (Karras et al. 2022), as diffusers' EDMEulerScheduler and
EDMDPMSolverMultistepScheduler: the VE sample x = x0 + sigma eps on a Karras (eq. 5) or exponential ladder
between sigma_min and sigma_max, the network called on x / sqrt(sigma^2 + sigma_data^2) at time log(sigma) / 4,
its output read as x0 by `param.edm_precondition`.

    edm_euler    Euler steps (`euler.euler_step`), with diffusers' churn variant (`euler` module docstring)
    edm_dpmpp    DPM-Solver++ multistep (`dpmsolver.dpmpp_coeffs` with alpha = 1, sigma the VE level)

>>> s = edm_euler(4)
>>> [round(v, 4) for v in s.sigmas]
[80.0, 9.7232, 0.47, 0.002, 0.0]
"""

from __future__ import annotations

import math

import torch

from .. import param
from ..schedule import exponential_sigmas, karras_sigmas
from ..step import StepCoeffs
from .dpmsolver import SOLVER_TYPES, dpmpp_coeffs, solver_orders
from .euler import churn_gamma, euler_step
from .plan import PlannedStep, Sampler, check_steps, with_output_map

EDM_SIGMA_SCHEDULES = ("karras", "exponential")


def edm_sigmas(
    num_inference_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    sigma_schedule: str = "karras",
    final_sigmas_type: str = "zero",
) -> list[float]:
    """The n + 1 levels of diffusers' EDM schedulers: Karras (rho) or exponential from sigma_max to sigma_min,
    then 0 (`final_sigmas_type="zero"`) or sigma_min."""
    if sigma_schedule not in EDM_SIGMA_SCHEDULES:
        raise ValueError(f"sigma_schedule={sigma_schedule!r}; accepted: {', '.join(EDM_SIGMA_SCHEDULES)}")
    if final_sigmas_type not in ("zero", "sigma_min"):
        raise ValueError(f"final_sigmas_type={final_sigmas_type!r}; accepted: 'zero', 'sigma_min'")
    n = check_steps(num_inference_steps)
    if sigma_schedule == "karras":
        sig = karras_sigmas(sigma_min, sigma_max, n, rho)
    else:
        sig = exponential_sigmas(sigma_min, sigma_max, n)
    return [float(s) for s in sig] + [0.0 if final_sigmas_type == "zero" else float(sigma_min)]


def edm_euler_coeffs(
    sigma: float,
    sigma_next: float,
    prediction_type: str = "epsilon",
    sigma_data: float = 0.5,
    gamma: float = 0.0,
    s_noise: float = 1.0,
    *,
    output_is_x0: bool = False,
) -> StepCoeffs:
    """One step of diffusers' EDMEulerScheduler.step: (churn), x0 = EDM map at sigma_hat, Euler to sigma_next.

    `output_is_x0`: the model output is x0 itself (its step(pred_original_sample=...)), read as it is."""
    sigma_hat = float(sigma) * (1.0 + gamma)
    churn = math.sqrt(sigma_hat**2 - float(sigma) ** 2) * s_noise if gamma > 0 else 0.0
    if output_is_x0:
        read = param.to_x0_eps("sample", 1.0, sigma_hat)
    else:
        read = param.edm_precondition(prediction_type, sigma_hat, sigma_data)
    return euler_step(read, sigma_hat, sigma_next, churn)


def _edm_step(coeffs: StepCoeffs, sigma: float, sigma_next: float, sigma_data: float, history=()) -> PlannedStep:
    return PlannedStep(
        coeffs,
        param.edm_noise(sigma),
        param.edm_input_scale(sigma, sigma_data),
        history=history,
        sigma=sigma,
        sigma_next=sigma_next,
    )


def edm_euler(
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    sigma_data: float = 0.5,
    rho: float = 7.0,
    sigma_schedule: str = "karras",
    final_sigmas_type: str = "zero",
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> Sampler:
    """Euler on EDM sigmas (diffusers' EDMEulerScheduler and its step(s_churn, ...) options; init_noise_sigma
    sqrt(sigma_max^2 + 1) as diffusers)."""
    p = param.canonical(prediction_type)
    sig = edm_sigmas(num_inference_steps, sigma_min, sigma_max, rho, sigma_schedule, final_sigmas_type)
    n = len(sig) - 1
    steps = []
    for i in range(n):
        gamma = churn_gamma(sig[i], s_churn, n, s_tmin, s_tmax)  # diffusers divides by len(sigmas) - 1 = n
        c = edm_euler_coeffs(sig[i], sig[i + 1], p, sigma_data, gamma, s_noise)
        steps.append(_edm_step(c, sig[i], sig[i + 1], sigma_data))
    options = dict(sigma_schedule=sigma_schedule, sigma_data=sigma_data, s_churn=s_churn)
    return Sampler("edm_euler", p, tuple(steps), math.sqrt(sigma_max**2 + 1.0), torch.float32, options, "ve")


def edm_dpmpp_plan(
    sigmas: list[float],
    prediction_type: str,
    orders: list[int],
    *,
    sde: bool = False,
    solver_type: str = "midpoint",
    sigma_data: float = 0.5,
) -> list[PlannedStep]:
    """The steps of DPM-Solver++ on EDM levels `sigmas` (n + 1) with the given orders (`dpmsolver.solver_orders`)."""
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type={solver_type!r} is not supported; accepted: {', '.join(SOLVER_TYPES)}")
    steps = []
    for i, order in enumerate(orders):
        order = 1 if sigmas[i + 1] == sigmas[i] else order  # final_sigmas_type="sigma_min": a last step of length 0
        previous = tuple((1.0, sigmas[i - k]) for k in range(1, order))
        c = dpmpp_coeffs("sample", 1.0, sigmas[i], 1.0, sigmas[i + 1], previous, eta=1.0 if sde else 0.0,
                         solver_type=solver_type)  # fmt: skip
        c = with_output_map(c, param.edm_precondition(prediction_type, sigmas[i], sigma_data))
        history = tuple(("x0", i - k) for k in range(1, order))
        steps.append(_edm_step(c, sigmas[i], sigmas[i + 1], sigma_data, history))
    return steps


def edm_dpmpp(
    num_inference_steps: int,
    *,
    solver_order: int = 2,
    prediction_type: str = "epsilon",
    sde: bool = False,
    solver_type: str = "midpoint",
    lower_order_final: bool = True,
    euler_at_final: bool = False,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    sigma_data: float = 0.5,
    rho: float = 7.0,
    sigma_schedule: str = "karras",
    final_sigmas_type: str = "zero",
) -> Sampler:
    """DPM-Solver++ multistep on EDM sigmas (diffusers' EDMDPMSolverMultistepScheduler; `sde=True` its
    "sde-dpmsolver++" for orders 1-2, and k-diffusion's 3M SDE for order 3)."""
    p = param.canonical(prediction_type)
    sig = edm_sigmas(num_inference_steps, sigma_min, sigma_max, rho, sigma_schedule, final_sigmas_type)
    orders = solver_orders(
        len(sig) - 1,
        solver_order,
        lower_order_final=lower_order_final,
        euler_at_final=euler_at_final,
        final_is_zero=sig[-1] == 0.0,
    )
    steps = edm_dpmpp_plan(sig, p, orders, sde=sde, solver_type=solver_type, sigma_data=sigma_data)
    options = dict(
        solver_order=solver_order,
        sde=sde,
        solver_type=solver_type,
        sigma_schedule=sigma_schedule,
        sigma_data=sigma_data,
    )
    return Sampler("edm_dpmpp", p, tuple(steps), math.sqrt(sigma_max**2 + 1.0), torch.float32, options, "ve")
