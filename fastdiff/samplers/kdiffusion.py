"""k-diffusion-style functional samplers: `sample_x(model, x, sigmas, extra_args=None, callback=None, disable=None)`.

As in k-diffusion (Crowson), `model(x, sigma, **extra_args)` is a *denoiser*: it returns x0 for the
sample x = x0 + sigma eps (VE form; `sample_flow_euler`: the flow form x = (1 - sigma) x0 + sigma eps,
sigma in [0, 1]), with sigma a tensor of shape [batch]. `x` is the starting sample (already scaled:
x = sigmas[0] * noise), and `sigmas` the decreasing ladder with its final value (usually 0).

Every function builds its steps from the same coefficient functions as the native samplers (the model
output read as prediction type "sample") and runs each step as one `fused_step`. Noise comes from
`generator` (k-diffusion's default Brownian-tree noise sampler is not reproduced: the noise is i.i.d.
Gaussian, the same in distribution). `sigmas` on a GPU are read to the host once, up front.

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
from .dpmsolver import dpmpp_coeffs
from .euler import churn_gamma, euler_ancestral_coeffs, euler_coeffs
from .flow import flow_euler_coeffs
from .heun import heun_correction_coeffs
from .loop import model_output, run_plan
from .plan import PlannedStep, change_variables, ve_to_vp

SAMPLE = "sample"  # a k-diffusion model is a denoiser: its output is x0


def _ladder(sigmas) -> list[float]:
    """The sigmas as host floats (one device-to-host copy for a GPU tensor), checked."""
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().to("cpu", torch.float64).reshape(-1).tolist()
    sig = [float(s) for s in sigmas]
    if len(sig) < 2:
        raise ValueError(f"sigmas needs at least 2 values (a start and a final level); got {len(sig)}")
    if any(not math.isfinite(s) or s < 0 for s in sig) or any(b >= a for a, b in zip(sig, sig[1:])):
        raise ValueError(f"sigmas must be finite, >= 0 and strictly decreasing; got {sig}")
    return sig


def _run(
    model: Callable,
    x: torch.Tensor,
    steps: list[PlannedStep],
    extra_args: dict | None,
    callback: Callable | None,
    disable: bool | None,
    *,
    clip=None,
    generator: torch.Generator | None = None,
    outer: list[int] | None = None,
) -> torch.Tensor:
    """Run planned steps with a denoiser called at each step's `model_time` (its sigma)."""
    extra_args = {} if extra_args is None else extra_args
    batch = x.shape[0]
    sig = torch.tensor([st.model_time for st in steps], dtype=torch.float64).to(x.device, x.dtype)
    outer = list(range(len(steps))) if outer is None else outer

    def call(i: int, st: PlannedStep, x: torch.Tensor):
        where = f"at step {outer[i]} (sigma={st.model_time:g})"
        return model_output(model(x, sig[i].expand(batch), **extra_args), x, where), None

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
            generator=generator,
            callback=relay if callback is not None else None,
            progress=not disable if disable is not None else True,
            stats=False,
        )
    return x


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


def _initial_churn(x: torch.Tensor, scale: float, generator) -> torch.Tensor:
    """The first step's churn: the one noise addition outside a fused step (later ones join the step before)."""
    if scale == 0.0:
        return x
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return x + scale * noise.to(x.device)


def _with_churn(c, scale: float):
    return replace(c, pn=c.pn + scale) if scale else c


@torch.no_grad()
def sample_euler(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, generator=None, clip=None,
):  # fmt: skip
    """Karras et al. (2022) algorithm 2 with Euler steps; the churn of step i+1 is fused into step i."""
    sig = _ladder(sigmas)
    hats, scales = _churn(sig, s_churn, s_tmin, s_tmax, s_noise)
    steps = [
        PlannedStep(
            coeffs=_with_churn(euler_coeffs(hats[i], sig[i + 1], SAMPLE), scales[i + 1] if i + 1 < len(hats) else 0.0),
            model_time=hats[i],
            sigma=sig[i],
            sigma_next=sig[i + 1],
        )
        for i in range(len(hats))
    ]
    x = _initial_churn(x, scales[0], generator)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, generator=generator)


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, generator=None, clip=None
):
    """Ancestral sampling with Euler steps (k-diffusion's sample_euler_ancestral)."""
    sig = _ladder(sigmas)
    steps = [
        PlannedStep(
            coeffs=euler_ancestral_coeffs(sig[i], sig[i + 1], SAMPLE, eta, s_noise),
            model_time=sig[i],
            sigma=sig[i],
            sigma_next=sig[i + 1],
        )
        for i in range(len(sig) - 1)
    ]
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, generator=generator)


@torch.no_grad()
def sample_heun(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, generator=None, clip=None,
):  # fmt: skip
    """Karras et al. (2022) algorithm 2 with Heun steps (an Euler step into sigma = 0)."""
    sig = _ladder(sigmas)
    hats, scales = _churn(sig, s_churn, s_tmin, s_tmax, s_noise)
    steps, outer = [], []
    for i, hat in enumerate(hats):
        nxt = scales[i + 1] if i + 1 < len(hats) else 0.0
        second = sig[i + 1] > 0.0
        first = euler_coeffs(hat, sig[i + 1], SAMPLE)
        steps.append(
            PlannedStep(
                coeffs=first if second else _with_churn(first, nxt),
                model_time=hat,
                save_input=second,
                sigma=sig[i],
                sigma_next=sig[i + 1],
            )
        )
        outer.append(i)
        if second:
            steps.append(
                PlannedStep(
                    coeffs=_with_churn(heun_correction_coeffs(hat, sig[i + 1], SAMPLE), nxt),
                    model_time=sig[i + 1],
                    history=("x_saved",),
                    sigma=sig[i + 1],
                    sigma_next=sig[i + 1],
                )
            )
            outer.append(i)
    x = _initial_churn(x, scales[0], generator)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, generator=generator, outer=outer)


def _dpmpp_steps(sig: list[float], orders: list[int], eta: float, s_noise: float, solver_type: str):
    steps = []
    for i, order in enumerate(orders):
        previous = tuple((1.0, sig[i - k]) for k in range(1, order))
        steps.append(
            PlannedStep(
                coeffs=dpmpp_coeffs(
                    SAMPLE, 1.0, sig[i], 1.0, sig[i + 1], previous, eta=eta, solver_type=solver_type, s_noise=s_noise
                ),
                model_time=sig[i],
                history=("x0_1", "x0_2")[: order - 1],
                keep_x0=max(orders[i + 1 :], default=1) > 1,
                sigma=sig[i],
                sigma_next=sig[i + 1],
            )
        )
    return steps


def _orders(sig: list[float], max_order: int) -> list[int]:
    """k-diffusion's warm-up: order min(i + 1, max_order), first order into sigma = 0."""
    return [1 if sig[i + 1] == 0.0 else min(i + 1, max_order) for i in range(len(sig) - 1)]


@torch.no_grad()
def sample_dpmpp(
    model, x, sigmas, extra_args=None, callback=None, disable=None,
    order=2, eta=0.0, s_noise=1.0, solver_type="midpoint", generator=None, clip=None,
):  # fmt: skip
    """DPM-Solver++ multistep of the given order (1..3); eta > 0 makes it the SDE variant."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3; got {order!r}")
    sig = _ladder(sigmas)
    steps = _dpmpp_steps(sig, _orders(sig, order), eta, s_noise, solver_type)
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, generator=generator)


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
    eta=1.0, s_noise=1.0, solver_type="midpoint", generator=None, clip=None,
):  # fmt: skip
    """SDE-DPM-Solver++(2M) (k-diffusion's sample_dpmpp_2m_sde)."""
    return sample_dpmpp(
        model, x, sigmas, extra_args, callback, disable,
        order=2, eta=eta, s_noise=s_noise, solver_type=solver_type, generator=generator, clip=clip,
    )  # fmt: skip


def sample_dpmpp_3m_sde(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, generator=None, clip=None
):
    """SDE-DPM-Solver++(3M) (k-diffusion's sample_dpmpp_3m_sde; its 2nd-order warm-up is the "heun" form)."""
    return sample_dpmpp(
        model, x, sigmas, extra_args, callback, disable,
        order=3, eta=eta, s_noise=s_noise, solver_type="heun", generator=generator, clip=clip,
    )  # fmt: skip


def _vp_in_ve(coeffs_fn, sig: list[float]) -> list[PlannedStep]:
    """Steps of a VP sampler (DDPM/DDIM maths on abar = 1 / (1 + sigma^2)) run on VE samples."""
    steps = []
    for i in range(len(sig) - 1):
        a_t, _ = ve_to_vp(sig[i])
        a_next, _ = ve_to_vp(sig[i + 1])
        c = coeffs_fn(a_t * a_t, a_next * a_next, sig[i + 1])
        steps.append(
            PlannedStep(
                coeffs=change_variables(c, a_t, 1.0 / a_next), model_time=sig[i], sigma=sig[i], sigma_next=sig[i + 1]
            )
        )
    return steps


@torch.no_grad()
def sample_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, generator=None, clip=None):
    """DDIM (eta = 0 deterministic) on the VE ladder: `ddim_coeffs` at abar = 1 / (1 + sigma^2)."""
    steps = _vp_in_ve(lambda a, a_next, _s: ddim_coeffs(a, a_next, eta, SAMPLE), _ladder(sigmas))
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, generator=generator)


@torch.no_grad()
def sample_ddpm(
    model, x, sigmas, extra_args=None, callback=None, disable=None, variance_type="fixed_small", generator=None,
    clip=None,
):  # fmt: skip
    """DDPM ancestral sampling on the VE ladder: `ddpm_coeffs` at abar = 1 / (1 + sigma^2), no noise into sigma = 0."""
    steps = _vp_in_ve(
        lambda a, a_next, s_next: ddpm_coeffs(a, a_next, SAMPLE, variance_type, add_noise=s_next > 0),
        _ladder(sigmas),
    )
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, generator=generator)


@torch.no_grad()
def sample_flow_euler(
    model, x, sigmas, extra_args=None, callback=None, disable=None, stochastic=False, generator=None, clip=None
):
    """Flow-matching Euler on flow sigmas in [0, 1]; `model(x, sigma)` returns x0 for x = (1 - sigma) x0 + sigma eps."""
    sig = _ladder(sigmas)
    steps = [
        PlannedStep(
            coeffs=flow_euler_coeffs(sig[i], sig[i + 1], SAMPLE, stochastic),
            model_time=sig[i],
            sigma=sig[i],
            sigma_next=sig[i + 1],
        )
        for i in range(len(sig) - 1)
    ]
    return _run(model, x, steps, extra_args, callback, disable, clip=clip, generator=generator)


__all__ = [
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_flow_euler",
    "sample_heun",
]
