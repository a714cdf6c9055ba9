"""Native samplers by name: `make_sampler("ddim", 50, schedule=..., eta=0.5)` with options checked by name."""

from __future__ import annotations

import inspect

from ..schedule import Schedule
from .ddim import ddim
from .ddpm import ddpm
from .dpmsolver import dpmpp
from .euler import euler, euler_ancestral
from .flow import flow_euler
from .heun import heun
from .plan import Sampler

# name -> (builder, needs a VP schedule, preset options)
SAMPLERS = {
    "ddpm": (ddpm, True, {}),
    "ddim": (ddim, True, {}),
    "euler": (euler, True, {}),
    "euler_ancestral": (euler_ancestral, True, {}),
    "heun": (heun, True, {}),
    "flow_euler": (flow_euler, False, {}),
    "flow_euler_sde": (flow_euler, False, {"stochastic": True}),
    "dpmpp_1m": (dpmpp, True, {"solver_order": 1}),
    "dpmpp_2m": (dpmpp, True, {"solver_order": 2}),
    "dpmpp_3m": (dpmpp, True, {"solver_order": 3}),
    "dpmpp_2m_sde": (dpmpp, True, {"solver_order": 2, "sde": True}),
    "dpmpp_3m_sde": (dpmpp, True, {"solver_order": 3, "sde": True}),
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
    if schedule is not None:
        options.setdefault("num_train_timesteps", schedule.num_train_timesteps)
    return builder(num_inference_steps, **preset, **options)
