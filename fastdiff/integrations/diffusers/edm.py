"""FastEDMEulerScheduler and FastEDMDPMSolverMultistepScheduler: diffusers' schedulers of EDM-preconditioned models
(Karras et al. 2022) with one fused step per step; the model output is read as x0 through EDM's preconditioning
(`param.edm_precondition`) inside the step.

    EDMEuler              `edm_euler_coeffs`: diffusers' churn variant, x0 at sigma_hat, Euler to the next level;
                          step(pred_original_sample=...) reads that tensor as x0 instead
    EDMDPMSolverMultistep `dpmpp_coeffs` on the VE levels (alpha = 1, sigma the level) with the output map
                          `with_output_map(edm_precondition)`; `model_outputs` holds the thresholded x0s.
                          The parent has no 3rd-order "sde-dpmsolver++" update (its step fails there): a step
                          that needs one raises ValueError.
"""

from __future__ import annotations

import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler
from diffusers.schedulers.scheduling_edm_euler import EDMEulerSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from ... import param
from ...samplers import churn_gamma, dpmpp_coeffs, edm_euler_coeffs, with_output_map
from ...step import StepCoeffs
from .base import NO_STEPS_ERROR, promoted
from .euler import _EulerStep
from .multistep import MultistepScheduler


class FastEDMEulerScheduler(_EulerStep, EDMEulerScheduler):
    """diffusers' EDMEulerScheduler with a fused `step()` (module docstring), churn included."""

    _parent = EDMEulerScheduler
    _output = EDMEulerSchedulerOutput
    _timestep_error_name = "EDMEulerScheduler"

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        pred_original_sample: torch.Tensor | None = None,
    ) -> EDMEulerSchedulerOutput | tuple:
        """As `EDMEulerScheduler.step`: x' = x_hat + (sigma' - sigma_hat) (x_hat - x0) / sigma_hat."""
        given_x0 = pred_original_sample is not None

        def coeffs(sigma: float, sigma_next: float) -> tuple[StepCoeffs, bool]:
            gamma = churn_gamma(sigma, s_churn, len(self._host("sigmas")) - 1, s_tmin, s_tmax)
            cfg = self.config
            c = edm_euler_coeffs(sigma, sigma_next, cfg.prediction_type, cfg.sigma_data, gamma, s_noise,
                                 output_is_x0=given_x0)  # fmt: skip
            return c, gamma > 0

        out = pred_original_sample if given_x0 else model_output
        key = (s_churn, s_tmin, s_tmax, s_noise, given_x0)  # what coeffs reads besides the sigmas and the config
        return self._euler_step(out, timestep, sample, coeffs, generator, return_dict, key)


class FastEDMDPMSolverMultistepScheduler(MultistepScheduler, EDMDPMSolverMultistepScheduler):
    """diffusers' EDMDPMSolverMultistepScheduler with a fused `step()` (module docstring): "dpmsolver++" orders 1-3,
    "sde-dpmsolver++" orders 1-2, midpoint / heun, thresholding, both sigma schedules and final sigmas."""

    _parent = EDMDPMSolverMultistepScheduler

    def _alpha_sigma(self, index: int) -> tuple[float, float]:
        return 1.0, self._sigma(index)  # the VE levels (the parent's _sigma_to_alpha_sigma_t)

    def _coeffs(self, i: int, order: int) -> StepCoeffs:
        """Step i's update of the given order: host maths of the step index and config."""
        cfg = self.config
        sde = cfg.algorithm_type == "sde-dpmsolver++"
        if sde and order == 3:
            raise ValueError(
                "EDMDPMSolverMultistepScheduler has no 3rd-order update for algorithm_type='sde-dpmsolver++' "
                "(diffusers' own step fails there): use solver_order <= 2 with it"
            )
        now, nxt = self._alpha_sigma(i), self._alpha_sigma(i + 1)
        if sde and nxt[1] > now[1]:
            # final_sigmas_type="sigma_min": the float32 sigma_min lies a rounding above the ladder's float32 last
            # level; the parent's float32 log-SNR difference is 0 there (a zero-length step), where an SDE step up
            # in sigma would have a negative noise variance
            nxt = now
        previous = tuple(self._alpha_sigma(i - k) for k in range(1, order))
        c = dpmpp_coeffs("sample", *now, *nxt, previous, eta=1.0 if sde else 0.0, solver_type=cfg.solver_type)
        return with_output_map(c, param.edm_precondition(cfg.prediction_type, self._sigma(i), cfg.sigma_data))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `EDMDPMSolverMultistepScheduler.step` (DPM-Solver++, Lu et al. 2022, alg. 2, on EDM's levels)."""
        if self.config.prediction_type not in param.EDM_PREDICTION_TYPES:
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        i = self.step_index
        order = self._order(i, len(self.timesteps))
        x = promoted(sample, model_output)
        noise = None
        if self.config.algorithm_type == "sde-dpmsolver++":
            noise = self._noise_like(model_output, generator, dtype=x.dtype)
        coeffs = self._planned(("edm-dpm", i, order), self._coeffs, i, order)  # host maths of (i, order), planned
        r = self._fused(x, model_output, coeffs, clip=self._clip(), history=self._history(order), noise=noise)
        self._push(r.pred_x0)
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample,)
        return SchedulerOutput(prev_sample=r.prev_sample)
