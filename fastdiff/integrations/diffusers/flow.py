"""FastFlowMatchEulerDiscreteScheduler: diffusers' FlowMatchEulerDiscreteScheduler with a fused `step()`
(`flow_euler_coeffs`, rectified flow: x' = x + (s' - s) v, or (1 - s') x0 + s' z when stochastic)."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput

from ...samplers import flow_euler_coeffs
from .base import FusedScheduler
from .euler import check_float_timestep


class FastFlowMatchEulerDiscreteScheduler(FusedScheduler, FlowMatchEulerDiscreteScheduler):
    """diffusers' FlowMatchEulerDiscreteScheduler with a fused `step()`, `invert_sigmas` (flow times rising from
    0 to 1, as Mochi) included. `per_token_timesteps` (per-token noise levels) is run by the parent's own step."""

    _parent = FlowMatchEulerDiscreteScheduler

    def _coeffs(self, i: int):
        """(the step from sigma_i to sigma_{i+1}, whether it draws noise) for the config's sampling mode."""
        stochastic = bool(self.config.stochastic_sampling)
        return flow_euler_coeffs(self._sigma(i), self._sigma(i + 1), "flow", stochastic), stochastic

    def step(
        self,
        model_output: torch.FloatTensor,
        timestep: float | torch.FloatTensor,
        sample: torch.FloatTensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | None = None,
        per_token_timesteps: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple:
        """As `FlowMatchEulerDiscreteScheduler.step`: x' = x + (s' - s) v, or (1 - s') x0 + s' z (stochastic).

        (Like the parent, s_churn, s_tmin, s_tmax and s_noise are accepted and unused.)
        """
        self._check_config()
        check_float_timestep(timestep, "FlowMatchEulerDiscreteScheduler")
        if per_token_timesteps is not None:
            self.last_step_stats = None
            return super().step(
                model_output,
                timestep,
                sample,
                generator=generator,
                per_token_timesteps=per_token_timesteps,
                return_dict=return_dict,
            )
        if self.step_index is None:
            self._init_step_index(timestep)
        self._check_shapes(model_output, sample)
        i = self.step_index
        coeffs, stochastic = self._planned(("flow", i), self._coeffs, i)
        x = sample if sample.dtype == torch.float32 else sample.to(torch.float32)
        noise = self._noise_like(x, generator) if stochastic else None
        # the parent returns no x0: the kernel keeps it in its block buffers for the stats (no write)
        r = self._fused(x, model_output, coeffs, noise=noise, return_x0=False)
        self._record(timestep, r)
        self._step_index += 1
        prev = r.prev_sample if model_output.dtype == torch.float32 else r.prev_sample.to(model_output.dtype)
        if not return_dict:
            return (prev,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev)
