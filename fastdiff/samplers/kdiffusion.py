"""k-diffusion-style functional samplers: `sample_x(model, x, sigmas, extra_args=None, callback=None, disable=None)`.

As in k-diffusion (Crowson), `model(x, sigma, **extra_args)` is a *denoiser*: it returns x0 for the
sample x = x0 + sigma eps (VE form; `sample_flow_euler`: the flow form x = (1 - sigma) x0 + sigma eps,
sigma in [0, 1]), with sigma a fresh tensor of shape [batch]. `x` is the starting sample (already scaled:
x = sigmas[0] * noise), and `sigmas` the decreasing ladder with its final value (usually 0). The functions
that k-diffusion 0.1.1 has take its name and signature (keyword options after k-diffusion's own:
`generator`, `clip`) and give its result: same maths, same noise from the same noise sampler.

Every function builds its steps from the same coefficient functions as the native samplers (the model
output read as prediction type "sample") and runs each step as one `fused_step`. `sigmas` on a GPU are
read to the host once, up front.

Noise. A stochastic function draws each step's noise as `noise_sampler(sigma, sigma_next)` (`noise.py`), at
the same levels and in the same order as k-diffusion, so that k-diffusion's samples are reproduced exactly
from the same noise sampler. Without one: `generator` given -> i.i.d. noise from it; otherwise k-diffusion's
default, i.i.d. torch.randn_like (the global RNG) or, for the DPM++ SDE family (sample_dpmpp_sde,
sample_dpmpp_2m_sde, sample_dpmpp_3m_sde), a Brownian tree seeded from the global RNG (needs torchsde). The
churn of sample_euler / sample_heun / sample_dpm_2 draws one noise per step when s_churn > 0, as k-diffusion
(which draws it with torch.randn_like even when that step's gamma is 0), and none when s_churn = 0.

>>> import torch
>>> from fastdiff.schedule import karras_sigmas
>>> sigmas = torch.cat([karras_sigmas(0.1, 10.0, 8), torch.zeros(1, dtype=torch.float64)])
>>> denoiser = lambda x, sigma: torch.zeros_like(x)        # data = the point 0
>>> sample_dpmpp_2m(denoiser, 10.0 * torch.randn(2, 3), sigmas, disable=True).abs().max().item()
0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from .ddim import ddim_coeffs
from .ddpm import ddpm_coeffs
from .dpm2 import dpm2_correction_coeffs, dpm2_midpoint, dpm2_plan
from .dpmsolver import dpmpp_coeffs
from .euler import churn_gamma, euler_ancestral_coeffs, euler_coeffs
from .flow import flow_euler_coeffs
from .heun import heun_correction_coeffs
from .lms import lms_plan
from .loop import model_output, per_call, run_plan
from .noise import BrownianTreeNoiseSampler, default_noise_sampler
from .plan import PlannedStep, change_variables, ve_to_vp
from .sde import dpmpp_sde_plan
from .singlestep import dpmpp_2s_plan
from .unipc import unipc_plan

SAMPLE = "sample"  # a k-diffusion model is a denoiser: its output is x0


def _ladder(sigmas) -> tuple[list[float], torch.dtype]:
    """The sigmas as host floats (one device-to-host copy for a GPU tensor), checked, and their dtype."""
    dtype = sigmas.dtype if isinstance(sigmas, torch.Tensor) and sigmas.is_floating_point() else torch.float64
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().to("cpu", torch.float64).reshape(-1).tolist()
    sig = [float(s) for s in sigmas]
    if len(sig) < 2:
        raise ValueError(f"sigmas needs at least 2 values (a start and a final level); got {len(sig)}")
    if any(not math.isfinite(s) or s < 0 for s in sig) or any(b >= a for a, b in zip(sig, sig[1:])):
        raise ValueError(f"sigmas must be finite, >= 0 and strictly decreasing; got {sig}")
    return sig, dtype


class _Noise:
    """The noise of a k-style run: the user's noise sampler, or the default one, made on first use."""

    def __init__(self, x, sig, dtype, noise_sampler, generator, brownian: bool):
        self.x, self.sig, self.dtype = x, sig, dtype
        self.sampler, self.generator, self.brownian = noise_sampler, generator, brownian

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        if self.sampler is None:
            if self.generator is not None or not self.brownian:
                self.sampler = default_noise_sampler(self.x, self.generator)
            else:  # k-diffusion's default for the SDE solvers: sigmas[sigmas > 0].min(), sigmas.max()
                lo = torch.tensor(min(s for s in self.sig if s > 0), dtype=self.dtype)
                hi = torch.tensor(max(self.sig), dtype=self.dtype)
                self.sampler = BrownianTreeNoiseSampler(self.x, lo, hi)
        a, b = (torch.tensor(v, dtype=self.dtype) for v in (sigma, sigma_next))
        return self.sampler(a, b)


def _run(
    model: Callable,
    x: torch.Tensor,
    steps: list[PlannedStep],
    extra_args: dict | None,
    callback: Callable | None,
    disable: bool | None,
    *,
    clip=None,
    noise: _Noise | None = None,
    outer: list[int] | None = None,
) -> torch.Tensor:
    """Run planned steps with a denoiser called at each step's `model_time` (its sigma)."""
    extra_args = {} if extra_args is None else extra_args
    batch = x.shape[0]
    sig = torch.tensor([st.model_time for st in steps], dtype=torch.float64).to(x.device, x.dtype)
    step_sigmas = per_call(sig, batch)
    outer = list(range(len(steps))) if outer is None else outer

    def call(i: int, st: PlannedStep, x: torch.Tensor):
        where = lambda: f"at step {outer[i]} (sigma={st.model_time:g})"  # noqa: E731 - formatted only for an error
        return model_output(model(x, step_sigmas[i], **extra_args), x, where), None

    def step_noise(i: int, st: PlannedStep):
        return noise(*st.noise_at) if st.noise_at is not None and noise is not None else None

    def relay(info: dict) -> None:  # k-diffusion's callback payload, once per outer step
        i = info["i"]
        if i == 0 or outer[i] != outer[i - 1]:
            callback(
                {
                    "x": info["x"],
                    "i": outer[i],
                    "sigma": steps[i].sigma,
                    "sigma_hat": steps[i].model_time,
                    "denoised": info["denoised"],
                }
            )

    with torch.no_grad():
        x, _ = run_plan(
            call,
            steps,
            x,
            clip=clip,
            generator=noise.generator if noise is not None else None,
            noise=step_noise,
            callback=relay if callback is not None else None,
            progress=not disable if disable is not None else True,
            stats=False,
        )
    return x


# --------------------------------------------------------------------------------------------------
# Karras et al. (2022) algorithm 2: churn, then a step from sigma_hat


def _churn(sig: list[float], s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
    """(sigma_hat_i, churn noise scale c_i): x_hat_i = x_i + c_i z before the model call at sigma_hat_i."""
    n = len(sig) - 1
    hats, scales = [], []
    for s in sig[:-1]:
        gamma = churn_gamma(s, s_churn, n, s_tmin, s_tmax)
        hat = s * (1.0 + gamma)
        hats.append(hat)
        scales.append(math.sqrt(hat * hat - s * s) * s_noise if gamma > 0 else 0.0)
    return hats, scales


def _churned(sig, s_churn, s_tmin, s_tmax, s_noise, body) -> tuple[list[PlannedStep], list[int], float]:
    """Steps of algorithm 2 with `body(i, hat, base)` -> the steps of outer step i from sigma_hat (base: the index
    of its first step). The churn of step i + 1 joins the last step of step i (its noise drawn there, in
    k-diffusion's order); the first step's churn scale is returned for `_initial_churn`."""
    hats, scales = _churn(sig, s_churn, s_tmin, s_tmax, s_noise)
    steps, outer = [], []
    for i, hat in enumerate(hats):
        part = body(i, hat, len(steps))
        nxt = i + 1 < len(hats)
        last = part[-1]
        part[-1] = replace(
            last,
            coeffs=replace(last.coeffs, pn=last.coeffs.pn + scales[i + 1]) if nxt and scales[i + 1] else last.coeffs,
            noise_at=(sig[i + 1], sig[i + 2]) if nxt and s_churn > 0 else None,
        )
        steps += part
        outer += [i] * len(part)
    return steps, outer, scales[0]


def _initial_churn(x: torch.Tensor, sig: list[float], scale: float, s_churn: float, noise: _Noise) -> torch.Tensor:
    """The first step's churn: the one noise addition outside a fused step (later ones join the step before)."""
    if s_churn <= 0:
        return x
    z = noise(sig[0], sig[1])  # drawn even when this step's gamma is 0, as k-diffusion
    return x + scale * z.to(x.device, x.dtype) if scale else x


def _run_churned(model, x, sig, dtype, body, churn, draw, extra_args, callback, disable, clip):
    """The loop of an algorithm-2 sampler (Euler, Heun, DPM-2): its steps from `body` (`_churned`), the first
    churn outside a fused step, the rest inside; churn = (s_churn, s_tmin, s_tmax, s_noise), draw = (noise_sampler,
    generator)."""
    steps, outer, first = _churned(sig, *churn, body)
    noise = _Noise(x, sig, dtype, *draw, brownian=False)
    x = _initial_churn(x, sig, first, churn[0], noise)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise, outer=outer)


@torch.no_grad()
def sample_euler(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler=None, generator=None, clip=None,
):  # fmt: skip
    """Karras et al. (2022) algorithm 2 with Euler steps (k-diffusion's sample_euler)."""
    sig, dtype = _ladder(sigmas)

    def body(i, hat, base):
        return [PlannedStep(euler_coeffs(hat, sig[i + 1], SAMPLE), hat, sigma=sig[i], sigma_next=sig[i + 1])]

    churn, draw = (s_churn, s_tmin, s_tmax, s_noise), (noise_sampler, generator)
    return _run_churned(model, x, sig, dtype, body, churn, draw, extra_args, callback, disable, clip)


@torch.no_grad()
def sample_heun(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler=None, generator=None, clip=None,
):  # fmt: skip
    """Karras et al. (2022) algorithm 2 with Heun steps (an Euler step into sigma = 0; k-diffusion's sample_heun)."""
    sig, dtype = _ladder(sigmas)

    def body(i, hat, base):
        first = PlannedStep(euler_coeffs(hat, sig[i + 1], SAMPLE), hat, sigma=sig[i], sigma_next=sig[i + 1])
        if sig[i + 1] == 0.0:
            return [first]
        second = PlannedStep(
            heun_correction_coeffs(hat, sig[i + 1], SAMPLE),
            sig[i + 1],
            history=(("x", base),),
            sigma=sig[i + 1],
            sigma_next=sig[i + 1],
        )
        return [first, second]

    churn, draw = (s_churn, s_tmin, s_tmax, s_noise), (noise_sampler, generator)
    return _run_churned(model, x, sig, dtype, body, churn, draw, extra_args, callback, disable, clip)


@torch.no_grad()
def sample_dpm_2(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler=None, generator=None, clip=None,
):  # fmt: skip
    """DPM-Solver-2 steps with algorithm 2's churn (k-diffusion's sample_dpm_2; `dpm2` module)."""
    sig, dtype = _ladder(sigmas)

    def body(i, hat, base):
        if sig[i + 1] == 0.0:
            return [PlannedStep(euler_coeffs(hat, 0.0, SAMPLE), hat, sigma=sig[i], sigma_next=0.0)]
        mid = dpm2_midpoint(hat, sig[i + 1])
        first = PlannedStep(euler_coeffs(hat, mid, SAMPLE), hat, sigma=sig[i], sigma_next=mid)
        second = PlannedStep(
            dpm2_correction_coeffs(hat, mid, sig[i + 1], SAMPLE),
            mid,
            history=(("x", base),),
            sigma=mid,
            sigma_next=sig[i + 1],
        )
        return [first, second]

    churn, draw = (s_churn, s_tmin, s_tmax, s_noise), (noise_sampler, generator)
    return _run_churned(model, x, sig, dtype, body, churn, draw, extra_args, callback, disable, clip)


# --------------------------------------------------------------------------------------------------
# ancestral and SDE samplers


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    eta=1.0, s_noise=1.0, noise_sampler=None, generator=None, clip=None,
):  # fmt: skip
    """Ancestral sampling with Euler steps (k-diffusion's sample_euler_ancestral)."""
    sig, dtype = _ladder(sigmas)
    steps = [
        PlannedStep(
            euler_ancestral_coeffs(sig[i], sig[i + 1], SAMPLE, eta, s_noise),
            sig[i],
            sigma=sig[i],
            sigma_next=sig[i + 1],
            noise_at=(sig[i], sig[i + 1]) if sig[i + 1] > 0 else None,
        )
        for i in range(len(sig) - 1)
    ]
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=False)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise)


@torch.no_grad()
def sample_dpm_2_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    eta=1.0, s_noise=1.0, noise_sampler=None, generator=None, clip=None,
):  # fmt: skip
    """Ancestral sampling with DPM-Solver-2 steps (k-diffusion's sample_dpm_2_ancestral; `dpm2` module)."""
    sig, dtype = _ladder(sigmas)
    steps, outer = dpm2_plan(sig, SAMPLE, ancestral=True, eta=eta, s_noise=s_noise)
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=False)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise, outer=outer)


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    eta=1.0, s_noise=1.0, noise_sampler=None, generator=None, clip=None,
):  # fmt: skip
    """Ancestral sampling with DPM-Solver++(2S) steps (k-diffusion's sample_dpmpp_2s_ancestral; `singlestep`)."""
    sig, dtype = _ladder(sigmas)
    steps, outer = dpmpp_2s_plan(sig, SAMPLE, eta=eta, s_noise=s_noise)
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=False)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise, outer=outer)


@torch.no_grad()
def sample_dpmpp_sde(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    eta=1.0, s_noise=1.0, noise_sampler=None, r=1 / 2, generator=None, clip=None,
):  # fmt: skip
    """DPM-Solver++ (stochastic), two model calls per step (k-diffusion's sample_dpmpp_sde; `sde` module)."""
    sig, dtype = _ladder(sigmas)
    steps, outer = dpmpp_sde_plan(sig, SAMPLE, r=r, eta=eta, s_noise=s_noise)
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=True)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise, outer=outer)


# --------------------------------------------------------------------------------------------------
# multistep samplers


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep of the given order (k-diffusion's sample_lms; `lms` module). Its history is the
    derivatives, not x0, so it takes no clipping."""
    sig, _ = _ladder(sigmas)
    steps = lms_plan(sig, sig[:-1], order, SAMPLE)
    return _run(model, x, steps, extra_args, callback, disable)


def _dpmpp_steps(sig: list[float], orders: list[int], eta: float, s_noise: float, solver_type: str):
    steps = []
    for i, order in enumerate(orders):
        previous = tuple((1.0, sig[i - k]) for k in range(1, order))
        steps.append(
            PlannedStep(
                dpmpp_coeffs(
                    SAMPLE, 1.0, sig[i], 1.0, sig[i + 1], previous, eta=eta, solver_type=solver_type, s_noise=s_noise
                ),
                sig[i],
                history=tuple(("x0", i - k) for k in range(1, order)),
                sigma=sig[i],
                sigma_next=sig[i + 1],
                noise_at=(sig[i], sig[i + 1]) if eta and sig[i + 1] > 0 else None,
            )
        )
    return steps


def _orders(sig: list[float], max_order: int) -> list[int]:
    """k-diffusion's warm-up: order min(i + 1, max_order), first order into sigma = 0."""
    return [1 if sig[i + 1] == 0.0 else min(i + 1, max_order) for i in range(len(sig) - 1)]


@torch.no_grad()
def sample_dpmpp(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    order=2, eta=0.0, s_noise=1.0, noise_sampler=None, solver_type="midpoint", generator=None, clip=None,
):  # fmt: skip
    """DPM-Solver++ multistep of the given order (1..3); eta > 0 makes it the SDE variant."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3; got {order!r}")
    sig, dtype = _ladder(sigmas)
    steps = _dpmpp_steps(sig, _orders(sig, order), eta, s_noise, solver_type)
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=True)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise)


def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, generator=None, clip=None):
    """DPM-Solver++(2M) (k-diffusion's sample_dpmpp_2m)."""
    return sample_dpmpp(model, x, sigmas, extra_args, callback, disable, order=2, generator=generator, clip=clip)


def sample_dpmpp_3m(model, x, sigmas, extra_args=None, callback=None, disable=None, generator=None, clip=None):
    """DPM-Solver++(3M), deterministic (k-diffusion's sample_dpmpp_3m_sde with eta = 0)."""
    return sample_dpmpp(
        model, x, sigmas, extra_args, callback, disable, order=3, solver_type="heun", generator=generator, clip=clip
    )


def sample_dpmpp_2m_sde(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    eta=1.0, s_noise=1.0, noise_sampler=None, solver_type="midpoint", generator=None, clip=None,
):  # fmt: skip
    """SDE-DPM-Solver++(2M) (k-diffusion's sample_dpmpp_2m_sde)."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint'; got {solver_type!r}")
    return sample_dpmpp(
        model, x, sigmas, extra_args, callback, disable, order=2, eta=eta, s_noise=s_noise,
        noise_sampler=noise_sampler, solver_type=solver_type, generator=generator, clip=clip,
    )  # fmt: skip


def sample_dpmpp_3m_sde(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    eta=1.0, s_noise=1.0, noise_sampler=None, generator=None, clip=None,
):  # fmt: skip
    """SDE-DPM-Solver++(3M) (k-diffusion's sample_dpmpp_3m_sde; its 2nd-order warm-up is the "heun" form)."""
    return sample_dpmpp(
        model, x, sigmas, extra_args, callback, disable, order=3, eta=eta, s_noise=s_noise,
        noise_sampler=noise_sampler, solver_type="heun", generator=generator, clip=clip,
    )  # fmt: skip


@torch.no_grad()
def sample_unipc(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    order=2, solver_type="bh2", lower_order_final=True, disable_corrector=(), clip=None,
):  # fmt: skip
    """UniPC (UniP predictor + UniC corrector, data prediction) on the VE ladder: one fused step per model call
    (`unipc.unipc_plan`; the VE form is UniPC with alpha = 1). Not in k-diffusion; same maths as the native
    `unipc` sampler and diffusers' UniPCMultistepScheduler."""
    sig, _ = _ladder(sigmas)
    steps = unipc_plan(
        sig,
        sig[:-1],
        lambda s: (1.0, s),
        SAMPLE,
        solver_order=order,
        solver_type=solver_type,
        lower_order_final=lower_order_final,
        disable_corrector=disable_corrector,
    )
    return _run(model, x, steps, extra_args, callback, disable, clip=clip)


# --------------------------------------------------------------------------------------------------
# VP and flow samplers on k-style ladders


def _vp_in_ve(coeffs_fn, sig: list[float]) -> list[PlannedStep]:
    """Steps of a VP sampler (DDPM/DDIM maths on abar = 1 / (1 + sigma^2)) run on VE samples."""
    steps = []
    for i in range(len(sig) - 1):
        a_t, _ = ve_to_vp(sig[i])
        a_next, _ = ve_to_vp(sig[i + 1])
        c = change_variables(coeffs_fn(a_t * a_t, a_next * a_next, sig[i + 1]), a_t, 1.0 / a_next)
        noise_at = (sig[i], sig[i + 1]) if c.uses_noise else None
        steps.append(PlannedStep(c, sig[i], sigma=sig[i], sigma_next=sig[i + 1], noise_at=noise_at))
    return steps


@torch.no_grad()
def sample_ddim(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, noise_sampler=None, generator=None,
    clip=None,
):  # fmt: skip
    """DDIM (eta = 0 deterministic) on the VE ladder: `ddim_coeffs` at abar = 1 / (1 + sigma^2)."""
    sig, dtype = _ladder(sigmas)
    steps = _vp_in_ve(lambda a, a_next, _s: ddim_coeffs(a, a_next, eta, SAMPLE), sig)
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=False)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise)


@torch.no_grad()
def sample_ddpm(
    model, x, sigmas, extra_args=None, callback=None, disable=None, variance_type="fixed_small", noise_sampler=None,
    generator=None, clip=None,
):  # fmt: skip
    """DDPM ancestral sampling on the VE ladder: `ddpm_coeffs` at abar = 1 / (1 + sigma^2), no noise into sigma = 0."""
    sig, dtype = _ladder(sigmas)
    steps = _vp_in_ve(
        lambda a, a_next, s_next: ddpm_coeffs(a, a_next, SAMPLE, variance_type, add_noise=s_next > 0), sig
    )
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=False)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise)


@torch.no_grad()
def sample_flow_euler(
    model, x, sigmas, extra_args=None, callback=None, disable=None, stochastic=False, noise_sampler=None,
    generator=None, clip=None,
):  # fmt: skip
    """Flow-matching Euler on flow sigmas in [0, 1]; `model(x, sigma)` returns x0 for x = (1 - sigma) x0 + sigma eps.

    `stochastic=True` is diffusers' re-noising step (`flow.flow_euler_coeffs`), not an SDE discretisation."""
    sig, dtype = _ladder(sigmas)
    steps = [
        PlannedStep(
            flow_euler_coeffs(sig[i], sig[i + 1], SAMPLE, stochastic),
            sig[i],
            sigma=sig[i],
            sigma_next=sig[i + 1],
            noise_at=(sig[i], sig[i + 1]) if stochastic else None,
        )
        for i in range(len(sig) - 1)
    ]
    noise = _Noise(x, sig, dtype, noise_sampler, generator, brownian=False)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, noise=noise)


__all__ = [
    "sample_ddim",
    "sample_ddpm",
    "sample_dpm_2",
    "sample_dpm_2_ancestral",
    "sample_dpmpp",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2s_ancestral",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_sde",
    "sample_dpmpp_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_flow_euler",
    "sample_heun",
    "sample_lms",
    "sample_unipc",
]
