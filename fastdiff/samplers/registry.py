"""Native samplers by name: `make_sampler("ddim", 50, schedule=..., eta=0.5)` with options checked by name."""

from __future__ import annotations

import inspect

from ..schedule import Schedule
from .consistency import lcm, tcd
from .ddim import ddim
from .ddpm import ddpm
from .deis import deis
from .dpm2 import dpm_2
from .dpmsolver import dpmpp
from .edm import edm_dpmpp, edm_euler
from .euler import euler, euler_ancestral
from .flow import flow_euler
from .heun import heun
from .lms import lms
from .plan import Sampler
from .pndm import pndm
from .sde import dpmpp_sde
from .singlestep import dpm_singlestep, dpmpp_2s_ancestral
from .unipc import unipc

# name -> (builder, needs a VP schedule, preset options)
SAMPLERS = {
    "ddpm": (ddpm, True, {}),
    "ddim": (ddim, True, {}),
    "pndm": (pndm, True, {}),
    "plms": (pndm, True, {"skip_prk_steps": True}),
    "euler": (euler, True, {}),
    "euler_ancestral": (euler_ancestral, True, {}),
    "heun": (heun, True, {}),
    "lms": (lms, True, {}),
    "dpm_2": (dpm_2, True, {}),
    "dpm_2_ancestral": (dpm_2, True, {"ancestral": True}),
    "dpmpp_2s_ancestral": (dpmpp_2s_ancestral, True, {}),
    "dpmpp_sde": (dpmpp_sde, True, {}),
    "dpmpp_1m": (dpmpp, True, {"solver_order": 1}),
    "dpmpp_2m": (dpmpp, True, {"solver_order": 2}),
    "dpmpp_3m": (dpmpp, True, {"solver_order": 3}),
    "dpmpp_2m_sde": (dpmpp, True, {"solver_order": 2, "sde": True}),
    "dpmpp_3m_sde": (dpmpp, True, {"solver_order": 3, "sde": True}),
    "dpm_singlestep": (dpm_singlestep, True, {}),
    "deis": (deis, True, {}),
    "unipc": (unipc, True, {}),
    "lcm": (lcm, True, {}),
    "tcd": (tcd, True, {}),
    "edm_euler": (edm_euler, False, {}),
    "edm_dpmpp": (edm_dpmpp, False, {}),
    "flow_euler": (flow_euler, False, {}),
    # diffusers' stochastic_sampling: x0 re-noised to the next level with fresh noise (not an SDE discretisation)
    "flow_euler_renoise": (flow_euler, False, {"stochastic": True}),
}


def sampler_options(name: str) -> list[str]:
    """The keyword options a named sampler accepts."""
    builder, _, preset = _lookup(name)
    params = inspect.signature(builder).parameters
    return [p for p, v in params.items() if v.kind == inspect.Parameter.KEYWORD_ONLY and p not in preset]


def _lookup(name: str):
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def make_sampler(name: str, num_inference_steps: int, schedule: Schedule | None = None, **options) -> Sampler:
    """A native sampler by name, e.g. make_sampler("dpmpp_2m", 20, schedule, sigma_schedule="karras").

    >>> from fastdiff.schedule import Schedule
    >>> make_sampler("ddim", 10, Schedule.make("linear"), eta=0.0).name
    'ddim'
    """
    builder, needs_schedule, preset = _lookup(name)
    accepted = sampler_options(name)
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for sampler {name!r}; accepted: {', '.join(accepted)}"
        )
    if needs_schedule:
        if schedule is None and not (name.startswith("dpmpp") and options.get("use_flow_sigmas")):
            raise ValueError(f"sampler {name!r} needs a schedule (fastdiff.Schedule.make(...))")
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a fastdiff.Schedule; got {type(schedule).__name__}")
        return builder(schedule, num_inference_steps, **preset, **options)
    if schedule is not None and "num_train_timesteps" in accepted:
        options.setdefault("num_train_timesteps", schedule.num_train_timesteps)
    return builder(num_inference_steps, **preset, **options)
