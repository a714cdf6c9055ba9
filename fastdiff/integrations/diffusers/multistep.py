"""What the DPM-Solver family of Fast* schedulers shares: the (alpha, sigma) of a level, the model output read as x0
as their `convert_model_output` reads it, and the converted outputs they keep (`model_outputs`) (`SolverScheduler`:
DPMSolverSinglestep and the multistep ones); the multistep parents' rule for a step's order and their warm-up count
(`MultistepScheduler`: DPMSolverMultistep, DEISMultistep, EDMDPMSolverMultistep).

The multistep parents pick a step's order as DPMSolverMultistepScheduler.step does: warm-up from 1
(`lower_order_nums`), the last step first order (`euler_at_final`, `lower_order_final` below 15 steps, or a final
sigma of 0) and the one before at most second order (`lower_order_final` below 15 steps); DEIS has only
`lower_order_final`.
"""

from __future__ import annotations

import torch

from ...samplers.dpmsolver import flow_alpha_sigma
from ...samplers.plan import ve_to_vp
from ...step import StepCoeffs
from .base import FusedScheduler


class SolverScheduler(FusedScheduler):
    """Levels, the x0 read and the kept outputs of the DPM-Solver family (module docstring), on host values."""

    def _alpha_sigma(self, index: int) -> tuple[float, float]:
        """(alpha, sigma) of sigmas[index]: the flow path's (1 - s, s) or the VP pair of a VE sigma."""
        s = self._sigma(index)
        return flow_alpha_sigma(s) if self.config.get("use_flow_sigmas", False) else ve_to_vp(s)

    def _read_x0(self, index: int, *, recompute_eps: bool = False, **terms) -> StepCoeffs:
        """The model output read as x0 (and eps) at sigmas[index], as the parents' `convert_model_output`, with the
        update's `terms` (px, p0, pe, ph). "flow_prediction" is x0 = x - s out on the raw sigma s whatever the
        ladder, and eps = (x - alpha x0c) / s (DEIS's); `recompute_eps`: eps from the clipped x0 for every type."""
        alpha, sigma = self._alpha_sigma(index)
        if self.config.prediction_type == "flow_prediction":
            s = self._sigma(index)
            return StepCoeffs(cx=1.0, co=-s, ex=1.0 / s, e0=-alpha / s, **terms)
        return StepCoeffs.from_prediction(
            self.config.prediction_type, alpha, sigma, recompute_eps=recompute_eps, **terms
        )

    def _keep(self, newest: torch.Tensor) -> None:
        """`newest` appended to `model_outputs` (the oldest one dropped), as the parents do at every step."""
        for k in range(self.config.solver_order - 1):
            self.model_outputs[k] = self.model_outputs[k + 1]
        self.model_outputs[-1] = newest


class MultistepScheduler(SolverScheduler):
    """The multistep parents' order rule and warm-up (module docstring)."""

    def _order(self, i: int, n: int) -> int:
        """The parent's order of step i of n (module docstring)."""
        cfg = self.config
        lower_order_final = (i == n - 1) and (
            cfg.get("euler_at_final", False)
            or (cfg.lower_order_final and n < 15)
            or cfg.get("final_sigmas_type") == "zero"
        )
        lower_order_second = (i == n - 2) and cfg.lower_order_final and n < 15
        if cfg.solver_order == 1 or self.lower_order_nums < 1 or lower_order_final:
            return 1
        if cfg.solver_order == 2 or self.lower_order_nums < 2 or lower_order_second:
            return 2
        return 3

    def _history(self, order: int) -> tuple[torch.Tensor, ...]:
        """The earlier converted outputs a step of `order` uses, most recent first."""
        return tuple(self.model_outputs[-k] for k in range(1, order))

    def _push(self, newest: torch.Tensor) -> None:
        """The parent's state after a step: `newest` kept, the warm-up counted."""
        self._keep(newest)
        if self.lower_order_nums < self.config.solver_order:
            self.lower_order_nums += 1
