"""DDIM (Song et al. 2021, eq. 12): x0 and eps from the model, then the non-Markovian step

    x' = sqrt(abar') x0 + sqrt(1 - abar' - std^2) eps + std z,
    std = eta sqrt((1 - abar') / (1 - abar_t)) sqrt(1 - abar_t / abar')

eta = 0 is deterministic DDIM, eta = 1 the DDPM posterior. `use_clipped_model_output` re-derives
eps = (x - sqrt(abar_t) x0c) / sqrt(1 - abar_t) from the clipped x0 (report 001's fix: a clipped x0
that the eps direction still contradicts would undo the clip).

>>> c = ddim_coeffs(0.36, 0.64)           # alpha = 0.6, sigma = 0.8 -> alpha' = 0.8, sigma' = 0.6
>>> round(c.cx, 6), round(c.co, 6), round(c.p0, 6), round(c.pe, 6)
(1.666667, -1.333333, 0.8, 0.6)
"""

from __future__ import annotations

import math

import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type
from .vp import prev_alphas_cumprod, ve_sigma, vp_timesteps


def ddim_coeffs(
    alpha_cumprod_t: float,
    alpha_cumprod_prev: float,
    eta: float = 0.0,
    prediction_type: str = "epsilon",
    use_clipped_model_output: bool = False,
) -> StepCoeffs:
    """One DDIM step from abar_t to abar' (module docstring), as diffusers' DDIMScheduler.step."""
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "ddim")
    ac_t, ac_prev, eta = float(alpha_cumprod_t), float(alpha_cumprod_prev), float(eta)
    if not (0.0 <= ac_t < 1.0 and ac_t <= ac_prev <= 1.0):
        raise ValueError(
            f"need 0 <= abar_t <= abar_prev <= 1 and abar_t < 1 (a step towards less noise); "
            f"got abar_t={ac_t}, abar_prev={ac_prev}"
        )
    if not (math.isfinite(eta) and eta >= 0.0):
        raise ValueError(f"eta must be a finite number >= 0; got {eta!r}")
    variance = (1.0 - ac_prev) / (1.0 - ac_t) * (1.0 - ac_t / ac_prev)
    std = eta * math.sqrt(max(variance, 0.0))
    dir_sq = 1.0 - ac_prev - std * std
    if dir_sq < 0.0:
        if dir_sq < -1e-12:
            raise ValueError(
                f"eta={eta} is too large for this step: 1 - abar' - std^2 = {dir_sq:.3g} < 0 (eta <= 1 always works)"
            )
        dir_sq = 0.0
    return StepCoeffs.from_prediction(
        p,
        math.sqrt(ac_t),
        math.sqrt(1.0 - ac_t),
        p0=math.sqrt(ac_prev),
        pe=math.sqrt(dir_sq),
        pn=std,
        recompute_eps=use_clipped_model_output,
    )


def ddim(
    schedule: Schedule,
    num_inference_steps: int | None = None,
    *,
    prediction_type: str = "epsilon",
    eta: float = 0.0,
    use_clipped_model_output: bool = False,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    set_alpha_to_one: bool = True,
    timesteps=None,
) -> Sampler:
    """DDIM over spaced timesteps (diffusers' DDIMScheduler options). The last step goes to abar = 1
    (`set_alpha_to_one`) or to abar_0.

    Each step goes to the next timestep of the list. (diffusers' DDIMScheduler steps to t - T // n,
    which is the next timestep for "leading" spacing and for "trailing" when n divides T, but not for
    "linspace": there the sample lands at a noise level the next model call is not told about, e.g.
    999 -> 899 followed by a call at t = 888.)
    """
    check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "ddim")
    ts = vp_timesteps(schedule, num_inference_steps, timestep_spacing, steps_offset, timesteps)
    final = 1.0 if set_alpha_to_one else float(schedule.alphas_cumprod[0])
    prev = prev_alphas_cumprod(schedule, ts, final)
    ac = schedule.alphas_cumprod
    steps = tuple(
        PlannedStep(
            coeffs=ddim_coeffs(float(ac[t]), a_prev, eta, prediction_type, use_clipped_model_output),
            model_time=t,
            sigma=ve_sigma(float(ac[t])),
            sigma_next=ve_sigma(a_prev),
        )
        for t, a_prev in zip(ts, prev)
    )
    options = dict(
        eta=eta,
        use_clipped_model_output=use_clipped_model_output,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        set_alpha_to_one=set_alpha_to_one,
    )
    return Sampler("ddim", prediction_type, steps, 1.0, torch.int64, options)
