"""FastDPMSolverMultistepScheduler: diffusers' DPMSolverMultistepScheduler, every algorithm type, one fused step
per step.

- "dpmsolver++" / "sde-dpmsolver++" (data prediction, `dpmpp_coeffs`): the model output is read as x0 (and
  thresholded) inside the fused step; `model_outputs` holds those x0s.
- "dpmsolver" / "sde-dpmsolver" (noise prediction, `dpm_solver_coeffs`): the fused step reads eps from the model
  output itself (its x term folded into the sample's coefficient on the host, where the update cancels);
  `model_outputs` holds the eps of the parent's own `convert_model_output` (the model output itself for an eps
  model), which with thresholding is also the step's input.
"""

from __future__ import annotations

import torch
from diffusers import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from ...samplers import dpmpp_coeffs
from ...samplers.dpmsolver import dpm_solver_coeffs
from ...step import StepCoeffs
from .base import NO_STEPS_ERROR
from .multistep import MultistepScheduler

DATA_PREDICTION = ("dpmsolver++", "sde-dpmsolver++")


class FastDPMSolverMultistepScheduler(MultistepScheduler, DPMSolverMultistepScheduler):
    """diffusers' DPMSolverMultistepScheduler with a fused `step()` (module docstring): algorithm types
    "dpmsolver++", "sde-dpmsolver++", "dpmsolver" and "sde-dpmsolver", orders 1-3, midpoint / heun, thresholding,
    every sigma ladder. A repeated sigma (e.g. the final one of final_sigmas_type="sigma_min") is a zero-length
    step, where the parent's higher orders divide by h = 0."""

    _parent = DPMSolverMultistepScheduler

    def _sde_d2_weight(self, i: int) -> float:
        """The parent's 3rd-order SDE D2 weight alpha_t ((1 - e^{-2h} - 2h) / (2h)^2 - 1/2), computed as it does
        (float32): its O(h^2) cancellation at small h shapes the parent's result (`dpmpp_coeffs`)."""
        sigmas = self._host("sigmas")
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(sigmas[i + 1])
        alpha_s0, sigma_s0 = self._sigma_to_alpha_sigma_t(sigmas[i])
        h = (torch.log(alpha_t) - torch.log(sigma_t)) - (torch.log(alpha_s0) - torch.log(sigma_s0))
        return float(alpha_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5))

    def _coeffs(self, i: int, order: int, prediction_type: str) -> StepCoeffs:
        """Step i's update of the given order, the model output read as `prediction_type` (x0 for the
        data-prediction solvers, eps for the noise-prediction ones): host maths of the step index and config."""
        cfg = self.config
        sde = cfg.algorithm_type.startswith("sde-")
        now, nxt = self._alpha_sigma(i), self._alpha_sigma(i + 1)
        previous = tuple(self._alpha_sigma(i - k) for k in range(1, order))
        if cfg.algorithm_type in DATA_PREDICTION:
            return dpmpp_coeffs(
                prediction_type,
                *now,
                *nxt,
                previous,
                eta=1.0 if sde else 0.0,
                solver_type=cfg.solver_type,
                d2_weight=self._sde_d2_weight(i) if order == 3 and sde else None,
            )
        return dpm_solver_coeffs(prediction_type, *now, *nxt, previous, sde=sde, solver_type=cfg.solver_type)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `DPMSolverMultistepScheduler.step` (DPM-Solver++, Lu et al. 2022, alg. 2; DPM-Solver; the orders as
        the parent)."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        cfg = self.config
        i = self.step_index
        order = self._order(i, len(self.timesteps))
        history = self._history(order)  # m1, m2: the latest model outputs
        p = "flow" if cfg.prediction_type == "flow_prediction" else cfg.prediction_type
        if p == "epsilon" and cfg.variance_type in ("learned", "learned_range"):
            model_output = model_output[:, :3]  # the mean (the parent's conversion takes these channels)
        if cfg.algorithm_type in DATA_PREDICTION:
            out, clip, newest = model_output, self._clip(), None  # newest: the fused step's x0
        else:
            newest = self.convert_model_output(model_output, sample=sample)  # eps for the history, as the parent's
            if cfg.thresholding:  # eps re-derived from the thresholded x0: the parent's conversion is the step's input
                out, p = newest, "epsilon"
            else:  # read in the fused step from the model output (for an eps model, newest is that output)
                out = model_output
            clip = None
        coeffs = self._planned(("dpm", i, order, p), self._coeffs, i, order, p)
        self._check_shapes(out, sample)

        noise = None
        if cfg.algorithm_type.startswith("sde-"):
            if variance_noise is None:
                noise = self._noise_like(out, generator, dtype=torch.float32)
            else:
                noise = variance_noise.to(device=out.device, dtype=torch.float32)

        out_dtype = torch.result_type(sample, out)
        r = self._fused(sample.to(torch.float32), out, coeffs, clip=clip, history=history, noise=noise)
        self._record(timestep, r)
        self._push(r.pred_x0 if newest is None else newest)
        prev = r.prev_sample.to(out_dtype)
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)
