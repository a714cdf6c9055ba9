"""UniPC multistep (Zhao et al. 2023, "UniPC"), B(h) variants, data prediction: the predictor UniP and corrector UniC.

With lambda = log(alpha / sigma), h = lambda_t - lambda_s0 (s0 the latest model evaluation), earlier x0s
m_k at lambda_{s_k} (r_k = (lambda_{s_k} - lambda_s0) / h, D1_k = (m_k - m0) / r_k), hh = -h,
h phi_1 = e^{hh} - 1, B(h) = hh ("bh1") or e^{hh} - 1 ("bh2"):

    UniP-p:  x_t = (sigma_t / sigma_s0) x - alpha_t h phi_1 m0 - alpha_t B(h) sum_k rho_k D1_k
    UniC-p:  x_t = (sigma_t / sigma_s0) x - alpha_t h phi_1 m0 - alpha_t B(h) (sum_k rho_k D1_k + rho_t (m_t - m0))

rho solves R rho = b with R_ij = r_j^i (r_p = 1) and b_i = h phi_{i+1}(hh) (i+1)! / B(h) (the predictor drops the
last row and column; order-2 UniP and order-1 UniC use rho = 1/2), as diffusers' UniPCMultistepScheduler. Every
term is linear in (x, m0, m_k, m_t): one generic step with the earlier x0s as history. The noise-prediction form
(eps in place of x0) is the same update under (alpha, sigma, lambda) -> (sigma, alpha, -lambda).

>>> c = unipc_coeffs(0.0, 1.0, (), alpha_t=0.8, sigma_t=0.6, sigma_s0=0.9)   # UniP-1: the DDIM / DPM-Solver-1 step
>>> round(c.px, 6), round(c.w0, 6), c.wk, c.wt
(0.666667, 0.505696, (), 0.0)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .dpmsolver import usable_history

SOLVER_TYPES = ("bh1", "bh2")


class UniPCCoeffs(NamedTuple):
    """x' = px x + w0 m0 + sum_k wk[k] m_{k+1} + wt m_t (float64 host scalars)."""

    px: float
    w0: float
    wk: tuple[float, ...]
    wt: float


def unipc_coeffs(
    lambda_s0: float,
    lambda_t: float,
    lambdas_prev: tuple[float, ...],
    *,
    alpha_t: float,
    sigma_t: float,
    sigma_s0: float,
    alpha_s0: float | None = None,
    corrector: bool = False,
    solver_type: str = "bh2",
    predict_x0: bool = True,
) -> UniPCCoeffs:
    """Coefficients of one UniP (corrector=False) or UniC (corrector=True) update of order len(lambdas_prev) + 1.

    `lambdas_prev`: lambda of the earlier model evaluations m_1, m_2, ... (newest first). lambda_t = +inf
    (sigma_t = 0, the final step of final_sigmas_type="zero") is the limit x_t = alpha_t x0 of a first-order
    predictor; higher orders diverge there (r_k = 0) and raise ValueError. h = 0 (a repeated sigma) is no step:
    x_t = x. History from a repeated level (r_k = 0) is left out, as in DPM-Solver (`usable_history`): weight 0.

    `predict_x0=False` is the noise-prediction UniPC (the m are eps; needs `alpha_s0`): the same update under
    (alpha, sigma, lambda, x0) -> (sigma, alpha, -lambda, eps), as diffusers' (its hh = h).
    """
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type={solver_type!r}; accepted: {', '.join(SOLVER_TYPES)}")
    if not predict_x0 and alpha_s0 is None:
        raise ValueError("the noise-prediction UniPC (predict_x0=False) needs alpha_s0")
    usable = usable_history(float(lambda_s0), [float(v) for v in lambdas_prev])
    lambdas = tuple(float(v) for v in lambdas_prev[:usable])
    if math.isinf(lambda_t) and lambda_t > 0:  # into sigma = 0
        if lambdas or corrector:
            raise ValueError(
                f"a UniPC step to sigma = 0 (h = inf) is finite only as a first-order predictor; got order "
                f"{len(lambdas) + 1}{' (corrector)' if corrector else ''}"
            )
        if predict_x0:  # x_t = m0: h phi_1 = -1, the B(h) D1 terms absent
            c = UniPCCoeffs(px=0.0, w0=float(alpha_t), wk=(), wt=0.0)
        else:  # x_t = alpha_t x0 with x0 = (x - sigma_s0 m0) / alpha_s0 (sigma_t e^h -> alpha_t sigma_s0 / alpha_s0)
            ratio = float(alpha_t) / float(alpha_s0)
            c = UniPCCoeffs(px=ratio, w0=-ratio * float(sigma_s0), wk=(), wt=0.0)
    elif predict_x0:
        c = _update(float(lambda_s0), float(lambda_t), lambdas, alpha_t, sigma_t, sigma_s0, corrector, solver_type)
    else:
        dual = tuple(-v for v in lambdas)
        c = _update(-float(lambda_s0), -float(lambda_t), dual, sigma_t, alpha_t, alpha_s0, corrector, solver_type)
    return c._replace(wk=c.wk + (0.0,) * (len(lambdas_prev) - usable))


def _update(lambda_s0, lambda_t, lambdas_prev, alpha_t, sigma_t, sigma_s0, corrector, solver_type) -> UniPCCoeffs:
    """The data-prediction update (module docstring) with finite lambdas and distinct history."""
    order = len(lambdas_prev) + 1
    alpha_t, sigma_t, sigma_s0 = float(alpha_t), float(sigma_t), float(sigma_s0)
    px = sigma_t / sigma_s0
    h = lambda_t - lambda_s0
    if h == 0.0 or not math.isfinite(h):
        if h == 0.0:  # no step (a ladder repeating a sigma): x_t = x, the parent's result where it is finite
            return UniPCCoeffs(px=px, w0=0.0, wk=(0.0,) * (order - 1), wt=0.0)
        raise ValueError(f"UniPC needs a finite step h = lambda_t - lambda_s0 != 0; got h = {h}")
    rks = [(float(lam) - lambda_s0) / h for lam in lambdas_prev]
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if solver_type == "bh1" else h_phi_1
    # b_i = h phi_{i+1}(hh) (i+1)! / B(h), by diffusers' recursion
    h_phi_k = h_phi_1 / hh - 1.0
    factorial_i = 1
    b = []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial_i / b_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial_i
    rk_all = np.array(rks + [1.0], dtype=np.float64)
    R = np.stack([rk_all**i for i in range(order)])
    if corrector:
        rhos = [0.5] if order == 1 else [float(v) for v in np.linalg.solve(R, np.array(b))]
        rho_k, rho_t = rhos[:-1], rhos[-1]
    else:
        rho_t = 0.0
        if order == 1:
            rho_k = []
        elif order == 2:
            rho_k = [0.5]
        else:
            rho_k = [float(v) for v in np.linalg.solve(R[:-1, :-1], np.array(b[:-1]))]
    scale = alpha_t * b_h
    wk = tuple(-scale * rho / r for rho, r in zip(rho_k, rks))
    w0 = -alpha_t * h_phi_1 + scale * (sum(rho / r for rho, r in zip(rho_k, rks)) + rho_t)
    return UniPCCoeffs(px=px, w0=w0, wk=wk, wt=-scale * rho_t)
