"""Timestep bookkeeping shared by the discrete VP samplers (DDPM, DDIM): which timesteps, which previous."""

from __future__ import annotations

import math

import torch

from .. import schedule as sch
from ..schedule import Schedule
from .plan import check_steps


def vp_timesteps(
    schedule: Schedule,
    num_inference_steps: int | None,
    timestep_spacing: str,
    steps_offset: int,
    timesteps=None,
) -> list[int]:
    """Descending integer timesteps: spaced as diffusers' DDPM/DDIM `set_timesteps`, or a custom list."""
    T = schedule.num_train_timesteps
    if timesteps is not None:
        if num_inference_steps is not None:
            raise ValueError("pass either num_inference_steps or timesteps, not both")
        ts = [schedule.check_timestep(t) for t in torch.as_tensor(timesteps).reshape(-1).tolist()]
        if not ts:
            raise ValueError("timesteps is empty; a sampler needs at least one step")
        if any(b >= a for a, b in zip(ts, ts[1:])):
            raise ValueError(f"custom timesteps must decrease strictly; got {ts}")
        return ts
    n = check_steps(T if num_inference_steps is None else num_inference_steps, T)
    ts = sch.timesteps(T, n, timestep_spacing, steps_offset).tolist()
    return [schedule.check_timestep(t) for t in ts]


def prev_alphas_cumprod(schedule: Schedule, ts: list[int], final_alpha_cumprod: float) -> list[float]:
    """alphas_cumprod at the timestep each step goes to: the next one in the list, then `final_alpha_cumprod`."""
    ac = schedule.alphas_cumprod
    return [float(ac[t]) for t in ts[1:]] + [float(final_alpha_cumprod)]


def ve_sigma(alpha_cumprod: float) -> float:
    """The VE noise level sqrt((1 - abar) / abar) of a VP level abar (inf at abar = 0)."""
    return math.sqrt((1.0 - alpha_cumprod) / alpha_cumprod) if alpha_cumprod > 0 else math.inf
