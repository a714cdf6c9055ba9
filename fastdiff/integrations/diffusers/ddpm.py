"""FastDDPMScheduler: diffusers' DDPMScheduler with a fused `step()` (`ddpm_coeffs`, Ho et al. 2020, eq. 6-7)."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput

from ...samplers import ddpm_coeffs
from ...samplers.ddpm import VARIANCE_TYPES
from .base import FusedScheduler, promoted, vp_prediction


class FastDDPMScheduler(FusedScheduler, DDPMScheduler):
    """diffusers' DDPMScheduler with a fused `step()`. Learned variances are not supported."""

    _parent = DDPMScheduler

    def _unfusable(self) -> list[tuple[str, str]]:
        v = self.config.variance_type
        if v in ("learned", "learned_range"):
            return [
                (
                    f"variance_type={v!r}",
                    "a learned variance is a per-element nonlinear function (exp of an interpolated log-variance) "
                    "of a second model output, not an affine step",
                )
            ]
        if v == "fixed_large_log":
            return [
                (
                    "variance_type='fixed_large_log'",
                    "diffusers' step scales the noise by sqrt(log(beta_t)), the square root of a negative number, "
                    "and returns NaN; use variance_type='fixed_large' for the intended std sqrt(beta_t)",
                )
            ]
        return super()._unfusable()

    def _variance_type(self) -> str:
        # diffusers' _get_variance falls through to the posterior variance ("fixed_small") for any other name
        v = self.config.variance_type
        return v if v in VARIANCE_TYPES else "fixed_small"

    def previous_timestep(self, timestep):
        # the parent's rule on the host copy of the timesteps
        if self.custom_timesteps or self.num_inference_steps:
            ts = self._host("timesteps")
            index = (ts == self._host_timestep(timestep)).nonzero(as_tuple=True)[0][0]
            return torch.tensor(-1) if index == ts.shape[0] - 1 else ts[index + 1]
        return timestep - 1

    def _coeffs(self, t):
        """(the step from host timestep t to the previous one, whether it adds noise): host maths of t, planned."""
        prev_t = self.previous_timestep(t)
        alphas_cumprod = self._host("alphas_cumprod")
        alpha_prod_t = alphas_cumprod[t]
        alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        add_noise = bool(t > 0)
        coeffs = ddpm_coeffs(
            float(alpha_prod_t),
            float(alpha_prod_t_prev),
            vp_prediction(self.config.prediction_type),
            self._variance_type(),
            add_noise=add_noise,
            alpha_t=float(alpha_prod_t / alpha_prod_t_prev),  # the parent's float32 quotient (see ddpm_coeffs)
        )
        return coeffs, add_noise

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """As `DDPMScheduler.step`: x0 from the model, clip, then the posterior mean plus std z (Ho et al. eq. 7)."""
        self._check_config()
        t = self._host_timestep(timestep)
        self._check_shapes(model_output, sample)
        key = ("ddpm", self._key(t), self.num_inference_steps, self.custom_timesteps)
        coeffs, add_noise = self._planned(key, self._coeffs, t)
        noise = self._noise_like(model_output, generator) if add_noise else None
        x = promoted(sample, model_output)
        r = self._fused(x, model_output, coeffs, clip=self._clip(), noise=noise)
        self._record(t, r)
        if not return_dict:
            return (r.prev_sample, r.pred_x0)
        return DDPMSchedulerOutput(prev_sample=r.prev_sample, pred_original_sample=r.pred_x0)
