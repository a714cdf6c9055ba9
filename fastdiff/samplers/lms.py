"""Linear multistep (LMS, Adams-Bashforth on the noise level) on the VE probability-flow ODE dx/dsigma = d.

Karras et al. 2022 (eq. 3) write the ODE as dx/dsigma = d(x, sigma) = (x - x0) / sigma; k-diffusion's
sample_lms and diffusers' LMSDiscreteScheduler integrate it with the Adams-Bashforth formula of order p on
the nonuniform grid sigma_i:

    x_{i+1} = x_i + sum_{j<p} c_j d_{i-j},   c_j = int_{sigma_i}^{sigma_{i+1}} l_j(tau) dtau
    l_j(tau) = prod_{k<p, k!=j} (tau - sigma_{i-k}) / (sigma_{i-j} - sigma_{i-k})     (Lagrange basis)

with p = min(i + 1, order). The integrand is a polynomial of degree p - 1, integrated exactly here by
Gauss-Legendre quadrature with p nodes (k-diffusion and diffusers call scipy's quad on it, which is exact to
rounding as well).

The history is the derivatives d_{i-j} themselves, not x0: each step's x0 line computes d = (x - x0) / sigma
(`PlannedStep.x0_from` = (1, -sigma) gives x0 back), which is also what diffusers keeps (`derivatives`).
The update is linear in (x, d_i, d_{i-1}, d_{i-2}, d_{i-3}): one generic step with up to 3 history terms.

>>> [round(c, 6) for c in lms_coeffs([3.0, 2.0, 1.0], 1, 2)]   # c_0, c_1 of AB2 from sigma 2 to 1
[-1.5, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .euler import _check_sigmas
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps, read_ve


def lms_coeffs(sigmas: Sequence[float], i: int, order: int) -> tuple[float, ...]:
    """(c_0, ..., c_{p-1}) of the step from sigmas[i] to sigmas[i + 1], p = min(i + 1, order) (module docstring).

    c_j weighs d_{i-j}, the derivative of j steps ago: diffusers' `get_lms_coefficient(p, i, j)` and
    k-diffusion's `linear_multistep_coeff(p, sigmas, i, j)`.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"the LMS order must be an integer >= 1; got {order!r}")
    if not 0 <= i < len(sigmas) - 1:
        raise ValueError(f"step {i} is not in a ladder of {len(sigmas)} sigmas (steps 0 .. {len(sigmas) - 2})")
    p = min(i + 1, order)
    nodes = [float(sigmas[i - k]) for k in range(p)]
    a, b = float(sigmas[i]), float(sigmas[i + 1])
    u, w = np.polynomial.legendre.leggauss(p)  # exact for degree <= 2p - 1
    taus = 0.5 * (b - a) * u + 0.5 * (a + b)
    coeffs = []
    for j in range(p):
        basis = np.ones_like(taus)
        for k in range(p):
            if k != j:
                basis = basis * (taus - nodes[k]) / (nodes[j] - nodes[k])
        coeffs.append(float(0.5 * (b - a) * np.dot(w, basis)))
    return tuple(coeffs)


def lms_step_coeffs(sigma: float, weights: Sequence[float], prediction_type: str = "epsilon") -> StepCoeffs:
    """The generic step of one LMS update at sigma: x0 line = d (module docstring), history = earlier d's.

    x0 = read_ve(prediction_type, sigma) of the model output, d = (x - x0) / sigma (computed in the x0 line),
    x' = x + weights[0] d + sum_{k>=1} weights[k] h_k with h_k the derivative of k steps ago.
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "lms")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0.0):
        raise ValueError(f"an LMS step needs a finite sigma > 0; got {sigma}")
    m = read_ve(p, sigma)
    return StepCoeffs(
        cx=(1.0 - m.cx) / sigma, co=-m.co / sigma, px=1.0, p0=float(weights[0]), ph=tuple(weights[1:])
    )  # fmt: skip


def lms_plan(
    sigmas: Sequence[float],
    model_times: Sequence[float],
    order: int,
    prediction_type: str,
    input_scales: Sequence[float] | None = None,
) -> list[PlannedStep]:
    """The steps of an LMS loop over `sigmas` (n + 1 levels) with the model called at `model_times`."""
    steps = []
    for i in range(len(sigmas) - 1):
        s, s_next = _check_sigmas(sigmas[i], sigmas[i + 1])
        c = lms_coeffs(sigmas, i, order)
        steps.append(
            PlannedStep(
                coeffs=lms_step_coeffs(s, c, prediction_type),
                model_time=float(model_times[i]),
                input_scale=1.0 if input_scales is None else float(input_scales[i]),
                history=tuple(("x0", i - k) for k in range(1, len(c))),
                sigma=s,
                sigma_next=s_next,
                x0_from=(1.0, -s),
            )
        )
    return steps


def lms(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    order: int = 4,
    prediction_type: str = "epsilon",
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    sigmas=None,
) -> Sampler:
    """LMS of the given order over the ladder of diffusers' LMSDiscreteScheduler (its step(order=4) maths).

    >>> from fastdiff.schedule import Schedule
    >>> s = lms(Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), 10)
    >>> [len(st.history) for st in s.steps][:5]
    [0, 1, 2, 3, 3]
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "lms")
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
    sig = [float(s) for s in sig]
    steps = lms_plan(sig, [float(t) for t in times], order, p, [1.0 / math.sqrt(s * s + 1.0) for s in sig[:-1]])
    options = dict(order=order, timestep_spacing=timestep_spacing, sigma_schedule=sigma_schedule)
    return Sampler("lms", p, tuple(steps), math.sqrt(sig[0] ** 2 + 1.0), torch.float32, options, "ve")
