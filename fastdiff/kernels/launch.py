"""The validated description of one generic step that every backend's `fused_step` receives.

`ops.fused_step` builds it after all checks (shapes, dtypes, devices, overlaps); a backend only reads
it and writes `prev_out` (and `x0_out`). All tensors share x's shape, dtype and device, except
`threshold_scale` (float32 [B]) and the coefficient table (float64 [steps, len(COEFF_FIELDS)]).
"""

from __future__ import annotations

import torch

from ..step import MAX_HISTORY


class StepLaunch:
    """A validated step (a plain class with slots: built once per step on the hot path)."""

    __slots__ = (
        "x", "out", "uncond", "guidance", "noise", "history", "coeffs", "table", "table_index", "clip_lo",
        "clip_hi", "threshold_scale", "prev_out", "x0_out", "want_stats", "philox",
    )  # fmt: skip

    def __init__(
        self,
        x: torch.Tensor,
        out: torch.Tensor,  # model output (the conditional one under CFG)
        uncond: torch.Tensor | None,  # CFG: o = uncond + guidance (out - uncond)
        guidance: float,
        noise: torch.Tensor | None,  # z; None when no term uses it
        history: tuple[torch.Tensor, ...],  # h_k, at most MAX_HISTORY
        # coefficients (step.COEFF_FIELDS order): a tuple of floats, or None with `table`/`table_index`
        coeffs: tuple[float, ...] | None,
        table: torch.Tensor | None,
        table_index: torch.Tensor | None,
        # clipping: static bounds (None = unbounded), or a per-sample dynamic threshold s_b
        clip_lo: float | None,
        clip_hi: float | None,
        threshold_scale: torch.Tensor | None,
        prev_out: torch.Tensor,
        x0_out: torch.Tensor | None,
        want_stats: bool,
        philox: object | None = None,  # fastdiff.step.PhiloxNoise: draw z in the kernel (then noise is None)
    ):
        assert len(history) <= MAX_HISTORY and (coeffs is None) != (table is None)
        self.x, self.out, self.uncond, self.guidance, self.noise = x, out, uncond, guidance, noise
        self.history, self.coeffs, self.table, self.table_index = history, coeffs, table, table_index
        self.clip_lo, self.clip_hi, self.threshold_scale = clip_lo, clip_hi, threshold_scale
        self.prev_out, self.x0_out, self.want_stats, self.philox = prev_out, x0_out, want_stats, philox

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
