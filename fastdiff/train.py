"""A small, reusable denoiser training loop (demos, the doctor's active checks, probes).

One step: draw x0 from the data, a noise level and eps; form x_t on the forward process of `schedule.py`;
regress the network on the target of its prediction type from `param.py` (the same maps the samplers
invert, so training and sampling cannot disagree about what the output means):

    VP  (prediction_type epsilon / sample / v_prediction):  t ~ U{0..T-1},  x_t = alpha_t x0 + sigma_t eps,
                                                           loss = |model(x_t, t) - target|^2
    flow (prediction_type flow):                           s ~ U(0, 1),     x_s = (1 - s) x0 + s eps,
                                                           loss = |model(x_s, s T) - (eps - x0)|^2

Losses stay on the device during training (no host sync per step); `TrainResult.losses` is read once at the end.

>>> import torch
>>> from fastdiff.models import UNet1D
>>> from fastdiff.schedule import Schedule
>>> net = UNet1D(channels=(8, 16))
>>> r = train_denoiser(net, torch.randn(64, 1, 32), Schedule.make("linear"), prediction_type="epsilon", steps=3)
>>> len(r.losses)
3
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import param
from .schedule import Schedule


@dataclass
class TrainResult:
    """Per-step losses (host floats, read once at the end), wall time and the setup that produced them."""

    losses: list[float]
    seconds: float
    prediction_type: str
    steps: int

    def smoothed(self, window: int = 50) -> list[float]:
        """Running mean of the loss over `window` steps (what a loss curve shows)."""
        out, acc = [], 0.0
        for i, v in enumerate(self.losses):
            acc += v
            if i >= window:
                acc -= self.losses[i - window]
            out.append(acc / min(i + 1, window))
        return out


def train_denoiser(
    model: torch.nn.Module,
    data: torch.Tensor,
    schedule: Schedule | None = None,
    *,
    prediction_type: str = "epsilon",
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    num_train_timesteps: int = 1000,
    seed: int = 0,
    max_seconds: float | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train `model(x_t, t)` to predict `prediction_type` on `data` ([N, ...] samples, e.g. spectra [N, 1, L]).

    `schedule` is the VP schedule (ignored for prediction_type "flow", whose model time is s *
    num_train_timesteps). AdamW with a cosine learning-rate decay; `max_seconds` stops early (the
    result then has fewer steps). `on_step(i, tensors)` sees the step's x0, t, noise, x_t, pred, target and
    loss (device tensors: a probe Recorder can log them without a sync).
    """
    p = param.canonical(prediction_type)
    if p != "flow" and not isinstance(schedule, Schedule):
        raise ValueError(
            f"prediction_type={prediction_type!r} trains on a VP schedule; pass schedule=Schedule.make(...)"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 1:
        raise ValueError("data must be a tensor of samples [N, ...] with N >= 1")
    device = next(model.parameters()).device
    data = data.to(device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched_lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    if p != "flow":
        alpha_all, sigma_all = schedule.alpha.to(torch.float32), schedule.sigma.to(torch.float32)
    losses = torch.zeros(steps, dtype=torch.float32, device=device)
    shape = (-1,) + (1,) * (data.dim() - 1)
    model.train()
    start = time.perf_counter()
    done = steps
    for i in range(steps):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
        x0 = data[idx.to(device)]
        noise = torch.randn(x0.shape, generator=g).to(device)
        if p == "flow":
            s = torch.rand(batch_size, generator=g)
            a, sg = (1.0 - s).reshape(shape).to(device), s.reshape(shape).to(device)
            t = (s * num_train_timesteps).to(device)
        else:
            t_int = torch.randint(0, schedule.num_train_timesteps, (batch_size,), generator=g)
            a, sg = alpha_all[t_int].reshape(shape).to(device), sigma_all[t_int].reshape(shape).to(device)
            t = t_int.to(device)
        x_t = a * x0 + sg * noise  # the forward process (schedule.py / flow path)
        target = param.target(p, x0, noise, a, sg)
        pred = model(x_t, t)
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched_lr.step()
        losses[i] = loss.detach()
        if on_step is not None:
            on_step(i, {"x0": x0, "t": t, "noise": noise, "x_t": x_t, "pred": pred, "target": target, "loss": loss})
        if max_seconds is not None and (i + 1) % 10 == 0 and time.perf_counter() - start > max_seconds:
            done = i + 1
            break
    model.eval()
    return TrainResult(losses[:done].cpu().tolist(), time.perf_counter() - start, p, done)
