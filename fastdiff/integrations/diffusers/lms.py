"""FastLMSDiscreteScheduler: diffusers' LMSDiscreteScheduler (linear multistep on the VE ODE dx/dsigma = d,
`lms_coeffs` / `lms_step_coeffs`) with one fused step per step.

The fused step's x0 line computes this step's derivative d = (x - x0) / sigma, and the update combines it with the
earlier ones, which the parent keeps (`derivatives`, the history): x' = x + c_0 d + c_1 d_1 + ... The parent also
returns x0 itself (`pred_original_sample`): one more fused call reads it from the model output (`read_ve`, the map
the derivative is built on), and its statistics are `last_step_stats.x0`.
"""

from __future__ import annotations

import warnings

import torch
from diffusers import LMSDiscreteScheduler
from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteSchedulerOutput

from ...samplers import lms_coeffs, lms_step_coeffs, read_ve
from ...step import MAX_HISTORY, StepCoeffs, StepResult
from .base import VEInputScale, promoted
from .euler import SCALE_INPUT_WARNING


class FastLMSDiscreteScheduler(VEInputScale, LMSDiscreteScheduler):
    """diffusers' LMSDiscreteScheduler with a fused `step()` (module docstring), any `order`."""

    _parent = LMSDiscreteScheduler
    _marks_scale_input = True  # its step() warns unless scale_model_input was called

    def _coeffs(self, i: int, order: int, kept: int) -> tuple[tuple[float, ...], StepCoeffs]:
        """Step i's weights and update, planned per (i, order, kept): the parent's coefficients c_j of d_{i-j}
        (`lms_coeffs`) for this step's derivative and the `kept` earlier ones it has (it zips the coefficients with
        its `derivatives`, the shorter wins), and the fused step with the first MAX_HISTORY earlier ones as its
        history (`_combine` adds the rest)."""
        weights = lms_coeffs(self._host("sigmas"), i, order)[: kept + 1]
        return weights, lms_step_coeffs(self._sigma(i), weights[: 1 + MAX_HISTORY], self.config.prediction_type)

    def _x0_coeffs(self, i: int) -> StepCoeffs:
        """The parent's x0 (`pred_original_sample`) of step i, read from the model output (`read_ve`)."""
        m = read_ve(self.config.prediction_type, self._sigma(i))
        return StepCoeffs(cx=m.cx, co=m.co, p0=1.0)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        order: int = 4,
        return_dict: bool = True,
    ) -> LMSDiscreteSchedulerOutput | tuple:
        """As `LMSDiscreteScheduler.step`: x' = x + sum_j c_j d_{i-j} (Adams-Bashforth in sigma)."""
        self._check_config()
        if not self.is_scale_input_called:
            warnings.warn(SCALE_INPUT_WARNING, stacklevel=2)
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        i = self.step_index
        kept = len(self.derivatives) - (len(self.derivatives) >= order)  # earlier ones left after the parent's pop
        weights, coeffs = self._planned(("lms", i, order, kept), self._coeffs, i, order, kept)
        earlier = list(zip(weights[1:], reversed(self.derivatives)))  # d_{i-1}, d_{i-2}, ...: len(weights) - 1
        x = promoted(sample, model_output)
        r = self._combine(x, model_output, lambda ph: coeffs, earlier)  # ph: weights[1 : 1 + MAX_HISTORY]
        self.derivatives.append(r.pred_x0)  # the x0 line's d
        if len(self.derivatives) > order:
            self.derivatives.pop(0)
        x0 = self._derived(x, model_output, self._planned(("lms x0", i), self._x0_coeffs, i))
        self._record(timestep, r, StepResult(x0.prev_sample, x0.prev_sample, r.clipped, x0_stats=x0.stats))
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample, x0.prev_sample)
        return LMSDiscreteSchedulerOutput(prev_sample=r.prev_sample, pred_original_sample=x0.prev_sample)
