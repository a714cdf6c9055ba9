"""FastEulerDiscreteScheduler and FastEulerAncestralDiscreteScheduler: VE sigmas, a step index, one fused call
per step (`euler_coeffs` with churn, Karras et al. 2022 alg. 2; `euler_ancestral_coeffs`)."""

from __future__ import annotations

import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput
from diffusers.utils import logging

from ...samplers import churn_gamma, euler_ancestral_coeffs, euler_coeffs
from ...step import StepCoeffs
from .base import FusedScheduler, VEInputScale, vp_prediction

logger = logging.get_logger(__name__)

INTEGER_TIMESTEP_ERROR = (
    "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
    " `{name}.step()` is not supported. Make sure to pass"
    " one of the `scheduler.timesteps` as a timestep."
)
SCALE_INPUT_WARNING = (
    "The `scale_model_input` function should be called before `step` to ensure correct denoising. "
    "See `StableDiffusionPipeline` for a usage example."
)


def check_float_timestep(timestep, name: str) -> None:
    """The parents' refusal of integer indices as timesteps."""
    if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
        raise ValueError(INTEGER_TIMESTEP_ERROR.format(name=name))


class _EulerStep(FusedScheduler):
    """The Euler family's step around its coefficients, as the parents make it (their integer-timestep message
    names `_timestep_error_name`: EulerDiscreteScheduler in both Euler classes): checks, a fused step on the float32
    sample, the result in the model output's dtype, the step index advanced."""

    _output: type
    _timestep_error_name = "EulerDiscreteScheduler"

    def _euler_step(self, model_output, timestep, sample, coeffs_fn, generator, return_dict: bool, key=()):
        """`coeffs_fn(sigma, sigma_next) -> (StepCoeffs, needs_noise)`, planned once per step index and `key` (the
        step's arguments that coeffs_fn reads)."""
        self._check_config()
        check_float_timestep(timestep, self._timestep_error_name)
        if not self.is_scale_input_called:
            logger.warning(SCALE_INPUT_WARNING)
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        i = self.step_index
        coeffs, needs_noise = self._planned(("euler", i, *key), lambda: coeffs_fn(self._sigma(i), self._sigma(i + 1)))
        noise = self._noise_like(model_output, generator) if needs_noise else None
        x = sample if sample.dtype == torch.float32 else sample.to(torch.float32)
        r = self._fused(x, model_output, coeffs, noise=noise)
        self._record(timestep, r)
        prev = r.prev_sample if model_output.dtype == torch.float32 else r.prev_sample.to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return (prev, r.pred_x0)
        return self._output(prev_sample=prev, pred_original_sample=r.pred_x0)


class _VEInputScale(VEInputScale, _EulerStep):
    """The Euler parents' input scaling, planned (`VEInputScale`; EDM Euler, also an _EulerStep, scales its own way).
    Their step() warns unless scale_model_input was called."""

    _marks_scale_input = True


class FastEulerDiscreteScheduler(_VEInputScale, EulerDiscreteScheduler):
    """diffusers' EulerDiscreteScheduler with a fused `step()` (`euler_coeffs`, churn included)."""

    _parent = EulerDiscreteScheduler
    _output = EulerDiscreteSchedulerOutput

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
    ) -> EulerDiscreteSchedulerOutput | tuple:
        """As `EulerDiscreteScheduler.step`: x' = x_hat + (sigma' - sigma_hat) (x_hat - x0) / sigma_hat."""

        def coeffs(sigma: float, sigma_next: float) -> tuple[StepCoeffs, bool]:
            gamma = churn_gamma(sigma, s_churn, len(self._host("sigmas")) - 1, s_tmin, s_tmax)
            p = vp_prediction(self.config.prediction_type)
            return euler_coeffs(sigma, sigma_next, p, gamma, s_noise), gamma > 0

        key = (s_churn, s_tmin, s_tmax, s_noise)
        return self._euler_step(model_output, timestep, sample, coeffs, generator, return_dict, key)


class FastEulerAncestralDiscreteScheduler(_VEInputScale, EulerAncestralDiscreteScheduler):
    """diffusers' EulerAncestralDiscreteScheduler with a fused `step()` (`euler_ancestral_coeffs`, eta = 1).
    (prediction_type="sample", which the parent's step refuses, goes to the parent's step.)"""

    _parent = EulerAncestralDiscreteScheduler
    _output = EulerAncestralDiscreteSchedulerOutput

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> EulerAncestralDiscreteSchedulerOutput | tuple:
        """As `EulerAncestralDiscreteScheduler.step`: x' = x + (sigma_down - sigma) d + sigma_up z."""
        if self.config.prediction_type == "sample":
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

        def coeffs(sigma: float, sigma_next: float) -> tuple[StepCoeffs, bool]:
            return euler_ancestral_coeffs(sigma, sigma_next, self.config.prediction_type), True

        return self._euler_step(model_output, timestep, sample, coeffs, generator, return_dict)
