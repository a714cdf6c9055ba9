"""Small *real* training and sampling runs recorded by `fastdiff.Recorder`, for the doctor's run tests.

`train_run` trains a tiny `UNet1D` on 32-point spectra with `train_denoiser` and logs what a user's loop
would (API.md section 3): x0, t, noise, x_t, pred, target under their default names (so default roles),
the loss, `log_pair("pred~target", ...)` and `watch(model)`. A `hook(i, tensors, rec, model)` runs each
step before `rec.step()`, to break the run the way a report did. `sample_run` / `log_samples` /
`log_flow_alignment` append sampling and evaluation records to the same log, as a later process would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import fastdiff as fd
from fastdiff.data import spectra
from fastdiff.models import UNet1D
from fastdiff.samplers import ddim, sample
from fastdiff.schedule import Schedule
from fastdiff.train import TrainResult, train_denoiser

LENGTH = 32
SCHEDULE = Schedule.make("linear", 1000)
TRAIN_NAMES = ("x0", "t", "noise", "x_t", "pred", "target")


@dataclass
class Run:
    path: Path
    model: UNet1D
    data: torch.Tensor
    result: TrainResult
    prediction_type: str
    steps: int  # recorder steps used (the next record step)


def tiny_unet(seed: int) -> UNet1D:
    torch.manual_seed(seed)
    return UNet1D(channels=(8, 16), t_dim=32)


def train_run(
    path: Path,
    *,
    seed: int = 0,
    prediction_type: str = "epsilon",
    steps: int = 120,
    data: torch.Tensor | None = None,
    model: UNet1D | None = None,
    watch_every: int = 10,
    batch_size: int = 32,
    lr: float = 2e-3,
    hook: Callable | None = None,
) -> Run:
    """Train a tiny denoiser with a Recorder attached; the log is closed (flushed) on return."""
    data = spectra(256, LENGTH, seed=seed) if data is None else data
    model = tiny_unet(seed) if model is None else model
    with fd.Recorder(path, flush_every=50) as rec:
        rec.watch(model, every=watch_every)

        def on_step(i: int, tensors: dict) -> None:
            for name in TRAIN_NAMES:
                rec.log(name, tensors[name])
            rec.log_scalar("loss", tensors["loss"])
            rec.log_pair("pred~target", tensors["pred"], tensors["target"])
            if hook is not None:
                hook(i, tensors, rec, model)
            rec.step()

        result = train_denoiser(
            model,
            data,
            SCHEDULE,
            prediction_type=prediction_type,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            on_step=on_step,
        )
        end = rec.current_step
    return Run(Path(path), model, data, result, prediction_type, end)


def sample_run(
    run: Run,
    *,
    clip=1.0,
    num_steps: int = 20,
    n: int = 64,
    seed: int = 0,
    prediction_type: str | None = None,
    frac_names: bool = False,
) -> torch.Tensor:
    """DDIM-sample the run's model, appending per-step records to its log; returns the samples.

    Each sampling step logs the (clipped) x0 estimate as `pred_x0` and the count of clipped values as
    `sample/clipped` (the callback's view), or with `frac_names` the `clipped_frac` of
    `SampleResult.step_stats()` (the loop's own summary). The samples and the training data are logged
    as `samples` / `real` (roles sample / real) at the end.
    """
    sampler = ddim(SCHEDULE, num_steps, prediction_type=prediction_type or run.prediction_type)
    x_T = torch.randn(n, 1, LENGTH, generator=torch.Generator().manual_seed(seed))
    with fd.Recorder(run.path, append=True, start_step=run.steps) as rec:

        def callback(d: dict) -> None:
            if not frac_names:
                rec.log("pred_x0", d["denoised"])
                rec.log_scalar("sample/clipped", d["result"].clipped)
            rec.step()

        with torch.no_grad():
            r = sample(run.model, sampler, x_T, clip=clip, callback=callback, progress=False)
        if frac_names:
            for row in r.step_stats():
                rec.log_scalar("sample/clipped_frac", row["clipped_frac"])
                rec.step()
        rec.log("samples", r.sample)
        rec.log("real", run.data)
        run.steps = rec.current_step + 1
    return r.sample


@torch.no_grad()
def log_flow_alignment(
    run: Run, *, ts=(0.10, 0.37, 0.63, 0.90), n: int = 64, seed: int = 0, reversed_convention: bool = False
) -> None:
    """Report 003's single-step test of a flow model, logged as pairs `v_pred~v_tgt@t=...`.

    The model was trained (train_denoiser, prediction_type "flow") on x_s = (1 - s) x0 + s eps with
    v = eps - x0 and time s * 1000. `reversed_convention` evaluates it with the other common
    convention (rectified flow with t = 0 at the noise: x_t = t x0 + (1 - t) eps, v = x0 - eps), the
    time-direction mix-up that report 003 chased.
    """
    g = torch.Generator().manual_seed(seed)
    x0 = run.data[torch.randint(0, run.data.shape[0], (n,), generator=g)]
    eps = torch.randn(x0.shape, generator=g)
    with fd.Recorder(run.path, append=True, start_step=run.steps) as rec:
        for t in ts:
            if reversed_convention:
                x_t, v_tgt = t * x0 + (1 - t) * eps, x0 - eps
            else:
                x_t, v_tgt = (1 - t) * x0 + t * eps, eps - x0
            v_pred = run.model(x_t, torch.full((n,), t * 1000.0))
            rec.log_pair(f"v_pred~v_tgt@t={t:.2f}", v_pred, v_tgt)
        rec.step()
        run.steps = rec.current_step


def statuses(report) -> dict[str, str]:
    return {f.id: f.status for f in report.findings}


def finding(report, finding_id: str):
    return next(f for f in report.findings if f.id == finding_id)
