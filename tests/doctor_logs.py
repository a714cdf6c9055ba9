"""Contract-shaped probe logs built "by hand" (API.md allows it) from real tensors, for the doctor's tests.

Each builder simulates the tensors of one kind of run at small sizes — a healthy DDPM training run,
the failures of the five reports — and writes what a Recorder would: stats via fastdiff.tensor_stats.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

import fastdiff as fd
from fastdiff.data import spectra
from fastdiff.schedule import Schedule


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class LogBuilder:
    def __init__(self):
        self.lines: list[str] = []

    def tensor(self, step: int, name: str, x: torch.Tensor, role: str | None = None):
        rec = {
            "step": step,
            "name": name,
            "kind": "tensor",
            "role": role,
            **fd.tensor_stats(x, backend="torch").to_dict(),
        }
        self.lines.append(json.dumps(_clean(rec), allow_nan=False))

    def pair(self, step: int, name: str, a: torch.Tensor, b: torch.Tensor, role: str | None = None):
        rec = {
            "step": step,
            "name": name,
            "kind": "pair",
            "role": role,
            **fd.pair_stats(a, b, backend="torch").to_dict(),
        }
        self.lines.append(json.dumps(_clean(rec), allow_nan=False))

    def scalar(self, step: int, name: str, value: float, role: str | None = None):
        v = None if not math.isfinite(value) else float(value)
        self.lines.append(json.dumps({"step": step, "name": name, "kind": "scalar", "role": role, "value": v}))

    def write(self, path: Path) -> Path:
        path.write_text("\n".join(self.lines) + "\n")
        return path


def training_run(
    seed: int = 0,
    steps: int = 60,
    *,
    batch: int = 32,
    dim: int = 64,
    pred_std=(0.57, 0.98),
    loss=(1.34, 0.05),
    data_scale: float = 1.0,
    noise_std: float = 1.0,
    renormalize_xt: bool = False,
    t_sampler=None,
    nan_at: int | None = None,
    frozen_from: int | None = None,
    params: int = 6,
    b: LogBuilder | None = None,
) -> LogBuilder:
    """Report 000's run: x0 ~ N(0,1), t ~ U{0..999}, noise, x_t, predicted x0 improving, loss falling."""
    g = torch.Generator().manual_seed(seed)
    s = Schedule.make("linear")
    b = b or LogBuilder()
    weights = [torch.randn(16, 16, generator=g) * 0.03 for _ in range(params)]
    for step in range(steps):
        x0 = torch.randn(batch, dim, generator=g) * data_scale
        t = torch.randint(0, 1000, (batch,), generator=g) if t_sampler is None else t_sampler(g, batch)
        noise = torch.randn(batch, dim, generator=g) * noise_std
        a = s.alpha[t].float()[:, None]
        sg = s.sigma[t].float()[:, None]
        x_t = a * x0 + sg * noise
        if renormalize_xt:  # report 002's suspect: per-sample min-max of x_t
            lo, hi = x_t.amin(1, keepdim=True), x_t.amax(1, keepdim=True)
            x_t = 2 * (x_t - lo) / (hi - lo) - 1
        frac = step / max(1, steps - 1)
        ps = pred_std[0] + (pred_std[1] - pred_std[0]) * frac
        pred_x0 = ps * (x0 / max(data_scale, 1e-12)) * 0.9 + ps * 0.44 * torch.randn(batch, dim, generator=g)
        b.tensor(step, "x_0", x0, "x0")
        b.tensor(step, "t", t.float(), "t")
        b.tensor(step, "noise", noise, "noise")
        b.tensor(step, "x_t", x_t, "x_t")
        b.tensor(step, "predicted_x0", pred_x0 * data_scale, "pred_x0")
        lv = loss[0] * (loss[1] / loss[0]) ** frac * (1 + 0.05 * float(torch.randn(1, generator=g)))
        if nan_at is not None and step >= nan_at:
            lv = math.nan
        b.scalar(step, "loss", lv, "loss")
        if step % 5 == 0:
            for i, w in enumerate(weights):
                if frozen_from is None or step < frozen_from:
                    w += 1e-3 * torch.randn(w.shape, generator=g)
                b.tensor(step, f"param/layer{i}.weight", w, "param")
    return b


def sampling_run(b: LogBuilder, *, clip_fraction: float, steps: int = 20, seed: int = 0, start: int = 1000):
    """Report 001: per-step share of clipped x0 values during DDIM sampling."""
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        f = min(1.0, max(0.0, clip_fraction * (1 + 0.2 * float(torch.randn(1, generator=g)))))
        b.scalar(start + i, "sample/clip_fraction", f)
    return b


def samples_vs_real(b: LogBuilder, *, noise_like: bool, seed: int = 0, step: int = 2000):
    """Report 002: generated spectra vs real ones; `noise_like` gives N(0, sigma^2) 'samples'."""
    g = torch.Generator().manual_seed(seed)
    real = spectra(64, 256, seed=seed)
    gen = torch.randn(64, 1, 256, generator=g) * 0.9 if noise_like else spectra(64, 256, seed=seed + 100)
    b.tensor(step, "real", real, "real")
    b.tensor(step, "samples", gen, "sample")
    return b


def flow_pairs(b: LogBuilder, *, cos: float, ratio: float, steps: int = 30, seed: int = 0):
    """Report 003: v_pred vs v_target with a given cosine and norm ratio, at four t per step."""
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for t in (0.10, 0.37, 0.63, 0.90):
            v_tgt = torch.randn(8, 256, generator=g)
            other = torch.randn(8, 256, generator=g)
            other = other - (other * v_tgt).sum(1, keepdim=True) / (v_tgt * v_tgt).sum(1, keepdim=True) * v_tgt
            other = other / other.norm(dim=1, keepdim=True) * v_tgt.norm(dim=1, keepdim=True)
            v_pred = ratio * (cos * v_tgt + math.sqrt(1 - cos * cos) * other)
            b.pair(step, f"v_pred~v_tgt@t={t:.2f}", v_pred, v_tgt)
    return b
