"""FastDDIMScheduler: diffusers' DDIMScheduler with a fused `step()` (`ddim_coeffs`, Song et al. 2021, eq. 12)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

from ...samplers import ddim_coeffs
from .base import NO_STEPS_ERROR, FusedScheduler, promoted, vp_prediction


class FastDDIMScheduler(FusedScheduler, DDIMScheduler):
    """diffusers' DDIMScheduler with a fused `step()`, quirks included: each step goes to
    t - num_train_timesteps // num_inference_steps (not to the next timestep for "linspace" spacing)."""

    _parent = DDIMScheduler

    def _coeffs(self, t, eta: float, use_clipped_model_output: bool):
        """The step from timestep t (host value) to t - num_train_timesteps // num_inference_steps."""
        prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
        alphas_cumprod = self._host("alphas_cumprod")
        alpha_prod_t = alphas_cumprod[t]
        alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else self._host("final_alpha_cumprod")
        return ddim_coeffs(
            float(alpha_prod_t),
            float(alpha_prod_t_prev),
            eta,
            vp_prediction(self.config.prediction_type),
            use_clipped_model_output,
        )

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple:
        """As `DDIMScheduler.step`: x' = sqrt(abar') x0 + sqrt(1 - abar' - std^2) eps + std z (Song et al. eq. 12)."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        t = self._host_timestep(timestep)
        key = ("ddim", self._key(t), self.num_inference_steps, eta, use_clipped_model_output)
        coeffs = self._planned(key, self._coeffs, t, eta, use_clipped_model_output)
        self._check_shapes(model_output, sample)
        noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError(
                    "Cannot pass both generator and variance_noise. Please make sure that either `generator` or"
                    " `variance_noise` stays `None`."
                )
            noise = self._noise_like(model_output, generator) if variance_noise is None else variance_noise
        x = promoted(sample, model_output)
        r = self._fused(x, model_output, coeffs, clip=self._clip(), noise=noise)
        self._record(t, r)
        if not return_dict:
            return (r.prev_sample, r.pred_x0)
        return DDIMSchedulerOutput(prev_sample=r.prev_sample, pred_original_sample=r.pred_x0)
