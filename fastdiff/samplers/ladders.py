"""Noise ladders of the native samplers: which (model time, noise level) pairs a loop visits.

Bookkeeping only, built from the primitives of `schedule.py` with the conventions of the matching
diffusers schedulers (EulerDiscrete / Heun / EulerAncestral, DPMSolverMultistep, FlowMatchEulerDiscrete).
Each function returns (model_times, sigmas) with len(sigmas) == len(model_times) + 1 (the final level).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import schedule as sch
from ..schedule import Schedule

SIGMA_SCHEDULES = (None, "karras", "exponential", "beta")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")


def _choice(name: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; accepted: {', '.join(map(repr, accepted))}")


def train_sigmas(schedule: Schedule) -> torch.Tensor:
    """VE sigmas sqrt((1 - abar) / abar) of the training timesteps (float64).

    A zero-terminal-SNR schedule has abar_T = 0 and sigma_T = inf; as diffusers' Euler and DPM-Solver
    schedulers (`rescale_betas_zero_snr`), abar_T is then taken as 2^-24 so that the ladder starts at a
    finite (very large) sigma.
    """
    ac = schedule.alphas_cumprod.clone()
    if ac[-1] == 0.0:
        ac[-1] = 2.0**-24
    return ((1.0 - ac) / ac).sqrt()


def interp_sigmas(schedule: Schedule, times: torch.Tensor) -> torch.Tensor:
    """Train sigmas linearly interpolated at (fractional) timesteps, as np.interp in diffusers."""
    s = train_sigmas(schedule).numpy()
    return torch.from_numpy(np.interp(times.numpy(), np.arange(len(s)), s)).to(torch.float64)


def _convert(kind: str | None, sigmas: torch.Tensor, n: int, sigma_min, sigma_max) -> torch.Tensor:
    """Replace a ladder by a Karras / exponential / beta one between its ends (or the given bounds)."""
    lo = float(sigmas[-1]) if sigma_min is None else float(sigma_min)
    hi = float(sigmas[0]) if sigma_max is None else float(sigma_max)
    if kind == "karras":
        return sch.karras_sigmas(lo, hi, n)
    if kind == "exponential":
        return sch.exponential_sigmas(lo, hi, n)
    return sch.beta_sigmas(lo, hi, n)


def level_times(times: torch.Tensor, schedule: Schedule):
    """`time_of(s, i)` of the two-stage VE samplers (DPM-2, DPM++ SDE, DPM++ 2S a): the ladder's time of level i,
    or, for an intermediate level (i None), sigma s's fractional timestep as diffusers interpolates it."""

    def time_of(s: float, i: int | None = None) -> float:
        return float(times[i]) if i is not None else float(sch.sigma_to_timestep(torch.tensor([s]), schedule)[0])

    return time_of


def ve_input_scale(s: float) -> float:
    """The model input's scale at VE level s: 1 / sqrt(s^2 + 1) (diffusers' `scale_model_input`)."""
    return (s * s + 1.0) ** -0.5


def euler_ladder(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    final_sigmas_type: str = "zero",
    sigmas=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fractional timesteps [n], VE sigmas [n + 1]) of diffusers' EulerDiscreteScheduler.set_timesteps.

    Default: the train sigmas interpolated at the spaced timesteps. `sigma_schedule` "karras" /
    "exponential" / "beta": that ladder between the interpolated ends (or sigma_min/sigma_max), mapped
    back to fractional timesteps by log-sigma interpolation. Final sigma 0, or the train sigma at t=0.
    `sigmas`: a custom decreasing ladder of n + 1 values (the last one the final level).
    """
    _choice("sigma_schedule", sigma_schedule, SIGMA_SCHEDULES)
    _choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
    if sigmas is not None:
        sig = _custom_ladder(sigmas)
        return sch.sigma_to_timestep(sig[:-1], schedule), sig
    T = schedule.num_train_timesteps
    n = num_inference_steps
    times = sch.timesteps(T, n, timestep_spacing, steps_offset, rounded=False)
    if timestep_spacing == "linspace":  # diffusers builds this grid in float32
        times = times.to(torch.float32).to(torch.float64)
    sig = interp_sigmas(schedule, times)
    if sigma_schedule is not None:
        sig = _convert(sigma_schedule, sig, n, sigma_min, sigma_max)
        times = sch.sigma_to_timestep(sig, schedule)
    last = float(train_sigmas(schedule)[0]) if final_sigmas_type == "sigma_min" else 0.0
    return times, torch.cat([sig, sig.new_tensor([last])])


def solver_ladder(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    use_lu_lambdas: bool = False,
    final_sigmas_type: str = "zero",
    lambda_min_clipped: float = -math.inf,
    round_timesteps: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer timesteps [n], VE sigmas [n + 1]) of diffusers' DPMSolverMultistepScheduler.set_timesteps.

    Karras / exponential / beta ladders span the whole training range (train sigma at t=0 to t=T-1);
    their timesteps are rounded (`round_timesteps`; diffusers skips the rounding for cosine schedules).
    `use_lu_lambdas`: uniform in log sigma (Lu et al. 2022).
    """
    _choice("sigma_schedule", sigma_schedule, SIGMA_SCHEDULES)
    _choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
    if use_lu_lambdas and sigma_schedule is not None:
        raise ValueError(f"use_lu_lambdas and sigma_schedule={sigma_schedule!r} exclude each other; pick one")
    T = schedule.num_train_timesteps
    n = num_inference_steps
    # lambda_min_clipped: drop the noisiest timesteps whose log-SNR/2 lies below it (cosine schedules)
    lambdas = 0.5 * schedule.log_snr
    clipped = int(
        torch.searchsorted(lambdas.flip(0).contiguous(), torch.tensor([lambda_min_clipped], dtype=torch.float64))
    )
    times = sch.solver_timesteps(T, n, timestep_spacing, steps_offset, last_timestep=T - clipped)
    full = train_sigmas(schedule)
    if sigma_schedule is not None or use_lu_lambdas:
        if use_lu_lambdas:  # uniform in log sigma between the training ends
            sig = torch.linspace(float(full.log()[-1]), float(full.log()[0]), n, dtype=torch.float64).exp()
        else:
            sig = _convert(sigma_schedule, full.flip(0), n, None, None)
        t = sch.sigma_to_timestep(sig, schedule)
        times = t.round() if round_timesteps else t
    else:
        sig = interp_sigmas(schedule, times.to(torch.float64))
        times = times.to(torch.float64)
    last = float(full[0]) if final_sigmas_type == "sigma_min" else 0.0
    return times, torch.cat([sig, sig.new_tensor([last])])


def flow_ladder(
    num_inference_steps: int,
    *,
    num_train_timesteps: int = 1000,
    shift: float = 1.0,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    shift_terminal: float | None = None,
    sigma_schedule: str | None = None,
    sigmas=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(model times sigma * T [n], flow sigmas [n + 1] ending at 0) of diffusers' FlowMatchEulerDiscreteScheduler."""
    _choice("sigma_schedule", sigma_schedule, SIGMA_SCHEDULES)
    if sigmas is not None:
        sig = _custom_ladder(sigmas)
        if float(sig[0]) > 1.0:
            raise ValueError(f"flow sigmas must lie in [0, 1]; got a first sigma of {float(sig[0])}")
        return sig[:-1] * num_train_timesteps, sig
    sig = sch.flow_sigmas(
        num_inference_steps,
        num_train_timesteps,
        shift=shift,
        mu=mu,
        time_shift_type=time_shift_type,
        terminal=False,
        shift_terminal=shift_terminal,
    )
    if sigma_schedule is not None:
        sig = _convert(sigma_schedule, sig, num_inference_steps, None, None)
    return sig * num_train_timesteps, torch.cat([sig, sig.new_zeros(1)])


def flow_solver_ladder(
    num_inference_steps: int, *, num_train_timesteps: int = 1000, flow_shift: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(model times, flow sigmas [n + 1]) of DPMSolverMultistepScheduler with use_flow_sigmas=True."""
    n, T = num_inference_steps, num_train_timesteps
    s = 1.0 - torch.linspace(1.0, 1.0 / T, n + 1, dtype=torch.float64)
    s = sch.shift_sigmas(s, flow_shift).flip(0)[:-1]
    return s * T, torch.cat([s, s.new_zeros(1)])


def _custom_ladder(sigmas) -> torch.Tensor:
    sig = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().reshape(-1)
    if sig.numel() < 2:
        raise ValueError(f"a custom sigma ladder needs at least 2 values (start and final); got {sig.numel()}")
    if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
        raise ValueError(f"sigmas must be finite and >= 0; got {sig.tolist()}")
    if bool((sig[1:] >= sig[:-1]).any()):
        raise ValueError(f"sigmas must decrease strictly; got {sig.tolist()}")
    return sig
