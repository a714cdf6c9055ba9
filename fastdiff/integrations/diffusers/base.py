"""What every Fast* scheduler shares: `FusedScheduler`, a mixin placed before its diffusers parent.

- The parent's signatures: diffusers reads `__init__`'s (configs) and `set_timesteps`' (`retrieve_timesteps`
  decides from it whether `timesteps=` / `sigmas=` may be passed), so both are the parent's, wrapped.
- The config is checked for options the fused step cannot honour at construction, in `set_timesteps` and at
  every step (`register_to_config` may change it at any time): `NotImplementedError` naming the option.
- Saved as the parent: a config's `_class_name` names the parent, and so does a saved pipeline's
  model_index.json (`saving.py`), so plain diffusers loads what a Fast* scheduler saves. `compatibles` are
  the parent's.
- Host copies of the schedule, so that `step()` reads no device scalar (no host sync on CUDA).
- The fused calls and their statistics (`last_step_stats`).
"""

from __future__ import annotations

import functools
import json
import math

import torch
from diffusers.utils.torch_utils import randn_tensor

from ...ops import fused_step
from ...stats import TensorStats
from ...step import MAX_HISTORY, ClipRange, DynamicThreshold, StepCoeffs, StepResult

NO_STEPS_ERROR = "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the scheduler"


class StepStats:
    """What the fused step measured in its single pass (device tensors: reading them syncs, keeping them does not).

    step_index: the parent's step index at this step (None for DDPM / DDIM, which have none).
    timestep: the timestep as given (host value where it was known without a sync).
    clipped: int64 0-d count of x0 elements the clip / threshold changed; numel: elements per step.
    sample / x0: `TensorStats` of the returned prev_sample and of the (clipped) predicted x0.
    clipped, sample and x0 may be given as functions that make them: made when first read, so a loop that never
    reads them pays nothing per step.
    """

    __slots__ = ("step_index", "timestep", "_clipped", "numel", "_sample", "_x0")

    def __init__(self, step_index, timestep, clipped, numel, sample, x0):
        self.step_index, self.timestep, self._clipped, self.numel = step_index, timestep, clipped, numel
        self._sample, self._x0 = sample, x0

    @property
    def clipped(self) -> torch.Tensor:
        if callable(self._clipped):
            self._clipped = self._clipped()
        return self._clipped

    @property
    def sample(self) -> TensorStats:
        if callable(self._sample):
            self._sample = self._sample()
        return self._sample

    @property
    def x0(self) -> TensorStats:
        if callable(self._x0):
            self._x0 = self._x0()
        return self._x0

    def to_dict(self) -> dict:
        """Plain numbers (syncs the host): clipped, clipped_frac, sample_* and x0_* stats."""
        clipped = int(self.clipped)
        row = {"step_index": self.step_index, "clipped": clipped, "clipped_frac": clipped / max(self.numel, 1)}
        row.update({f"sample_{k}": v for k, v in self.sample.to_dict().items()})
        row.update({f"x0_{k}": v for k, v in self.x0.to_dict().items()})
        return row

    def __repr__(self) -> str:
        return (
            f"StepStats(step_index={self.step_index!r}, timestep={self.timestep!r}, clipped={self.clipped!r}, "
            f"numel={self.numel!r}, sample={self.sample!r}, x0={self.x0!r})"
        )


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bit patterns (an integer view), so that equal means the same bits: NaN equals NaN (KDPM2's
    `sigmas_interpol` and `sigmas_up` hold NaNs, which `torch.equal` never finds equal) and -0.0 is not 0.0."""
    return t.view(_SAME_SIZE_INT[t.element_size()]) if t.is_floating_point() else t


def _same_schedule(a: tuple, b: tuple) -> bool:
    """Two schedules of (name, host tensor) pairs hold the same values, bit for bit (dtype and shape included)."""
    return len(a) == len(b) and all(
        na == nb and ta.dtype == tb.dtype and ta.shape == tb.shape and torch.equal(_bits(ta), _bits(tb))
        for (na, ta), (nb, tb) in zip(a, b)
    )


class FusedScheduler:
    """Shared machinery of the Fast* schedulers. A subclass names its diffusers parent in `_parent`.

    `fused_backend` picks the fused step's backend ("auto", "torch", "cpp", "triton"); it is an attribute,
    not a config entry, so configs stay interchangeable with the parent's.
    """

    _parent: type
    fused_backend: str = "auto"
    # schedule tensors copied to the host at set_timesteps (a subclass adds the parent's other per-step tables)
    _host_tensors: tuple[str, ...] = ("timesteps", "sigmas", "alphas_cumprod")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        parent = cls.__dict__.get("_parent")
        if parent is None:  # a subclass of a Fast* class inherits its wrappers
            return
        parent_init, parent_set_timesteps = parent.__init__, parent.set_timesteps

        @functools.wraps(parent_init)
        def __init__(self, *args, **kw):
            parent_init(self, *args, **kw)
            self.last_step_stats: StepStats | None = None
            self._check_config()

        @functools.wraps(parent_set_timesteps)
        def set_timesteps(self, *args, **kw):
            self._check_config()
            result = parent_set_timesteps(self, *args, **kw)
            self._schedule_changed()
            return result

        cls.__init__, cls.set_timesteps = __init__, set_timesteps

    # ---- the config: what the fused step can honour ------------------------------------------------

    def _check_config(self) -> None:
        """Raise NotImplementedError naming the first config option the fused step cannot honour. Checked once
        per config: diffusers' `register_to_config` replaces the config object, which a new check then sees."""
        config = self.__dict__.get("_internal_dict")
        if config is not None and self.__dict__.get("_fast_checked") is config:
            return
        for option, why in self._unfusable():
            raise NotImplementedError(
                f"{type(self).__name__}: {option} is not supported by the fused step: {why}. "
                f"Use diffusers' {self._parent.__name__} for this configuration."
            )
        self._fast_checked = config

    def _unfusable(self) -> list[tuple[str, str]]:
        """(option, why) for each option of the config the fused step cannot honour; subclasses add theirs."""
        cfg = self.config
        if cfg.get("thresholding", False):
            ratio, max_value = cfg.dynamic_thresholding_ratio, cfg.sample_max_value
            if not (0.0 <= ratio <= 1.0 and max_value > 0.0):
                return [
                    (
                        f"thresholding with dynamic_thresholding_ratio={ratio!r}, sample_max_value={max_value!r}",
                        "the threshold is the ratio-quantile of |x0| (a ratio in [0, 1]) clamped to "
                        "[1, sample_max_value], and divides x0: it must be > 0",
                    )
                ]
        elif cfg.get("clip_sample", False) and not cfg.clip_sample_range >= 0:
            return [
                (
                    f"clip_sample_range={cfg.clip_sample_range!r}",
                    "diffusers clamps x0 to [-r, r]; for r < 0 the lower bound exceeds the upper one and "
                    "torch.clamp sets every element to r, which is no clip",
                )
            ]
        return []

    def _clip(self) -> DynamicThreshold | ClipRange | None:
        """The x0 clip of the config: DynamicThreshold (thresholding), ClipRange (clip_sample) or None (read
        from the config once per config and schedule, as the planned coefficients)."""
        return self._planned(("clip",), self._config_clip)

    def _config_clip(self) -> DynamicThreshold | ClipRange | None:
        cfg = self.config
        if cfg.get("thresholding", False):
            return DynamicThreshold(float(cfg.dynamic_thresholding_ratio), float(cfg.sample_max_value))
        if cfg.get("clip_sample", False) and cfg.clip_sample_range != math.inf:  # clamp(-inf, inf) changes nothing
            r = float(cfg.clip_sample_range)
            return ClipRange(-r, r)
        return None

    # ---- saved as the parent ---------------------------------------------------------------------------

    def to_json_string(self) -> str:
        """The config as the parent writes it: `_class_name` names the parent, which plain diffusers loads."""
        config = json.loads(super().to_json_string())
        config["_class_name"] = self._parent.__name__
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    @classmethod
    def _get_compatibles(cls) -> list[type]:
        # diffusers finds compatible classes by name in its own namespace, where FastX is not
        return list(dict.fromkeys([*cls._parent._get_compatibles(), cls]))

    # ---- host copies: no device reads in step() --------------------------------------------------------

    def _schedule_changed(self) -> None:
        """After set_timesteps: host copies of the new schedule (the one sync of a loop), stats reset, the
        planned coefficients dropped."""
        schedule = tuple(
            (name, self._host(name))
            for name in self._host_tensors
            if isinstance(getattr(self, name, None), torch.Tensor)
        )
        self.last_step_stats = None
        # the plan stays while the schedule is the same (a pipeline calls set_timesteps for every image)
        old = self.__dict__.get("_fast_plan_schedule")
        if old is None or not _same_schedule(old, schedule):
            self._fast_plan = None
        self._fast_plan_schedule = schedule

    def _planned(self, key: tuple, make, *args):
        """`make(*args)` computed once per schedule and config under `key` (which must hold every argument of the
        step the result depends on besides the schedule and config): the step's coefficients are host maths of
        the step index and a few arguments, so a loop computes each once, not at every step."""
        plan = self.__dict__.get("_fast_plan")
        config = self.__dict__.get("_internal_dict")
        if plan is None or plan.get(None) is not config:  # a new schedule, or register_to_config since
            plan = self._fast_plan = {None: config}
        if key not in plan:
            plan[key] = make(*args)
        return plan[key]

    def _host(self, name: str) -> torch.Tensor:
        """A CPU copy of tensor attribute `name`, made once per tensor object (the parent may move it)."""
        value = getattr(self, name)
        cache = self.__dict__.setdefault("_fast_host_cache", {})
        src, copy = cache.get(name, (None, None))
        if src is not value:
            copy = value.detach().cpu() if isinstance(value, torch.Tensor) else value
            cache[name] = (value, copy)
        return copy

    def _host_timestep(self, timestep):
        """The timestep's value without a device read when it is an element of `self.timesteps`."""
        if not isinstance(timestep, torch.Tensor) or timestep.is_cpu:
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

    @staticmethod
    def _key(timestep) -> object:
        """A host timestep as a plan key: a CPU tensor's value (tensors hash by identity)."""
        return timestep.item() if isinstance(timestep, torch.Tensor) else timestep

    # ---- inputs ------------------------------------------------------------------------------------------

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
    def _noise_like(model_output: torch.Tensor, generator, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The step's noise as the parents draw it (diffusers' randn_tensor): same generator, same noise."""
        return randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=dtype or model_output.dtype
        )

    # ---- the fused calls -----------------------------------------------------------------------------------

    def _fused(
        self,
        x: torch.Tensor,
        model_output: torch.Tensor,
        coeffs: StepCoeffs,
        *,
        clip=None,
        history=(),
        more=(),
        noise: torch.Tensor | None = None,
        return_x0: bool = True,
    ) -> StepResult:
        """One generic step (x0 returned unless the parent has no use for it; stats of x' and x0 taken either
        way). `more`: (weight, tensor) terms beyond the step's MAX_HISTORY history tensors, added to its result
        by further fused calls (in place)."""
        r = fused_step(
            x,
            model_output,
            coeffs,
            clip=clip,
            history=history,
            noise=noise,
            return_x0=return_x0,
            stats=True,
            backend=self.fused_backend,
        )
        for k in range(0, len(more), MAX_HISTORY):
            weights, tensors = zip(*more[k : k + MAX_HISTORY])
            y = r.prev_sample
            added = fused_step(y, y, StepCoeffs(px=1.0, ph=weights), history=tensors, out=y, backend=self.fused_backend)
            r = StepResult(prev_sample=y, pred_x0=r.pred_x0, clipped=r.clipped, stats=added.stats, x0_stats=r.x0_stats)
        return r

    def _combine(self, x, out, coeffs_fn, terms, *, clip=None, noise=None) -> StepResult:
        """A fused step with `coeffs_fn(ph)` and history `terms` ((weight, tensor) pairs, any number): the first
        MAX_HISTORY are the step's history, the rest are added by further fused calls (`_fused`'s `more`)."""
        head, more = terms[:MAX_HISTORY], terms[MAX_HISTORY:]
        coeffs = coeffs_fn(tuple(w for w, _ in head))
        return self._fused(x, out, coeffs, clip=clip, history=tuple(t for _, t in head), more=more, noise=noise)

    def _derived(self, x: torch.Tensor, out: torch.Tensor, coeffs: StepCoeffs) -> StepResult:
        """One more fused call for a tensor that the parent returns or keeps besides its prev_sample (LCM's
        `denoised`, LMS's x0, DEIS's eps): its result is `coeffs` applied to (x, out); no x0 is written. Its
        statistics are taken as in every fused call of a drop-in (they cost no extra pass): a loop launches one
        kernel specialisation (triton_gate's samplers check)."""
        return fused_step(x, out, coeffs, backend=self.fused_backend)

    def _record(self, timestep, result: StepResult, x0_result: StepResult | None = None) -> None:
        """`last_step_stats` of a step: its sample from `result`, its x0 and clip count from `x0_result` (the
        call that read the model output; `result` when that was the only call)."""
        numel = result.prev_sample.numel()
        # what the stats need, without the step's tensors (the caller owns and may drop them)
        result = result.stats_only()
        x0_result = result if x0_result is None else x0_result.stats_only()
        self.last_step_stats = StepStats(
            step_index=self.__dict__.get("_step_index"),  # getattr of a missing name: diffusers' slow __getattr__
            timestep=timestep,
            clipped=lambda: x0_result.clipped,
            numel=numel,
            sample=lambda: result.stats,  # TensorStats made when read (StepStats)
            x0=lambda: x0_result.x0_stats,
        )


class VEInputScale(FusedScheduler):
    """The VE parents' `scale_model_input` (Euler, Heun, KDPM2, LMS): sample / (sigma^2 + 1)^0.5, the divisor made
    by their own tensor operations on their own table once per level and schedule (`_planned`) instead of at every
    call: the same result, bit for bit. `_input_level()` names the level the parent reads."""

    _marks_scale_input = False  # the parents whose step() warns unless scale_model_input set is_scale_input_called

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        if self.step_index is None:
            self._init_step_index(timestep)
        table, k = self._input_level()
        levels = getattr(self, table)
        # keyed by the table's device too: a plan outlives set_timesteps(device=...) of the same schedule
        divisor = self._planned(("scale", table, k, levels.device), self._input_divisor, levels, k)
        if self._marks_scale_input:
            self.is_scale_input_called = True
        return sample / divisor

    def _input_level(self) -> tuple[str, int]:
        """(the parent's sigma table, the index) that its scale_model_input reads at this step."""
        return "sigmas", self.step_index

    @staticmethod
    def _input_divisor(levels: torch.Tensor, k: int) -> torch.Tensor:
        sigma = levels[k]
        return (sigma**2 + 1) ** 0.5


def promoted(sample: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`sample.to(torch.result_type(sample, other))`, as the parents compute the step (the same tensor when the
    dtypes already agree: no type promotion to look up at every step)."""
    return sample if sample.dtype == other.dtype else sample.to(torch.result_type(sample, other))


def vp_prediction(prediction_type: str) -> str:
    """diffusers' "original_sample" is the prediction type "sample"."""
    return "sample" if prediction_type == "original_sample" else prediction_type
