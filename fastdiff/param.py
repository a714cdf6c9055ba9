"""Prediction types as affine maps between a model output and (x0, eps): the only place they live.

The forward process is  x = alpha x0 + sigma eps  (alpha, sigma from `schedule.py`; for flow matching
alpha = 1 - s and sigma = s). Each prediction type is a target the network is trained to output,
linear in (x0, eps):

    epsilon        out = eps
    sample         out = x0
    v_prediction   out = alpha eps - sigma x0                       (Salimans & Ho 2022)
    flow           out = eps - x0          (the velocity d x / ds of the rectified-flow path, alpha = 1 - s)

Stacking `x = alpha x0 + sigma eps` with the target gives a 2x2 linear system; its inverse maps
(x, out) back to (x0, eps). Training targets (`target`) and sampling conversions (`to_x0_eps`) are two
directions of the same matrices, so a sampler configured with a prediction type reads the model output
the way training defined it — the eps<->x0 mix-up of report 002 cannot happen by construction.

Flow matching has two conventions in use; fastdiff (and diffusers' FlowMatch schedulers, SD3, Flux) use the
first. `from_flow_matching` converts a model of the second (Meta's `flow_matching` library, Lipman et al.
2023) into the first:

    fastdiff / diffusers                              flow_matching (Lipman et al.)
    x_s = (1 - s) x0 + s eps,  x0 data, eps noise     x_t = t x1 + (1 - t) x0,  x1 data, x0 noise
    s: 1 (noise) -> 0 (data)                          t: 0 (noise) -> 1 (data);  t = 1 - s
    "flow" (alias "velocity"): v = dx/ds = eps - x0   u = dx/dt = x1 - x0 = data - noise = -v
    model(x, t_model), t_model = s * T (T = 1000)     model(x, t), t in [0, 1]

EDM's preconditioning (Karras et al. 2022) is another output map, x0 = c_skip x + c_out F on the VE sample
x = x0 + sigma eps: `edm_precondition`.

>>> cx, co, ex, eo = to_x0_eps("epsilon", alpha=0.6, sigma=0.8)
>>> round(cx, 12), round(co, 12)   # x0 = (x - 0.8 out) / 0.6
(1.666666666667, -1.333333333333)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow")

# Other spellings users bring from diffusers / k-diffusion / papers.
_ALIASES = {
    "eps": "epsilon",
    "epsilon": "epsilon",
    "noise": "epsilon",
    "x0": "sample",
    "sample": "sample",
    "x_0": "sample",
    "v": "v_prediction",
    "v_prediction": "v_prediction",
    "flow": "flow",
    "flow_prediction": "flow",
    "velocity": "flow",
}


def canonical(prediction_type: str) -> str:
    """The canonical name of a prediction type; ValueError naming the accepted ones otherwise."""
    if isinstance(prediction_type, str) and prediction_type in _ALIASES:
        return _ALIASES[prediction_type]
    raise ValueError(
        f"prediction_type={prediction_type!r} is not supported; accepted: "
        f"{', '.join(PREDICTION_TYPES)} (aliases: {', '.join(sorted(set(_ALIASES) - set(PREDICTION_TYPES)))})"
    )


def target_coeffs(prediction_type: str, alpha: float, sigma: float) -> tuple[float, float]:
    """(a, b) with  target = a x0 + b eps  for the prediction type at noise level (alpha, sigma)."""
    p = canonical(prediction_type)
    if p == "epsilon":
        return 0.0, 1.0
    if p == "sample":
        return 1.0, 0.0
    if p == "v_prediction":
        return -sigma, alpha
    return -1.0, 1.0  # flow: eps - x0


class X0EpsMap(NamedTuple):
    """x0 = cx x + co out,  eps = ex x + eo out."""

    cx: float
    co: float
    ex: float
    eo: float


def to_x0_eps(prediction_type: str, alpha: float, sigma: float) -> X0EpsMap:
    """Invert [x; out] = [[alpha, sigma], [a, b]] [x0; eps]: the model output read as (x0, eps).

    The determinant is alpha b - sigma a; it vanishes where the output carries no information about
    one of the two (e.g. epsilon at sigma = 0), which raises a ValueError naming the noise level.
    """
    alpha, sigma = float(alpha), float(sigma)
    a, b = target_coeffs(prediction_type, alpha, sigma)
    det = alpha * b - sigma * a
    if det == 0.0:
        raise ValueError(
            f"prediction_type={canonical(prediction_type)!r} cannot be converted at alpha={alpha}, sigma={sigma}: "
            "the model output does not determine x0 and eps there"
        )
    # inverse of [[alpha, sigma], [a, b]] is [[b, -sigma], [-a, alpha]] / det
    # (+ 0.0 turns -0.0 into 0.0: a term that is absent should print as such)
    return X0EpsMap(cx=b / det + 0.0, co=-sigma / det + 0.0, ex=-a / det + 0.0, eo=alpha / det + 0.0)


def target(prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """The training target of a prediction type: what the network should output for (x0, eps).

    `alpha`/`sigma` are floats or tensors broadcastable against x0 (per-sample noise levels).
    """
    p = canonical(prediction_type)
    if p == "epsilon":
        return eps
    if p == "sample":
        return x0
    if p == "v_prediction":
        return alpha * eps - sigma * x0
    return eps - x0


def convert(
    out: torch.Tensor, x: torch.Tensor, from_type: str, to_type: str, alpha: float, sigma: float
) -> torch.Tensor:
    """Re-express a model output of one prediction type as another at the same (x, alpha, sigma)."""
    m = to_x0_eps(from_type, alpha, sigma)
    a, b = target_coeffs(to_type, alpha, sigma)
    # target = a x0 + b eps = (a cx + b ex) x + (a co + b eo) out
    return (a * m.cx + b * m.ex) * x + (a * m.co + b * m.eo) * out


EDM_PREDICTION_TYPES = ("epsilon", "v_prediction")


def edm_precondition(prediction_type: str, sigma: float, sigma_data: float = 0.5) -> X0EpsMap:
    """EDM's output map at VE noise level sigma (Karras et al. 2022, table 1 and eq. 7), as diffusers' EDM schedulers.

    x0 = c_skip x + c_out F with c_skip = sigma_data^2 / (sigma^2 + sigma_data^2) and
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2), F the network output ("epsilon" in diffusers'
    naming; "v_prediction" is the same with c_out negated). eps = (x - x0) / sigma. The network's input is
    x / sqrt(sigma^2 + sigma_data^2) and its time log(sigma) / 4 (`edm_input_scale`, `edm_noise`).

    >>> m = edm_precondition("epsilon", 0.5, 0.5)
    >>> round(m.cx, 6), round(m.co, 6)
    (0.5, 0.353553)
    """
    p = canonical(prediction_type)
    if p not in EDM_PREDICTION_TYPES:
        raise ValueError(
            f"EDM preconditioning takes prediction_type in {', '.join(EDM_PREDICTION_TYPES)}; got {prediction_type!r}"
        )
    sigma, sigma_data = float(sigma), float(sigma_data)
    if not sigma > 0.0:
        raise ValueError(f"EDM preconditioning needs sigma > 0; got {sigma}")
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    if p == "v_prediction":
        c_out = -c_out
    return X0EpsMap(cx=c_skip, co=c_out, ex=(1.0 - c_skip) / sigma, eo=-c_out / sigma)


def edm_input_scale(sigma: float, sigma_data: float = 0.5) -> float:
    """c_in = 1 / sqrt(sigma^2 + sigma_data^2): the network sees c_in x (Karras et al. 2022, table 1)."""
    return 1.0 / (float(sigma) ** 2 + float(sigma_data) ** 2) ** 0.5


def edm_noise(sigma: float) -> float:
    """c_noise = log(sigma) / 4: the network's time input (Karras et al. 2022, table 1)."""
    return 0.25 * math.log(float(sigma))


def from_flow_matching(velocity_model, num_train_timesteps: int = 1000):
    """A velocity model of the flow_matching convention as a fastdiff "flow" model (module docstring table).

    `velocity_model(x, t, **kw)` returns u = x1 - x0 (data minus noise) at t in [0, 1] (0: noise). The result
    is called as fastdiff's flow samplers call models, `model(x, t_model, **kw)` with t_model = s * T, and
    returns fastdiff's velocity v = eps - x0 = -u at t = 1 - s.

    >>> import torch
    >>> u = lambda x, t: torch.ones_like(x) * t[:, None]       # u(x, t) = t
    >>> from_flow_matching(u)(torch.zeros(1, 2), torch.tensor([250.0]))
    tensor([[-0.7500, -0.7500]])
    """
    T = float(num_train_timesteps)

    def model(x, t_model, **kwargs):
        t = 1.0 - torch.as_tensor(t_model, dtype=torch.float64, device=x.device) / T
        return -velocity_model(x, t.to(x.dtype), **kwargs)

    return model
