"""Noise samplers of the k-diffusion-style functions: `noise_sampler(sigma, sigma_next) -> z` of x's shape.

As in k-diffusion (Crowson), a stochastic sampler asks for the noise of each step with the noise levels it
steps between, so that a sampler built on a Brownian motion (`BrownianTreeNoiseSampler`) gives every step
the normalised increment of one fixed path: steps of any size, and the two stages of DPM++ SDE, then see
noise that is consistent across step sizes (the same seed gives nearby samples for 10 or 100 steps).

    default_noise_sampler(x)                 i.i.d. N(0, I) from the global RNG (torch.randn_like), as k-diffusion
    default_noise_sampler(x, generator)      i.i.d. N(0, I) from a torch.Generator
    BrownianTreeNoiseSampler(x, lo, hi)      (W(t1) - W(t0)) / sqrt|t1 - t0| of a Brownian motion W on [lo, hi],
                                             t = transform(sigma); needs torchsde

Any callable with this signature works (e.g. k-diffusion's own samplers, to reproduce its samples exactly).

>>> import torch
>>> ns = default_noise_sampler(torch.zeros(2, 3), torch.Generator().manual_seed(0))
>>> ns(1.0, 0.5).shape
torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_noise_sampler(x: torch.Tensor, generator: torch.Generator | None = None) -> NoiseSampler:
    """i.i.d. standard normal noise of x's shape, dtype and device, whatever the noise levels.

    Without a generator this is k-diffusion's `default_noise_sampler` (torch.randn_like(x), the global RNG);
    with one, z = torch.randn(x.shape, generator=generator) drawn on the generator's device, as `fused_step`.
    """
    if generator is None:
        return lambda sigma, sigma_next: torch.randn_like(x)
    device = generator.device

    def draw(sigma, sigma_next):
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)

    return draw


class BrownianTreeNoiseSampler:
    """Increments of one Brownian path W on [transform(sigma_min), transform(sigma_max)], normalised to N(0, I).

    `noise(sigma, sigma_next)` = (W(t1) - W(t0)) / sqrt(|t1 - t0|), t = transform(sigma); the path is a
    `torchsde.BrownianTree` (Li et al. 2020, "Scalable gradients for SDEs", the Brownian tree), so queries in
    any order are consistent with one path and cost O(log(1/tol)). `seed`: an int, or a list of ints (one
    independent path per batch item); None draws one from the global RNG (as k-diffusion, so that its
    default and this one agree under the same torch.manual_seed).

    Same semantics as k-diffusion's BrownianTreeNoiseSampler (and diffusers' in DPMSolverSDEScheduler).
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed=None, transform=lambda sigma: sigma):
        try:
            import torchsde
        except ImportError as exc:  # pragma: no cover - torchsde ships with the test extra
            raise ImportError(
                "BrownianTreeNoiseSampler needs torchsde (pip install torchsde, or fastdiff[sde]); "
                "for i.i.d. noise instead pass generator=... or noise_sampler=default_noise_sampler(x)"
            ) from exc
        self.transform = transform
        t_lo, t_hi = transform(torch.as_tensor(sigma_min)), transform(torch.as_tensor(sigma_max))
        self._sign = 1.0 if t_lo < t_hi else -1.0
        t_lo, t_hi = (t_lo, t_hi) if t_lo < t_hi else (t_hi, t_lo)
        if seed is None:
            seed = torch.randint(0, 2**63 - 1, []).item()
        self._batched = isinstance(seed, (list, tuple))
        if self._batched and len(seed) != x.shape[0]:
            raise ValueError(f"one seed per batch item: got {len(seed)} seeds for a batch of {x.shape[0]}")
        w0 = torch.zeros_like(x[0] if self._batched else x)
        seeds = list(seed) if self._batched else [seed]
        self._trees = [torchsde.BrownianTree(t_lo, w0, t_hi, entropy=s) for s in seeds]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = self.transform(torch.as_tensor(sigma)), self.transform(torch.as_tensor(sigma_next))
        sign = self._sign * (1.0 if t0 < t1 else -1.0)
        lo, hi = (t0, t1) if t0 < t1 else (t1, t0)
        w = torch.stack([tree(lo, hi) for tree in self._trees]) * sign
        w = w if self._batched else w[0]
        return w / (t1 - t0).abs().sqrt()
