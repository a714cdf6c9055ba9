"""Flow-matching Euler (rectified flow, Liu et al. 2023; SD3's FlowMatchEulerDiscreteScheduler).

The path is x_s = (1 - s) x0 + s eps with the model predicting the velocity v = eps - x0 (prediction
type "flow"; "sample" and "epsilon" outputs are read through `param.py` on the same path). A step from s to s':

    deterministic  x' = x + (s' - s) v = (1 - s') x0 + s' eps        (exact for a straight path)
    stochastic     x' = (1 - s') x0 + s' z                           (re-noise the x0 estimate with fresh z)

`stochastic=True` is diffusers' `stochastic_sampling`: the x0 estimate jumps to s' with entirely fresh noise,
discarding the noise x carried (like LCM's multistep consistency sampling). It is a re-noising sampler, not a
discretisation of the reverse-time SDE, which keeps part of x's noise (compare DDIM with eta or SDE-DPM-Solver++);
the registry calls it "flow_euler_renoise". The flow-matching conventions (this time s versus flow_matching's
t = 1 - s, and the velocity's sign) are compared in `param.py`.

>>> c = flow_euler_coeffs(1.0, 0.5)         # x0 = x - v, eps = x; x' = 0.5 x0 + 0.5 eps
>>> c.cx, c.co, c.ex, c.eo, c.p0, c.pe
(1.0, -1.0, 1.0, 0.0, 0.5, 0.5)
"""

from __future__ import annotations

import torch

from ..step import StepCoeffs
from . import ladders
from .plan import FLOW_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps


def flow_euler_coeffs(
    sigma: float, sigma_next: float, prediction_type: str = "flow", stochastic: bool = False
) -> StepCoeffs:
    """One flow-matching Euler step from flow time sigma to sigma_next (module docstring).

    Both in [0, 1], in either order: sigma_next > sigma integrates towards noise (an inverted schedule, as
    diffusers' `invert_sigmas`), and sigma_next = sigma is a zero-length step.
    """
    p = check_prediction_type(prediction_type, FLOW_PREDICTION_TYPES, "flow_euler")
    sigma, sigma_next = float(sigma), float(sigma_next)
    if not (0.0 <= sigma <= 1.0 and 0.0 <= sigma_next <= 1.0):
        raise ValueError(f"flow times must lie in [0, 1]; got {sigma} -> {sigma_next}")
    if stochastic:
        return StepCoeffs.from_prediction(p, 1.0 - sigma, sigma, p0=1.0 - sigma_next, pn=sigma_next)
    return StepCoeffs.from_prediction(p, 1.0 - sigma, sigma, p0=1.0 - sigma_next, pe=sigma_next)


def flow_euler(
    num_inference_steps: int,
    *,
    num_train_timesteps: int = 1000,
    prediction_type: str = "flow",
    shift: float = 1.0,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    shift_terminal: float | None = None,
    sigma_schedule: str | None = None,
    stochastic: bool = False,
    sigmas=None,
) -> Sampler:
    """Flow Euler over the ladder of diffusers' FlowMatchEulerDiscreteScheduler (static `shift`, or dynamic
    shift `mu` as Flux). Model time t = sigma * num_train_timesteps.

    >>> s = flow_euler(4, shift=3.0)
    >>> [round(x, 4) for x in s.sigmas]
    [1.0, 0.8577, 0.6022, 0.0089, 0.0]
    """
    p = check_prediction_type(prediction_type, FLOW_PREDICTION_TYPES, "flow_euler")
    if sigmas is None:
        check_steps(num_inference_steps, num_train_timesteps)
    times, sig = ladders.flow_ladder(
        num_inference_steps,
        num_train_timesteps=num_train_timesteps,
        shift=shift,
        mu=mu,
        time_shift_type=time_shift_type,
        shift_terminal=shift_terminal,
        sigma_schedule=sigma_schedule,
        sigmas=sigmas,
    )
    steps = tuple(
        PlannedStep(
            coeffs=flow_euler_coeffs(float(sig[i]), float(sig[i + 1]), p, stochastic),
            model_time=float(times[i]),
            sigma=float(sig[i]),
            sigma_next=float(sig[i + 1]),
        )
        for i in range(len(times))
    )
    options = dict(shift=shift, mu=mu, stochastic=stochastic, sigma_schedule=sigma_schedule)
    return Sampler("flow_euler", p, steps, 1.0, torch.float32, options, "flow")
