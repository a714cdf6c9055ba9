"""Synthetic data that tests and demos make themselves (nothing is downloaded).

`spectra`: stellar-spectrum-like 1-D signals as in report 002 — a smooth continuum with absorption
lines, min-max normalised to [-1, 1]. Their value distribution is skewed towards the top (continuum
near +1, lines dipping down), which makes "the samples are just N(0, sigma^2)" easy to tell apart.

>>> x = spectra(4, length=128, seed=0)
>>> tuple(x.shape), bool(x.min() >= -1 and x.max() <= 1)
((4, 1, 128), True)
"""

from __future__ import annotations

import torch


def spectra(
    n: int,
    length: int = 256,
    *,
    seed: int = 0,
    lines: tuple[int, int] = (4, 12),
    noise: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """[n, 1, length] spectra: continuum (slope + curvature) times absorption lines, scaled to [-1, 1]."""
    if n < 0 or length < 2:
        raise ValueError(f"need n >= 0 and length >= 2; got n={n}, length={length}")
    g = torch.Generator().manual_seed(seed)
    w = torch.linspace(0.0, 1.0, length, dtype=torch.float64)  # "wavelength" in [0, 1]
    # continuum: a tilted, slightly curved blackbody-like envelope
    slope = torch.empty(n, 1, dtype=torch.float64).uniform_(-0.4, 0.2, generator=g)
    curve = torch.empty(n, 1, dtype=torch.float64).uniform_(-0.3, 0.3, generator=g)
    continuum = 1.0 + slope * (w - 0.5) + curve * (w - 0.5) ** 2
    # absorption lines: Gaussian dips with random centre, depth and width
    k = int(lines[1])
    present = torch.rand(n, k, generator=g) < (
        torch.randint(lines[0], lines[1] + 1, (n, 1), generator=g).to(torch.float64) / k
    )
    centre = torch.rand(n, k, 1, generator=g, dtype=torch.float64)
    depth = torch.empty(n, k, 1, dtype=torch.float64).uniform_(0.1, 0.8, generator=g)
    width = torch.empty(n, k, 1, dtype=torch.float64).uniform_(0.002, 0.02, generator=g)
    dips = depth * torch.exp(-0.5 * ((w - centre) / width) ** 2) * present[..., None]
    flux = continuum * torch.prod(1.0 - dips, dim=1)
    flux = flux + noise * torch.randn(n, length, generator=g, dtype=torch.float64)
    lo, hi = flux.amin(dim=1, keepdim=True), flux.amax(dim=1, keepdim=True)
    x = 2.0 * (flux - lo) / (hi - lo).clamp(min=1e-12) - 1.0
    return x.unsqueeze(1).to(dtype)


def gaussian_data(n: int, dim: int, *, mean: float = 0.5, std: float = 0.3, seed: int = 0) -> torch.Tensor:
    """i.i.d. N(mean, std^2) data [n, dim]: its exact denoiser is known in closed form (see `gaussian_denoiser`)."""
    g = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(n, dim, generator=g)


def gaussian_denoiser(x_t: torch.Tensor, alpha, sigma, *, mean: float, std: float) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(mean, std^2) and x_t = alpha x0 + sigma eps (elementwise posterior mean).

    x0 | x_t is Gaussian with mean  mean + alpha std^2 (x_t - alpha mean) / (alpha^2 std^2 + sigma^2).
    """
    var = std * std
    return mean + alpha * var * (x_t - alpha * mean) / (alpha * alpha * var + sigma * sigma)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-sample PSNR in dB (dim 0 is the sample), for data spanning `data_range` (2 for [-1, 1])."""
    mse = (a.double() - b.double()).reshape(a.shape[0], -1).pow(2).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp(min=1e-300))


__all__ = ["gaussian_data", "gaussian_denoiser", "psnr", "spectra"]
