"""DEIS multistep (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", rho-AB-DEIS,
eq. 15 with polynomial extrapolation in log rho), as diffusers' DEISMultistepScheduler ("deis", "logrho").

With rho = sigma / alpha, the probability-flow ODE in (x / alpha, rho) is d(x/alpha) = eps drho; DEIS
extrapolates the noise predictions eps_j at rho_{s_j} (j = 0 the current step) with the Lagrange polynomial in
u = log rho and integrates it exactly:

    x_t = alpha_t (x / alpha_s0 + sum_j c_j eps_j),   c_j = int_{rho_s0}^{rho_t} l_j(log rho) drho
        = alpha_t [e^u sum_m (-1)^m l_j^(m)(u)]_{u_s0}^{u_t}          (l_j: Lagrange basis on the u_j)

Order 1 is DDIM. The history is eps of the earlier steps, eps_j = (x_j - alpha_j x0_j) / sigma_j (x0 after
thresholding, as diffusers recomputes it): each one is the two tensors (x_j, x0_j) that the loop keeps anyway,
so a 3rd-order step takes four history terms. eps_0 comes from the step's eps line.

>>> a, w = deis_coeffs(0.8, 0.6, [(0.6, 0.8)])     # order 1: DDIM from alpha 0.6 to 0.8
>>> round(a, 6), [round(v, 6) for v in w]
(1.333333, [-0.466667])
"""

from __future__ import annotations

import math

import torch
from numpy.polynomial import Polynomial

from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps, ve_to_vp


def deis_coeffs(alpha_t: float, sigma_t: float, points: list[tuple[float, float]]) -> tuple[float, tuple[float, ...]]:
    """(a, w) with x_t = a x + sum_j w[j] eps_j (module docstring).

    `points`: (alpha, sigma) of s_0 (the current step, where x is), s_1, s_2 (earlier steps), newest first;
    eps_j the noise predicted at points[j]. The order is len(points) (1 to 3).
    """
    k = len(points)
    if not 1 <= k <= 3:
        raise ValueError(f"DEIS has orders 1 to 3; got {k} points")
    u = [math.log(s / a) for a, s in points]
    u_t = math.log(sigma_t / alpha_t)
    weights = []
    for j in range(k):
        basis = Polynomial([1.0])
        for m in range(k):
            if m != j:
                basis = basis * Polynomial([-u[m], 1.0]) / (u[j] - u[m])
        anti = basis  # an antiderivative of basis(u) e^u is e^u (p - p' + p'' - ...)
        for m in range(1, k):
            anti = anti + (-1.0) ** m * basis.deriv(m)
        weights.append(alpha_t * (math.exp(u_t) * anti(u_t) - math.exp(u[0]) * anti(u[0])))
    return alpha_t / points[0][0], tuple(float(v) for v in weights)


def deis_plan(
    sigmas: list[float],
    model_times: list,
    prediction_type: str,
    *,
    solver_order: int = 2,
    lower_order_final: bool = True,
    alpha_sigma=ve_to_vp,
) -> list[PlannedStep]:
    """The steps of a DEIS loop over `sigmas` (n + 1 levels; `alpha_sigma(sigma)` -> (alpha, sigma) of the VP
    path), orders as diffusers' DEISMultistepScheduler.step: warm-up from 1, lower orders at the end (< 15 steps)."""
    if solver_order not in (1, 2, 3):
        raise ValueError(f"solver_order must be 1, 2 or 3; got {solver_order!r}")
    n = len(sigmas) - 1
    lower = lower_order_final and n < 15
    steps = []
    for i in range(n):
        order = min(solver_order, i + 1, 1 if (lower and i == n - 1) else 2 if (lower and i == n - 2) else 3)
        alpha_t, sigma_t = alpha_sigma(sigmas[i + 1])
        points = [alpha_sigma(sigmas[i - j]) for j in range(order)]
        a, w = deis_coeffs(alpha_t, sigma_t, points)
        ph, history = [], []
        for j in range(1, order):  # eps_j = (x_j - alpha_j x0_j) / sigma_j of step i - j
            alpha_j, sigma_j = points[j]
            ph += [w[j] / sigma_j, -w[j] * alpha_j / sigma_j]
            history += [("x", i - j), ("x0", i - j)]
        alpha, sigma = points[0]
        coeffs = StepCoeffs.from_prediction(
            prediction_type, alpha, sigma, px=a, pe=w[0], ph=tuple(ph), recompute_eps=True
        )
        steps.append(
            PlannedStep(coeffs, model_times[i], history=tuple(history), sigma=sigmas[i], sigma_next=sigmas[i + 1])
        )
    return steps


def deis(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    solver_order: int = 2,
    prediction_type: str = "epsilon",
    lower_order_final: bool = True,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
) -> Sampler:
    """DEIS over the ladder of diffusers' DEISMultistepScheduler (its last level is the training sigma at t = 0).

    >>> from fastdiff.schedule import Schedule
    >>> s = deis(Schedule.make("linear"), 6, solver_order=3)
    >>> [len(st.history) for st in s.steps]
    [0, 2, 4, 4, 2, 0]
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "deis")
    check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.solver_ladder(
        schedule,
        num_inference_steps,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        sigma_schedule=sigma_schedule,
        final_sigmas_type="sigma_min",
    )
    steps = deis_plan(
        [float(s) for s in sig],
        [float(t) for t in times],
        p,
        solver_order=solver_order,
        lower_order_final=lower_order_final,
    )
    options = dict(solver_order=solver_order, timestep_spacing=timestep_spacing, sigma_schedule=sigma_schedule)
    return Sampler("deis", p, tuple(steps), 1.0, torch.int64, options)
