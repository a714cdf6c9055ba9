"""FastUniPCMultistepScheduler: diffusers' UniPCMultistepScheduler with fused updates (`unipc_coeffs`, Zhao et
al. 2023): data or noise prediction, "bh1" / "bh2", any order, thresholding, `disable_corrector`, `solver_p`,
every sigma ladder.

A step is the parent's: the model output converted (to x0 with `predict_x0`, thresholded; else to eps by the
parent's own `convert_model_output`), the corrector UniC of the previous step's order (unless disabled), then
the predictor UniP (or `solver_p`'s step). Each update is a linear combination of the sample, the converted
output and earlier converted outputs: the conversion and the corrector are one fused step, the predictor another
(or one with the conversion when there is no corrector); terms beyond the fused step's MAX_HISTORY (4) history
tensors (the corrector's from order 4, the predictor's from order 6) are added by a further fused call, so every
`solver_order` the parent runs is fused. `model_outputs` holds the converted outputs, as the parent's.
"""

from __future__ import annotations

import torch
from diffusers import UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from ...ops import tensor_stats
from ...samplers.unipc import UniPCCoeffs, unipc_coeffs
from ...step import StepCoeffs
from .base import NO_STEPS_ERROR, FusedScheduler, StepStats, promoted


class FastUniPCMultistepScheduler(FusedScheduler, UniPCMultistepScheduler):
    """diffusers' UniPCMultistepScheduler with fused updates (module docstring)."""

    _parent = UniPCMultistepScheduler

    def _alpha_sigma_lambda(self, index: int) -> tuple[float, float, float]:
        """alpha, sigma and lambda = log alpha - log sigma at sigmas[index], computed as the parent does (float32)."""
        alpha, sigma = self._sigma_to_alpha_sigma_t(self._host("sigmas")[index])
        lam = torch.log(alpha) - torch.log(sigma)
        return float(alpha), float(sigma), float(lam)

    def _update(self, t_index: int, s0_index: int, prev_indices, corrector: bool) -> UniPCCoeffs:
        """The UniP / UniC weights from sigmas[s0_index] to sigmas[t_index] with history at `prev_indices`."""
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(t_index)
        alpha_s0, sigma_s0, lambda_s0 = self._alpha_sigma_lambda(s0_index)
        lambdas = tuple(self._alpha_sigma_lambda(k)[2] for k in prev_indices)
        return unipc_coeffs(
            lambda_s0,
            lambda_t,
            lambdas,
            alpha_t=alpha_t,
            sigma_t=sigma_t,
            sigma_s0=sigma_s0,
            alpha_s0=alpha_s0,
            corrector=corrector,
            solver_type=self.config.solver_type,
            predict_x0=self.predict_x0,
        )

    def _read(self, index: int, weight: float, px: float = 0.0, ph: tuple[float, ...] = ()) -> StepCoeffs:
        """The model output read at sigmas[index] as the converted output m, `weight` on m, `px` on the sample.

        x0 form: m = x0 (p0, clipped). Noise form: m = eps = ex x + eo out (pe), its x term folded into px on the
        host, where the noise-prediction updates cancel (alpha_t / alpha_s0 > 1 against -sigma_t h phi_1 ex)."""
        p = self.config.prediction_type
        if self.predict_x0 and p == "flow_prediction":  # x0 = x - sigma v, on the raw sigma (as the parent)
            return StepCoeffs(cx=1.0, co=-self._sigma(index), px=px, p0=weight, ph=ph)
        alpha, sigma, _ = self._alpha_sigma_lambda(index)
        if self.predict_x0:
            return StepCoeffs.from_prediction(p, alpha, sigma, px=px, p0=weight, ph=ph)
        read = StepCoeffs.from_prediction(p, alpha, sigma)
        return StepCoeffs(cx=read.cx, co=read.co, eo=read.eo, px=px + weight * read.ex, pe=weight, ph=ph)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """As `UniPCMultistepScheduler.step`: UniC on the previous step's prediction, then UniP."""
        self._check_config()
        if self.num_inference_steps is None:
            raise ValueError(NO_STEPS_ERROR)
        if self.step_index is None:
            self._init_step_index(timestep)
        cfg = self.config
        i = self.step_index
        use_corrector = i > 0 and i - 1 not in self.disable_corrector and self.last_sample is not None
        dtype = sample.dtype
        x = promoted(sample, model_output)
        self._check_shapes(model_output, sample)
        # the converted output for the history: the fused step's x0, or the parent's eps (the output of an eps model)
        eps = None if self.predict_x0 else self.convert_model_output(model_output, sample=sample)
        clip = self._clip() if self.predict_x0 else None

        read = None  # the fused call that read the model output (its x0 stats and clip count)
        if use_corrector:  # x_c = wt m_t + px last + w0 m0 + w1 m1 + ...
            c = self._planned(
                ("unic", i, self.this_order),
                lambda: self._update(i, i - 1, [i - 1 - k for k in range(1, self.this_order)], corrector=True),
            )
            earlier = [self.model_outputs[-1 - k] for k in range(self.this_order)]  # m0, m1, ...
            terms = list(zip((c.px, c.w0, *c.wk), (self.last_sample.to(x.dtype), *earlier)))
            read = self._combine(x, model_output, lambda ph: self._read(i, c.wt, ph=ph), terms, clip=clip)
            sample = read.prev_sample.to(dtype)  # the corrected sample
        if eps is not None:
            m_new = eps
        else:  # the x0 read by the corrector's call, or (None) by the predictor's below
            m_new = None if read is None else read.pred_x0.to(dtype)

        for k in range(cfg.solver_order - 1):
            self.model_outputs[k] = self.model_outputs[k + 1]
            self.timestep_list[k] = self.timestep_list[k + 1]
        if cfg.lower_order_final:
            this_order = min(cfg.solver_order, len(self.timesteps) - i)
        else:
            this_order = cfg.solver_order
        self.this_order = min(this_order, self.lower_order_nums + 1)
        assert self.this_order > 0  # the parent's check (its ladder can be shorter than the steps asked)
        self.last_sample = sample

        if self.solver_p:  # the parent's predictor: another scheduler's step on the raw model output
            if read is None:  # nothing has read the model output yet: a call of its own
                read = self._fused(x, model_output, self._read(i, 0.0), clip=clip)
            if m_new is None:
                m_new = read.pred_x0.to(dtype)
            self._set_newest(m_new, timestep)
            prev = self.solver_p.step(model_output, timestep, sample).prev_sample
            self._record_solver_p(timestep, prev, read)
        else:  # x' = px x + w0 m0 + w1 m1 + ...
            p = self._planned(
                ("unip", i, self.this_order),
                lambda: self._update(i + 1, i, [i - k for k in range(1, self.this_order)], corrector=False),
            )
            older = [self.model_outputs[-1 - k] for k in range(1, self.this_order)]  # m1, m2, ... (m0 is new)
            terms = list(zip(p.wk, older))
            if read is None:  # conversion and predictor in one call, on this step's sample
                last = self._combine(x, model_output, lambda ph: self._read(i, p.w0, px=p.px, ph=ph), terms, clip=clip)
                read = last
                m_new = last.pred_x0.to(dtype) if m_new is None else m_new
            else:  # on the corrected sample, with the converted output
                y = sample.to(x.dtype)
                last = self._combine(y, m_new, lambda ph: StepCoeffs(co=1.0, px=p.px, p0=p.w0, ph=ph), terms)
            self._set_newest(m_new, timestep)
            self._record(timestep, last, read)
            prev = last.prev_sample.to(dtype)

        if self.lower_order_nums < cfg.solver_order:
            self.lower_order_nums += 1
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def _set_newest(self, m_new: torch.Tensor, timestep) -> None:
        self.model_outputs[-1] = m_new
        self.timestep_list[-1] = timestep

    def _record_solver_p(self, timestep, prev: torch.Tensor, read) -> None:
        """Stats of a step whose prediction `solver_p` made: its own when it is a Fast* scheduler."""
        inner = getattr(self.solver_p, "last_step_stats", None)
        sample = inner.sample if inner is not None else tensor_stats(prev, backend=self.fused_backend)
        self.last_step_stats = StepStats(
            step_index=self._step_index,
            timestep=timestep,
            clipped=read.clipped,
            numel=prev.numel(),
            sample=sample,
            x0=read.x0_stats,
        )
