"""Native samplers: host maths producing `StepCoeffs` for the generic fused step (one call per step).

Coefficient functions (pure functions of schedule values; the drop-in diffusers schedulers reuse them):
`ddpm_coeffs`, `ddim_coeffs`, `pndm_coeffs`, `euler_coeffs`, `euler_ancestral_coeffs`, `heun_correction_coeffs`,
`lms_coeffs` / `lms_step_coeffs`, `dpm2_correction_coeffs`, `dpmpp_2s_coeffs`, `dpmpp_sde_coeffs`, `dpmpp_coeffs`,
`singlestep_coeffs`, `deis_coeffs`, `unipc_coeffs`, `lcm_coeffs`, `tcd_coeffs`, `edm_euler_coeffs`,
`flow_euler_coeffs`. Samplers (plans of whole loops): one builder per method, or
`make_sampler(name, steps, schedule, **options)` with a name of `SAMPLERS`.
The loop: `sample(model, sampler, x_T, ...)`.
k-diffusion-style functions: `fastdiff.samplers.kdiffusion`; their noise samplers: `fastdiff.samplers.noise`.

>>> import torch
>>> from fastdiff.schedule import Schedule
>>> from fastdiff.samplers import make_sampler, sample
>>> s = make_sampler("dpmpp_2m", 10, Schedule.make("linear"))
>>> sample(lambda x, t: torch.zeros_like(x), s, torch.zeros(1, 4), progress=False).sample.abs().max().item()
0.0
"""

from .consistency import consistency_timesteps, lcm, lcm_boundary_scalings, lcm_coeffs, tcd, tcd_coeffs
from .ddim import ddim, ddim_coeffs
from .ddpm import ddpm, ddpm_coeffs
from .deis import deis, deis_coeffs, deis_plan
from .dpm2 import dpm2_correction_coeffs, dpm2_midpoint, dpm2_plan, dpm_2
from .dpmsolver import dpmpp, dpmpp_coeffs, solver_orders
from .edm import edm_dpmpp, edm_dpmpp_plan, edm_euler, edm_euler_coeffs, edm_sigmas
from .euler import (
    ancestral_step,
    churn_gamma,
    euler,
    euler_ancestral,
    euler_ancestral_coeffs,
    euler_coeffs,
    euler_step,
)
from .flow import flow_euler, flow_euler_coeffs
from .heun import heun, heun_correction_coeffs
from .lms import lms, lms_coeffs, lms_plan, lms_step_coeffs
from .loop import SampleResult, sample
from .noise import BrownianTreeNoiseSampler, default_noise_sampler
from .plan import PlannedStep, Sampler, change_variables, read_ve, ve_to_vp, with_output_map
from .pndm import pndm, pndm_coeffs, pndm_timesteps, pndm_transfer
from .registry import SAMPLERS, make_sampler, sampler_options
from .sde import dpmpp_sde, dpmpp_sde_coeffs, dpmpp_sde_plan
from .singlestep import (
    dpm_singlestep,
    dpmpp_2s_ancestral,
    dpmpp_2s_coeffs,
    singlestep_coeffs,
    singlestep_orders,
    singlestep_plan,
)
from .unipc import unipc, unipc_coeffs, unipc_plan

__all__ = [
    "SAMPLERS",
    "ancestral_step",
    "BrownianTreeNoiseSampler",
    "change_variables",
    "churn_gamma",
    "consistency_timesteps",
    "ddim",
    "ddim_coeffs",
    "ddpm",
    "ddpm_coeffs",
    "default_noise_sampler",
    "deis",
    "deis_coeffs",
    "deis_plan",
    "dpm2_correction_coeffs",
    "dpm2_midpoint",
    "dpm2_plan",
    "dpm_2",
    "dpm_singlestep",
    "dpmpp",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_coeffs",
    "dpmpp_coeffs",
    "dpmpp_sde",
    "dpmpp_sde_coeffs",
    "dpmpp_sde_plan",
    "edm_dpmpp",
    "edm_dpmpp_plan",
    "edm_euler",
    "edm_euler_coeffs",
    "edm_sigmas",
    "euler",
    "euler_ancestral",
    "euler_ancestral_coeffs",
    "euler_coeffs",
    "euler_step",
    "flow_euler",
    "flow_euler_coeffs",
    "heun",
    "heun_correction_coeffs",
    "lcm",
    "lcm_boundary_scalings",
    "lcm_coeffs",
    "lms",
    "lms_coeffs",
    "lms_plan",
    "lms_step_coeffs",
    "make_sampler",
    "PlannedStep",
    "pndm",
    "pndm_coeffs",
    "pndm_timesteps",
    "pndm_transfer",
    "read_ve",
    "sample",
    "Sampler",
    "sampler_options",
    "SampleResult",
    "singlestep_coeffs",
    "singlestep_orders",
    "singlestep_plan",
    "solver_orders",
    "tcd",
    "tcd_coeffs",
    "unipc",
    "unipc_coeffs",
    "unipc_plan",
    "ve_to_vp",
    "with_output_map",
]
