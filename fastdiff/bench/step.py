"""Benchmark: one fused sampler step (fastdiff.fused_step) against what users run, per sampler.

`ddim_step`: the step of diffusers' DDIMScheduler (epsilon prediction, eta = 0, clip_sample=True, 50
inference steps, the middle one) with x0 clipping and x0 output, computed by:
  fastdiff-<backend>          fd.fused_step(..., clip=1.0, out=prev, x0_out=x0): stats of x' and x0 and
                              the clipped count come with it (the default stats=True)
  fastdiff-<backend>-nostats  the same with stats=False
  diffusers                   DDIMScheduler.step(eps, t, x) (allocates its outputs)
  eager                       the same lines in eager PyTorch
  torch.compile               `eager` compiled (compile time reported)
  add-out                     torch.add(x, e, out=o): one fused elementwise pass, the yardstick
GB/s counts x and eps read once, x' and x0 written once (4 tensors); add-out moves 3.

`euler_step` (EulerDiscreteScheduler, epsilon, the middle of 50 steps; x' and x0 out, 4 tensors) and
`flow_euler_step` (FlowMatchEulerDiscreteScheduler, velocity, the middle of 50 steps; x' out, 3
tensors): the same providers less the -nostats and base-isa variants, at the largest size only (each
torch.compile of a new shape takes ~20 s on a small CPU).

Without diffusers installed the `diffusers` provider is left out (and `eager` is the check's reference).

    fastdiff bench --suite step                           # CPU: 2^20, 2^22, 2^24 elements; fp32, bf16
    fastdiff bench --suite step --sizes 24 --dtype fp32 --repeats 21
    fastdiff bench --suite step --device cuda --sizes 24,26,28   # fastdiff-triton
"""

from __future__ import annotations

import math

import torch

import fastdiff as fd
from fastdiff.step import StepCoeffs

from . import harness
from .config import BenchConfig

TITLE = "DDIM step with clipping and x0 output: fastdiff against diffusers and PyTorch"
INFERENCE_STEPS = 50
STEP_INDEX = 25


def ddim_setup():
    """diffusers' scheduler at the middle step (None without diffusers), and the same step as fastdiff
    coefficients: (scheduler, t, alpha_cumprod_t, alpha_cumprod_prev, coeffs)."""
    try:
        from diffusers import DDIMScheduler
    except ImportError:
        sched = None
        # DDIMScheduler's defaults: 1000 steps, "linear" betas 1e-4..0.02, "leading" spacing, steps_offset 0
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        t = (INFERENCE_STEPS - 1 - STEP_INDEX) * (1000 // INFERENCE_STEPS)
    else:
        sched = DDIMScheduler(clip_sample=True)
        sched.set_timesteps(INFERENCE_STEPS)
        alphas_cumprod = sched.alphas_cumprod
        t = int(sched.timesteps[STEP_INDEX])
    prev_t = t - 1000 // INFERENCE_STEPS
    a_t = float(alphas_cumprod[t])
    a_prev = float(alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
    coeffs = StepCoeffs.from_prediction(
        "epsilon", math.sqrt(a_t), math.sqrt(1 - a_t), p0=math.sqrt(a_prev), pe=math.sqrt(1 - a_prev)
    )
    return sched, t, a_t, a_prev, coeffs


def make_eager(a_t: float, a_prev: float):
    """diffusers' DDIM lines (eta = 0, clip to [-1, 1]) as a plain function."""

    def ddim_step(x: torch.Tensor, eps: torch.Tensor):
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        x0 = x0.clamp(-1.0, 1.0)
        prev = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        return prev, x0

    return ddim_step


def check(results: dict[str, tuple[torch.Tensor, ...]], dtype: torch.dtype) -> None:
    """Every provider computes the same step (before any timing): x' (and x0 where given)."""
    # 16-bit providers round every intermediate differently (a few ulps of x0 ~ 10 before clipping);
    # a wrong coefficient would be off by O(1)
    tol = 1e-5 if dtype == torch.float32 else 0.125
    ref = results["diffusers" if "diffusers" in results else "eager"]
    for name, outputs in results.items():
        for what, got, want in zip(("x'", "x0"), outputs, ref):
            torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol, msg=f"{name}: {what}")


def providers_for(x: torch.Tensor, eps: torch.Tensor, backends: list[str], setup, eager, compiled) -> dict:
    sched, t, _, _, coeffs = setup
    prev, x0, o = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)

    def fastdiff_step(b, stats=True):
        r = fd.fused_step(x, eps, coeffs, clip=1.0, out=prev, x0_out=x0, stats=stats, backend=b)
        return r.prev_sample, r.pred_x0

    def diffusers_step():
        r = sched.step(eps, t, x)
        return r.prev_sample, r.pred_original_sample

    p = {}
    for b in backends:
        fn = lambda b=b: fastdiff_step(b)  # noqa: E731
        p.update(harness.with_baseline_isa(f"fastdiff-{b}", fn) if b == "cpp" else {f"fastdiff-{b}": fn})
        p[f"fastdiff-{b}-nostats"] = lambda b=b: fastdiff_step(b, stats=False)
    if sched is not None:
        p["diffusers"] = diffusers_step
    p["eager"] = lambda: eager(x, eps)
    if compiled is not None:
        p["torch.compile"] = lambda: compiled(x, eps)
    p["add-out"] = lambda: (torch.add(x, eps, out=o), o)
    return p


class OtherSampler:
    """A sampler step without clipping: diffusers' scheduler at its middle step (None without diffusers),
    fastdiff's coefficients and the same maths in eager PyTorch returning (x', x0) or (x',)."""

    def __init__(self, name: str):
        self.name = name
        self.op = f"{name}_step"
        self.sched = None
        if name == "euler":
            from fastdiff.samplers.euler import euler_coeffs

            betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # diffusers' default "linear"
            alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
            sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
            try:
                from diffusers import EulerDiscreteScheduler
            except ImportError:
                pass
            else:
                self.sched = EulerDiscreteScheduler()
                self.sched.set_timesteps(INFERENCE_STEPS)
                sigmas = self.sched.sigmas
            sigma, sigma_next = float(sigmas[STEP_INDEX]), float(sigmas[STEP_INDEX + 1])
            if self.sched is None:  # diffusers' "linspace" spacing, interpolated: near enough for a timing
                sigma, sigma_next = float(sigmas[500]), float(sigmas[480])
            self.coeffs = euler_coeffs(sigma, sigma_next, "epsilon")
            self.outputs = 2

            def eager(x, eps):  # diffusers' lines (no churn), in float32 as diffusers upcasts
                xf = x.float()
                x0 = xf - sigma * eps
                prev = xf + (xf - x0) / sigma * (sigma_next - sigma)
                return prev.to(eps.dtype), x0

        elif name == "flow_euler":
            from fastdiff.samplers.flow import flow_euler_coeffs

            sigma, sigma_next = 1.0 - STEP_INDEX / INFERENCE_STEPS, 1.0 - (STEP_INDEX + 1) / INFERENCE_STEPS
            try:
                from diffusers import FlowMatchEulerDiscreteScheduler
            except ImportError:
                pass
            else:
                self.sched = FlowMatchEulerDiscreteScheduler()
                self.sched.set_timesteps(INFERENCE_STEPS)
                sigma, sigma_next = float(self.sched.sigmas[STEP_INDEX]), float(self.sched.sigmas[STEP_INDEX + 1])
            self.coeffs = flow_euler_coeffs(sigma, sigma_next, "flow")
            self.outputs = 1

            def eager(x, v):  # diffusers' line, in float32 as diffusers upcasts
                return ((x.float() + (sigma_next - sigma) * v).to(v.dtype),)

        else:
            raise ValueError(f"unknown sampler {name!r}; accepted: euler, flow_euler")
        self.eager = eager
        self.t = self.sched.timesteps[STEP_INDEX] if self.sched is not None else None

    def diffusers_step(self, x, eps):
        self.sched._step_index = STEP_INDEX  # step() advances it; every timed call is the same step
        r = self.sched.step(eps, self.t, x)
        return (r.prev_sample, r.pred_original_sample) if self.outputs == 2 else (r.prev_sample,)

    def providers_for(self, x, eps, backends, compiled) -> dict:
        prev, x0, o = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
        x0_out = x0 if self.outputs == 2 else None

        def fastdiff_step(b):
            r = fd.fused_step(x, eps, self.coeffs, out=prev, x0_out=x0_out, backend=b)
            return (r.prev_sample, r.pred_x0)[: self.outputs]

        p = {f"fastdiff-{b}": lambda b=b: fastdiff_step(b) for b in backends}
        if self.sched is not None:
            p["diffusers"] = lambda: self.diffusers_step(x, eps)
        p["eager"] = lambda: self.eager(x, eps)
        if compiled is not None:
            p["torch.compile"] = lambda: compiled(x, eps)
        p["add-out"] = lambda: (torch.add(x, eps, out=o), o)
        return p


OTHER_SAMPLERS = ("euler", "flow_euler")


def count_cases(cfg: BenchConfig) -> int:
    return (len(cfg.sizes) + len(OTHER_SAMPLERS)) * len(cfg.dtypes)


def _time_case(providers: dict, cfg: BenchConfig, op: str, n: int, dtype: torch.dtype, n_tensors: int, reference):
    """Check the providers agree (their first calls, which also compile torch.compile), then time them;
    `n_tensors` tensors of n elements are what the step must move (add-out moves 3)."""
    outputs, first_s = harness.first_calls(providers, cfg.device)
    check({k: tuple(v.clone() for v in out) for k, out in outputs.items() if k != "add-out"}, dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return harness.run_case(
        providers,
        bytes_moved=n_tensors * n * itemsize,
        bytes_moved_by={"add-out": 3 * n * itemsize},
        case={"suite": "step", "op": op, "size": n, "dtype": harness.dtype_name(dtype), "device": cfg.device},
        repeats=cfg.repeats,
        device=cfg.device,
        copy_gbps=cfg.copy_gbps,
        reference=reference,
        first_call_fields={"torch.compile": "compile_s"},
        first_call_s=first_s,
    )


def run(cfg: BenchConfig) -> list[dict]:
    """Rows of every (size, dtype, provider); see `fastdiff.bench` for the fields."""
    device = cfg.device
    setup = ddim_setup()
    eager = make_eager(setup[2], setup[3])
    backends = ["cpp"] if torch.device(device).type == "cpu" else ["triton"]
    backends = [b for b in backends if fd.kernels.availability(b, device)[0]] or ["torch"]
    reference = f"fastdiff-{backends[0]}"
    rows = []

    def inputs(n: int, dtype: torch.dtype):
        gen = torch.Generator(device=device).manual_seed(n)
        x = (1.3 * torch.randn(n, generator=gen, device=device)).to(dtype)
        return x, torch.randn(n, generator=gen, device=device).to(dtype)

    for dtype in cfg.dtypes:
        compiled = torch.compile(eager, dynamic=False) if cfg.compile else None
        for n in cfg.sizes:
            x, eps = inputs(n, dtype)
            providers = providers_for(x, eps, backends, setup, eager, compiled)
            rows += _time_case(providers, cfg, "ddim_step", n, dtype, 4, reference)
            del x, eps, providers
            cfg.done()
    for name in OTHER_SAMPLERS:
        sampler = OtherSampler(name)
        for dtype in cfg.dtypes:
            compiled = torch.compile(sampler.eager, dynamic=False) if cfg.compile else None
            n = max(cfg.sizes)
            x, eps = inputs(n, dtype)
            providers = sampler.providers_for(x, eps, backends, compiled)
            rows += _time_case(providers, cfg, sampler.op, n, dtype, 2 + sampler.outputs, reference)
            del x, eps, providers
            cfg.done()
    return rows
