"""Drop-in diffusers schedulers: the parent's bookkeeping, one `fastdiff.fused_step` call per `step()`.

Change one line of a pipeline and get the same images, faster, with per-step statistics for free:

    pipe.scheduler = fastdiff.integrations.diffusers.fast_scheduler(pipe.scheduler)
    image = pipe(...).images[0]
    pipe.scheduler.last_step_stats.clipped          # device tensors: nothing has synced the host

Each `FastX` subclasses diffusers' `X` and is built the same way (`FastX(**kw)`, `FastX.from_config(cfg)`),
with X's signatures (pipelines inspect them). It keeps X's state (timesteps, sigmas, step index, begin
index, solver history, Heun's stage) and X's `set_timesteps` / `scale_model_input`; only the per-element
arithmetic of `step()` is replaced by generic fused steps whose coefficients come from `fastdiff.samplers`
(the single source of each sampler's maths; `tests/test_samplers_diffusers.py` documents how those equal
diffusers' lines). One module per scheduler family:

    ddpm.py       DDPMScheduler                    ddpm_coeffs             (Ho et al. 2020, eq. 6-7)
    ddim.py       DDIMScheduler                    ddim_coeffs             (Song et al. 2021, eq. 12)
    euler.py      EulerDiscreteScheduler           euler_coeffs            (Karras et al. 2022, alg. 2, churn)
                  EulerAncestralDiscreteScheduler  euler_ancestral_coeffs
    heun.py       HeunDiscreteScheduler            euler_coeffs + the averaged slopes (Karras et al. 2022, alg. 1)
    flow.py       FlowMatchEulerDiscreteScheduler  flow_euler_coeffs       (rectified flow)
    dpmsolver.py  DPMSolverMultistepScheduler      dpmpp_coeffs, dpm_solver_coeffs (DPM-Solver(++), ODE and SDE)
    unipc.py      UniPCMultistepScheduler          unipc_coeffs            (UniP / UniC B(h), Zhao et al. 2023)
    pndm.py       PNDMScheduler                    pndm_coeffs             (PRK / PLMS, Liu et al. 2022, eq. 9-13)
    lms.py        LMSDiscreteScheduler             lms_coeffs, lms_step_coeffs (Adams-Bashforth in sigma)
    kdpm2.py      KDPM2DiscreteScheduler           euler_coeffs + dpm2_correction_coeffs (DPM-Solver-2, r = 1/2)
                  KDPM2AncestralDiscreteScheduler
    dpmsolver_sde.py DPMSolverSDEScheduler         dpmpp_sde_coeffs        (DPM++ SDE, its Brownian-tree noise)
    consistency.py LCMScheduler, TCDScheduler      lcm_coeffs, tcd_coeffs  (consistency models, LCM / TCD)
    deis.py       DEISMultistepScheduler           deis_coeffs             (rho-AB-DEIS, Zhang & Chen 2023)
    singlestep.py DPMSolverSinglestepScheduler     singlestep_coeffs       (singlestep DPM-Solver(++))
    edm.py        EDMEulerScheduler                edm_euler_coeffs        (EDM preconditioning, Karras et al. 2022)
                  EDMDPMSolverMultistepScheduler   dpmpp_coeffs + edm_precondition

`base.py` holds what they share (signatures, config checks, host copies, the fused calls, `StepStats`),
`multistep.py` what the DPM-Solver family shares (levels, the x0 read, the kept outputs, the multistep order rule),
`convert.py` holds `fast_scheduler`, and `saving.py` makes saved pipelines name the diffusers parent, so
plain diffusers loads them (installed on import).

Noise is drawn with diffusers' own `randn_tensor`, with the same arguments and in the same order as the
parent, so the same `generator` gives the same samples. Options the fused step cannot express raise
`NotImplementedError` naming the option, when the scheduler is built and at every `set_timesteps` and
`step` (a config changed later by `register_to_config` is checked too).

No host synchronisation in `step()` for CUDA tensors once `set_timesteps` ran: the timesteps, sigmas
and alphas_cumprod are read from host copies (made once), and a timestep that is an element of
`scheduler.timesteps` (as pipelines pass it) is located from its storage offset, not by reading it.
(A timestep tensor from elsewhere on the GPU is read once, as the parent reads it.)

>>> import torch
>>> from diffusers import DDIMScheduler
>>> from fastdiff.integrations.diffusers import fast_scheduler
>>> s = fast_scheduler(DDIMScheduler(clip_sample=True))
>>> type(s).__name__, isinstance(s, DDIMScheduler)
('FastDDIMScheduler', True)
>>> s.set_timesteps(10)
>>> x = torch.zeros(1, 4); out = s.step(torch.ones(1, 4), s.timesteps[0], x)
>>> out.prev_sample.shape, int(s.last_step_stats.clipped)
(torch.Size([1, 4]), 4)
"""

from .base import FusedScheduler, StepStats
from .consistency import FastLCMScheduler, FastTCDScheduler
from .convert import FAST_SCHEDULERS, fast_scheduler
from .ddim import FastDDIMScheduler
from .ddpm import FastDDPMScheduler
from .deis import FastDEISMultistepScheduler
from .dpmsolver import FastDPMSolverMultistepScheduler
from .dpmsolver_sde import FastDPMSolverSDEScheduler
from .edm import FastEDMDPMSolverMultistepScheduler, FastEDMEulerScheduler
from .euler import FastEulerAncestralDiscreteScheduler, FastEulerDiscreteScheduler
from .flow import FastFlowMatchEulerDiscreteScheduler
from .heun import FastHeunDiscreteScheduler
from .kdpm2 import FastKDPM2AncestralDiscreteScheduler, FastKDPM2DiscreteScheduler
from .lms import FastLMSDiscreteScheduler
from .pndm import FastPNDMScheduler
from .saving import record_fast_schedulers_as_parents
from .singlestep import FastDPMSolverSinglestepScheduler
from .unipc import FastUniPCMultistepScheduler

record_fast_schedulers_as_parents()

__all__ = [
    "FAST_SCHEDULERS",
    "FastDDIMScheduler",
    "FastDDPMScheduler",
    "FastDEISMultistepScheduler",
    "FastDPMSolverMultistepScheduler",
    "FastDPMSolverSDEScheduler",
    "FastDPMSolverSinglestepScheduler",
    "FastEDMDPMSolverMultistepScheduler",
    "FastEDMEulerScheduler",
    "FastEulerAncestralDiscreteScheduler",
    "FastEulerDiscreteScheduler",
    "FastFlowMatchEulerDiscreteScheduler",
    "FastHeunDiscreteScheduler",
    "FastKDPM2AncestralDiscreteScheduler",
    "FastKDPM2DiscreteScheduler",
    "FastLCMScheduler",
    "FastLMSDiscreteScheduler",
    "FastPNDMScheduler",
    "FastTCDScheduler",
    "FastUniPCMultistepScheduler",
    "FusedScheduler",
    "StepStats",
    "fast_scheduler",
]
