"""FastDEISMultistepScheduler: diffusers' DEISMultistepScheduler (rho-AB-DEIS, Zhang & Chen 2023, `deis_coeffs`) with
one fused step per step.

The update x_t = a x + sum_j w_j eps_j combines this step's noise prediction, which the fused step's eps line
computes (from the thresholded x0 where the config thresholds, as the parent re-derives it), with earlier ones as
history. The parent keeps those noise predictions (`model_outputs`), eps = (x - alpha x0c) / sigma of each step:
the fused step writes x0, so one more fused call makes eps from it.
"""

from __future__ import annotations

import torch
from diffusers import DEISMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from ...samplers import deis_coeffs
from ...step import StepCoeffs
from .base import NO_STEPS_ERROR, promoted
from .multistep import MultistepScheduler


class FastDEISMultistepScheduler(MultistepScheduler, DEISMultistepScheduler):
    """diffusers' DEISMultistepScheduler with a fused `step()` (module docstring): orders 1-3, every prediction type
    and sigma ladder, thresholding."""

    _parent = DEISMultistepScheduler

    def _coeffs(self, i: int, order: int) -> StepCoeffs:
        """Step i's update of the given order: host maths of the step index and config."""
        alpha_t, sigma_t = self._alpha_sigma(i + 1)
        a, w = deis_coeffs(alpha_t, sigma_t, [self._alpha_sigma(i - k) for k in range(order)])
        return self._read_x0(i, recompute_eps=self.config.thresholding, px=a, pe=w[0], ph=w[1:])

    def _eps_read(self, i: int) -> StepCoeffs:
        """eps from (x, x0c) at step i: the eps line of the x0 read with eps recomputed, as a fused call on (x, x0c)."""
        read = self._read_x0(i, recompute_eps=True)
        return StepCoeffs(co=1.0, ex=read.ex, e0=read.e0, pe=1.0)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `DEISMultistepScheduler.step`: x_t = alpha_t (x / alpha_s0 + sum_j c_j eps_j) (eq. 15)."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        i = self.step_index
        order = self._order(i, len(self.timesteps))
        x = promoted(sample, model_output)
        # host maths of (i, order) and the sigmas: planned once per schedule and config
        coeffs = self._planned(("deis", i, order), self._coeffs, i, order)
        r = self._fused(x, model_output, coeffs, clip=self._clip(), history=self._history(order))
        # the parent's eps of this step, from x and the clipped x0: the eps line of the read, on (x, x0c)
        eps = self._derived(x, r.pred_x0, self._planned(("deis-eps", i), self._eps_read, i))
        self._push(eps.prev_sample)
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample,)
        return SchedulerOutput(prev_sample=r.prev_sample)
