"""FastDPMSolverSinglestepScheduler: diffusers' DPMSolverSinglestepScheduler (singlestep DPM-Solver++ / DPM-Solver, Lu
et al. 2022, `singlestep_coeffs`) with one fused step per step.

An order-k step goes from the sample at its group's start (the parent's `sample`, kept by the group's first
step) to the next level, with the converted outputs of the group (`model_outputs`, oldest first; this step's
last): x_t = a x_s + sum_j w_j m_j [+ n z], the kept sample and the group's earlier outputs as history.

- "dpmsolver++" / "sde-dpmsolver++": m = x0, read (and thresholded) inside the fused step; `model_outputs` holds
  those x0s.
- "dpmsolver" (noise prediction, deprecated in diffusers): m = eps, from the parent's own `convert_model_output`,
  which the fused step reads as an eps prediction. The update is DPM-Solver++'s under (alpha, sigma, lambda, x0)
  -> (sigma, alpha, -lambda, eps) (DPM-Solver's ODE updates are the data-prediction ones with the roles swapped).
"""

from __future__ import annotations

import torch
from diffusers import DPMSolverSinglestepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from ...samplers import singlestep_coeffs
from ...step import StepCoeffs
from .base import NO_STEPS_ERROR, promoted
from .multistep import SolverScheduler

DATA_PREDICTION = ("dpmsolver++", "sde-dpmsolver++")


class FastDPMSolverSinglestepScheduler(SolverScheduler, DPMSolverSinglestepScheduler):
    """diffusers' DPMSolverSinglestepScheduler with a fused `step()` (module docstring): every algorithm type,
    orders 1-3, midpoint / heun, thresholding, every sigma ladder."""

    _parent = DPMSolverSinglestepScheduler

    def _coeffs(self, i: int, order: int) -> StepCoeffs:
        """Step i's update of the given order (from the sample at step i - order + 1): host maths of the step index
        and config. The model output is read as x0 at step i, or (noise prediction) as the parent's eps."""
        cfg = self.config
        points = [self._alpha_sigma(j) for j in range(i - order + 1, i + 1)]
        alpha_t, sigma_t = self._alpha_sigma(i + 1)
        if cfg.algorithm_type in DATA_PREDICTION:
            sde = cfg.algorithm_type == "sde-dpmsolver++"
            a, w, n = singlestep_coeffs(alpha_t, sigma_t, points, solver_type=cfg.solver_type, sde=sde)
            terms = dict(p0=w[-1], pn=n)
        else:  # the dual of the data-prediction update (module docstring)
            dual = [(sigma, alpha) for alpha, sigma in points]
            a, w, _ = singlestep_coeffs(sigma_t, alpha_t, dual, solver_type=cfg.solver_type)
            terms = dict(pe=w[-1])
        if order == 1:
            terms["px"] = a
        else:  # x_t = a x_s + w_0 m_start + ... + w_{k-1} m_now
            terms["ph"] = (a, *w[:-1])
        if cfg.algorithm_type in DATA_PREDICTION:
            return self._read_x0(i, **terms)
        return StepCoeffs.from_prediction("epsilon", *points[-1], **terms)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `DPMSolverSinglestepScheduler.step`: the order of `order_list` (lower while the outputs it needs are
        missing), from the group's start."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        cfg = self.config
        i = self.step_index
        data = cfg.algorithm_type in DATA_PREDICTION
        if data:
            if cfg.prediction_type == "epsilon" and cfg.variance_type in ("learned", "learned_range"):
                model_output = model_output[:, :3]  # the mean (the parent's conversion takes these channels)
            out, newest = model_output, None  # newest: the fused step's x0
        else:
            out = newest = self.convert_model_output(model_output, sample=sample)
        self._check_shapes(out, sample)
        x = promoted(sample, out)
        noise = None
        if cfg.algorithm_type == "sde-dpmsolver++":  # drawn as the parent, in its converted output's dtype
            noise = self._noise_like(out, generator, dtype=out.dtype if cfg.prediction_type == "sample" else x.dtype)
        order = self.order_list[i]
        while order > 1 and self.model_outputs[-(order - 1)] is None:  # (the parent checks after adding this one)
            order -= 1
        if order == 1:
            self.sample = sample
        history = () if order == 1 else (self.sample, *self.model_outputs[-(order - 1) :])
        coeffs = self._planned(("singlestep", i, order), self._coeffs, i, order)  # host maths of (i, order), planned
        r = self._fused(x, out, coeffs, clip=self._clip() if data else None, history=history, noise=noise)
        self._keep(r.pred_x0 if newest is None else newest)
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample,)
        return SchedulerOutput(prev_sample=r.prev_sample)
