"""The sampling loop: a native sampler's plan run with one model call and one fused step per step.

Nothing in the loop syncs the host: model times are one device tensor made up front, the per-step
statistics (ranges, NaN/Inf counts of x and x0, clipped counts) are device tensors stacked at the end,
and `SampleResult.step_stats()` converts them with a single sync when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..ops import fused_step, tensor_stats
from ..stats import TensorStats
from ..step import StepResult
from .plan import PlannedStep, Sampler, check_history


@dataclass
class SampleResult:
    """The final sample and, per step, device-side stats of x' and x0 and the clipped counts.

    x_stats / x0_stats: `TensorStats` with fields of shape [num_steps] (None with stats=False).
    clipped: int64 [num_steps]; numel: elements per step (the denominator of a clipped fraction).
    """

    sample: torch.Tensor
    x_stats: TensorStats | None
    x0_stats: TensorStats | None
    clipped: torch.Tensor
    numel: int
    model_times: list
    sigmas: list[float]

    def step_stats(self) -> list[dict]:
        """One dict per step (one host sync for all): t, sigma, x_*/x0_* stats, clipped and its fraction."""
        x = self.x_stats.to_dict() if self.x_stats is not None else {}
        x0 = self.x0_stats.to_dict() if self.x0_stats is not None else {}
        clipped = self.clipped.cpu().tolist()
        rows = []
        for i, (t, s) in enumerate(zip(self.model_times, self.sigmas)):
            row = {
                "step": i,
                "t": t,
                "sigma": s,
                "clipped": clipped[i],
                "clipped_frac": clipped[i] / max(self.numel, 1),
            }
            row.update({f"x_{k}": v[i] for k, v in x.items()})
            row.update({f"x0_{k}": v[i] for k, v in x0.items()})
            rows.append(row)
        return rows


def model_output(out, x: torch.Tensor, where) -> torch.Tensor:
    """The tensor of a model's return value (a tensor, diffusers' `.sample` output, or a tuple), shape-checked.
    `where`: the call's place for the messages, or a function that makes it (only when there is an error)."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        where = where() if callable(where) else where
    if not isinstance(out, torch.Tensor):
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        else:
            raise TypeError(f"the model returned {type(out).__name__} {where}; expected a tensor of the sample's shape")
    if out.shape != x.shape:
        hint = ""
        if out.dim() == x.dim() and out.dim() > 1 and out.shape[1] == 2 * x.shape[1]:
            hint = " (twice the channels: a model with a learned variance? split off the variance half first)"
        raise ValueError(
            f"the model returned shape {tuple(out.shape)} {where} but the sample has shape {tuple(x.shape)}; "
            f"it must return a tensor of the sample's shape{hint}"
        )
    return out


def per_call(values: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
    """For each of `values` (the model times of a loop), a [batch] tensor of it, all made in one operation: every
    model call gets a tensor of its own (views of one buffer), which the model may edit in place."""
    return values.repeat_interleave(batch).view(len(values), batch).unbind(0)


def _last_uses(steps) -> dict[tuple[str, int], int]:
    """(kind, j) -> index of the last step that takes it as history."""
    last = {}
    for i, st in enumerate(steps):
        for ref in st.history:
            last[ref] = i
    return last


def run_plan(
    call: Callable[[int, PlannedStep, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
    steps: tuple[PlannedStep, ...] | list[PlannedStep],
    x: torch.Tensor,
    *,
    guidance_scale: float = 1.0,
    clip=None,
    generator: torch.Generator | None = None,
    noise: Callable[[int, PlannedStep], torch.Tensor | None] | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    desc: str | None = None,
    stats: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, list]:
    """Run planned steps from x. `call(i, step, x)` returns (model output, unconditional output or None).

    `noise(i, step)`, when given, returns the step's noise z (or None: drawn from `generator` if the step
    uses noise). Returns the final x and the per-step StepResults without their tensors (`stats_only`: stats
    and clipped counts, device tensors; nothing synced).
    """
    check_history(steps)
    if clip is not None and any(st.x0_from is not None for st in steps):
        raise ValueError(
            "this sampler keeps the model output or the ODE derivative as its history, not x0 (PNDM, LMS): "
            "its steps cannot clip x0; pass clip=None"
        )
    last_use = _last_uses(steps)
    # per step, decided once: what it keeps for later steps, what it frees, whether it draws its noise here and
    # returns x0 (a later step's history, a callback's `denoised`, or the stats of an x0 read out of another line)
    plan = [
        (
            [ref for ref in st.history if last_use[ref] == i],
            ("x", i) in last_use,
            ("x0", i) in last_use,
            ("z", i) in last_use,
            ("x0", i) in last_use or callback is not None or (stats and st.x0_from is not None),
        )
        for i, st in enumerate(steps)
    ]
    kept: dict[tuple[str, int], torch.Tensor] = {}
    results = []
    for i, st in enumerate(tqdm(steps, disable=not progress, desc=desc, leave=False)):
        frees, keep_x, keep_x0, keep_z, return_x0 = plan[i]
        out, uncond = call(i, st, x)
        history = [kept[ref] for ref in st.history]
        z = noise(i, st) if noise is not None else None
        if z is None and keep_z:  # a later step reads this noise: draw it here, as fused_step would
            device = generator.device if generator is not None else x.device
            z = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        r = fused_step(
            x,
            out,
            st.coeffs,
            uncond=uncond,
            guidance_scale=guidance_scale,
            clip=clip,
            history=history,
            noise=z if st.coeffs.uses_noise else None,
            generator=generator,
            return_x0=return_x0,
            stats=stats,
            backend=backend,
        )
        for ref in frees:  # what no later step needs
            del kept[ref]
        if keep_x:
            kept[("x", i)] = x
        if keep_x0:
            kept[("x0", i)] = r.pred_x0
        if keep_z:
            kept[("z", i)] = z
        denoised = r.pred_x0
        if st.x0_from is not None and (callback is not None or stats):
            a, b = st.x0_from  # the x0 line computed another readout s: x0 = a x + b s
            denoised = a * x + b * r.pred_x0  # one extra pass, only for stats / callbacks of these samplers
            if stats:
                r.x0_stats = tensor_stats(denoised, backend=backend)
        if callback is not None:
            callback(
                {
                    "i": i,
                    "t": st.model_time,
                    "sigma": st.sigma,
                    "sigma_next": st.sigma_next,
                    "x": x,
                    "x_next": r.prev_sample,
                    "denoised": denoised,
                    "result": r,
                }
            )
        x = r.prev_sample
        results.append(r.stats_only())  # the samples of earlier steps are freed: a loop reuses their memory
    return x, results


@torch.no_grad()
def sample(
    model: Callable,
    sampler: Sampler,
    x_T: torch.Tensor,
    *,
    extra_args: dict | None = None,
    uncond_args: dict | None = None,
    guidance_scale: float = 1.0,
    clip=None,
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    stats: bool = True,
    backend: str = "auto",
) -> SampleResult:
    """Sample with a native sampler: one `model` call (two under CFG) and one fused step per planned step.

    Args:
        model: called as `model(x_in, t, **extra_args)` (model-call convention: `fastdiff.samplers.plan`);
            returns a tensor of x's shape (or an object with `.sample`, or a tuple whose first item is it).
        sampler: a `Sampler` (`ddim(schedule, 50)`, `make_sampler("euler", ...)`).
        x_T: standard-normal noise, the variance-preserving / flow sample at the start; the loop starts
            from `x_T * sampler.init_noise_sigma` (the VE sample of the Euler family).
        extra_args / uncond_args: keyword arguments of the conditional / unconditional call. With
            `uncond_args`, classifier-free guidance u + w (c - u) is combined inside the fused step.
        clip: x0 clipping, as `fused_step` (None, c, (lo, hi), ClipRange, DynamicThreshold).
        generator: noise of stochastic samplers (drawn like diffusers: torch.randn(x.shape, generator=...)).
        callback: called after each step with {"i", "t", "sigma", "sigma_next", "x", "x_next", "denoised", "result"}.
        progress: show a tqdm bar. stats: collect per-step stats (device tensors, no host sync).

    >>> import torch
    >>> from fastdiff.schedule import Schedule
    >>> from fastdiff.samplers import ddim, sample
    >>> sched = Schedule.make("linear")
    >>> eps_model = lambda x, t: torch.zeros_like(x)          # "no noise in x": x0 = x / alpha
    >>> r = sample(eps_model, ddim(sched, 10), torch.ones(2, 3), progress=False, backend="torch")
    >>> round(float(r.sample[0, 0]) * float(sched.alpha[900]), 5)
    1.0
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a fastdiff.samplers.Sampler (e.g. ddim(schedule, 50)); got {type(sampler)}")
    if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point() or x_T.dim() == 0:
        raise TypeError("x_T must be a floating-point tensor with a batch dimension (noise of the sample's shape)")
    if uncond_args is None and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale={guidance_scale} needs uncond_args (the unconditional call's arguments)")
    extra_args = {} if extra_args is None else extra_args
    x = x_T * sampler.init_noise_sigma if sampler.init_noise_sigma != 1.0 else x_T
    batch = x.shape[0]
    times = torch.tensor(sampler.model_times, dtype=sampler.time_dtype).to(x.device)  # one copy, up front
    step_times = per_call(times, batch)

    def call(i: int, st: PlannedStep, x: torch.Tensor):
        x_in = x * st.input_scale if st.input_scale != 1.0 else x
        t = step_times[i]  # its own tensor (per_call)
        where = lambda: f"at step {i} (t={st.model_time:g})"  # noqa: E731 - formatted only for an error
        out = model_output(model(x_in, t, **extra_args), x, where)
        unc = model_output(model(x_in, t, **uncond_args), x, where) if uncond_args is not None else None
        return out, unc

    x, results = run_plan(
        call,
        sampler.steps,
        x,
        guidance_scale=guidance_scale,
        clip=clip,
        generator=generator,
        callback=callback,
        progress=progress,
        desc=sampler.name,
        stats=stats,
        backend=backend,
    )
    clipped, raw = StepResult.stack(results)  # one conversion for all steps
    return SampleResult(
        sample=x,
        x_stats=TensorStats(raw[0][:, 0], raw[1][:, 0]) if stats else None,
        x0_stats=TensorStats(raw[0][:, 1], raw[1][:, 1]) if stats else None,
        clipped=clipped,
        numel=x.numel(),
        model_times=sampler.model_times,
        sigmas=[st.sigma for st in sampler.steps],
    )
