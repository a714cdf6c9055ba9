"""FastDPMSolverSDEScheduler: diffusers' DPMSolverSDEScheduler (Crowson's DPM++ SDE, `dpmpp_sde_coeffs` with r = 1/2,
eta = 1) with one fused call per stage.

Each stage is an ancestral DPM-Solver++(1) step; stage 2 starts again from the sample the parent keeps (`sample`,
stage 1's input), reading the model output it is given at the midpoint sigma(s). The noise is the parent's: its
Brownian-tree noise sampler (`noise_sampler`, made at the first step from the sample and `noise_sampler_seed`),
asked for the same levels, computed in float32 as the parent computes them (a tree's increment depends on the
exact times), so the same seed gives the same samples. A step into sigma = 0 is an Euler step (no noise).
prediction_type="sample", which the parent's step refuses, goes to the parent's step.
"""

from __future__ import annotations

import torch
from diffusers import DPMSolverSDEScheduler
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler, DPMSolverSDESchedulerOutput

from ...samplers import dpmpp_sde_coeffs, euler_coeffs
from ...step import StepCoeffs
from .base import FusedScheduler, promoted
from .kdpm2 import FUSED_PREDICTION_TYPES


class FastDPMSolverSDEScheduler(FusedScheduler, DPMSolverSDEScheduler):
    """diffusers' DPMSolverSDEScheduler with fused stages (module docstring)."""

    _parent = DPMSolverSDEScheduler

    def _levels(self, i: int, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma, sigma_next) of the step that the stage at step index i belongs to (float32 host tensors)."""
        sigmas = self._host("sigmas")
        return (sigmas[i], sigmas[i + 1]) if first else (sigmas[i - 1], sigmas[i])

    def _coeffs(self, i: int, first: bool, s_noise: float) -> StepCoeffs:
        """The stage at step index i: host maths of the index, the stage and s_noise."""
        sigma, sigma_next = (float(s) for s in self._levels(i, first))
        p = self.config.prediction_type
        if sigma_next == 0.0:
            return euler_coeffs(sigma, 0.0, p)
        stage1, stage2 = dpmpp_sde_coeffs(sigma, sigma_next, p, s_noise=s_noise)
        return stage1 if first else stage2

    @staticmethod
    def _noise_levels(sigma: torch.Tensor, sigma_next: torch.Tensor, first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The levels the parent asks its noise sampler for, in its float32 arithmetic (t = -log sigma, back by
        exp(-t)): from sigma to sigma(s) = exp(-(t + (t_next - t) / 2)) in stage 1 (kept as `mid_point_sigma`),
        to sigma_next in stage 2."""
        t, t_next = sigma.log().neg(), sigma_next.log().neg()
        if first:
            t_next = t + (t_next - t) * 0.5
        return t.neg().exp(), t_next.neg().exp()

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
        s_noise: float = 1.0,
    ) -> DPMSolverSDESchedulerOutput | tuple:
        """As `DPMSolverSDEScheduler.step`: stage 1 into sigma(s), or stage 2 from the kept sample into sigma_next."""
        if self.config.prediction_type not in FUSED_PREDICTION_TYPES:
            return super().step(model_output, timestep, sample, return_dict=return_dict, s_noise=s_noise)
        self._check_config()
        if self.step_index is None:
            self._init_step_index(timestep)
        if self.noise_sampler is None:
            sigmas = self._host("sigmas")
            self.noise_sampler = BrownianTreeNoiseSampler(
                sample, sigmas[sigmas > 0].min().item(), sigmas.max().item(), self.noise_sampler_seed
            )
        self._check_shapes(model_output, sample)
        i, first = self.step_index, self.state_in_first_order
        coeffs = self._planned(("sde", i, first, s_noise), self._coeffs, i, first, s_noise)  # host maths, planned
        x = promoted(sample, model_output)
        sigma, sigma_next = self._levels(i, first)
        if sigma_next == 0:
            r = self._fused(x, model_output, coeffs)
        else:
            level, level_next = self._noise_levels(sigma, sigma_next, first)
            noise = self.noise_sampler(level, level_next)
            if first:
                r = self._fused(x, model_output, coeffs, noise=noise)
                self.sample, self.mid_point_sigma = sample, level_next
            else:
                r = self._fused(x, model_output, coeffs, history=(self.sample,), noise=noise)
                self.sample, self.mid_point_sigma = None, None
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample, r.pred_x0)
        return DPMSolverSDESchedulerOutput(prev_sample=r.prev_sample, pred_original_sample=r.pred_x0)
