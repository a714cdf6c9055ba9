"""PNDM / PLMS (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models"): the Stable Diffusion 1.x default.

The transfer part moves a sample from t to t' along the DDIM path of a noise estimate e (eq. 9):

    x' = sqrt(abar' / abar) x - (abar' - abar) / (abar sqrt(1 - abar') + sqrt(abar (1 - abar) abar')) e

and the gradient part combines the model's noise predictions e_k of earlier steps:

    pseudo linear multistep (PLMS, eq. 12)   e' = (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24
                                             (warm-up: e_0; (3 e_0 - e_1) / 2; (23 e_0 - 16 e_1 + 5 e_2) / 12)
    pseudo Runge-Kutta (PRK, eq. 13)         four transfers from the same x at t, t - d/2, t - d/2, t - d with
                                             e' = (e_1 + 2 e_2 + 2 e_3 + e_4) / 6 in the last

as diffusers' PNDMScheduler implements them, including its `skip_prk_steps` start (crowsonkb's PLMS: a
second-order "pseudo improved Euler" step from the saved x with (e_0 + e_1) / 2) and its timesteps
(prk_timesteps, plms_timesteps); its v_prediction reading is available as `v_combined` (`pndm_coeffs`).

The history is the noise predictions e_k, not x0: each step's x0 line computes its e (for epsilon models the
output itself; `PlannedStep.x0_from` gives x0 back). A transfer from a saved sample takes it as one more
history term: the PRK step combines four tensors besides the new output (the saved x and e_1, e_2, e_3).

>>> c = pndm_coeffs(0.36, 0.64, (1.0,))        # one output: the DDIM step, alpha 0.6 -> 0.8
>>> round(c.px, 6), round(c.p0, 6)              # x' = 0.8 (x - 0.8 e) / 0.6 + 0.6 e
(1.333333, -0.466667)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .. import param
from ..schedule import Schedule
from ..step import StepCoeffs
from .plan import PlannedStep, Sampler, check_prediction_type, check_steps
from .vp import ve_sigma

PNDM_PREDICTION_TYPES = ("epsilon", "v_prediction")
PLMS_WEIGHTS = {  # weights of e_0 (now), e_1, e_2, e_3 (earlier) by the number of outputs kept (eq. 12 warm-up)
    1: (1.0,),
    2: (3.0 / 2, -1.0 / 2),
    3: (23.0 / 12, -16.0 / 12, 5.0 / 12),
    4: (55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24),
}
PRK_WEIGHTS = (1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6)  # e_1 .. e_4 of one Runge-Kutta step (eq. 13)


def pndm_transfer(alpha_cumprod_t: float, alpha_cumprod_prev: float) -> tuple[float, float]:
    """(a, b) of the transfer x' = a x - b e from abar_t to abar' (eq. 9; diffusers' `_get_prev_sample`)."""
    ac, ac_prev = float(alpha_cumprod_t), float(alpha_cumprod_prev)
    if not (0.0 < ac <= 1.0 and 0.0 < ac_prev <= 1.0):
        raise ValueError(f"PNDM needs 0 < abar <= 1 at both ends; got abar_t={ac}, abar_prev={ac_prev}")
    denom = ac * math.sqrt(1.0 - ac_prev) + math.sqrt(ac * (1.0 - ac) * ac_prev)
    return math.sqrt(ac_prev / ac), (ac_prev - ac) / denom


def pndm_coeffs(
    alpha_cumprod_t: float,
    alpha_cumprod_prev: float,
    output_weights: Sequence[float],
    prediction_type: str = "epsilon",
    *,
    alpha_cumprod_model: float | None = None,
    from_saved: bool = False,
    v_combined: bool = False,
) -> StepCoeffs:
    """One PNDM transfer of e' = sum_k w_k e_k from abar_t to abar' (module docstring).

    output_weights[0] weighs this step's noise prediction e_0, which its x0 line computes from the model output
    at abar_model (default abar_t; the model's own level, which differs inside a Runge-Kutta step);
    output_weights[k] weighs the k-th history term, earlier e's most recent first. `from_saved`: the transfer
    starts from a saved sample (history term 0; this step's x is not used), else from this step's x.

    `v_combined`: diffusers' PNDMScheduler instead keeps raw outputs as its history (`ets`) and converts their
    combination v' = sum_k w_k v_k at the transfer's start, e' = sqrt(abar_t) v' + sqrt(1 - abar_t) x_start,
    which mixes outputs of other noise levels for v_prediction (identical for epsilon). The x0 line then
    computes the raw output. The drop-in scheduler needs this; the native sampler converts each output itself.
    """
    p = check_prediction_type(prediction_type, PNDM_PREDICTION_TYPES, "pndm")
    a, b = pndm_transfer(alpha_cumprod_t, alpha_cumprod_prev)
    w = [float(v) for v in output_weights]
    if not w:
        raise ValueError("PNDM needs at least the weight of this step's output")
    ac_model = float(alpha_cumprod_t if alpha_cumprod_model is None else alpha_cumprod_model)
    m = param.to_x0_eps(p, math.sqrt(ac_model), math.sqrt(1.0 - ac_model))
    cx, co, scale, sample = m.ex, m.eo, 1.0, a  # the x0 line computes e_0 = ex x + eo out
    if v_combined:
        cx, co = 0.0, 1.0
        if p == "v_prediction":  # e' = sqrt(abar) v' + sqrt(1 - abar) x_start
            ac = float(alpha_cumprod_t)
            scale, sample = math.sqrt(ac), a - b * math.sqrt(1.0 - ac)
    terms = tuple(-b * scale * v for v in w[1:])
    if from_saved:
        return StepCoeffs(cx=cx, co=co, p0=-b * scale * w[0], ph=(sample,) + terms)
    return StepCoeffs(cx=cx, co=co, px=sample, p0=-b * scale * w[0], ph=terms)


def pndm_timesteps(
    num_train_timesteps: int, num_inference_steps: int, timestep_spacing: str, steps_offset: int, skip_prk_steps: bool
) -> tuple[list[int], list[int]]:
    """(prk_timesteps, plms_timesteps) of diffusers' PNDMScheduler.set_timesteps."""
    T, n = num_train_timesteps, num_inference_steps
    if timestep_spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round().astype(np.int64)
    elif timestep_spacing == "leading":
        ts = (np.arange(0, n) * (T // n)).round().astype(np.int64) + steps_offset
    elif timestep_spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / n))[::-1].astype(np.int64) - 1
    else:
        raise ValueError(
            f"timestep_spacing={timestep_spacing!r} is not supported; accepted: linspace, leading, trailing"
        )
    if skip_prk_steps:
        plms = np.concatenate([ts[:-1], ts[-2:-1], ts[-1:]])[::-1]
        return [], [int(t) for t in plms]
    half = T // n // 2
    prk = np.array(ts[-4:]).repeat(2) + np.tile(np.array([0, half]), 4)
    prk = prk[:-1].repeat(2)[1:-1][::-1]
    return [int(t) for t in prk], [int(t) for t in ts[:-3][::-1]]


def pndm(
    schedule: Schedule,
    num_inference_steps: int,
    *,
    prediction_type: str = "epsilon",
    skip_prk_steps: bool = False,
    set_alpha_to_one: bool = False,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    v_combined: bool = False,
) -> Sampler:
    """PNDM over diffusers' PNDMScheduler timesteps (defaults as its config; SD 1.x: skip_prk_steps=True,
    steps_offset=1). One model call per timestep: 12 PRK calls then PLMS, or PLMS from the start.

    The history is each step's noise prediction; `v_combined=True` reproduces diffusers' v_prediction reading
    (`pndm_coeffs`), which biases v-models (Gaussian data: mean off by 3% of its std on 25 steps).

    >>> from fastdiff.schedule import Schedule
    >>> s = pndm(Schedule.make("linear"), 10, skip_prk_steps=True, steps_offset=1)
    >>> s.model_times[:4], len(s)
    ([901, 801, 801, 701], 11)
    """
    p = check_prediction_type(prediction_type, PNDM_PREDICTION_TYPES, "pndm")
    T = schedule.num_train_timesteps
    n = check_steps(num_inference_steps, T)
    if not skip_prk_steps and n < 4:
        raise ValueError(f"PNDM with PRK steps needs num_inference_steps >= 4 (three Runge-Kutta steps); got {n}")
    prk, plms = pndm_timesteps(T, n, timestep_spacing, steps_offset, skip_prk_steps)
    ac = schedule.alphas_cumprod
    final = 1.0 if set_alpha_to_one else float(ac[0])

    def abar(t: int) -> float:
        return float(ac[schedule.check_timestep(t)]) if t >= 0 else final

    def step(t_model, t_from, t_to, weights, history, saved):
        """A transfer from t_from to t_to of sum_k weights[k] o_k; `saved`: index of the step whose x it starts from."""
        ac = abar(t_model)
        c = pndm_coeffs(abar(t_from), abar(t_to), weights, p, alpha_cumprod_model=ac, from_saved=saved is not None,
                        v_combined=v_combined)  # fmt: skip
        refs = ((("x", saved),) if saved is not None else ()) + tuple(history)
        if v_combined:  # the x0 line computes the raw output: x0 = cx x + co out
            read = param.to_x0_eps(p, math.sqrt(ac), math.sqrt(1.0 - ac))
            x0_from = (read.cx, read.co)
        else:  # it computes eps: x0 = (x - sigma eps) / alpha
            x0_from = (1.0 / math.sqrt(ac), -math.sqrt(1.0 - ac) / math.sqrt(ac))
        return PlannedStep(
            coeffs=c,
            model_time=t_model,
            history=refs,
            sigma=ve_sigma(abar(t_from)),
            sigma_next=ve_sigma(abar(t_to)),
            x0_from=x0_from,
        )

    steps: list[PlannedStep] = []
    ets: list[int] = []  # indices of the steps whose outputs are diffusers' `ets`
    for c, t in enumerate(prk):  # pseudo Runge-Kutta: groups of four from the group's first sample
        start = c // 4 * 4
        t_start = prk[start]
        t_to = t - (0 if c % 2 else T // n // 2)
        if c % 4 == 0:
            ets.append(c)
            steps.append(step(t, t_start, t_to, (1.0,), (), None))
        elif c % 4 < 3:
            steps.append(step(t, t_start, t_to, (1.0,), (), start))
        else:  # (e_1 + 2 e_2 + 2 e_3 + e_4) / 6 from the group's first sample: weights of e_4, e_3, e_2, e_1
            w = (PRK_WEIGHTS[3], PRK_WEIGHTS[2], PRK_WEIGHTS[1], PRK_WEIGHTS[0])
            steps.append(step(t, t_start, t_to, w, [("x0", c - k) for k in range(1, 4)], start))
    for k, t in enumerate(plms):  # counter = len(prk) + k, as diffusers' step_plms
        i = len(steps)
        counter = len(prk) + k
        t_from, t_to = t, t - T // n
        if counter == 1:  # skip_prk_steps' second call: back to the saved sample with (e_0 + e_1) / 2
            t_from, t_to = t + T // n, t
            steps.append(step(t, t_from, t_to, (0.5, 0.5), [("x0", ets[-1])], i - 1))
            continue
        ets = ets[-3:] + [i]
        w = PLMS_WEIGHTS[len(ets)]
        steps.append(step(t, t_from, t_to, w, [("x0", j) for j in ets[-2::-1]], None))
    options = dict(
        skip_prk_steps=skip_prk_steps,
        set_alpha_to_one=set_alpha_to_one,
        timestep_spacing=timestep_spacing,
        steps_offset=steps_offset,
        v_combined=v_combined,
    )
    return Sampler("pndm", p, tuple(steps), 1.0, torch.int64, options)
