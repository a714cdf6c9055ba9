"""The oracle: the maths of every kernel in plain float64 PyTorch, written to be read, not to be fast.

Tests compare every backend against these functions on fresh random inputs. Nothing here is clever:
the generic step is the five lines of `step.py` in the unfolded form (eps computed explicitly), the
stats are two-pass float64 formulas over the finite elements.
"""

from __future__ import annotations

import math

import torch

from .step import ClipRange, DynamicThreshold, StepCoeffs

F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# stats


def tensor_stats(x: torch.Tensor) -> dict:
    """All fields of API.md section 1 for one tensor, as Python numbers (float64 arithmetic)."""
    v = x.detach().to("cpu", F64).reshape(-1)
    finite = v[torch.isfinite(v)]
    n = finite.numel()
    nan = math.nan
    return {
        "count": v.numel(),
        "nan_count": int(torch.isnan(v).sum()),
        "posinf_count": int((v == math.inf).sum()),
        "neginf_count": int((v == -math.inf).sum()),
        "zero_count": int((v == 0).sum()),
        "min": float(finite.min()) if n else nan,
        "max": float(finite.max()) if n else nan,
        "mean": float(finite.mean()) if n else nan,
        "std": float(finite.std(correction=1)) if n >= 2 else nan,
        "absmax": float(finite.abs().max()) if n else nan,
        "l2": float(finite.norm()) if n else 0.0,
    }


def tensor_stats_rows(x: torch.Tensor) -> dict:
    """Per-sample stats (dim=0): one entry per index of dim 0, as lists."""
    rows = [tensor_stats(x[i]) for i in range(x.shape[0])]
    keys = tensor_stats(x.new_zeros(0)).keys()
    return {k: [r[k] for r in rows] for k in keys}


def pair_stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    """cos, norm_ratio, mse, max_abs_diff of two same-shape tensors (float64; NaN propagates)."""
    a = a.detach().to("cpu", F64).reshape(-1)
    b = b.detach().to("cpu", F64).reshape(-1)
    if a.numel() == 0:
        return {"cos": math.nan, "norm_ratio": math.nan, "mse": math.nan, "max_abs_diff": math.nan}
    na, nb = a.norm(), b.norm()
    d = a - b
    return {
        "cos": float((a * b).sum() / (na * nb)),
        "norm_ratio": float(na / nb),
        "mse": float((d * d).mean()),
        "max_abs_diff": float(d.abs().max()),
    }


# --------------------------------------------------------------------------------------------------
# the generic step


def dynamic_threshold_scale(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen's per-sample s = clamp(quantile(|x0_b|, ratio), 1, max_value), shape [B]."""
    flat = x0.to(F64).reshape(x0.shape[0], -1).abs()
    return torch.quantile(flat, ratio, dim=1).clamp(min=1.0, max=max_value)


def generic_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    coeffs: StepCoeffs,
    *,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    clip: ClipRange | DynamicThreshold | None = None,
    history: tuple[torch.Tensor, ...] = (),
    noise: torch.Tensor | None = None,
    threshold_scale: torch.Tensor | None = None,
    compute_dtype: torch.dtype = F64,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(x', x0 after clipping, number of clipped elements), all in float64.

    `threshold_scale` overrides the dynamic threshold's per-sample s (to compare a kernel fed the
    same s, since a quantile of low-precision values is itself rounded). `compute_dtype` runs the same
    lines in another dtype: that is "PyTorch's own same-dtype result" of the low-precision rule.
    """
    F64 = compute_dtype  # noqa: N806 - the oracle is float64 unless asked otherwise
    x = x.to(F64)
    o = model_output.to(F64)
    if uncond is not None:  # classifier-free guidance: u + w (c - u)
        u = uncond.to(F64)
        o = u + guidance_scale * (o - u)
    z = noise.to(F64) if noise is not None else torch.zeros_like(x)

    def term(c: float, t: torch.Tensor) -> torch.Tensor:  # a zero coefficient means the term is absent
        return c * t if c != 0 else torch.zeros_like(x)

    x0 = term(coeffs.cx, x) + term(coeffs.co, o) + term(coeffs.cn, z)

    if isinstance(clip, ClipRange):
        clipped = int(((x0 < clip.lo) | (x0 > clip.hi)).sum())
        x0 = x0.clamp(clip.lo, clip.hi)
    elif isinstance(clip, DynamicThreshold):
        s = threshold_scale if threshold_scale is not None else dynamic_threshold_scale(x0, clip.ratio, clip.max_value)
        s = s.to(F64).reshape((-1,) + (1,) * (x0.dim() - 1))
        clipped = int((x0.abs() > s).sum())
        x0 = torch.maximum(torch.minimum(x0, s), -s) / s
    else:
        clipped = 0

    eps = term(coeffs.ex, x) + term(coeffs.eo, o) + term(coeffs.e0, x0) + term(coeffs.en, z)

    x_prev = term(coeffs.px, x) + term(coeffs.p0, x0) + term(coeffs.pe, eps)
    if len(history) != len(coeffs.ph):
        raise ValueError(f"{len(history)} history tensors for {len(coeffs.ph)} history coefficients")
    for ph, h in zip(coeffs.ph, history):
        x_prev = x_prev + term(ph, h.to(F64))
    x_prev = x_prev + term(coeffs.pn, z)
    return x_prev, x0, clipped


def step_magnitude(
    x: torch.Tensor,
    model_output: torch.Tensor,
    coeffs: StepCoeffs,
    *,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    history: tuple[torch.Tensor, ...] = (),
    noise: torch.Tensor | None = None,
    **_ignored,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element sums of |terms| of x' and x0: the scale of the rounding error any float evaluation makes.

    The same lines with every coefficient and input replaced by its absolute value (clipping, which only
    shrinks x0, is left out so this bounds the clipped case too). Tests use it as an error floor:
    a sum evaluated in a dtype with unit roundoff u is off by up to about k u sum|terms|.
    """
    from dataclasses import replace

    absc = replace(
        coeffs,
        **{f: abs(getattr(coeffs, f)) for f in ("cx", "co", "cn", "ex", "eo", "e0", "en", "px", "p0", "pe", "pn")},
        ph=tuple(abs(v) for v in coeffs.ph),
    )
    a = lambda t: None if t is None else t.to(F64).abs()  # noqa: E731
    ax, ao = a(x), a(model_output)
    if uncond is not None:  # |u + w (c - u)| <= |1 - w| |u| + |w| |c|
        ao = abs(1 - guidance_scale) * a(uncond) + abs(guidance_scale) * ao
    prev, x0, _ = generic_step(ax, ao, absc, history=tuple(a(h) for h in history), noise=a(noise))
    return prev.nan_to_num(posinf=0.0), x0.nan_to_num(posinf=0.0)
