"""Native samplers: host maths producing `StepCoeffs` for the generic fused step (one call per step).

Coefficient functions (pure functions of schedule values; the drop-in diffusers schedulers reuse them):
`ddpm_coeffs`, `ddim_coeffs`, `euler_coeffs`, `euler_ancestral_coeffs`, `heun_correction_coeffs`,
`flow_euler_coeffs`, `dpmpp_coeffs`, `unipc_coeffs`. Samplers (plans of whole loops): `ddpm`, `ddim`, `euler`,
`euler_ancestral`, `heun`, `flow_euler`, `dpmpp`, or `make_sampler(name, steps, schedule, **options)`.
The loop: `sample(model, sampler, x_T, ...)`. k-diffusion-style functions: `fastdiff.samplers.kdiffusion`.

>>> import torch
>>> from fastdiff.schedule import Schedule
>>> from fastdiff.samplers import make_sampler, sample
>>> s = make_sampler("dpmpp_2m", 10, Schedule.make("linear"))
>>> sample(lambda x, t: torch.zeros_like(x), s, torch.zeros(1, 4), progress=False).sample.abs().max().item()
0.0
"""

from .ddim import ddim, ddim_coeffs
from .ddpm import ddpm, ddpm_coeffs
from .dpmsolver import dpmpp, dpmpp_coeffs, solver_orders
from .euler import ancestral_step, churn_gamma, euler, euler_ancestral, euler_ancestral_coeffs, euler_coeffs
from .flow import flow_euler, flow_euler_coeffs
from .heun import heun, heun_correction_coeffs
from .loop import SampleResult, sample
from .plan import PlannedStep, Sampler, change_variables, read_ve, ve_to_vp
from .registry import SAMPLERS, make_sampler, sampler_options
from .unipc import unipc_coeffs

__all__ = [
    "SAMPLERS",
    "PlannedStep",
    "SampleResult",
    "Sampler",
    "ancestral_step",
    "change_variables",
    "churn_gamma",
    "ddim",
    "ddim_coeffs",
    "ddpm",
    "ddpm_coeffs",
    "dpmpp",
    "dpmpp_coeffs",
    "euler",
    "euler_ancestral",
    "euler_ancestral_coeffs",
    "euler_coeffs",
    "flow_euler",
    "flow_euler_coeffs",
    "heun",
    "heun_correction_coeffs",
    "make_sampler",
    "read_ve",
    "sample",
    "sampler_options",
    "solver_orders",
    "unipc_coeffs",
    "ve_to_vp",
]
