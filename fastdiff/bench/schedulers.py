"""Benchmark: the whole `step()` of each drop-in Fast* scheduler against its diffusers parent.

For every scheduler, a mid-loop step (the same config, timesteps and inputs for both) is timed with the
harness's interleaved repeats; both return fresh tensors (the parent allocates its outputs, so does the
fused step). Multistep / two-stage schedulers are timed on a step whose state is replayed before each
call (DPM-Solver's history is a list shift; Heun's first stage). GB/s counts what the step must move:
the sample and the model output read once, prev_sample (and x0 where returned) written once, plus noise
and history tensors read once.

    fastdiff bench --suite schedulers                            # CPU: 2^20, 2^24 elements; fp32
    fastdiff bench --suite schedulers --sizes 24 --dtype fp32 --repeats 9
    fastdiff bench --suite schedulers --device cuda --sizes 24,26

`run(device, sizes, dtypes, repeats, quick)` returns the harness rows (for `fastdiff bench`).
"""

from __future__ import annotations

import copy

import torch

from . import harness

TITLE = "Drop-in diffusers schedulers: Fast* step() against the parent's step()"
INFERENCE_STEPS = 20
STEP_INDEX = 10

# name: (config, step kwargs, tensors read besides sample and model output, tensors written)
CASES = {
    "DDIMScheduler[clip]": (dict(clip_sample=True), {}, 0, 2),
    "DDIMScheduler[eta=1]": (dict(clip_sample=True), dict(eta=1.0), 1, 2),
    "DDPMScheduler": (dict(clip_sample=True), {}, 1, 2),
    "EulerDiscreteScheduler": ({}, {}, 0, 2),
    "EulerAncestralDiscreteScheduler": ({}, {}, 1, 2),
    "HeunDiscreteScheduler": ({}, {}, 0, 2),
    "FlowMatchEulerDiscreteScheduler": (dict(shift=3.0), {}, 0, 1),
    "DPMSolverMultistepScheduler[2M]": (dict(solver_order=2), {}, 1, 2),
    "DPMSolverMultistepScheduler[3M-SDE]": (dict(solver_order=3, algorithm_type="sde-dpmsolver++"), {}, 3, 2),
}
QUICK_CASES = ("DDIMScheduler[clip]", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler[2M]")


def _prepared(sched, x: torch.Tensor, device: str):
    """The scheduler advanced to STEP_INDEX (state as a real loop leaves it), and the timestep there."""
    import diffusers

    sched.set_timesteps(INFERENCE_STEPS, device=device)
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(STEP_INDEX)
        sched._step_index = STEP_INDEX
    if isinstance(sched, diffusers.DPMSolverMultistepScheduler):  # a full history, as after warm-up
        sched.model_outputs = [0.9 * x, 0.95 * x, x][-sched.config.solver_order :]
        sched.lower_order_nums = sched.config.solver_order
    if hasattr(sched, "scale_model_input") and hasattr(sched, "is_scale_input_called"):
        sched.is_scale_input_called = True
    return sched, sched.timesteps[STEP_INDEX]


def _step_fn(sched, t, x, out, step_kw, device):
    """A step() call that restores the scheduler's per-step state first (step index, history, Heun stage)."""
    state = {k: copy.copy(v) for k, v in vars(sched).items() if k in ("_step_index", "model_outputs")}
    state.update({k: getattr(sched, k) for k in ("dt", "sample", "lower_order_nums") if hasattr(sched, k)})
    gen = torch.Generator(device=device).manual_seed(0)
    accepts_gen = "generator" in sched.step.__code__.co_varnames

    def step():
        for k, v in state.items():
            setattr(sched, k, copy.copy(v))
        kw = dict(step_kw, generator=gen) if accepts_gen else dict(step_kw)
        return sched.step(out, t, x, **kw).prev_sample

    return step


def run(
    device: str = "cpu",
    sizes: list[int] | None = None,
    dtypes: list[torch.dtype] | None = None,
    repeats: int = 11,
    quick: bool = False,
    copy_gbps: float | None = None,
    cases: list[str] | None = None,
) -> list[dict]:
    """Harness rows for every (scheduler, size, dtype) and provider ("diffusers", "fastdiff"), with
    `speedup_of_reference` = diffusers median / fastdiff median on the diffusers row.

    `cases`: names from `CASES` (default: all; `quick`: a few, at 2^20 elements)."""
    import diffusers

    from fastdiff.integrations.diffusers import fast_scheduler

    sizes = sizes or ([1 << 20] if quick else [1 << 20, 1 << 24])
    dtypes = dtypes or [torch.float32]
    names = tuple(cases) if cases else QUICK_CASES if quick else tuple(CASES)
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise ValueError(f"unknown cases {unknown}; accepted: {', '.join(CASES)}")
    rows = []
    for dtype in dtypes:
        for n in sizes:
            gen = torch.Generator(device=device).manual_seed(n)
            x = (1.3 * torch.randn(2, n // 2, generator=gen, device=device)).to(dtype)
            out = torch.randn(2, n // 2, generator=gen, device=device).to(dtype)
            for name in names:
                cfg, step_kw, extra_reads, writes = CASES[name]
                parent_cls = getattr(diffusers, name.split("[")[0])
                parent, t = _prepared(parent_cls(**cfg), x, device)
                fast, t_fast = _prepared(fast_scheduler(parent_cls(**cfg)), x, device)
                providers = {
                    "diffusers": _step_fn(parent, t, x, out, step_kw, device),
                    "fastdiff": _step_fn(fast, t_fast, x, out, step_kw, device),
                }
                # the same step (before timing)
                want, got = providers["diffusers"](), providers["fastdiff"]()
                tol = 1e-5 if dtype == torch.float32 else 5e-2
                scale = max(float(want.double().abs().max()), float(x.double().abs().max()))
                torch.testing.assert_close(got.double(), want.double(), rtol=0, atol=tol * scale, msg=name)
                case = {"op": f"step:{name}", "size": n, "dtype": str(dtype).removeprefix("torch."), "device": device}
                rows += harness.run_case(
                    providers,
                    bytes_moved=(2 + extra_reads + writes) * n * x.element_size(),
                    case=case,
                    repeats=repeats,
                    device=device,
                    copy_gbps=copy_gbps,
                    reference="fastdiff",
                )
    return rows
