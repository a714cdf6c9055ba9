"""UniPC multistep (Zhao et al. 2023, "UniPC"), B(h) variants, data prediction: the predictor UniP and corrector UniC.

With lambda = log(alpha / sigma), h = lambda_t - lambda_s0 (s0 the latest model evaluation), earlier x0s
m_k at lambda_{s_k} (r_k = (lambda_{s_k} - lambda_s0) / h, D1_k = (m_k - m0) / r_k), hh = -h,
h phi_1 = e^{hh} - 1, B(h) = hh ("bh1") or e^{hh} - 1 ("bh2"):

    UniP-p:  x_t = (sigma_t / sigma_s0) x - alpha_t h phi_1 m0 - alpha_t B(h) sum_k rho_k D1_k
    UniC-p:  x_t = (sigma_t / sigma_s0) x - alpha_t h phi_1 m0 - alpha_t B(h) (sum_k rho_k D1_k + rho_t (m_t - m0))

rho solves R rho = b with R_ij = r_j^i (r_p = 1) and b_i = h phi_{i+1}(hh) (i+1)! / B(h) (the predictor drops the
last row and column; order-2 UniP and order-1 UniC use rho = 1/2), as diffusers' UniPCMultistepScheduler. Every
term is linear in (x, m0, m_k, m_t): one generic step with the earlier x0s as history. The noise-prediction form
(eps in place of x0) is the same update under (alpha, sigma, lambda) -> (sigma, alpha, -lambda). The native loop
(`unipc_plan`) folds each step's UniC and UniP into one generic step.

>>> c = unipc_coeffs(0.0, 1.0, (), alpha_t=0.8, sigma_t=0.6, sigma_s0=0.9)   # UniP-1: the DDIM / DPM-Solver-1 step
>>> round(c.px, 6), round(c.w0, 6), c.wk, c.wt
(0.666667, 0.505696, (), 0.0)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ..schedule import Schedule
from ..step import StepCoeffs
from . import ladders
from .dpmsolver import usable_history
from .plan import VP_PREDICTION_TYPES, PlannedStep, Sampler, check_prediction_type, check_steps, ve_to_vp

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


# --------------------------------------------------------------------------------------------------
# the native loop: corrector and predictor of one step fused into one generic step


def _lam(alpha: float, sigma: float) -> float:
    return math.inf if sigma == 0.0 else math.log(alpha) - math.log(sigma)


def _add(form: dict, scale: float, other: dict) -> None:
    for key, v in other.items():
        form[key] = form.get(key, 0.0) + scale * v


def unipc_orders(num_steps: int, solver_order: int, lower_order_final: bool = True) -> list[int]:
    """The predictor order of each step of diffusers' UniPCMultistepScheduler (warm-up from 1; with
    `lower_order_final`, at most the number of steps left)."""
    n = num_steps
    return [min(solver_order, i + 1, n - i if lower_order_final else solver_order) for i in range(n)]


def unipc_plan(
    sigmas: list[float],
    model_times: list,
    alpha_sigma,
    prediction_type: str,
    *,
    solver_order: int = 2,
    solver_type: str = "bh2",
    lower_order_final: bool = True,
    disable_corrector=(),
    input_scales: list[float] | None = None,
) -> list[PlannedStep]:
    """The steps of a UniPC loop over `sigmas` (n + 1 levels), each one generic step: UniC, then UniP.

    diffusers' step i corrects with the previous step's order, x_c = C(last, m_i, m_{i-1}, ...) where `last` is
    the sample the previous predictor started from, then predicts x_{i+1} = P(x_c, m_i, m_{i-1}, ...). Both are
    linear, and `last` = (x_i - w0 m_{i-1} - sum_k wk m_{i-1-k}) / px by the previous predictor's own
    coefficients, so the whole step is linear in x_i, the new x0 m_i and the earlier x0s: the history is the
    solver_order - 1 (corrector: solver_order) latest x0s, and nothing but x0s is kept.

    This relies on x_i being the previous step's result, as in the sampling loop. A caller that changes the
    sample between steps (an inpainting blend, diffusers' pipelines' callbacks) must keep `last_sample` itself
    and apply UniC and UniP as two generic steps (`unipc_coeffs`), as diffusers' scheduler does.
    """
    if solver_order not in (1, 2, 3, 4):
        raise ValueError(f"solver_order must be 1 to 4 (the fused step holds 4 history terms); got {solver_order!r}")
    n = len(sigmas) - 1
    ab = [alpha_sigma(s) for s in sigmas]
    lam = [_lam(a, s) for a, s in ab]
    orders = unipc_orders(n, solver_order, lower_order_final)

    def update(t: int, s0: int, order: int, corrector: bool) -> UniPCCoeffs:
        """The update from level s0 to level t with the x0s of levels s0, s0 - 1, ..., s0 - order + 1."""
        prev = tuple(lam[s0 - k] for k in range(1, order))
        return unipc_coeffs(lam[s0], lam[t], prev, alpha_t=ab[t][0], sigma_t=ab[t][1], sigma_s0=ab[s0][1],
                            corrector=corrector, solver_type=solver_type)  # fmt: skip

    steps: list[PlannedStep] = []
    previous = None  # the previous step's predictor coefficients (to express its input `last`)
    for i in range(n):
        xc = {"x": 1.0}  # the corrected sample as a linear form over x, m (this x0) and ("x0", j)
        if i > 0 and (i - 1) not in set(disable_corrector):
            c = update(i, i - 1, orders[i - 1], corrector=True)
            last = {"x": 1.0 / previous.px, ("x0", i - 1): -previous.w0 / previous.px}
            for k, w in enumerate(previous.wk, start=1):
                last[("x0", i - 1 - k)] = -w / previous.px
            xc = {"m": c.wt, ("x0", i - 1): c.w0}
            _add(xc, c.px, last)
            for k, w in enumerate(c.wk, start=1):
                _add(xc, w, {("x0", i - 1 - k): 1.0})
        pr = update(i + 1, i, orders[i], corrector=False)
        out = {"m": pr.w0}
        _add(out, pr.px, xc)
        for k, w in enumerate(pr.wk, start=1):
            _add(out, w, {("x0", i - k): 1.0})
        previous = pr
        refs = sorted((key for key in out if isinstance(key, tuple) and out[key] != 0.0), key=lambda r: -r[1])
        read = StepCoeffs.from_prediction(prediction_type, *ab[i])
        coeffs = StepCoeffs(
            cx=read.cx, co=read.co, px=out.get("x", 0.0), p0=out.get("m", 0.0), ph=tuple(out[r] for r in refs)
        )
        steps.append(
            PlannedStep(
                coeffs,
                model_times[i],
                1.0 if input_scales is None else input_scales[i],
                history=tuple(refs),
                sigma=sigmas[i],
                sigma_next=sigmas[i + 1],
            )
        )
    return steps


def unipc(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    solver_order: int = 2,
    prediction_type: str = "epsilon",
    solver_type: str = "bh2",
    lower_order_final: bool = True,
    disable_corrector=(),
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    sigma_schedule: str | None = None,
    final_sigmas_type: str = "zero",
) -> Sampler:
    """UniPC (data prediction, UniC corrector unless disabled) over the ladder of diffusers'
    UniPCMultistepScheduler: one model call and one fused step per timestep.

    >>> from fastdiff.schedule import Schedule
    >>> s = unipc(Schedule.make("linear"), 6, solver_order=3)
    >>> [len(st.history) for st in s.steps]
    [0, 1, 2, 3, 3, 0]
    """
    p = check_prediction_type(prediction_type, VP_PREDICTION_TYPES, "unipc")
    check_steps(num_inference_steps, schedule.num_train_timesteps)
    times, sig = ladders.solver_ladder(
        schedule,
        num_inference_steps,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        sigma_schedule=sigma_schedule,
        final_sigmas_type=final_sigmas_type,
        round_timesteps=sigma_schedule in (None, "karras"),
    )
    if sigma_schedule in ("exponential", "beta"):  # diffusers casts these fractional timesteps to int64
        times = times.trunc()
    steps = unipc_plan(
        [float(s) for s in sig],
        [float(t) for t in times],
        ve_to_vp,
        p,
        solver_order=solver_order,
        solver_type=solver_type,
        lower_order_final=lower_order_final,
        disable_corrector=disable_corrector,
    )
    options = dict(solver_order=solver_order, solver_type=solver_type, sigma_schedule=sigma_schedule)
    return Sampler("unipc", p, tuple(steps), 1.0, torch.int64, options)
