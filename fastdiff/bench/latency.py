"""Benchmark: latency at the sizes people sample and log, where fixed per-call cost decides.

Shapes: an SD 1.5 latent (1x4x64x64), SDXL (1x4x128x128), a Flux-like token latent (1x4096x64) and a video
latent (1x16x13x60x104), float32. Per shape, each case times its providers interleaved (medians):

  loop:<Scheduler>   a 20-step loop without a model — set_timesteps, then scale_model_input + step each step —
                     with the Fast* drop-in against its diffusers parent; reported per step
  fused_step         fastdiff.fused_step (DDIM, clip, stats, out=) against the same step's backend call alone
                     (its kernel, validation and Python done: the host overhead is the difference) and
                     torch.add(x, e, out=o) (the floor of any step that reads two tensors and writes one)
  sample_step        a 20-step native DDIM sample() with a trivial model, per step, against the model calls
                     alone (what sample() adds per step)
  tensor_stats       fd.tensor_stats(x).to_dict() against the naive 8 .item() calls, aminmax+var_mean, x.sum()
                     and torch.compile of the stacked naive stats
  ddim_step          the fused step against eager and torch.compile of the same maths

    fastdiff bench --suite latency                      # CPU; all shapes
    fastdiff bench --suite latency --quick              # SD 1.5 and SDXL only, a few schedulers
    fastdiff bench --suite latency --device cuda        # the same on a GPU (CUDA events, L2 flushed)
"""

from __future__ import annotations

import math
import time

import torch

import fastdiff as fd

from . import harness
from .config import BenchConfig
from .stats import naive_stats, stacked_stats
from .step import make_eager

TITLE = "Latency at the sizes people sample: per-step host cost, small-tensor stats"
SHAPES = {
    "SD 1.5 latent": (1, 4, 64, 64),
    "SDXL latent": (1, 4, 128, 128),
    "Flux tokens": (1, 4096, 64),
    "video latent": (1, 16, 13, 60, 104),
}
QUICK_SHAPES = ("SD 1.5 latent", "SDXL latent")
STEPS = 20
# scheduler (diffusers class name, config); Flux-like tokens take the flow-matching one
SCHEDULERS = {
    "DDIM": ("DDIMScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}
# every other Fast* drop-in, at the image latents of the issue's targets (SD 1.5, SDXL) only: two of them draw a
# Brownian tree or many normals per step, which at video sizes would take minutes
MORE_SCHEDULERS = {
    "Heun": ("HeunDiscreteScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {}),
    "DPM++ 2S (singlestep)": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "LCM": ("LCMScheduler", {}),
    "TCD": ("TCDScheduler", {}),
    "EDM Euler": ("EDMEulerScheduler", {}),
    "EDM DPM++ 2M": ("EDMDPMSolverMultistepScheduler", {}),
}
MORE_SHAPES = ("SD 1.5 latent", "SDXL latent")
FLOW_SCHEDULERS = {"FlowMatch Euler": ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0})}
QUICK_SCHEDULERS = ("DDIM", "Euler", "DPM++ 2M Karras")


def _shapes(cfg: BenchConfig) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in SHAPES.items() if not cfg.quick or k in QUICK_SHAPES}


def _schedulers(shape_name: str, quick: bool) -> dict:
    if shape_name == "Flux tokens":
        return FLOW_SCHEDULERS
    if quick:
        return {k: v for k, v in SCHEDULERS.items() if k in QUICK_SCHEDULERS}
    return {**SCHEDULERS, **(MORE_SCHEDULERS if shape_name in MORE_SHAPES else {})}


def count_cases(cfg: BenchConfig) -> int:
    try:
        import diffusers  # noqa: F401

        with_loops = True
    except ImportError:
        with_loops = False
    n = 0
    for name in _shapes(cfg):
        n += 4 + (len(_schedulers(name, cfg.quick)) if with_loops else 0)
    return n


def _loop(sched, out: torch.Tensor, x_T: torch.Tensor, device: str):
    """A model-free sampling loop as a pipeline drives the scheduler: the noise sample, 20 steps."""
    gen = torch.Generator(device=device).manual_seed(0)

    def run():
        sched.set_timesteps(STEPS, device=device)
        x = x_T * sched.init_noise_sigma if hasattr(sched, "init_noise_sigma") else x_T
        step = sched.step
        kw = {"generator": gen} if "generator" in step.__code__.co_varnames else {}
        for t in sched.timesteps:
            if hasattr(sched, "scale_model_input"):
                sched.scale_model_input(x, t)  # the model's input; its output here is `out` whatever the input
            x = step(out, t, x, **kw).prev_sample
        return x

    return run


def _rows(providers, case, cfg, *, bytes_moved, reference, per=1, first_call_fields=None):
    rows = harness.run_case(
        providers,
        bytes_moved=bytes_moved,
        case=case,
        repeats=cfg.repeats,
        device=cfg.device,
        copy_gbps=cfg.copy_gbps,
        reference=reference,
        first_call_fields=first_call_fields,
    )
    if per != 1:  # a loop of `per` steps timed whole: report per step (ratios unchanged)
        for row in rows:
            for k in ("median_ms", "p20_ms", "p80_ms"):
                row[k] /= per
            row["gbps"] *= per
            if row.get("frac_copy_bw") is not None:
                row["frac_copy_bw"] *= per
            row["per_step_of"] = per
    cfg.done()
    return rows


def run(cfg: BenchConfig) -> list[dict]:
    return [row for name, shape in _shapes(cfg).items() for row in _shape_rows(cfg, name, shape)]


def _shape_rows(cfg: BenchConfig, shape_name: str, shape: tuple[int, ...]) -> list[dict]:
    from fastdiff.step import StepCoeffs

    device = cfg.device
    rows = []
    n = math.prod(shape)
    es = 4
    gen = torch.Generator(device=device).manual_seed(n)
    x = torch.randn(shape, generator=gen, device=device) * 1.3
    e = torch.randn(shape, generator=gen, device=device)
    o = torch.empty_like(x)
    base = {"size": n, "dtype": "float32", "device": device, "shape": shape_name}

    # scheduler loops
    try:
        import diffusers

        from fastdiff.integrations.diffusers import fast_scheduler
    except ImportError:
        diffusers = None
    if diffusers is not None:
        for label, (cls_name, config) in _schedulers(shape_name, cfg.quick).items():
            cls = getattr(diffusers, cls_name)
            providers = {
                "diffusers": _loop(cls(**config), e, x, device),
                "fastdiff": _loop(fast_scheduler(cls(**config)), e, x, device),
            }
            case = {**base, "op": f"loop:{label}"}
            rows += _rows(providers, case, cfg, bytes_moved=3 * n * es * STEPS, reference="fastdiff", per=STEPS)

    # the fused step: whole call, the backend call alone, the add(out=) floor
    c = StepCoeffs.from_prediction("epsilon", 0.3, math.sqrt(0.91), p0=0.6, pe=0.8)
    providers = {
        "fastdiff": lambda: fd.fused_step(x, e, c, clip=1.0, out=o),
        "fastdiff-backend-call": _backend_call(x, e, c, o),
        "add-out": lambda: torch.add(x, e, out=o),
    }
    case = {**base, "op": "fused_step"}
    rows += _rows(providers, case, cfg, bytes_moved=3 * n * es, reference="fastdiff")

    # sample(): per step, against the model calls alone
    rows += _rows(_sample_providers(x, device), {**base, "op": "sample_step"}, cfg, bytes_moved=3 * n * es,
                  reference="fastdiff", per=STEPS)  # fmt: skip

    # stats read on the host
    providers = {
        "fastdiff": lambda: fd.tensor_stats(x).to_dict(),
        "naive-item": lambda: naive_stats(x),
        "read-pass": lambda: x.sum().item(),
    }
    first = {}
    if cfg.compile:
        compiled = torch.compile(stacked_stats)
        providers["torch.compile"] = lambda: compiled(x).tolist()
        first = {"torch.compile": "compile_s"}
    rows += _rows(providers, {**base, "op": "tensor_stats"}, cfg, bytes_moved=n * es, reference="fastdiff",
                  first_call_fields=first)  # fmt: skip

    # the DDIM step (alpha_t^2 = 0.09, alpha_prev^2 = 0.36, as `c`) against its maths in eager PyTorch and compiled
    eager = make_eager(0.09, 0.36)
    providers = {
        "fastdiff": lambda: fd.fused_step(x, e, c, clip=1.0, out=o, return_x0=True, stats=False),
        "eager": lambda: eager(x, e),
    }
    first = {}
    if cfg.compile:
        compiled_step = torch.compile(eager)
        providers["torch.compile"] = lambda: compiled_step(x, e)
        first = {"torch.compile": "compile_s"}
    rows += _rows(providers, {**base, "op": "ddim_step"}, cfg, bytes_moved=3 * n * es, reference="fastdiff",
                  first_call_fields=first)  # fmt: skip
    return rows


def _backend_call(x, e, c, out):
    """The backend's step call on a launch built once: kernel, arguments and results, no validation."""
    from fastdiff import kernels
    from fastdiff.kernels.launch import StepLaunch

    impl = kernels.resolve("auto", x.device)
    launch = StepLaunch(x, e, None, 1.0, None, (), c.vector(), None, None, -1.0, 1.0, None, out, None, True)
    return lambda: impl.fused_step(launch)


def _sample_providers(x_T: torch.Tensor, device: str) -> dict:
    from fastdiff.samplers import make_sampler, sample
    from fastdiff.schedule import Schedule

    sampler = make_sampler("ddim", STEPS, Schedule.make("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012))
    t = torch.zeros(x_T.shape[0], device=device)

    def model(x, t):
        return x * 0.5

    def calls_alone():
        x = x_T
        for _ in range(STEPS):
            x = model(x, t)
        return x

    return {
        "fastdiff": lambda: sample(model, sampler, x_T, progress=False),
        "model-calls-alone": calls_alone,
    }


def _us(ms: float) -> str:
    return f"{ms * 1e3:.0f} µs" if ms * 1e3 >= 10 else f"{ms * 1e3:.1f} µs"


def table(rows: list[dict]) -> str:
    """The README's latency tables: each scheduler loop (a row) as diffusers / fastdiff per step at each latent (a
    column; higher is better for fastdiff); then per latent the fused step's host overhead above its backend call,
    what a native `sample()` step adds to its model call (the fused step included), and stats read on the host
    against the naive `.item()` calls. Empty when the rows hold no latency suite."""
    mine = [r for r in rows if r.get("suite") == "latency"]
    if not mine:
        return ""
    by = {}
    for r in mine:
        by.setdefault(r["shape"], {}).setdefault(r["op"], {})[r["provider"]] = r["median_ms"]
    shapes = [f"{shape} ({next(r['size'] for r in mine if r['shape'] == shape):,})" for shape in by]
    loops = list(dict.fromkeys(op for ops in by.values() for op in ops if op.startswith("loop:")))
    lines = ["| scheduler (per step) | " + " | ".join(shapes) + " |", "|---|" + "---:|" * len(shapes)]
    for op in loops:
        cells = [op[5:]]
        for ops in by.values():
            t = ops.get(op)
            cells.append(
                f"{t['diffusers'] / t['fastdiff']:.2f}x ({_us(t['fastdiff'])} vs {_us(t['diffusers'])})" if t else "–"
            )
        lines.append("| " + " | ".join(cells) + " |")
    head = ["latent", "fused_step: host overhead", "sample(): per step over the model"]
    head += ["tensor_stats().to_dict() vs 8 .item()"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for shape, ops in zip(shapes, by.values()):
        cells = [shape]
        f = ops.get("fused_step", {})
        if "fastdiff" in f and "fastdiff-backend-call" in f:
            cells.append(f"{_us(f['fastdiff'] - f['fastdiff-backend-call'])} (call {_us(f['fastdiff'])})")
        else:
            cells.append("–")
        sm = ops.get("sample_step", {})
        if "fastdiff" in sm and "model-calls-alone" in sm:
            cells.append(f"{_us(sm['fastdiff'] - sm['model-calls-alone'])} (step {_us(sm['fastdiff'])})")
        else:
            cells.append("–")
        st = ops.get("tensor_stats", {})
        if "fastdiff" in st and "naive-item" in st:
            cells.append(f"{st['naive-item'] / st['fastdiff']:.2f}x ({_us(st['fastdiff'])} vs {_us(st['naive-item'])})")
        else:
            cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:  # pragma: no cover - `fastdiff bench --suite latency` is the way in
    t0 = time.time()
    for row in run(BenchConfig(quick=True, compile=False)):
        print(row["shape"], row["op"], row["provider"], f"{row['median_ms'] * 1e3:.1f} us")
    print(f"{time.time() - t0:.0f} s")
