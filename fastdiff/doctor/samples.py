"""Generated vs real samples (report 002): moments, histogram distance, KS / W1, and "this is N(0, sigma^2)"."""

from __future__ import annotations

import math

import torch

from ..data import psnr
from .rules import SAMPLE_SHIFT_FAIL, SAMPLE_SHIFT_WARN, SAMPLE_STD_FAIL, SAMPLE_STD_WARN, Finding

NOISE_KS = 0.03  # KS distance to N(0, s^2) below this: indistinguishable from Gaussian noise at these sizes


def _values(x: torch.Tensor, limit: int = 200_000, seed: int = 0) -> torch.Tensor:
    v = x.detach().flatten().double().cpu()
    v = v[v.isfinite()]
    if v.numel() > limit:  # a fixed random subset keeps sorting cheap
        v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(seed))[:limit]]
    return v.sort().values


def moments(v: torch.Tensor) -> dict:
    m, s = float(v.mean()), float(v.std())
    z = (v - m) / (s if s > 0 else 1.0)
    return {
        "mean": m,
        "std": s,
        "skew": float(z.pow(3).mean()),
        "kurtosis": float(z.pow(4).mean() - 3),
        "min": float(v[0]),
        "max": float(v[-1]),
    }


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of sorted samples."""
    grid = torch.cat([a, b]).sort().values
    fa = torch.searchsorted(a, grid, right=True).double() / a.numel()
    fb = torch.searchsorted(b, grid, right=True).double() / b.numel()
    return float((fa - fb).abs().max())


def ks_to_normal(a: torch.Tensor, std: float) -> float:
    """KS distance of sorted sample a to N(0, std^2)."""
    n = a.numel()
    cdf = 0.5 * (1 + torch.erf(a / (std * math.sqrt(2))))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum((i / n - cdf).abs(), (cdf - (i - 1) / n).abs()).max())


def wasserstein1(a: torch.Tensor, b: torch.Tensor, points: int = 2048) -> float:
    """W1 between two 1-D samples: the mean |quantile difference|."""
    q = torch.linspace(0, 1, points, dtype=torch.float64)
    return float((torch.quantile(a, q) - torch.quantile(b, q)).abs().mean())


def histogram_distance(a: torch.Tensor, b: torch.Tensor, bins: int = 64) -> float:
    """Total variation between the value histograms on shared bins (0 = same, 1 = disjoint)."""
    lo, hi = float(min(a[0], b[0])), float(max(a[-1], b[-1]))
    if hi <= lo:
        return 0.0
    ha = torch.histc(a, bins, lo, hi) / a.numel()
    hb = torch.histc(b, bins, lo, hi) / b.numel()
    return float(0.5 * (ha - hb).abs().sum())


def compare_samples(generated: torch.Tensor, real: torch.Tensor, *, paired: bool = False) -> tuple[dict, Finding]:
    """Distribution of generated vs real values, plus per-sample MSE/PSNR when `paired` (same shapes)."""
    g, r = _values(generated), _values(real)
    if g.numel() < 2 or r.numel() < 2:
        raise ValueError("need at least two finite values in both generated and real samples")
    mg, mr = moments(g), moments(r)
    ev = {
        "generated": mg,
        "real": mr,
        "ks": ks_distance(g, r),
        "w1": wasserstein1(g, r),
        "histogram_tv": histogram_distance(g, r),
        "ks_generated_to_normal": ks_to_normal(g, mg["std"]),
        "ks_real_to_normal": ks_to_normal(r, mr["std"]),
        "nonfinite_generated": int(generated.numel() - g.numel()) if g.numel() < 200_000 else None,
    }
    if paired:
        if generated.shape != real.shape:
            raise ValueError(f"paired samples need equal shapes; got {tuple(generated.shape)} and {tuple(real.shape)}")
        mse = (generated.double() - real.double()).reshape(real.shape[0], -1).pow(2).mean(1)
        p = psnr(generated, real)
        ev.update(mse_mean=float(mse.mean()), psnr_mean=float(p.mean()), psnr_min=float(p.min()))
    shift = abs(mg["mean"] - mr["mean"]) / max(mr["std"], 1e-12)
    ratio = mg["std"] / max(mr["std"], 1e-12)
    ev.update(mean_shift_in_real_std=shift, std_ratio=ratio)
    # centred, and either indistinguishable from N(0, s^2) or at least twice closer to it than to the real data
    # (a trained eps model read as x0 gives noise with some skew: KS to the normal ~0.1, to the data ~0.45)
    noise_like = abs(mg["mean"]) < 0.1 * mg["std"] and (
        ev["ks_generated_to_normal"] < NOISE_KS or ev["ks_generated_to_normal"] < 0.5 * ev["ks"]
    )
    real_noise_like = ev["ks_real_to_normal"] < NOISE_KS and abs(mr["mean"]) < 0.1 * mr["std"]
    desc = (
        f"generated mean {mg['mean']:.3g} std {mg['std']:.3g} vs real {mr['mean']:.3g} / {mr['std']:.3g}; "
        f"KS {ev['ks']:.3f}, W1 {ev['w1']:.3g}"
    )
    if noise_like and not real_noise_like:
        f = Finding(
            "samples_like_noise",
            "fail",
            f"the samples are N(0, {mg['std']:.3g}^2) noise "
            f"(KS to that normal {ev['ks_generated_to_normal']:.3f}); {desc}",
            ev,
        )
    elif shift > SAMPLE_SHIFT_FAIL or not SAMPLE_STD_FAIL[0] <= ratio <= SAMPLE_STD_FAIL[1] or ev["ks"] > 0.5:
        f = Finding("samples_like_noise", "fail", f"generated distribution differs from the real one: {desc}", ev)
    elif shift > SAMPLE_SHIFT_WARN or not SAMPLE_STD_WARN[0] <= ratio <= SAMPLE_STD_WARN[1] or ev["ks"] > 0.2:
        f = Finding("samples_like_noise", "warn", f"generated distribution is off: {desc}", ev)
    else:
        f = Finding("samples_like_noise", "ok", desc, ev)
    return ev, f
