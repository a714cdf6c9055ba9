"""Comparisons against the float64 oracle (fastdiff.reference), shared by every backend's tests.

Rules (STYLE.md, flash-attention's): counts exact; float64-accumulated moments within a relative
tolerance; low-precision step outputs within 2x the error PyTorch itself makes in the same dtype.
"""

from __future__ import annotations

import math

import torch

from fastdiff import reference

# mean / std within 1e-6 relative of float64 arithmetic (API.md); min/max are exact input values.
STATS_RTOL = 1e-6


def _close(got: float, want: float, rtol: float, atol: float = 0.0) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    if math.isinf(want):
        return got == want
    return abs(got - want) <= atol + rtol * abs(want)


def assert_stats_match(got: dict, want: dict, *, rtol: float = STATS_RTOL, scale: float | None = None, where: str = ""):
    """`got` (a TensorStats.to_dict() row) equals the oracle's dict: counts exact, floats within rtol.

    The mean of data spread around 0 has no meaningful relative error; its tolerance is taken relative
    to `scale` (default: the std, or absmax), as for any float64 sum.
    """
    for k in ("count", "nan_count", "posinf_count", "neginf_count", "zero_count"):
        assert got[k] == want[k], f"{where}{k}: got {got[k]}, want {want[k]}"
    for k in ("min", "max", "absmax"):
        assert _close(got[k], want[k], 1e-12), f"{where}{k}: got {got[k]!r}, want {want[k]!r}"
    spread = scale if scale is not None else (want["absmax"] if not math.isnan(want["absmax"]) else 0.0)
    assert _close(got["mean"], want["mean"], rtol, atol=rtol * spread), (
        f"{where}mean: got {got['mean']!r}, want {want['mean']!r}"
    )
    # float64 arithmetic resolves a std only down to ~u |x| (torch.std of equal values is not always 0)
    std_atol = max(1e-300, 16 * 2.0**-53 * (want["absmax"] if not math.isnan(want["absmax"]) else 0.0))
    assert _close(got["std"], want["std"], rtol, atol=std_atol), f"{where}std: got {got['std']!r}, want {want['std']!r}"
    assert _close(got["l2"], want["l2"], rtol, atol=1e-300), f"{where}l2: got {got['l2']!r}, want {want['l2']!r}"


def assert_tensor_stats(stats, x: torch.Tensor, **kw):
    assert_stats_match(stats.to_dict(), reference.tensor_stats(x), **kw)


def assert_rows_match(stats, x: torch.Tensor, **kw):
    got = stats.to_dict()
    want = reference.tensor_stats_rows(x)
    for i in range(x.shape[0]):
        assert_stats_match(
            {k: v[i] for k, v in got.items()}, {k: v[i] for k, v in want.items()}, where=f"row {i}: ", **kw
        )


def assert_pair_match(got: dict, want: dict, rtol: float = 1e-9):
    for k in ("cos", "norm_ratio", "mse", "max_abs_diff"):
        assert _close(got[k], want[k], rtol, atol=1e-300), f"{k}: got {got[k]!r}, want {want[k]!r}"


def low_precision_ok(
    got: torch.Tensor,
    oracle: torch.Tensor,
    torch_same_dtype: torch.Tensor,
    *,
    magnitude: torch.Tensor | None = None,
    floor: float | None = None,
):
    """Kernel error <= 2x PyTorch's own same-dtype error, plus a rounding floor; NaN/Inf must agree exactly.

    The floor is elementwise 4 u sum|terms| when `magnitude` (reference.step_magnitude) is given — the size
    of the rounding error of any evaluation order in a dtype with unit roundoff u — else u max|oracle|.
    Returns (ok, message).
    """
    g = got.detach().to("cpu", torch.float64)
    o = oracle.detach().to("cpu", torch.float64)
    t = torch_same_dtype.detach().to("cpu", torch.float64)
    # the oracle's non-finite positions must be reproduced exactly
    o_nonfinite = ~torch.isfinite(o)
    if not torch.equal(torch.isnan(g), torch.isnan(o)):
        return False, "NaN positions differ from the oracle"
    inf_mask = torch.isinf(o)
    if not torch.equal(g[inf_mask], o[inf_mask]):
        return False, "Inf values differ from the oracle"
    fin = ~o_nonfinite & torch.isfinite(g)
    if not torch.equal(fin, ~o_nonfinite):
        return False, "finite oracle values became non-finite"
    if fin.sum() == 0:
        return True, ""
    u = torch.finfo(got.dtype).eps / 2 if got.dtype.is_floating_point else 0.0
    if magnitude is not None:
        floor_t = 4 * u * magnitude.detach().to("cpu", torch.float64)
    else:
        floor_t = torch.full_like(o, u * float(o[fin].abs().max()) if floor is None else floor)
    err = (g - o).abs()
    tfin = fin & torch.isfinite(t)
    err_t = float((t - o)[tfin].abs().max()) if tfin.any() else 0.0
    excess = (err - 2 * err_t - floor_t)[fin]
    ok = bool((excess <= 0).all())
    i = int(excess.argmax())
    return ok, (
        f"kernel error {float(err[fin][i]):.3g} vs 2 x torch same-dtype error {2 * err_t:.3g} "
        f"+ floor {float(floor_t[fin][i]):.3g} at the worst element"
    )
