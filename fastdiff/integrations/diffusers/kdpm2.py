"""FastKDPM2DiscreteScheduler and FastKDPM2AncestralDiscreteScheduler: diffusers' DPM-Solver-2 schedulers (Lu et al.
2022, alg. 1 with r = 1/2 in log sigma, Crowson's sample_dpm_2 / sample_dpm_2_ancestral) with one fused call per
stage, on the parent's own levels (its float32 `sigmas_interpol`, `sigmas_down`, `sigmas_up`).

    stage 1   x_mid = x + (sigma_mid - sigma) d(x, sigma)                 an Euler step (`euler_coeffs`); the parent
                                                                          keeps x (`sample`)
    stage 2   x'    = x + (sigma_to - sigma) d(x_mid, sigma_mid) [+ sigma_up z]    `dpm2_correction_coeffs` on the
                                                                          sample it is given, the kept x as history

sigma_to is the next level (DPM-2) or sigma_down (ancestral). The last step's first stage has sigma_mid = 0: an
Euler step into 0. prediction_type="sample", which the parents' steps refuse, goes to the parent's step.
"""

from __future__ import annotations

import torch
from diffusers import KDPM2AncestralDiscreteScheduler, KDPM2DiscreteScheduler
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import KDPM2AncestralDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_k_dpm_2_discrete import KDPM2DiscreteSchedulerOutput

from ...samplers import dpm2_correction_coeffs, euler_coeffs
from ...step import StepCoeffs
from .base import FusedScheduler, VEInputScale, promoted

FUSED_PREDICTION_TYPES = ("epsilon", "v_prediction")


class _DPM2Step(VEInputScale):
    """The two stages around the parents' state (`sample`: stage 1's input, None in stage 1)."""

    _output: type
    _ancestral: bool = False

    def _levels(self, i: int, first: bool) -> tuple[float, float, float, float]:
        """(sigma, sigma_mid, sigma_to, sigma_up) of the stage at step index i, from the parent's tables."""
        raise NotImplementedError

    def _coeffs(self, i: int, first: bool) -> StepCoeffs:
        """The stage at step index i: host maths of the index and the stage (planned per (i, first): the levels are
        the parent's tables, which are in `_host_tensors`)."""
        sigma, sigma_mid, sigma_to, sigma_up = self._levels(i, first)
        p = self.config.prediction_type
        if first:
            return euler_coeffs(sigma, sigma_mid, p)
        return dpm2_correction_coeffs(sigma, sigma_mid, sigma_to, p, sigma_up)

    def _dpm2_step(self, model_output, timestep, sample, generator, return_dict: bool):
        self._check_config()
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        i, first = self.step_index, self.state_in_first_order
        coeffs = self._planned(("dpm2", i, first), self._coeffs, i, first)
        x = promoted(sample, model_output)
        if first:
            r = self._fused(x, model_output, coeffs)
            self._keep_first_stage(i, sample)
        else:
            noise = self._noise_like(model_output, generator) if self._ancestral else None
            r = self._fused(x, model_output, coeffs, history=(self.sample,), noise=noise)
            self.sample = None
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample, r.pred_x0)
        return self._output(prev_sample=r.prev_sample, pred_original_sample=r.pred_x0)

    def _keep_first_stage(self, i: int, sample: torch.Tensor) -> None:
        self.sample = sample


class FastKDPM2DiscreteScheduler(_DPM2Step, KDPM2DiscreteScheduler):
    """diffusers' KDPM2DiscreteScheduler with fused stages (module docstring)."""

    _parent = KDPM2DiscreteScheduler
    _output = KDPM2DiscreteSchedulerOutput
    _host_tensors = (*FusedScheduler._host_tensors, "sigmas_interpol")

    def _levels(self, i: int, first: bool) -> tuple[float, float, float, float]:
        sigmas, interpol = self._host("sigmas"), self._host("sigmas_interpol")
        if first:
            return float(sigmas[i]), float(interpol[i + 1]), float(sigmas[i + 1]), 0.0
        return float(sigmas[i - 1]), float(interpol[i]), float(sigmas[i]), 0.0

    def _input_level(self) -> tuple[str, int]:
        # the parent's scale_model_input: sigma in stage 1, sigma_interpol in stage 2
        return ("sigmas" if self.state_in_first_order else "sigmas_interpol"), self.step_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> KDPM2DiscreteSchedulerOutput | tuple:
        """As `KDPM2DiscreteScheduler.step`: DPM-Solver-2's first or second stage."""
        if self.config.prediction_type not in FUSED_PREDICTION_TYPES:
            return super().step(model_output, timestep, sample, return_dict=return_dict)
        return self._dpm2_step(model_output, timestep, sample, None, return_dict)


class FastKDPM2AncestralDiscreteScheduler(_DPM2Step, KDPM2AncestralDiscreteScheduler):
    """diffusers' KDPM2AncestralDiscreteScheduler with fused stages (module docstring); stage 2 draws its noise as
    the parent does (`randn_tensor` with the generator)."""

    _parent = KDPM2AncestralDiscreteScheduler
    _output = KDPM2AncestralDiscreteSchedulerOutput
    _ancestral = True
    _host_tensors = (*FusedScheduler._host_tensors, "sigmas_interpol", "sigmas_up", "sigmas_down")

    def _levels(self, i: int, first: bool) -> tuple[float, float, float, float]:
        k = i if first else i - 1  # the parent reads stage 2's levels at the index of its stage 1
        sigma, mid = float(self._host("sigmas")[k]), float(self._host("sigmas_interpol")[k])
        return sigma, mid, float(self._host("sigmas_down")[k]), float(self._host("sigmas_up")[k])

    def _input_level(self) -> tuple[str, int]:
        # the parent's scale_model_input: sigma in stage 1, sigma_interpol of stage 1's index in stage 2
        if self.state_in_first_order:
            return "sigmas", self.step_index
        return "sigmas_interpol", self.step_index - 1

    def _keep_first_stage(self, i: int, sample: torch.Tensor) -> None:
        self.sample = sample
        self.dt = self._planned(("dpm2 dt", i), self._dt, i)

    def _dt(self, i: int) -> torch.Tensor:
        """The parent's dt of stage 1 (float32): sigma_interpol - sigma_hat."""
        return self._host("sigmas_interpol")[i] - self._host("sigmas")[i]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> KDPM2AncestralDiscreteSchedulerOutput | tuple:
        """As `KDPM2AncestralDiscreteScheduler.step`: DPM-Solver-2's first stage, or its second to sigma_down plus
        sigma_up z."""
        if self.config.prediction_type not in FUSED_PREDICTION_TYPES:
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        return self._dpm2_step(model_output, timestep, sample, generator, return_dict)
