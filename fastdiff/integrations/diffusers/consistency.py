"""FastLCMScheduler and FastTCDScheduler: diffusers' few-step schedulers of distilled consistency models (LCM, Luo et
al. 2023; TCD, Zheng et al. 2024) with one fused step per step (`lcm_coeffs`, `tcd_coeffs`).

Both parents return a second tensor besides prev_sample: LCM its `denoised` = c_skip x + c_out x0c (the boundary
scalings are the parent's own, `get_scalings_for_boundary_condition_discrete`), TCD its `pred_noised_sample` x_s.
Where the step re-noises, prev_sample is not that tensor and one more fused call makes it (from the clipped x0
for LCM, read as an x0 prediction; from the model output for TCD); on the last step (or TCD with eta = 0) the two
are the same tensor, as in the parents. LCM clips / thresholds x0 as its config says; TCD's step does not (its
clip options are unused by the parent, so none is refused).
"""

from __future__ import annotations

import torch
from diffusers import LCMScheduler, TCDScheduler
from diffusers.schedulers.scheduling_lcm import LCMSchedulerOutput
from diffusers.schedulers.scheduling_tcd import TCDSchedulerOutput

from ...samplers import lcm_coeffs, tcd_coeffs
from ...samplers.consistency import tcd_intermediate_timestep
from ...step import StepCoeffs
from .base import NO_STEPS_ERROR, FusedScheduler, promoted


class _ConsistencyStep(FusedScheduler):
    """The bookkeeping both parents share: step index, this and the next timestep (host values)."""

    def _begin_step(self, model_output, timestep, sample) -> tuple[int, object]:
        """Checks, the step index; returns it and the timestep's host value."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        return self.step_index, self._host_timestep(timestep)

    def _next_timestep(self, i: int, default):
        """The timestep after step index i, `default` after the last one (as the parents)."""
        timesteps = self._host("timesteps")
        return timesteps[i + 1] if i + 1 < len(timesteps) else default

    def _alpha_cumprod(self, timestep) -> float:
        """alphas_cumprod at a timestep, `final_alpha_cumprod` below 0 (the parents' rule)."""
        return float(self._host("alphas_cumprod")[timestep]) if timestep >= 0 else float(self.final_alpha_cumprod)


class FastLCMScheduler(_ConsistencyStep, LCMScheduler):
    """diffusers' LCMScheduler with a fused `step()` (module docstring)."""

    _parent = LCMScheduler

    def _coeffs(self, i: int, timestep, prediction_type: str, last: bool) -> StepCoeffs:
        """Step i at `timestep` with the model output read as `prediction_type`: host maths of the step."""
        c_skip, c_out = (float(v) for v in self.get_scalings_for_boundary_condition_discrete(timestep))
        ac, ac_prev = self._alpha_cumprod(timestep), self._alpha_cumprod(self._next_timestep(i, timestep))
        return lcm_coeffs(ac, ac_prev, c_skip, c_out, prediction_type, last=last)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> LCMSchedulerOutput | tuple:
        """As `LCMScheduler.step`: denoised = c_skip x + c_out x0c, then sqrt(abar') denoised + sqrt(1 - abar') z
        (the last step returns denoised)."""
        i, t = self._begin_step(model_output, timestep, sample)
        last = i == self.num_inference_steps - 1
        x = promoted(sample, model_output)
        noise = None if last else self._noise_like(model_output, generator, dtype=x.dtype)
        key = self._key(t)  # the coefficients are host maths of (i, t): planned once per schedule and config
        coeffs = self._planned(("lcm", i, key, last), self._coeffs, i, t, self.config.prediction_type, last)
        r = self._fused(x, model_output, coeffs, clip=self._clip(), noise=noise)
        denoised = r.prev_sample
        if not last:  # the clipped x0 read as an x0 prediction: c_skip x + c_out x0c
            read = self._planned(("lcm-denoised", i, key), self._coeffs, i, t, "sample", True)
            denoised = self._derived(x, r.pred_x0, read).prev_sample
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample, denoised)
        return LCMSchedulerOutput(prev_sample=r.prev_sample, denoised=denoised)


class FastTCDScheduler(_ConsistencyStep, TCDScheduler):
    """diffusers' TCDScheduler with a fused `step()` (module docstring)."""

    _parent = TCDScheduler

    def _unfusable(self) -> list[tuple[str, str]]:
        return []  # the parent's step reads none of its clip options

    def _coeffs(self, i: int, timestep, eta: float, renoise: bool) -> StepCoeffs:
        """Step i at `timestep` with gamma = eta: host maths of the step (s = floor((1 - eta) t') in float32)."""
        t_prev = self._next_timestep(i, 0)
        ac_s = self._alpha_cumprod(tcd_intermediate_timestep(int(t_prev), eta))
        ac, ac_prev = self._alpha_cumprod(timestep), self._alpha_cumprod(t_prev)
        return tcd_coeffs(ac, ac_prev, ac_s, self.config.prediction_type, renoise=renoise)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.3,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> TCDSchedulerOutput | tuple:
        """As `TCDScheduler.step`: x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps, then re-noised to t' (gamma = eta > 0
        and not the last step)."""
        i, t = self._begin_step(model_output, timestep, sample)
        assert 0 <= eta <= 1.0, "gamma must be less than or equal to 1.0"
        renoise = eta > 0 and i != self.num_inference_steps - 1
        x = promoted(sample, model_output)
        noise = self._noise_like(model_output, generator, dtype=x.dtype) if renoise else None
        key = self._key(t)  # the coefficients are host maths of (i, t, eta): planned once per schedule and config
        r = self._fused(x, model_output, self._planned(("tcd", i, key, eta, renoise), self._coeffs, i, t, eta, renoise),
                        noise=noise)  # fmt: skip
        noised = r.prev_sample
        if renoise:
            read = self._planned(("tcd", i, key, eta, False), self._coeffs, i, t, eta, False)
            noised = self._derived(x, model_output, read).prev_sample
        self._record(timestep, r)
        self._step_index += 1
        if not return_dict:
            return (r.prev_sample, noised)
        return TCDSchedulerOutput(prev_sample=r.prev_sample, pred_noised_sample=noised)
