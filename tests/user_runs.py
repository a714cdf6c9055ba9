"""Training and sampling scripts written the way users write them, for the doctor's user-run tests (issue 19).

Each run trains a small MLP denoiser on scikit-learn's 8x8 digits (shipped inside scikit-learn: nothing is
downloaded) with the user's own loop — a DDPM schedule by hand, `torch.randint` timesteps, AdamW — logs
what a user logs with a `fastdiff.Recorder`, and samples with the user's own DDIM / DDPM / flow Euler loop.
A `Bug` switches on one real mistake (unnormalised pixels, T mixed up with the number of sampling steps, an
eps model read as x0, ...), so the log the doctor reads is the log of a real broken run, not a hand-made one.

Two naming styles log the same tensors:

- "natural": the names a user picks after reading the README (`images`, `noisy`, `timesteps`,
  `model_output`, `target`, `samples`, `clipped`) and no `role=` argument;
- "documented": the documented names with their roles given explicitly (`x0`, `x_t`, `t`, `pred`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

import fastdiff as fd

T = 1000  # training timesteps of the DDPM schedule
DIM = 64  # 8 x 8 digits, flattened
STYLES = ("natural", "documented")

# (name, role) of each logged quantity in each style; natural names get no role argument
NAMES = {
    "natural": {
        "x0": "images",
        "noise": "noise",
        "t": "timesteps",
        "x_t": "noisy",
        "pred": "model_output",
        "target": "target",
        "loss": "loss",
        "pred_x0": "x0_pred",
        "clipped": "clipped",
        "sample": "samples",
        "real": None,  # a user does not log "the real data" a second time
        "latents": "latents",
        "pair": "model_output~target",
    },
    "documented": {
        "x0": "x0",
        "noise": "noise",
        "t": "t",
        "x_t": "x_t",
        "pred": "pred",
        "target": "target",
        "loss": "loss",
        "pred_x0": "pred_x0",
        "clipped": "clip_fraction",
        "sample": "sample",
        "real": "real",
        "latents": "latents",
        "pair": "pred~target",
    },
}
ROLE_OF = {"x0": "x0", "noise": "noise", "t": "t", "x_t": "x_t", "pred": "pred", "target": "target", "loss": "loss"}
ROLE_OF |= {"pred_x0": "pred_x0", "sample": "sample", "real": "real", "latents": "latents"}


def digits(raw: bool = False) -> torch.Tensor:
    """scikit-learn's 1797 8x8 digits [N, 64]: pixels 0..16, scaled to [-1, 1] unless `raw`."""
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().data).float()
    return x if raw else x / 8.0 - 1.0


def timestep_embedding(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
    angle = t.float()[:, None] * freqs[None]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


class Denoiser(nn.Module):
    """An MLP on flattened digits with a sinusoidal time embedding; `head` is its output layer."""

    def __init__(self, dim: int = DIM, hidden: int = 256, t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.body = nn.Sequential(nn.Linear(dim + t_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.head = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([x, timestep_embedding(t, self.t_dim)], dim=1)))


@dataclass
class Bug:
    """One real mistake, or none. Every field off is a healthy run."""

    raw_pixels: bool = False  # report 000: pixels 0..16 fed as they are
    t_max: int | None = None  # T confused with num_inference_steps: t ~ U{0..t_max-1}
    nan_at: int | None = None  # a NaN enters through the data batch at this training step
    head_not_in_optimizer: bool = False  # the optimizer was built before the head was replaced
    sample_as: str | None = None  # read the model output as this prediction type when sampling (report 002)
    velocity_scale: float = 1.0  # the flow sampler scales the velocity (report 003's 0.29x)
    no_clip: bool = False  # DDIM without x0 clipping (report 001 before its fix)
    freeze_at: int | None = None  # report 004: the weights stop updating at this step (lr -> 0) while training goes on
    latent_scale: float | None = None  # latent diffusion: train on "latents" = (digits - mean) * scale


@dataclass
class UserRun:
    path: Path
    style: str
    model: Denoiser
    data: torch.Tensor
    prediction_type: str
    alphas_cumprod: torch.Tensor
    steps: int  # training steps done
    losses: list[float] = field(default_factory=list)
    samples: torch.Tensor | None = None
    clip_counts: list[tuple[int, int]] = field(default_factory=list)  # (clipped, x0 values) per sampling step


def _names(style: str):
    names = NAMES[style]

    def log_args(key: str) -> tuple[str, dict]:
        return names[key], ({"role": ROLE_OF[key]} if style == "documented" and key in ROLE_OF else {})

    return log_args


def train(
    path: Path,
    style: str,
    *,
    bug: Bug | None = None,
    prediction_type: str = "epsilon",
    steps: int = 300,
    batch: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    watch: bool = True,
    watch_every: int = 10,
    log_pair: bool = True,
    flush_every: int = 100,
    sample_after: dict | None = None,
) -> UserRun:
    """The user's training script: DDPM (epsilon / sample targets) or flow matching (`prediction_type="flow"`)."""
    bug = bug or Bug()
    arg = _names(style)
    torch.manual_seed(seed)
    data = digits(raw=bug.raw_pixels)
    data_key = "x0"
    if bug.latent_scale is not None:  # a stand-in VAE: centred pixels times a scaling factor (or without it)
        data, data_key = (data - data.mean()) * bug.latent_scale, "latents"
    model = Denoiser()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    if bug.head_not_in_optimizer:  # "let me try a fresh output layer" after the optimizer exists
        model.head = nn.Linear(model.head.in_features, DIM)
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0).float()
    g = torch.Generator().manual_seed(seed)
    losses = []
    with fd.Recorder(path, flush_every=flush_every) as rec:
        if watch:
            rec.watch(model, every=watch_every)
        for step in range(steps):
            if bug.freeze_at is not None and step == bug.freeze_at:
                for group in opt.param_groups:  # a scheduler that decays the learning rate to exactly 0
                    group["lr"] = 0.0
            x0 = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
            if bug.nan_at is not None and step == bug.nan_at:
                x0 = x0.clone()
                x0[0, 0] = math.nan  # a corrupt sample in the batch
            noise = torch.randn(x0.shape, generator=g)
            if prediction_type == "flow":
                s = torch.rand(batch, generator=g)
                x_t = (1 - s[:, None]) * x0 + s[:, None] * noise
                t, target = s * T, noise - x0
            else:
                t = torch.randint(0, bug.t_max or T, (batch,), generator=g)
                a = alphas_cumprod[t].sqrt()[:, None]
                sg = (1 - alphas_cumprod[t]).sqrt()[:, None]
                x_t = a * x0 + sg * noise
                target = noise if prediction_type == "epsilon" else x0
            pred = model(x_t, t)
            loss = nn.functional.mse_loss(pred, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            for key, tensor in ((data_key, x0), ("noise", noise), ("t", t), ("x_t", x_t), ("pred", pred)):
                rec.log(*arg(key)[:1], tensor, **arg(key)[1])
            rec.log(*arg("target")[:1], target, **arg("target")[1])
            if log_pair:
                rec.log_pair(NAMES[style]["pair"], pred, target)
            rec.log_scalar(*arg("loss")[:1], loss.detach(), **arg("loss")[1])
            rec.step()
        run = UserRun(
            Path(path), style, model, data, prediction_type, alphas_cumprod, steps, [float(v) for v in losses]
        )
        if sample_after is not None:  # sampling in the same script, the same Recorder, its watch still on
            sample(run, rec=rec, **sample_after)
    return run


def fork(run: UserRun, path: Path) -> UserRun:
    """The same trained model with a copy of its training log at `path` (to sample it in several ways)."""
    path = Path(path)
    path.write_bytes(run.path.read_bytes())
    return replace(run, path=path, samples=None, clip_counts=[])


def flow_euler(velocity, x: torch.Tensor, num_steps: int, scale: float = 1.0) -> torch.Tensor:
    """The user's flow sampler: Euler from s = 1 (noise) to s = 0 (data), x <- x + (s' - s) * scale * v(x, s T).
    Also the `sampler` given to `teacher_euler` (velocity(x, t) -> the velocity at x)."""
    ts = torch.linspace(1.0, 0.0, num_steps + 1)
    for s, s_next in zip(ts[:-1], ts[1:]):
        v = velocity(x, torch.full((x.shape[0],), float(s) * T)) * scale
        x = x + float(s_next - s) * v
    return x


@torch.no_grad()
def sample(
    run: UserRun,
    *,
    bug: Bug | None = None,
    sampler: str = "ddim",
    num_steps: int = 50,
    n: int = 256,
    clip: float | None = 1.0,
    seed: int = 1,
    step_each: bool = True,
    log_real: bool = True,
    log_state_as_latents: bool = False,
    rec: fd.Recorder | None = None,
) -> torch.Tensor:
    """The user's sampling script, appending to the run's log: DDIM / DDPM (VP models) or Euler (flow).

    Each sampling step logs the (clipped) x0 estimate and the count (natural) or share (documented) of
    clipped values; `step_each=False` is the user who never calls `rec.step()` while sampling (every
    record lands on one step). The samples are logged at the end, and in the documented style the real
    data too (role real). `rec`: log with this open Recorder (the training script's) instead of a new one.
    """
    bug = bug or Bug()
    arg = _names(run.style)
    model = run.model
    model.eval()
    read_as = bug.sample_as or run.prediction_type
    x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    if bug.no_clip:
        clip = None
    own = rec is None
    if own:
        rec = fd.Recorder(run.path, append=True, start_step=run.steps)
    try:

        def log_step(x0: torch.Tensor, clipped: torch.Tensor, state: torch.Tensor) -> None:
            run.clip_counts.append((int(clipped), x0.numel()))
            rec.log(*arg("pred_x0")[:1], x0, **arg("pred_x0")[1])
            if run.style == "natural":
                rec.log_scalar(NAMES["natural"]["clipped"], clipped)
            else:
                rec.log_scalar(NAMES["documented"]["clipped"], clipped / x0.numel())
            if log_state_as_latents:
                rec.log(*arg("latents")[:1], state, **arg("latents")[1])
            if step_each:
                rec.step()

        if run.prediction_type == "flow":
            ts = torch.linspace(1.0, 0.0, num_steps + 1)
            for s, s_next in zip(ts[:-1], ts[1:]):
                v = model(x, torch.full((n,), float(s) * T)) * bug.velocity_scale
                x0 = x - float(s) * v  # x_s = (1 - s) x0 + s eps, v = eps - x0
                x = x + float(s_next - s) * v
                log_step(x0, torch.zeros((), dtype=torch.int64), x)
        else:
            ac = run.alphas_cumprod
            ts = torch.linspace(T - 1, 0, num_steps).round().long()
            for i, t in enumerate(ts):
                a, sg = ac[t].sqrt(), (1 - ac[t]).sqrt()
                out = model(x, t.expand(n))
                x0 = (x - sg * out) / a if read_as == "epsilon" else out
                x0_c = x0.clamp(-clip, clip) if clip is not None else x0
                clipped = (x0_c != x0).sum()
                eps = (x - a * x0_c) / sg
                t_prev = ts[i + 1] if i + 1 < len(ts) else None
                a_prev = ac[t_prev] if t_prev is not None else torch.tensor(1.0)
                if sampler == "ddim":
                    x = a_prev.sqrt() * x0_c + (1 - a_prev).sqrt() * eps
                else:  # DDPM posterior q(x_{t'} | x_t, x0) with its variance (t' = previous timestep)
                    a_t = ac[t] / a_prev
                    var = (1 - a_prev) / (1 - ac[t]) * (1 - a_t)
                    mean = (a_prev.sqrt() * (1 - a_t) * x0_c + a_t.sqrt() * (1 - a_prev) * x) / (1 - ac[t])
                    x = mean + (var.sqrt() * torch.randn(x.shape, generator=g) if t_prev is not None else 0.0)
                log_step(x0_c, clipped, x)
        rec.log(*arg("sample")[:1], x, **arg("sample")[1])
        if log_real and NAMES[run.style]["real"] is not None:
            rec.log(*arg("real")[:1], run.data, **arg("real")[1])
        run.steps = rec.current_step + 1
    finally:
        if own:
            rec.close()
    run.samples = x
    return x


def with_bug(**kw) -> Bug:
    return replace(Bug(), **kw)
