"""The validated description of one generic step that every backend's `fused_step` receives.

`ops.fused_step` builds it after all checks (shapes, dtypes, devices, overlaps); a backend only reads
it and writes `prev_out` (and `x0_out`). All tensors share x's shape, dtype and device, except
`threshold_scale` (float32 [B]) and the coefficient table (float64 [steps, len(COEFF_FIELDS)]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..step import MAX_HISTORY


@dataclass
class StepLaunch:
    x: torch.Tensor
    out: torch.Tensor  # model output (the conditional one under CFG)
    uncond: torch.Tensor | None  # CFG: o = uncond + guidance (out - uncond)
    guidance: float
    noise: torch.Tensor | None  # z; None when no term uses it
    history: tuple[torch.Tensor, ...]  # h_k, at most MAX_HISTORY
    # coefficients (step.COEFF_FIELDS order): a tuple of floats, or None with `table`/`table_index`
    coeffs: tuple[float, ...] | None
    table: torch.Tensor | None
    table_index: torch.Tensor | None
    # clipping: static bounds (None = unbounded), or a per-sample dynamic threshold s_b
    clip_lo: float | None
    clip_hi: float | None
    threshold_scale: torch.Tensor | None
    prev_out: torch.Tensor
    x0_out: torch.Tensor | None
    want_stats: bool
    philox: object | None = None  # fastdiff.step.PhiloxNoise: draw z in the kernel (then noise is None)

    def __post_init__(self):
        assert len(self.history) <= MAX_HISTORY
        assert (self.coeffs is None) != (self.table is None)

    @property
    def clip_mode(self) -> int:
        """0: none, 1: static [lo, hi], 2: dynamic per-sample threshold."""
        if self.threshold_scale is not None:
            return 2
        return 1 if (self.clip_lo is not None or self.clip_hi is not None) else 0

    @property
    def batch_inner(self) -> int:
        """Elements per sample (dim 0) — the stride of the per-sample threshold in a flat index."""
        n0 = self.x.shape[0] if self.x.dim() else 1
        return self.x.numel() // n0 if n0 else 0
