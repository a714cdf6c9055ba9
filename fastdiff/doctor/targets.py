"""Which target does a trained model predict? (report 002: trained on eps, sampled as x0 -> noise)

For a batch of data x0 and fresh noise eps, the forward process gives x_t = alpha x0 + sigma eps at a
few noise levels. Each prediction type defines what the model *should* output there (param.target);
the one the model's actual output is closest to is what it was trained on. Knowing that, we can say,
before anyone samples, how far off the x0 estimate of a sampler configured with another prediction
type would be: at high noise it is off by about the data's whole scale, which turns samples into noise.

>>> import torch
>>> from fastdiff.schedule import Schedule
>>> s = Schedule.make("linear")
>>> x0 = torch.randn(64, 16) * 0.5 + 0.3
>>> oracle_eps = lambda x_t, t: (x_t - s.alpha[t].float()[:, None] * x0) / s.sigma[t].float()[:, None]
>>> which_target(oracle_eps, x0, schedule=s).predicted
'epsilon'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .. import param
from ..samplers.loop import model_output
from ..schedule import Schedule
from .rules import Finding


@dataclass
class Level:
    """One noise level: relative error of the model output against each prediction type's target."""

    t: float
    alpha: float
    sigma: float
    rel_error: dict[str, float]

    @property
    def best(self) -> str:
        return min(self.rel_error, key=self.rel_error.get)


@dataclass
class TargetReport:
    levels: list[Level]
    candidates: tuple[str, ...]
    x0_error_if_read_as: dict[str, list[float]] = field(default_factory=dict)  # per level, relative to x0 scale

    @property
    def predicted(self) -> str:
        """The prediction type with the lowest error summed (in log) over the noise levels."""
        score = {p: sum(math.log(max(lv.rel_error[p], 1e-12)) for lv in self.levels) for p in self.candidates}
        return min(score, key=score.get)

    def agrees(self, prediction_type: str) -> bool:
        return param.canonical(prediction_type) == self.predicted

    def finding(self, sampler_prediction_type: str | None = None) -> Finding:
        best = self.predicted
        ev = {
            "predicted": best,
            "levels": [{"t": lv.t, "best": lv.best, "rel_error": lv.rel_error} for lv in self.levels],
            "x0_error_if_read_as": self.x0_error_if_read_as,
        }
        err = min(lv.rel_error[best] for lv in self.levels)
        if sampler_prediction_type is None:
            status = "ok" if err < 0.5 else "warn"
            return Finding("prediction_type", status, f"the model predicts {best!r} (relative error {err:.3g})", ev)
        want = param.canonical(sampler_prediction_type)
        if want == best:
            return Finding("prediction_type", "ok", f"the model predicts {best!r}, as the sampler assumes", ev)
        errors = self.x0_error_if_read_as.get(want, [math.nan] * len(self.levels))
        worst = max(errors)
        at = self.levels[errors.index(worst)].t if self.levels else math.nan
        return Finding(
            "prediction_type",
            "fail",
            f"the model predicts {best!r} but the sampler reads it as {want!r}: its x0 estimate is off by "
            f"up to {worst:.3g}x the data scale (at t={at:g}), so samples come out as noise (report 002: a loss "
            "that fell fine, samples that were N(0, sigma^2); sample with prediction_type="
            f"{best!r})",
            ev,
        )


def _rel_mse(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a.double() - b.double()).pow(2).mean()
    return float(d / b.double().pow(2).mean().clamp(min=1e-30))


@torch.no_grad()
def which_target(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    schedule: Schedule | None = None,
    timesteps: Sequence[int] | None = None,
    flow_times: Sequence[float] | None = None,
    model_time: Callable[[torch.Tensor], torch.Tensor] | None = None,
    candidates: Sequence[str] = ("epsilon", "sample", "v_prediction", "flow"),
    seed: int = 0,
) -> TargetReport:
    """Relative error of `model(x_t, t)` against every candidate target at several noise levels.

    VP models: give `schedule` (x_t = alpha_t x0 + sigma_t eps, t integer timesteps passed as a [B] long
    tensor). Flow models: give `flow_times` s in (0, 1) (x_s = (1 - s) x0 + s eps; the model receives s,
    or `model_time(s)` e.g. s * 1000). The model must not need anything else (wrap it in a lambda).
    """
    if (schedule is None) == (flow_times is None):
        raise ValueError("give exactly one of schedule= (variance-preserving) or flow_times= (flow matching)")
    candidates = tuple(param.canonical(c) for c in candidates)
    g = torch.Generator(device="cpu").manual_seed(seed)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float32).to(x0.device, x0.dtype)
    if schedule is not None:
        T = schedule.num_train_timesteps
        ts = (
            list(timesteps)
            if timesteps is not None
            else sorted({int(round(f * (T - 1))) for f in (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98)})
        )
        points = [(float(t), *schedule.alpha_sigma(t)) for t in ts]
    else:
        points = [(float(s), 1.0 - float(s), float(s)) for s in flow_times]
        if any(not 0.0 < s < 1.0 for s, _, _ in points):
            raise ValueError(f"flow_times must lie in (0, 1); got {list(flow_times)}")
    report = TargetReport(levels=[], candidates=candidates)
    scale = float(x0.double().pow(2).mean().sqrt().clamp(min=1e-12))
    for t, a, s in points:
        x_t = a * x0 + s * eps
        t_in = torch.full((x0.shape[0],), t, device=x0.device)
        t_in = t_in.long() if schedule is not None else t_in
        # a tensor, diffusers' UNet2DOutput (`.sample`) or a tuple whose first item is the output
        out = model_output(model(x_t, model_time(t_in) if model_time is not None else t_in), x_t, f"at t={t:g}")
        errors = {p: _rel_mse(out, param.target(p, x0, eps, a, s)) for p in candidates}
        report.levels.append(Level(t=t, alpha=a, sigma=s, rel_error=errors))
        for p in candidates:  # what a sampler reading the output as p would take for x0
            m = param.to_x0_eps(p, a, s)
            x0_hat = m.cx * x_t + m.co * out
            err = float((x0_hat.double() - x0.double()).pow(2).mean().sqrt()) / scale
            report.x0_error_if_read_as.setdefault(p, []).append(err)
    return report
