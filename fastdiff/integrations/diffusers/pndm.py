"""FastPNDMScheduler: diffusers' PNDMScheduler (PRK and PLMS, Liu et al. 2022; the Stable Diffusion 1.x default) with
one fused transfer per step (`pndm_coeffs`: eq. 9 applied to the combinations of eq. 12 / 13).

The parent keeps its raw model outputs (`ets`) and combines them before reading the combination as a noise
prediction (for v_prediction at the transfer's start sample: `pndm_coeffs(v_combined=True)`). So a step is one
generic step whose output term is e' = sum_k w_k o_k: this step's output, and earlier outputs as history (`ets`
for PLMS; the Runge-Kutta group's outputs for its fourth stage), plus the saved sample a transfer starts from
when that is not this step's (`cur_sample`): at most four history tensors. Stages 1-3 of a Runge-Kutta group
keep their outputs for the fourth instead of the parent's running sum `cur_model_output`, which is computed when
read (and assigning it replaces the kept terms, as the parent's arithmetic would).

The step's x0 line holds the x0 of this step's output at the level the model saw (`last_step_stats.x0`); the
combination reaches the update through the eps line, which carries the output itself.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from diffusers import PNDMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from ... import param
from ...samplers.pndm import PLMS_WEIGHTS, PRK_WEIGHTS, pndm_coeffs
from ...step import StepCoeffs
from .base import NO_STEPS_ERROR, FusedScheduler, promoted


def output_in_eps_line(coeffs: StepCoeffs, read: param.X0EpsMap) -> StepCoeffs:
    """`pndm_coeffs(v_combined=True)` reads the model output o itself in its x0 line (x0 = o, weight p0): the same
    update with o carried by the eps line (eps = o, weight pe), which frees the x0 line for the output's x0."""
    return replace(coeffs, cx=read.cx, co=read.co, ex=0.0, eo=1.0, e0=0.0, pe=coeffs.p0, p0=0.0)


class FastPNDMScheduler(FusedScheduler, PNDMScheduler):
    """diffusers' PNDMScheduler with fused `step_prk` / `step_plms` (module docstring); `step` is the parent's
    dispatch to them."""

    _parent = PNDMScheduler

    # ---- the parent's running Runge-Kutta sum, kept as its terms -------------------------------------------

    @property
    def cur_model_output(self):
        """The parent's 0 + 1/6 o_1 + 1/3 o_2 + 1/3 o_3, computed from the kept terms when read."""
        total = 0
        for weight, output in self.__dict__.get("_fast_prk_terms", ()):
            total = total + weight * output
        return total

    @cur_model_output.setter
    def cur_model_output(self, value) -> None:
        self.__dict__["_fast_prk_terms"] = [] if isinstance(value, (int, float)) and value == 0 else [(1.0, value)]

    # ---- the coefficients: host maths of the timesteps -------------------------------------------------------

    def _alpha_cumprod(self, timestep) -> float:
        """alphas_cumprod at a timestep, `final_alpha_cumprod` below 0 (the parent's `_get_prev_sample`)."""
        if timestep < 0:
            return float(self.final_alpha_cumprod)
        return float(self._host("alphas_cumprod")[timestep])

    def _coeffs(self, t_from, t_to, t_model, weights, from_saved: bool) -> StepCoeffs:
        """The transfer from timestep t_from to t_to of e' = sum_k weights[k] o_k, o_0 the output the model made at
        t_model (module docstring)."""
        p = self.config.prediction_type
        c = pndm_coeffs(
            self._alpha_cumprod(t_from), self._alpha_cumprod(t_to), weights, p, from_saved=from_saved, v_combined=True
        )
        ac = self._alpha_cumprod(t_model)
        return output_in_eps_line(c, param.to_x0_eps(p, math.sqrt(ac), math.sqrt(1.0 - ac)))

    def _transfer(self, sample, start, outputs, t_from, t_to, t_model, timestep, return_dict: bool):
        """One fused transfer from `start` (this step's sample, or a saved one) of the (weight, output) terms; t_from,
        t_to and t_model are the host values of the timesteps (`timestep`: the step's, as recorded)."""
        self._check_shapes(outputs[0][1], sample)
        saved = start is not sample
        weights = tuple(w for w, _ in outputs)
        # planned per its timesteps, weights and start: every input of the maths besides the config and schedule
        key = ("pndm", t_from, t_to, t_model, weights, saved)
        coeffs = self._planned(key, self._coeffs, t_from, t_to, t_model, weights, saved)
        history = ((start,) if saved else ()) + tuple(o for _, o in outputs[1:])
        x = promoted(sample, outputs[0][1])
        r = self._fused(x, outputs[0][1], coeffs, history=history)
        self._record(timestep, r)
        self.counter += 1
        if not return_dict:
            return (r.prev_sample,)
        return SchedulerOutput(prev_sample=r.prev_sample)

    # ---- the steps -----------------------------------------------------------------------------------------

    def step_prk(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `PNDMScheduler.step_prk`: stage counter % 4 of a pseudo Runge-Kutta step (eq. 13), each a transfer from
        the group's first sample; the fourth with e' = (o_1 + 2 o_2 + 2 o_3 + o_4) / 6."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        t = self._host_timestep(timestep)
        tk = self._key(t)  # host arithmetic on the value (a plan key), not on a 0-d tensor
        half = self.config.num_train_timesteps // self.num_inference_steps // 2
        t_to = tk - (0 if self.counter % 2 else half)
        t_from = self.prk_timesteps[self.counter // 4 * 4]
        stage = self.counter % 4
        terms = self.__dict__.setdefault("_fast_prk_terms", [])
        if stage == 0:
            self.ets.append(model_output)
            self.cur_sample = sample
        if stage < 3:
            outputs = [(1.0, model_output)]
            terms.append((PRK_WEIGHTS[stage], model_output))
        else:
            outputs = [(PRK_WEIGHTS[3], model_output), *terms]
            self.cur_model_output = 0
        start = self.cur_sample if self.cur_sample is not None else sample
        return self._transfer(sample, start, outputs, t_from, t_to, tk, t, return_dict)

    def step_plms(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `PNDMScheduler.step_plms`: the pseudo linear multistep step (eq. 12) of the latest outputs, with the
        parent's warm-up (counter 1 after skip_prk_steps: back to the saved sample with (o_0 + o_1) / 2)."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        if not self.config.skip_prk_steps and len(self.ets) < 3:
            raise ValueError(
                f"{self.__class__} can only be run AFTER scheduler has been run "
                "in 'prk' mode for at least 12 iterations "
                "See: https://github.com/huggingface/diffusers/blob/main/src/diffusers/pipelines/pipeline_pndm.py "
                "for more information."
            )
        t = self._host_timestep(timestep)
        tk = self._key(t)  # host arithmetic on the value (a plan key), not on a 0-d tensor
        gap = self.config.num_train_timesteps // self.num_inference_steps
        t_from, t_to = tk, tk - gap
        if self.counter != 1:
            self.ets = self.ets[-3:]
            self.ets.append(model_output)
        else:
            t_from, t_to = tk + gap, tk
        start = sample
        if len(self.ets) == 1 and self.counter == 0:
            outputs = [(1.0, model_output)]
            self.cur_sample = sample
        elif len(self.ets) == 1 and self.counter == 1:
            outputs = [(0.5, model_output), (0.5, self.ets[-1])]
            start, self.cur_sample = self.cur_sample, None
        else:  # the parent's combination of the latest 2, 3 or 4 kept outputs (`ets[-1]` is this step's)
            k = len(self.ets) if len(self.ets) in (2, 3) else 4
            outputs = list(zip(PLMS_WEIGHTS[k], (self.ets[-j] for j in range(1, k + 1))))
        return self._transfer(sample, start, outputs, t_from, t_to, tk, t, return_dict)
