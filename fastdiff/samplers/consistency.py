"""Few-step samplers of distilled consistency models: LCM (Luo et al. 2023) and TCD (Zheng et al. 2024), as
diffusers' LCMScheduler and TCDScheduler.

LCM (multistep consistency sampling, Song et al. 2023, alg. 1, with LCM's boundary condition, eq. 9): the
consistency function f(x, t) = c_skip(t) x + c_out(t) x0(x, t), then a jump back to the next timestep with
fresh noise,

    denoised = c_skip x + c_out x0c,   c_skip = s_d^2 / ((k t)^2 + s_d^2),  c_out = k t / sqrt((k t)^2 + s_d^2)
    x'       = sqrt(abar') denoised + sqrt(1 - abar') z      (the last step returns `denoised`)

(k = timestep_scaling, s_d = sigma_data = 0.5). TCD (strategic stochastic sampling, eq. 11-12) first moves
the prediction to an intermediate s = floor((1 - gamma) t') along the DDIM path, then re-noises to t':

    x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps
    x'  = sqrt(abar' / abar_s) x_s + sqrt(1 - abar' / abar_s) z          (gamma > 0 and not the last step)
    x'  = x_s                                                             (gamma = 0, or the last step)

Both are one generic step each (x0 and eps from the model output, then affine).

>>> lcm_boundary_scalings(0)
(1.0, 0.0)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type
from .vp import ve_sigma


def lcm_boundary_scalings(timestep: float, timestep_scaling: float = 10.0, sigma_data: float = 0.5):
    """(c_skip, c_out) of LCM's boundary condition at a discrete timestep (module docstring)."""
    t = float(timestep) * float(timestep_scaling)
    return sigma_data**2 / (t * t + sigma_data**2), t / (t * t + sigma_data**2) ** 0.5


def lcm_coeffs(
    alpha_cumprod_t: float,
    alpha_cumprod_prev: float,
    c_skip: float,
    c_out: float,
    prediction_type: str = "epsilon",
    *,
    last: bool = False,
) -> StepCoeffs:
    """One LCM step (module docstring): x0 read at abar_t, then x' = sqrt(abar') denoised + sqrt(1 - abar') z.

    `last`: the final step returns denoised = c_skip x + c_out x0c itself (no noise).
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "lcm")
    ac, ac_prev = float(alpha_cumprod_t), float(alpha_cumprod_prev)
    scale, noise = (1.0, 0.0) if last else (math.sqrt(ac_prev), math.sqrt(1.0 - ac_prev))
    return StepCoeffs.from_prediction(
        p, math.sqrt(ac), math.sqrt(1.0 - ac), px=scale * c_skip, p0=scale * c_out, pn=noise
    )


def tcd_coeffs(
    alpha_cumprod_t: float,
    alpha_cumprod_prev: float,
    alpha_cumprod_s: float,
    prediction_type: str = "epsilon",
    *,
    renoise: bool = True,
) -> StepCoeffs:
    """One TCD step (module docstring): x_s from (x0, eps) read at abar_t, then re-noised to abar' when `renoise`
    (diffusers: gamma > 0 and not the last step)."""
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "tcd")
    ac, ac_prev, ac_s = float(alpha_cumprod_t), float(alpha_cumprod_prev), float(alpha_cumprod_s)
    scale, noise = (math.sqrt(ac_prev / ac_s), math.sqrt(1.0 - ac_prev / ac_s)) if renoise else (1.0, 0.0)
    return StepCoeffs.from_prediction(
        p, math.sqrt(ac), math.sqrt(1.0 - ac), p0=scale * math.sqrt(ac_s), pe=scale * math.sqrt(1.0 - ac_s), pn=noise
    )


def tcd_intermediate_timestep(prev_timestep: int, gamma: float) -> int:
    """s = floor((1 - gamma) t'), computed in float32 as diffusers' TCDScheduler.step (the float64 product can
    land just below an integer the float32 one reaches, e.g. (1 - 0.3) * 500)."""
    return int(np.floor(np.float32(1.0 - gamma) * np.float32(prev_timestep)))


def consistency_timesteps(
    num_train_timesteps: int, num_inference_steps: int, original_inference_steps: int = 50, strength: float = 1.0
) -> list[int]:
    """The timesteps of diffusers' LCMScheduler / TCDScheduler.set_timesteps: n of the distillation schedule
    (k - 1, 2k - 1, ..., original_steps * strength * k - 1, k = T // original_steps), evenly from the top."""
    T, n, orig = int(num_train_timesteps), int(num_inference_steps), int(original_inference_steps)
    if not 1 <= orig <= T:
        raise ValueError(f"original_inference_steps must be in 1 .. {T}; got {orig}")
    k = T // orig
    origin = np.asarray(list(range(1, int(orig * strength) + 1))) * k - 1
    if not 1 <= n <= min(len(origin), orig):
        raise ValueError(
            f"num_inference_steps={n} must be in 1 .. {min(len(origin), orig)} (original_inference_steps x strength)"
        )
    origin = origin[::-1].copy()
    index = np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)
    return [int(t) for t in origin[index]]


def lcm(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    original_inference_steps: int = 50,
    timestep_scaling: float = 10.0,
    set_alpha_to_one: bool = True,
    timesteps=None,
) -> Sampler:
    """LCM multistep sampling over diffusers' LCMScheduler timesteps (stochastic: pass a generator to `sample`).

    >>> from fastdiff.schedule import Schedule
    >>> lcm(Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), 4).model_times
    [999, 759, 499, 259]
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "lcm")
    ts = _timesteps(schedule, num_inference_steps, original_inference_steps, timesteps)
    ac = schedule.alphas_cumprod
    final = 1.0 if set_alpha_to_one else float(ac[0])
    steps = []
    for i, t in enumerate(ts):
        last = i == len(ts) - 1
        prev = float(ac[ts[i + 1]]) if not last else final  # unused on the last step (it returns `denoised`)
        c_skip, c_out = lcm_boundary_scalings(t, timestep_scaling)
        c = lcm_coeffs(float(ac[t]), prev, c_skip, c_out, p, last=last)
        steps.append(PlannedStep(c, t, sigma=ve_sigma(float(ac[t])), sigma_next=0.0 if last else ve_sigma(prev)))
    options = dict(original_inference_steps=original_inference_steps, timestep_scaling=timestep_scaling)
    return Sampler("lcm", p, tuple(steps), 1.0, torch.int64, options)


def tcd(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    gamma: float = 0.3,
    original_inference_steps: int = 50,
    timesteps=None,
) -> Sampler:
    """TCD over diffusers' TCDScheduler timesteps; `gamma` is its step(eta=...) (0: deterministic).

    >>> from fastdiff.schedule import Schedule
    >>> len(tcd(Schedule.make("scaled_linear", beta_start=0.00085, beta_end=0.012), 4))
    4
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "tcd")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1]; got {gamma!r}")
    ts = _timesteps(schedule, num_inference_steps, original_inference_steps, timesteps)
    ac = schedule.alphas_cumprod
    steps = []
    for i, t in enumerate(ts):
        last = i == len(ts) - 1
        t_prev = ts[i + 1] if not last else 0  # diffusers: the last step's "previous timestep" is 0
        ac_prev = float(ac[t_prev])
        ac_s = float(ac[tcd_intermediate_timestep(t_prev, gamma)])
        c = tcd_coeffs(float(ac[t]), ac_prev, ac_s, p, renoise=gamma > 0 and not last)
        steps.append(PlannedStep(c, t, sigma=ve_sigma(float(ac[t])), sigma_next=ve_sigma(ac_prev)))
    options = dict(gamma=gamma, original_inference_steps=original_inference_steps)
    return Sampler("tcd", p, tuple(steps), 1.0, torch.int64, options)


def _timesteps(schedule: Schedule, n, original_inference_steps: int, timesteps) -> list[int]:
    if timesteps is not None:
        ts = [schedule.check_timestep(t) for t in torch.as_tensor(timesteps).reshape(-1).tolist()]
        if not ts or any(b >= a for a, b in zip(ts, ts[1:])):
            raise ValueError(f"custom timesteps must be non-empty and decrease strictly; got {ts}")
        return ts
    return consistency_timesteps(schedule.num_train_timesteps, n, original_inference_steps)
