"""FastHeunDiscreteScheduler: diffusers' HeunDiscreteScheduler with fused stages (Karras et al. 2022, alg. 1).

Stage 1 is an Euler step (`euler_coeffs`) from sigma to sigma_next: d1 = (x - x0) / sigma_hat. Stage 2 reads
the model at the sample it is given, x_2 (the Euler sample, or whatever a callback or an inpainting blend made
of it), at sigma_next: d2 = (x_2 - x0_2) / sigma_next, and returns, as the parent, the saved input x plus
dt (d1 + d2) / 2. With d1 = (x - x0_1) / sigma_hat that is one generic step on x_2 with history (x, x0_1):

    x' = (1 + dt / (2 sigma_hat)) x - dt / (2 sigma_hat) x0_1 + dt / 2 d2

(or with history (x, d1) when the parent's own first stage left a derivative tensor).
"""

from __future__ import annotations

import torch
from diffusers import HeunDiscreteScheduler
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteSchedulerOutput

from ...samplers import euler_coeffs
from ...samplers.plan import read_ve
from ...step import StepCoeffs
from .base import VEInputScale, promoted, vp_prediction


class FastHeunDiscreteScheduler(VEInputScale, HeunDiscreteScheduler):
    """diffusers' HeunDiscreteScheduler with fused stages (module docstring).

    The parent's state is kept (`dt`, `sample`, the stage); its first-stage derivative
    `prev_derivative = (sample - x0) / sigma_hat` is not materialised by the fused step but computed when read.
    """

    _parent = HeunDiscreteScheduler

    @property
    def prev_derivative(self):
        lazy = self.__dict__.get("_fast_prev_derivative")
        if isinstance(lazy, tuple):  # (sample, x0, sigma_hat) of the first stage: d = (x - x0) / sigma_hat
            x, x0, sigma_hat = lazy
            lazy = (x - x0) / sigma_hat
            self.__dict__["_fast_prev_derivative"] = lazy
        return lazy

    @prev_derivative.setter
    def prev_derivative(self, value) -> None:
        self.__dict__["_fast_prev_derivative"] = value

    def _first_stage(self, i: int) -> tuple[StepCoeffs, torch.Tensor, torch.Tensor]:
        """Stage 1 at step index i, host maths of the index (planned): the Euler step sigma_i -> sigma_{i+1}
        (gamma = 0: sigma_hat = sigma_i), the parent's dt = sigma_next - sigma_hat and sigma_hat (float32 host
        scalars, as the parent's)."""
        sigmas = self._host("sigmas")
        coeffs = euler_coeffs(float(sigmas[i]), float(sigmas[i + 1]), vp_prediction(self.config.prediction_type))
        return coeffs, sigmas[i + 1] - sigmas[i], sigmas[i]

    def _second_stage(self, i: int, dt: float, sigma_hat: float | None) -> StepCoeffs:
        """Stage 2 at step index i (module docstring), planned per (i, dt, sigma_hat): x0_2 = cx x_2 + co out,
        d2 = (x_2 - x0_2) / sigma_next, and x + dt / 2 d1 from the first stage's terms: (x, x0_1) when its
        sigma_hat is known (d1 = (x - x0_1) / sigma_hat), else (x, d1) (sigma_hat None: the parent's own stage)."""
        sigma_next = self._sigma(i)
        m = read_ve(vp_prediction(self.config.prediction_type), sigma_next)
        e = 1.0 / sigma_next
        if sigma_hat is None:
            weights = (1.0, dt / 2.0)
        else:
            w = dt / (2.0 * sigma_hat)
            weights = (1.0 + w, -w)
        return StepCoeffs(cx=m.cx, co=m.co, ex=e, e0=-e, pe=dt / 2.0, ph=weights)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> HeunDiscreteSchedulerOutput | tuple:
        """As `HeunDiscreteScheduler.step`: an Euler step, then x' = x + dt (d1 + d2) / 2 (Karras et al. alg. 1)."""
        self._check_config()
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        x = promoted(sample, model_output)
        i = self.step_index
        if self.state_in_first_order:
            coeffs, dt, sigma_hat = self._planned(("heun", i), self._first_stage, i)
            r = self._fused(x, model_output, coeffs, clip=self._clip())
            # the parent's state: dt (float32, as the parent), the input, its slope
            self.dt = dt
            self.sample = sample
            self.prev_derivative = (sample, r.pred_x0, sigma_hat)
        else:
            # the first stage's terms: (x, x0_1, sigma_hat) of the fused stage, else the parent's (sample, d1)
            lazy = self.__dict__.get("_fast_prev_derivative")
            if isinstance(lazy, tuple):
                x_1, x0_1, sigma_hat = lazy
                history, sigma_hat = (x_1, x0_1), float(sigma_hat)
            else:
                history, sigma_hat = (self.sample, self.prev_derivative), None
            dt = float(self.dt)
            coeffs = self._planned(("heun 2", i, dt, sigma_hat), self._second_stage, i, dt, sigma_hat)
            r = self._fused(x, model_output, coeffs, clip=self._clip(), history=history)
            self.prev_derivative = None
            self.dt = None
            self.sample = None
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample, r.pred_x0)
        return HeunDiscreteSchedulerOutput(prev_sample=r.prev_sample, pred_original_sample=r.pred_x0)
