"""Drop-in diffusers schedulers: the parent's bookkeeping, one `fastdiff.fused_step` call per `step()`.

Change one line of a pipeline and get the same images, faster, with per-step statistics for free:

    pipe.scheduler = fastdiff.integrations.diffusers.fast_scheduler(pipe.scheduler)
    image = pipe(...).images[0]
    pipe.scheduler.last_step_stats.clipped          # device tensors: nothing has synced the host

Each `FastX` subclasses diffusers' `X` and is built the same way (`FastX(**kw)`, `FastX.from_config(cfg)`).
It keeps X's state (timesteps, sigmas, step index, begin index, solver history, Heun's stage) and X's
`set_timesteps` / `scale_model_input`; only the per-element arithmetic of `step()` is replaced by one
generic fused step whose coefficients come from `fastdiff.samplers` (the single source of each
sampler's maths; `tests/test_samplers_diffusers.py` documents how those equal diffusers' lines):

    DDPMScheduler                      ddpm_coeffs             (Ho et al. 2020, eq. 6-7)
    DDIMScheduler                      ddim_coeffs             (Song et al. 2021, eq. 12)
    EulerDiscreteScheduler             euler_coeffs            (Karras et al. 2022, alg. 2, with churn)
    EulerAncestralDiscreteScheduler    euler_ancestral_coeffs
    HeunDiscreteScheduler              euler_coeffs + heun_correction_coeffs (Karras et al. 2022, alg. 1)
    FlowMatchEulerDiscreteScheduler    flow_euler_coeffs       (rectified flow)
    DPMSolverMultistepScheduler        dpmpp_coeffs            (DPM-Solver++ 1/2/3M and SDE variants)
    UniPCMultistepScheduler            unipc_coeffs            (UniP / UniC B(h), Zhao et al. 2023)

Noise is drawn with diffusers' own `randn_tensor`, with the same arguments and in the same order as the
parent, so the same `generator` gives the same samples. Options the fused step cannot express raise
`NotImplementedError` naming the option when the scheduler is built.

No host synchronisation in `step()` for CUDA tensors once `set_timesteps` ran: the timesteps, sigmas
and alphas_cumprod are read from host copies (made once), and a timestep that is an element of
`scheduler.timesteps` (as pipelines pass it) is located from its storage offset, not by reading it.
(A timestep tensor from elsewhere on the GPU is read once, as the parent reads it.)

>>> import torch
>>> from diffusers import DDIMScheduler
>>> from fastdiff.integrations.diffusers import fast_scheduler
>>> s = fast_scheduler(DDIMScheduler(clip_sample=True))
>>> type(s).__name__, isinstance(s, DDIMScheduler)
('FastDDIMScheduler', True)
>>> s.set_timesteps(10)
>>> x = torch.zeros(1, 4); out = s.step(torch.ones(1, 4), s.timesteps[0], x)
>>> out.prev_sample.shape, int(s.last_step_stats.clipped)
(torch.Size([1, 4]), 4)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerOutput
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from ..ops import fused_step
from ..samplers import (
    churn_gamma,
    ddim_coeffs,
    ddpm_coeffs,
    dpmpp_coeffs,
    euler_ancestral_coeffs,
    euler_coeffs,
    flow_euler_coeffs,
    heun_correction_coeffs,
)
from ..samplers.dpmsolver import flow_alpha_sigma
from ..samplers.plan import ve_to_vp
from ..samplers.unipc import unipc_coeffs
from ..stats import TensorStats
from ..step import ClipRange, DynamicThreshold, StepCoeffs

logger = logging.get_logger(__name__)

__all__ = [
    "FastDDIMScheduler",
    "FastDDPMScheduler",
    "FastDPMSolverMultistepScheduler",
    "FastEulerAncestralDiscreteScheduler",
    "FastEulerDiscreteScheduler",
    "FastFlowMatchEulerDiscreteScheduler",
    "FastHeunDiscreteScheduler",
    "FastUniPCMultistepScheduler",
    "StepStats",
    "fast_scheduler",
]

_INTEGER_TIMESTEP_ERROR = (
    "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to"
    " `{name}.step()` is not supported. Make sure to pass"
    " one of the `scheduler.timesteps` as a timestep."
)
_SCALE_INPUT_WARNING = (
    "The `scale_model_input` function should be called before `step` to ensure correct denoising. "
    "See `StableDiffusionPipeline` for a usage example."
)
_NO_STEPS_ERROR = "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the scheduler"


@dataclass(frozen=True)
class StepStats:
    """What the fused step measured in its single pass (device tensors: reading them syncs, keeping them does not).

    step_index: the parent's step index at this step (None for DDPM / DDIM, which have none).
    timestep: the timestep as given (host value where it was known without a sync).
    clipped: int64 0-d count of x0 elements the clip / threshold changed; numel: elements per step.
    sample / x0: `TensorStats` of the returned prev_sample and of the (clipped) predicted x0.
    """

    step_index: int | None
    timestep: object
    clipped: torch.Tensor
    numel: int
    sample: TensorStats
    x0: TensorStats

    def to_dict(self) -> dict:
        """Plain numbers (syncs the host): clipped, clipped_frac, sample_* and x0_* stats."""
        clipped = int(self.clipped)
        row = {"step_index": self.step_index, "clipped": clipped, "clipped_frac": clipped / max(self.numel, 1)}
        row.update({f"sample_{k}": v for k, v in self.sample.to_dict().items()})
        row.update({f"x0_{k}": v for k, v in self.x0.to_dict().items()})
        return row


class _FusedScheduler:
    """Shared machinery of the Fast* schedulers (a mixin placed before the diffusers parent).

    `fused_backend` picks the fused step's backend ("auto", "torch", "cpp", "triton"); it is an attribute,
    not a config entry, so configs stay interchangeable with the parent's.
    """

    _parent: type
    fused_backend: str = "auto"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        parent_init = cls._parent.__init__

        # diffusers reads the constructor's signature (from_config, save_config): keep the parent's.
        @functools.wraps(parent_init)
        def __init__(self, *args, **kw):
            parent_init(self, *args, **kw)
            self._check_fusable()
            self.last_step_stats: StepStats | None = None

        cls.__init__ = __init__

    # ---- construction-time checks ----------------------------------------------------------------

    def _check_fusable(self) -> None:
        """Raise NotImplementedError naming any config option the fused step cannot honour."""

    def _unsupported(self, option: str, why: str) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__}: {option} is not supported by the fused step: {why}. "
            f"Use diffusers' {self._parent.__name__} for this configuration."
        )

    def _clip(self):
        """The x0 clip of the config: DynamicThreshold (thresholding), ClipRange (clip_sample) or None."""
        cfg = self.config
        if cfg.get("thresholding", False):
            return DynamicThreshold(float(cfg.dynamic_thresholding_ratio), float(cfg.sample_max_value))
        if cfg.get("clip_sample", False):
            r = float(cfg.clip_sample_range)
            return ClipRange(-r, r)
        return None

    def _check_clip(self) -> None:
        cfg = self.config
        if cfg.get("thresholding", False):
            ratio, max_value = cfg.dynamic_thresholding_ratio, cfg.sample_max_value
            if not (0.0 < ratio <= 1.0 and max_value >= 1.0):
                raise self._unsupported(
                    f"thresholding with dynamic_thresholding_ratio={ratio!r}, sample_max_value={max_value!r}",
                    "the fused dynamic threshold needs 0 < ratio <= 1 and sample_max_value >= 1",
                )
        elif cfg.get("clip_sample", False):
            r = cfg.clip_sample_range
            if not (math.isfinite(r) and r >= 0):
                raise self._unsupported(f"clip_sample_range={r!r}", "the clip range [-r, r] needs a finite r >= 0")

    # ---- host copies: no device reads in step() ---------------------------------------------------

    def _host(self, name: str) -> torch.Tensor:
        """A CPU copy of tensor attribute `name`, made once per tensor object (the parent may move it)."""
        value = getattr(self, name)
        cache = self.__dict__.setdefault("_fast_host_cache", {})
        src, copy = cache.get(name, (None, None))
        if src is not value:
            copy = value.detach().cpu() if isinstance(value, torch.Tensor) else value
            cache[name] = (value, copy)
        return copy

    def set_timesteps(self, *args, **kwargs):
        out = super().set_timesteps(*args, **kwargs)
        for name in ("timesteps", "sigmas", "alphas_cumprod"):  # the one sync of a loop, here
            if isinstance(getattr(self, name, None), torch.Tensor):
                self._host(name)
        self.last_step_stats = None
        return out

    def _host_timestep(self, timestep):
        """The timestep's value without a device read when it is an element of `self.timesteps`."""
        if not isinstance(timestep, torch.Tensor) or timestep.device.type == "cpu":
            return timestep
        found = self._schedule_lookup(timestep)
        return found if found is not None else timestep.cpu()  # from elsewhere: one read, as the parent

    def _schedule_lookup(self, timestep: torch.Tensor) -> torch.Tensor | None:
        """The host value of a one-element view into `self.timesteps` (from its storage offset), else None."""
        ts = self.timesteps
        if (
            isinstance(ts, torch.Tensor)
            and ts.dim() == 1
            and timestep.numel() == 1
            and timestep.dtype == ts.dtype
            and timestep.device == ts.device
            and ts.stride(0) > 0
            and timestep.untyped_storage().data_ptr() == ts.untyped_storage().data_ptr()
        ):
            k, rem = divmod(timestep.storage_offset() - ts.storage_offset(), ts.stride(0))
            if rem == 0 and 0 <= k < ts.shape[0]:
                return self._host("timesteps")[k].reshape(timestep.shape)
        return None

    def _init_step_index(self, timestep) -> None:
        # the parent's rule (its own index_for_timestep, quirks included) on host copies
        if self.begin_index is None:
            self._step_index = self.index_for_timestep(self._host_timestep(timestep), self._host("timesteps"))
        else:
            self._step_index = self._begin_index

    def _sigma(self, index: int) -> float:
        return float(self._host("sigmas")[index])

    # ---- the fused call ----------------------------------------------------------------------------

    def _begin_sigma_step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> None:
        """The Euler family's checks before a step, as the parents make them (their integer-timestep message
        names EulerDiscreteScheduler in both classes): integer indices refused, scale_model_input warned
        about, the step index found, shapes checked."""
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(_INTEGER_TIMESTEP_ERROR.format(name="EulerDiscreteScheduler"))
        if not self.is_scale_input_called:
            logger.warning(_SCALE_INPUT_WARNING)
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)

    @staticmethod
    def _check_shapes(model_output: torch.Tensor, sample: torch.Tensor) -> None:
        if not isinstance(model_output, torch.Tensor) or not isinstance(sample, torch.Tensor):
            raise TypeError(
                f"model_output and sample must be torch tensors; got {type(model_output).__name__} "
                f"and {type(sample).__name__}"
            )
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has shape {tuple(sample.shape)}; "
                "they must match (a model with a learned variance returns twice the channels: split them first)"
            )

    @staticmethod
    def _noise_like(model_output: torch.Tensor, generator) -> torch.Tensor:
        """The step's noise as the parents draw it (diffusers' randn_tensor): same generator, same noise."""
        return randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )

    def _sigma_step(self, model_output, timestep, sample, coeffs: StepCoeffs, noise, output_cls, return_dict: bool):
        """The Euler family's fused step from a float32 sample, back in the model output's dtype; the step
        index advances."""
        prev, x0 = self._fused(sample.to(torch.float32), model_output, coeffs, timestep, noise=noise)
        prev = prev.to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return (prev, x0)
        return output_cls(prev_sample=prev, pred_original_sample=x0)

    def _fused(
        self,
        x: torch.Tensor,
        model_output: torch.Tensor,
        coeffs: StepCoeffs,
        timestep,
        *,
        clip=None,
        history=(),
        noise: torch.Tensor | None = None,
    ):
        """One fused step; records its stats in `last_step_stats`. Returns (prev_sample, x0)."""
        r = fused_step(
            x,
            model_output,
            coeffs,
            clip=clip,
            history=history,
            noise=noise,
            return_x0=True,
            stats=True,
            backend=self.fused_backend,
        )
        self.last_step_stats = StepStats(
            step_index=getattr(self, "_step_index", None),
            timestep=timestep,
            clipped=r.clipped,
            numel=x.numel(),
            sample=r.stats,
            x0=r.x0_stats,
        )
        return r.prev_sample, r.pred_x0


def _vp_prediction(prediction_type: str) -> str:
    return "sample" if prediction_type == "original_sample" else prediction_type


# --------------------------------------------------------------------------------------------------
# DDPM and DDIM: discrete VP timesteps


class FastDDPMScheduler(_FusedScheduler, DDPMScheduler):
    """diffusers' DDPMScheduler with a fused `step()` (`ddpm_coeffs`). Learned variances are not supported."""

    _parent = DDPMScheduler

    def _check_fusable(self) -> None:
        v = self.config.variance_type
        if v in ("learned", "learned_range"):
            raise self._unsupported(
                f"variance_type={v!r}",
                "a learned variance is a per-element nonlinear function of a second model output",
            )
        if v == "fixed_large_log":
            raise self._unsupported(
                "variance_type='fixed_large_log'",
                "diffusers' step scales the noise by sqrt(log(beta_t)), the square root of a negative number, and "
                "returns NaN; use variance_type='fixed_large' for the intended std sqrt(beta_t)",
            )
        self._check_clip()

    def previous_timestep(self, timestep):
        # the parent's rule on the host copy of the timesteps
        if self.custom_timesteps or self.num_inference_steps:
            ts = self._host("timesteps")
            index = (ts == self._host_timestep(timestep)).nonzero(as_tuple=True)[0][0]
            return torch.tensor(-1) if index == ts.shape[0] - 1 else ts[index + 1]
        return timestep - 1

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """As `DDPMScheduler.step`: x0 from the model, clip, then the posterior mean plus std z (Ho et al. eq. 7)."""
        t = self._host_timestep(timestep)
        prev_t = self.previous_timestep(t)
        alphas_cumprod = self._host("alphas_cumprod")
        alpha_prod_t = alphas_cumprod[t]
        alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        self._check_shapes(model_output, sample)
        add_noise = bool(t > 0)
        coeffs = ddpm_coeffs(
            float(alpha_prod_t),
            float(alpha_prod_t_prev),
            _vp_prediction(self.config.prediction_type),
            self.config.variance_type,
            add_noise=add_noise,
            alpha_t=float(alpha_prod_t / alpha_prod_t_prev),  # the parent's float32 quotient (see ddpm_coeffs)
        )
        noise = self._noise_like(model_output, generator) if add_noise else None
        x = sample.to(torch.result_type(sample, model_output))
        prev, x0 = self._fused(x, model_output, coeffs, t, clip=self._clip(), noise=noise)
        if not return_dict:
            return (prev, x0)
        return DDPMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class FastDDIMScheduler(_FusedScheduler, DDIMScheduler):
    """diffusers' DDIMScheduler with a fused `step()` (`ddim_coeffs`), quirks included: each step goes to
    t - num_train_timesteps // num_inference_steps (not to the next timestep for "linspace" spacing)."""

    _parent = DDIMScheduler

    def _check_fusable(self) -> None:
        self._check_clip()

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
        if self.num_inference_steps is None:
            raise ValueError(_NO_STEPS_ERROR)
        t = self._host_timestep(timestep)
        prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
        alphas_cumprod = self._host("alphas_cumprod")
        alpha_prod_t = alphas_cumprod[t]
        alpha_prod_t_prev = alphas_cumprod[prev_t] if prev_t >= 0 else self._host("final_alpha_cumprod")
        self._check_shapes(model_output, sample)
        coeffs = ddim_coeffs(
            float(alpha_prod_t),
            float(alpha_prod_t_prev),
            eta,
            _vp_prediction(self.config.prediction_type),
            use_clipped_model_output,
        )
        noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError(
                    "Cannot pass both generator and variance_noise. Please make sure that either `generator` or"
                    " `variance_noise` stays `None`."
                )
            if variance_noise is None:
                variance_noise = self._noise_like(model_output, generator)
            noise = variance_noise
        x = sample.to(torch.result_type(sample, model_output))
        prev, x0 = self._fused(x, model_output, coeffs, t, clip=self._clip(), noise=noise)
        if not return_dict:
            return (prev, x0)
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


# --------------------------------------------------------------------------------------------------
# the Euler family: VE sigmas, a step index


class FastEulerDiscreteScheduler(_FusedScheduler, EulerDiscreteScheduler):
    """diffusers' EulerDiscreteScheduler with a fused `step()` (`euler_coeffs`, churn included)."""

    _parent = EulerDiscreteScheduler

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
        self._begin_sigma_step(model_output, timestep, sample)
        sigma, sigma_next = self._sigma(self.step_index), self._sigma(self.step_index + 1)
        gamma = churn_gamma(sigma, s_churn, len(self._host("sigmas")) - 1, s_tmin, s_tmax)
        coeffs = euler_coeffs(sigma, sigma_next, _vp_prediction(self.config.prediction_type), gamma, s_noise)
        noise = self._noise_like(model_output, generator) if gamma > 0 else None
        return self._sigma_step(
            model_output, timestep, sample, coeffs, noise, EulerDiscreteSchedulerOutput, return_dict
        )


class FastEulerAncestralDiscreteScheduler(_FusedScheduler, EulerAncestralDiscreteScheduler):
    """diffusers' EulerAncestralDiscreteScheduler with a fused `step()` (`euler_ancestral_coeffs`, eta = 1)."""

    _parent = EulerAncestralDiscreteScheduler

    def _check_fusable(self) -> None:
        if self.config.prediction_type == "sample":
            raise self._unsupported("prediction_type='sample'", "diffusers' step does not implement it either")

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> EulerAncestralDiscreteSchedulerOutput | tuple:
        """As `EulerAncestralDiscreteScheduler.step`: x' = x + (sigma_down - sigma) d + sigma_up z."""
        self._begin_sigma_step(model_output, timestep, sample)
        sigma, sigma_next = self._sigma(self.step_index), self._sigma(self.step_index + 1)
        coeffs = euler_ancestral_coeffs(sigma, sigma_next, self.config.prediction_type)
        noise = self._noise_like(model_output, generator)
        return self._sigma_step(
            model_output, timestep, sample, coeffs, noise, EulerAncestralDiscreteSchedulerOutput, return_dict
        )


class FastHeunDiscreteScheduler(_FusedScheduler, HeunDiscreteScheduler):
    """diffusers' HeunDiscreteScheduler with fused stages: the Euler stage (`euler_coeffs`) and the
    correction (`heun_correction_coeffs`, with the saved input as history).

    The parent's state is kept (`dt`, `sample`, the stage); its first-stage derivative
    `prev_derivative = (sample - x0) / sigma` is not materialised by the fused step but computed when read.
    """

    _parent = HeunDiscreteScheduler

    def _check_fusable(self) -> None:
        self._check_clip()

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

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> HeunDiscreteSchedulerOutput | tuple:
        """As `HeunDiscreteScheduler.step`: an Euler step, then x' = x + dt (d1 + d2) / 2 (Karras et al. alg. 1)."""
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        p = _vp_prediction(self.config.prediction_type)
        x = sample.to(torch.result_type(sample, model_output))
        if self.state_in_first_order:
            sigma, sigma_next = self._sigma(self.step_index), self._sigma(self.step_index + 1)
            prev, x0 = self._fused(x, model_output, euler_coeffs(sigma, sigma_next, p), timestep, clip=self._clip())
            # the parent's bookkeeping: dt = sigma_next - sigma_hat (float32, as the parent), the saved input
            sigmas = self._host("sigmas")
            self.dt = sigmas[self.step_index + 1] - sigmas[self.step_index]
            self.sample = sample
            self.prev_derivative = (sample, x0, sigmas[self.step_index])
        else:
            sigma, sigma_next = self._sigma(self.step_index - 1), self._sigma(self.step_index)
            coeffs = heun_correction_coeffs(sigma, sigma_next, p)
            prev, x0 = self._fused(x, model_output, coeffs, timestep, clip=self._clip(), history=(self.sample,))
            self.prev_derivative = None
            self.dt = None
            self.sample = None
        self._step_index += 1
        if not return_dict:
            return (prev, x0)
        return HeunDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


# --------------------------------------------------------------------------------------------------
# flow matching


class FastFlowMatchEulerDiscreteScheduler(_FusedScheduler, FlowMatchEulerDiscreteScheduler):
    """diffusers' FlowMatchEulerDiscreteScheduler with a fused `step()` (`flow_euler_coeffs`).

    `per_token_timesteps` (per-token noise levels) is run by the parent's own step, unfused.
    """

    _parent = FlowMatchEulerDiscreteScheduler

    def _check_fusable(self) -> None:
        if self.config.get("invert_sigmas", False):
            raise self._unsupported("invert_sigmas=True", "the fused flow step integrates from noise (1) to data (0)")

    def step(
        self,
        model_output: torch.FloatTensor,
        timestep: float | torch.FloatTensor,
        sample: torch.FloatTensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | None = None,
        per_token_timesteps: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple:
        """As `FlowMatchEulerDiscreteScheduler.step`: x' = x + (s' - s) v, or (1 - s') x0 + s' z (stochastic).

        (Like the parent, s_churn, s_tmin, s_tmax and s_noise are accepted and unused.)
        """
        if isinstance(timestep, (int, torch.IntTensor, torch.LongTensor)):
            raise ValueError(_INTEGER_TIMESTEP_ERROR.format(name="FlowMatchEulerDiscreteScheduler"))
        if per_token_timesteps is not None:
            self.last_step_stats = None
            return super().step(
                model_output,
                timestep,
                sample,
                generator=generator,
                per_token_timesteps=per_token_timesteps,
                return_dict=return_dict,
            )
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        sigma, sigma_next = self._sigma(self.step_index), self._sigma(self.step_index + 1)
        stochastic = bool(self.config.stochastic_sampling)
        coeffs = flow_euler_coeffs(sigma, sigma_next, "flow", stochastic)
        x = sample.to(torch.float32)
        noise = None
        if stochastic:
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        prev, _ = self._fused(x, model_output, coeffs, timestep, noise=noise)
        self._step_index += 1
        prev = prev.to(model_output.dtype)
        if not return_dict:
            return (prev,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev)


# --------------------------------------------------------------------------------------------------
# DPM-Solver++ multistep


class FastDPMSolverMultistepScheduler(_FusedScheduler, DPMSolverMultistepScheduler):
    """diffusers' DPMSolverMultistepScheduler with a fused `step()` (`dpmpp_coeffs`): algorithm types
    "dpmsolver++" and "sde-dpmsolver++", orders 1-3, midpoint / heun, thresholding, every sigma ladder.

    `model_outputs` holds the (thresholded) x0 predictions, as the parent's (float32 for 16-bit latents).
    """

    _parent = DPMSolverMultistepScheduler

    def _check_fusable(self) -> None:
        a = self.config.algorithm_type
        if a not in ("dpmsolver++", "sde-dpmsolver++"):
            raise self._unsupported(
                f"algorithm_type={a!r}",
                "the noise-prediction solvers keep eps, not x0, as history (deprecated in diffusers); "
                "supported: 'dpmsolver++', 'sde-dpmsolver++'",
            )
        self._check_clip()

    def _alpha_sigma(self, index: int) -> tuple[float, float]:
        s = self._sigma(index)
        return flow_alpha_sigma(s) if self.config.use_flow_sigmas else ve_to_vp(s)

    def _sde_d2_weight(self, i: int) -> float:
        """The parent's 3rd-order SDE D2 weight alpha_t ((1 - e^{-2h} - 2h) / (2h)^2 - 1/2), computed as it does
        (float32): its O(h^2) cancellation at small h shapes the parent's result (`dpmpp_coeffs`)."""
        sigmas = self._host("sigmas")
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(sigmas[i + 1])
        alpha_s0, sigma_s0 = self._sigma_to_alpha_sigma_t(sigmas[i])
        h = (torch.log(alpha_t) - torch.log(sigma_t)) - (torch.log(alpha_s0) - torch.log(sigma_s0))
        return float(alpha_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `DPMSolverMultistepScheduler.step` (DPM-Solver++, Lu et al. 2022, alg. 2; the orders as the parent)."""
        if self.num_inference_steps is None:
            raise ValueError(_NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        cfg = self.config
        i, n = self.step_index, len(self.timesteps)
        lower_order_final = (i == n - 1) and (
            cfg.euler_at_final or (cfg.lower_order_final and n < 15) or cfg.final_sigmas_type == "zero"
        )
        lower_order_second = (i == n - 2) and cfg.lower_order_final and n < 15
        if cfg.solver_order == 1 or self.lower_order_nums < 1 or lower_order_final:
            order = 1
        elif cfg.solver_order == 2 or self.lower_order_nums < 2 or lower_order_second:
            order = 2
        else:
            order = 3

        p = cfg.prediction_type
        if p == "epsilon" and cfg.variance_type in ("learned", "learned_range"):
            model_output = model_output[:, :3]
        self._check_shapes(model_output, sample)
        coeffs = dpmpp_coeffs(
            "flow" if p == "flow_prediction" else p,
            *self._alpha_sigma(i),
            *self._alpha_sigma(i + 1),
            tuple(self._alpha_sigma(i - k) for k in range(1, order)),
            eta=1.0 if cfg.algorithm_type == "sde-dpmsolver++" else 0.0,
            solver_type=cfg.solver_type,
            d2_weight=self._sde_d2_weight(i) if order == 3 and cfg.algorithm_type == "sde-dpmsolver++" else None,
        )
        history = tuple(self.model_outputs[-k] for k in range(1, order))  # m1, m2: the latest x0s

        noise = None
        if cfg.algorithm_type == "sde-dpmsolver++":
            if variance_noise is None:
                noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=torch.float32
                )
            else:
                noise = variance_noise.to(device=model_output.device, dtype=torch.float32)

        out_dtype = torch.result_type(sample, model_output)
        prev, x0 = self._fused(
            sample.to(torch.float32), model_output, coeffs, timestep, clip=self._clip(), history=history, noise=noise
        )
        for k in range(cfg.solver_order - 1):
            self.model_outputs[k] = self.model_outputs[k + 1]
        self.model_outputs[-1] = x0
        if self.lower_order_nums < cfg.solver_order:
            self.lower_order_nums += 1
        prev = prev.to(out_dtype)
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)


# --------------------------------------------------------------------------------------------------
# UniPC multistep


class FastUniPCMultistepScheduler(_FusedScheduler, UniPCMultistepScheduler):
    """diffusers' UniPCMultistepScheduler with fused updates (`unipc_coeffs`): data prediction (predict_x0=True),
    "bh1" / "bh2", orders 1-3, thresholding, `disable_corrector`, every sigma ladder.

    A step is the parent's: the model output converted to x0 (thresholded), the corrector UniC of the previous
    step's order (unless disabled), then the predictor UniP. The conversion and a corrector of order <= 2 are one
    fused call (history: last_sample and the previous x0s), the predictor another; an order-3 corrector needs
    four tensors besides the new x0 and takes a call of its own. `model_outputs` holds the x0s, as the parent's.
    """

    _parent = UniPCMultistepScheduler

    def _check_fusable(self) -> None:
        cfg = self.config
        if not cfg.predict_x0:
            raise self._unsupported(
                "predict_x0=False", "the noise-prediction UniPC keeps eps history; only predict_x0=True is fused"
            )
        if self.solver_p is not None:
            raise self._unsupported("solver_p", "a user-supplied predictor scheduler is not an affine fused update")
        if cfg.solver_order > 3:
            raise self._unsupported(
                f"solver_order={cfg.solver_order}",
                "an order-p UniC step combines p + 1 earlier tensors; the fused step holds at most 3 history "
                "tensors besides the new x0 (solver_order <= 3)",
            )
        if cfg.prediction_type == "flow_prediction" and not cfg.use_flow_sigmas:
            raise self._unsupported(
                "prediction_type='flow_prediction' without use_flow_sigmas", "only the flow path is fused for it"
            )
        self._check_clip()

    def _alpha_sigma_lambda(self, index: int) -> tuple[float, float, float]:
        """alpha, sigma and lambda = log alpha - log sigma at sigmas[index], computed as the parent does (float32)."""
        alpha, sigma = self._sigma_to_alpha_sigma_t(self._host("sigmas")[index])
        lam = torch.log(alpha) - torch.log(sigma)
        return float(alpha), float(sigma), float(lam)

    def _update(self, t_index: int, s0_index: int, prev_indices, corrector: bool):
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(t_index)
        _, sigma_s0, lambda_s0 = self._alpha_sigma_lambda(s0_index)
        lambdas = tuple(self._alpha_sigma_lambda(k)[2] for k in prev_indices)
        return unipc_coeffs(
            lambda_s0,
            lambda_t,
            lambdas,
            alpha_t=alpha_t,
            sigma_t=sigma_t,
            sigma_s0=sigma_s0,
            corrector=corrector,
            solver_type=self.config.solver_type,
        )

    def _to_x0(self, index: int, **kw) -> StepCoeffs:
        p = self.config.prediction_type
        if p == "flow_prediction":
            s = self._sigma(index)
            return StepCoeffs(cx=1.0, co=-s, **kw)
        alpha, sigma, _ = self._alpha_sigma_lambda(index)
        return StepCoeffs.from_prediction(p, alpha, sigma, **kw)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `UniPCMultistepScheduler.step`: UniC on the previous step's prediction, then UniP."""
        if self.num_inference_steps is None:
            raise ValueError(_NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        cfg = self.config
        i = self.step_index
        use_corrector = i > 0 and i - 1 not in self.disable_corrector and self.last_sample is not None
        dtype = sample.dtype
        x = sample.to(torch.result_type(sample, model_output))
        clip = self._clip()
        if use_corrector:
            c_order = self.this_order
            c = self._update(i, i - 1, [i - 1 - k for k in range(1, c_order)], corrector=True)
            hist = [self.model_outputs[-1 - k] for k in range(c_order)]  # m0, m1, ...: the previous x0s
            last = self.last_sample.to(x.dtype)
            if c_order <= 2:  # conversion + UniC in one call: x' = wt x0_new + px last + w0 m0 + w1 m1
                coeffs = self._to_x0(i, p0=c.wt, ph=(c.px, c.w0) + c.wk)
                corrected, x0 = self._fused(x, model_output, coeffs, timestep, clip=clip, history=(last, *hist))
            else:  # conversion, then UniC with the new x0 as the model output
                _, x0 = self._fused(x, model_output, self._to_x0(i), timestep, clip=clip)
                coeffs = StepCoeffs(co=1.0, px=c.px, p0=c.wt, ph=(c.w0,) + c.wk)
                corrected, _ = self._fused(last, x0, coeffs, timestep, history=tuple(hist))
            corrected = corrected.to(dtype)
        else:
            corrected, x0 = None, None

        for k in range(cfg.solver_order - 1):
            self.model_outputs[k] = self.model_outputs[k + 1]
            self.timestep_list[k] = self.timestep_list[k + 1]
        if cfg.lower_order_final:
            this_order = min(cfg.solver_order, len(self.timesteps) - i)
        else:
            this_order = cfg.solver_order
        self.this_order = min(this_order, self.lower_order_nums + 1)
        assert self.this_order > 0  # the parent's check (its ladder can be shorter than the steps asked)
        p = self._update(i + 1, i, [i - k for k in range(1, self.this_order)], corrector=False)
        older = tuple(self.model_outputs[-1 - k] for k in range(1, self.this_order))  # m1, m2 (m0: the new x0)
        if corrected is None:  # conversion + UniP in one call
            coeffs = self._to_x0(i, px=p.px, p0=p.w0, ph=p.wk)
            prev, x0 = self._fused(x, model_output, coeffs, timestep, clip=clip, history=older)
            self.last_sample = sample
        else:
            coeffs = StepCoeffs(co=1.0, px=p.px, p0=p.w0, ph=p.wk)
            prev, _ = self._fused(corrected.to(x.dtype), x0, coeffs, timestep, history=older)
            self.last_sample = corrected
        x0 = x0.to(dtype)
        self.model_outputs[-1] = x0
        self.timestep_list[-1] = timestep
        prev = prev.to(dtype)
        if self.lower_order_nums < cfg.solver_order:
            self.lower_order_nums += 1
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)


# --------------------------------------------------------------------------------------------------
# conversion

FAST_SCHEDULERS: dict[type, type] = {
    cls._parent: cls
    for cls in (
        FastDDPMScheduler,
        FastDDIMScheduler,
        FastEulerDiscreteScheduler,
        FastEulerAncestralDiscreteScheduler,
        FastHeunDiscreteScheduler,
        FastFlowMatchEulerDiscreteScheduler,
        FastDPMSolverMultistepScheduler,
        FastUniPCMultistepScheduler,
    )
}


def fast_scheduler(scheduler) -> _FusedScheduler:
    """The Fast* scheduler with the same config as `scheduler` (a diffusers scheduler instance).

    A Fast* scheduler is returned as a fresh one of its own class. Unknown classes raise TypeError
    naming the supported ones; a config option the fused step cannot honour raises NotImplementedError.

    >>> from diffusers import EulerDiscreteScheduler
    >>> type(fast_scheduler(EulerDiscreteScheduler())).__name__
    'FastEulerDiscreteScheduler'
    """
    cls = type(scheduler)
    fast = FAST_SCHEDULERS.get(cls)
    if fast is None and isinstance(scheduler, _FusedScheduler):
        fast = cls
    if fast is None:
        supported = ", ".join(parent.__name__ for parent in FAST_SCHEDULERS)
        raise TypeError(f"fast_scheduler got a {cls.__module__}.{cls.__name__}; supported: {supported}")
    return fast.from_config(scheduler.config)
