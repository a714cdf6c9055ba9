"""Noise schedules, timestep spacings and sigma ladders: host maths in float64.

One source of truth for the forward process

    x_t = alpha_t * x0 + sigma_t * eps,     alpha_t = sqrt(alphas_cumprod[t]),  sigma_t = sqrt(1 - alphas_cumprod[t])

and for the flow-matching path  x_s = (1 - s) * x0 + s * eps  (s is the flow "sigma" in [0, 1]).

Everything here is plain float64 on the CPU; the definitions follow diffusers (DDPM/DDIM/Euler/
FlowMatch schedulers) so that `Schedule.make("linear")` and a diffusers scheduler describe the same process.

>>> s = Schedule.make("linear", num_train_timesteps=1000)
>>> round(float(s.alphas_cumprod[-1]), 6)
4e-05
>>> timesteps(1000, 5, spacing="leading", steps_offset=1).tolist()
[801, 601, 401, 201, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "exp", "laplace")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

_F64 = torch.float64


def _check_choice(name: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; accepted: {', '.join(map(repr, accepted))}")


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# betas


def betas_for_alpha_bar(num_train_timesteps: int, max_beta: float = 0.999, kind: str = "cosine") -> torch.Tensor:
    """beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta) for a continuous abar(t) (Nichol & Dhariwal 2021)."""
    _check_choice("alpha_transform_type", kind, ("cosine", "exp", "laplace"))

    def abar(t: float) -> float:
        if kind == "cosine":  # Improved DDPM, eq. 17 with s = 0.008
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        if kind == "exp":
            return math.exp(t * -12.0)
        lmb = -0.5 * math.copysign(1, 0.5 - t) * math.log(1 - 2 * math.fabs(0.5 - t) + 1e-6)  # laplace
        snr = math.exp(lmb)
        return math.sqrt(snr / (1 + snr))

    T = num_train_timesteps
    return torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)], dtype=_F64)


def make_betas(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
) -> torch.Tensor:
    """The betas of a named schedule, float64, shape [num_train_timesteps]."""
    T = _check_positive_int("num_train_timesteps", num_train_timesteps)
    _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=_F64)
    if beta_schedule == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=_F64) ** 2
    if beta_schedule == "sigmoid":  # GeoDiff
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=_F64)) * (beta_end - beta_start) + beta_start
    kind = {"squaredcos_cap_v2": "cosine"}.get(beta_schedule, beta_schedule)
    return betas_for_alpha_bar(T, kind=kind)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(abar) so that abar_T = 0 and abar_0 is kept."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas.to(_F64), dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


# --------------------------------------------------------------------------------------------------
# the schedule object


@dataclass(frozen=True)
class Schedule:
    """A discrete variance-preserving schedule: `alphas_cumprod[t]` for t = 0 .. T-1 (float64, CPU).

    `alpha[t] = sqrt(abar_t)` and `sigma[t] = sqrt(1 - abar_t)` are the coefficients of the forward process;
    `karras_sigma[t] = sigma / alpha` is the noise level of the k-diffusion (variance-exploding) form.
    """

    alphas_cumprod: torch.Tensor
    betas: torch.Tensor = field(repr=False)

    @classmethod
    def make(
        cls,
        beta_schedule: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        rescale_betas_zero_snr: bool = False,
    ) -> Schedule:
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        if rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls.from_betas(betas)

    @classmethod
    def from_betas(cls, betas) -> Schedule:
        betas = torch.as_tensor(betas).detach().to("cpu", _F64).reshape(-1)
        if betas.numel() == 0:
            raise ValueError("betas is empty; a schedule needs at least one timestep")
        return cls(alphas_cumprod=torch.cumprod(1.0 - betas, dim=0), betas=betas)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> Schedule:
        """From alphas_cumprod, e.g. a diffusers scheduler's `scheduler.alphas_cumprod` (float32 there)."""
        ac = torch.as_tensor(alphas_cumprod).detach().to("cpu", _F64).reshape(-1)
        if ac.numel() == 0:
            raise ValueError("alphas_cumprod is empty; a schedule needs at least one timestep")
        prev = torch.cat([ac.new_ones(1), ac[:-1]])
        return cls(alphas_cumprod=ac, betas=1 - ac / prev)

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alpha(self) -> torch.Tensor:
        """sqrt(abar_t): the signal coefficient of x_t = alpha x0 + sigma eps."""
        return self.alphas_cumprod.sqrt()

    @property
    def sigma(self) -> torch.Tensor:
        """sqrt(1 - abar_t): the noise coefficient of x_t = alpha x0 + sigma eps."""
        return (1.0 - self.alphas_cumprod).sqrt()

    @property
    def karras_sigmas(self) -> torch.Tensor:
        """sigma_t / alpha_t = sqrt((1 - abar_t) / abar_t): noise level of the VE form x0 + s eps."""
        return ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    @property
    def log_snr(self) -> torch.Tensor:
        return torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(alpha_t, sigma_t) as Python floats for an integer timestep of this schedule."""
        t = self.check_timestep(t)
        ac = float(self.alphas_cumprod[t])
        return math.sqrt(ac), math.sqrt(1.0 - ac)

    def check_timestep(self, t) -> int:
        if isinstance(t, torch.Tensor):
            if t.numel() != 1:
                raise ValueError(f"timestep must be a single value; got a tensor of shape {tuple(t.shape)}")
            t = t.item()
        if isinstance(t, float) and t.is_integer():
            t = int(t)
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ValueError(f"timestep must be an integer in [0, {self.num_train_timesteps - 1}]; got {t!r}")
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep {t} is not in the schedule; accepted: 0 .. {self.num_train_timesteps - 1}")
        return int(t)

    def rescaled_zero_terminal_snr(self) -> Schedule:
        return Schedule.from_betas(rescale_zero_terminal_snr(self.betas))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The forward process x_t = alpha_t x0 + sigma_t eps for a batch of integer timesteps t (shape [B])."""
        t = torch.as_tensor(t).to("cpu", torch.long).reshape(-1)
        if t.numel() and (t.min() < 0 or t.max() >= self.num_train_timesteps):
            raise ValueError(
                f"timesteps out of range [{int(t.min())}, {int(t.max())}]; "
                f"accepted: 0 .. {self.num_train_timesteps - 1}"
            )
        shape = (-1,) + (1,) * (x0.dim() - 1)
        a = self.alpha[t].to(x0.device, torch.float32 if x0.dtype != _F64 else _F64).reshape(shape)
        s = self.sigma[t].to(a.device, a.dtype).reshape(shape)
        return (a * x0 + s * noise).to(x0.dtype)

    def check(self) -> ScheduleReport:
        return check_schedule(self)


# --------------------------------------------------------------------------------------------------
# timesteps and sigma ladders


def timesteps(
    num_train_timesteps: int,
    num_inference_steps: int,
    spacing: str = "leading",
    steps_offset: int = 0,
    *,
    rounded: bool = True,
) -> torch.Tensor:
    """Timesteps from high noise to low, as in diffusers' DDPM/DDIM (int64) and Euler-family (float) `set_timesteps`.

    linspace: linspace(0, T-1, n) reversed (rounded to integers unless `rounded=False`: the Euler
    schedulers keep them fractional); leading: arange(n) * (T // n) + offset, reversed; trailing:
    round(arange(T, 0, -T/n)) - 1 (Lin et al. 2023, table 2). int64 when rounded, else float64.
    """
    T = _check_positive_int("num_train_timesteps", num_train_timesteps)
    n = _check_positive_int("num_inference_steps", num_inference_steps)
    _check_choice("timestep_spacing", spacing, TIMESTEP_SPACINGS)
    if n > T:
        raise ValueError(f"num_inference_steps={n} is larger than num_train_timesteps={T}; accepted: 1 .. {T}")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n)[::-1]
        ts = ts.round() if rounded else ts
    elif spacing == "leading":
        ts = (np.arange(0, n) * (T // n)).round()[::-1] + steps_offset
    else:
        ts = np.round(np.arange(T, 0, -T / n)) - 1
    ts = np.ascontiguousarray(ts)
    return torch.from_numpy(ts.astype(np.int64)) if rounded else torch.from_numpy(ts.astype(np.float64))


def solver_timesteps(
    num_train_timesteps: int,
    num_inference_steps: int,
    spacing: str = "linspace",
    steps_offset: int = 0,
    last_timestep: int | None = None,
) -> torch.Tensor:
    """Integer timesteps of diffusers' multistep solvers (DPM-Solver): a grid of n + 1 points from
    `last_timestep - 1` down to 0 with the final 0 dropped (linspace, leading), or the trailing grid.

    `last_timestep` (default T) is where `lambda_min_clipped` cuts the schedule off.
    """
    T = _check_positive_int("num_train_timesteps", num_train_timesteps)
    n = _check_positive_int("num_inference_steps", num_inference_steps)
    _check_choice("timestep_spacing", spacing, TIMESTEP_SPACINGS)
    last = T if last_timestep is None else _check_positive_int("last_timestep", last_timestep)
    if n > T:
        raise ValueError(f"num_inference_steps={n} is larger than num_train_timesteps={T}; accepted: 1 .. {T}")
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ts = (np.arange(0, n + 1) * (last // (n + 1))).round()[::-1][:-1] + steps_offset
    else:
        ts = np.arange(last, 0, -T / n).round() - 1
    return torch.from_numpy(np.ascontiguousarray(ts).astype(np.int64))


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5: (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, i = 0..n-1."""
    n = _check_positive_int("num_inference_steps", n)
    ramp = torch.linspace(0, 1, n, dtype=_F64)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """Geometric ladder exp(linspace(log s_max, log s_min, n))."""
    n = _check_positive_int("num_inference_steps", n)
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=_F64).exp()


def beta_sigmas(sigma_min: float, sigma_max: float, n: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Beta-distribution ladder (Lee et al. 2024): s_min + ppf(1 - i/(n-1); alpha, beta) (s_max - s_min).

    Needs scipy."""
    n = _check_positive_int("num_inference_steps", n)
    try:
        from scipy.stats import beta as beta_dist
    except ImportError as exc:  # pragma: no cover - scipy ships with the test extra
        raise ImportError("beta sigmas need scipy: pip install scipy") from exc
    ppf = beta_dist.ppf(1 - np.linspace(0, 1, n), alpha, beta)
    return torch.from_numpy(sigma_min + ppf * (sigma_max - sigma_min)).to(_F64)


def sigma_to_timestep(sigmas: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Fractional training timesteps of VE sigmas, by interpolation in log sigma (as k-diffusion/diffusers)."""
    log_sigmas = schedule.karras_sigmas.log()
    log_s = torch.as_tensor(sigmas, dtype=_F64).clamp(min=1e-300).log()
    dists = log_s[:, None] - log_sigmas[None, :]
    low = dists.ge(0).cumsum(dim=1).argmax(dim=1).clamp(max=log_sigmas.numel() - 2)
    low_s, high_s = log_sigmas[low], log_sigmas[low + 1]
    w = ((low_s - log_s) / (low_s - high_s)).clamp(0, 1)
    return (1 - w) * low + w * (low + 1)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Static flow-matching shift (SD3): s' = shift s / (1 + (shift - 1) s)."""
    if not shift > 0:
        raise ValueError(f"shift must be > 0; got {shift!r}")
    sigmas = torch.as_tensor(sigmas, dtype=_F64)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(mu: float, sigmas: torch.Tensor, kind: str = "exponential", power: float = 1.0) -> torch.Tensor:
    """Dynamic (resolution-dependent) shift of Flux: exp(mu) / (exp(mu) + (1/s - 1)^power), or its linear form."""
    _check_choice("time_shift_type", kind, ("exponential", "linear"))
    sigmas = torch.as_tensor(sigmas, dtype=_F64)
    if kind == "exponential":
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** power)
    return mu / (mu + (1 / sigmas - 1) ** power)


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """mu for `time_shift`: linear in the token count, through (base_seq_len, base_shift), (max_seq_len, max_shift)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * m + (base_shift - m * base_seq_len)


def flow_sigmas(
    num_inference_steps: int,
    num_train_timesteps: int = 1000,
    shift: float = 1.0,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    terminal: bool = True,
    shift_terminal: float | None = None,
) -> torch.Tensor:
    """Flow-matching sigmas (diffusers FlowMatchEulerDiscreteScheduler), shifted, with a final 0.

    `mu` given: dynamic shift (`time_shift`); otherwise the static `shift`. As in diffusers, the ladder
    runs linearly from 1 to the *training* sigma_min (which is already shifted when the shift is static)
    and is then shifted. `shift_terminal`: stretch 1 - s so that the last sigma is exactly that value.
    """
    n = _check_positive_int("num_inference_steps", num_inference_steps)
    T = _check_positive_int("num_train_timesteps", num_train_timesteps)
    sigma_min = 1.0 / T if mu is not None else float(shift_sigmas(torch.tensor(1.0 / T), shift))
    sigmas = torch.linspace(1.0, sigma_min, n, dtype=_F64)
    sigmas = time_shift(mu, sigmas, time_shift_type) if mu is not None else shift_sigmas(sigmas, shift)
    if shift_terminal:
        if not 0.0 < shift_terminal < 1.0:
            raise ValueError(f"shift_terminal must be in (0, 1); got {shift_terminal!r}")
        if n < 2:
            raise ValueError("shift_terminal needs num_inference_steps >= 2 (one step has no last sigma to stretch)")
        one_minus = 1.0 - sigmas  # stretch (1 - s) so that its last value is 1 - shift_terminal
        sigmas = 1.0 - one_minus / (one_minus[-1] / (1.0 - shift_terminal))
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if terminal else sigmas


# --------------------------------------------------------------------------------------------------
# hypothesis F of report 000: are the schedule's constants right?


@dataclass
class ScheduleReport:
    """What `check_schedule` found: `ok` and one line per check, in words."""

    ok: bool
    lines: list[str]
    evidence: dict

    def __str__(self) -> str:
        head = "schedule OK" if self.ok else "schedule has problems"
        return "\n".join([head] + [f"  - {line}" for line in self.lines])


def check_schedule(schedule: Schedule | torch.Tensor, *, terminal_snr_max: float = 1e-2) -> ScheduleReport:
    """Ranges, monotonicity, NaN/Inf and endpoints of a schedule (betas or alphas_cumprod), in words.

    Accepts a `Schedule` or a tensor of alphas_cumprod. Never raises on a bad schedule: it reports it.
    """
    ac = schedule.alphas_cumprod if isinstance(schedule, Schedule) else torch.as_tensor(schedule, dtype=_F64)
    ac = ac.detach().to("cpu", _F64).reshape(-1)
    lines: list[str] = []
    ok = True
    n_bad = int((~torch.isfinite(ac)).sum())
    ev: dict = {"num_train_timesteps": ac.numel(), "nonfinite": n_bad}
    if ac.numel() == 0:
        return ScheduleReport(False, ["alphas_cumprod is empty"], ev)
    if n_bad:
        first = int((~torch.isfinite(ac)).nonzero()[0])
        return ScheduleReport(False, [f"{n_bad} non-finite values in alphas_cumprod, first at t={first}"], ev)
    first_v, last_v = float(ac[0]), float(ac[-1])
    ev.update(alphas_cumprod_first=first_v, alphas_cumprod_last=last_v)
    if ac.min() < 0 or ac.max() > 1:
        ok = False
        lines.append(f"alphas_cumprod leaves [0, 1]: range [{float(ac.min()):.4g}, {float(ac.max()):.4g}]")
    else:
        lines.append(f"alphas_cumprod in [0, 1]: from {first_v:.6g} at t=0 to {last_v:.6g} at t={ac.numel() - 1}")
    prev = torch.cat([ac.new_ones(1), ac[:-1]])
    betas = 1 - ac / prev.clamp(min=1e-300)
    ev.update(beta_min=float(betas.min()), beta_max=float(betas.max()))
    increasing = int((ac[1:] > ac[:-1]).sum())
    if increasing:
        ok = False
        at = int((ac[1:] > ac[:-1]).nonzero()[0]) + 1
        lines.append(f"alphas_cumprod is not decreasing: it rises at {increasing} steps, first at t={at}")
    elif ac.numel() > 1 and bool((ac[1:] == ac[:-1]).any()):
        lines.append("alphas_cumprod is flat at some steps (beta = 0): those timesteps add no noise")
    else:
        lines.append("alphas_cumprod decreases strictly (every beta in (0, 1))")
    lines.append(f"betas in [{ev['beta_min']:.4g}, {ev['beta_max']:.4g}]")
    if first_v < 0.99:
        ok = False
        lines.append(f"alphas_cumprod[0] = {first_v:.4g}: the first step already destroys the data (expected ~1)")
    snr_last = last_v / max(1 - last_v, 1e-300)
    ev["terminal_snr"] = snr_last
    if snr_last > terminal_snr_max:
        ok = False
        lines.append(
            f"terminal SNR {snr_last:.3g} > {terminal_snr_max:g}: x_T keeps {math.sqrt(last_v):.3g} of the signal, "
            "so sampling from pure noise does not match training"
        )
    else:
        lines.append(f"terminal SNR {snr_last:.3g}: x_T is essentially pure noise")
    return ScheduleReport(ok, lines, ev)
