"""The `torch` backend: the oracle's maths in eager PyTorch, float64 accumulation, any device.

Always available. Large inputs are processed in chunks (views, so expanded tensors of > 2^31 elements
are never materialised) whose raw results merge with Chan's formula. No host sync anywhere: every
count and moment stays a device tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from ..stats import empty_pair_raw, empty_raw, merge_pair_raw, negated_raw, reduce_raw
from .launch import StepLaunch
from .memory import aligned_runs

F64 = torch.float64
CHUNK = 1 << 22  # elements converted to float64 at once


def _chunk_index(shape: tuple[int, ...], limit: int = CHUNK) -> Iterator[tuple]:
    """Index tuples that cover a tensor of `shape` exactly once, each selecting <= `limit` elements."""
    numel = math.prod(shape)
    if numel <= limit or not shape:
        yield ()
        return
    inner = numel // shape[0]
    if inner <= limit:
        rows = limit // inner
        for start in range(0, shape[0], rows):
            yield (slice(start, start + rows),)
        return
    for i in range(shape[0]):
        for rest in _chunk_index(shape[1:], limit):
            yield (i,) + rest


def _raw_rows(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw stats of each row of a float64 matrix [R, N]."""
    finite = torch.isfinite(c)
    n = finite.sum(dim=1)
    counts = torch.stack(
        [
            torch.full_like(n, c.shape[1]),
            torch.isnan(c).sum(dim=1),
            (c == math.inf).sum(dim=1),
            (c == -math.inf).sum(dim=1),
            (c == 0).sum(dim=1),
        ],
        dim=-1,
    )
    zero = torch.zeros((), dtype=F64, device=c.device)
    cf = torch.where(finite, c, zero)
    nf = n.to(F64).clamp(min=1.0)
    mean = cf.sum(dim=1) / nf
    dev = torch.where(finite, c - mean[:, None], zero)
    # corrected two-pass: m2 = sum d^2 - (sum d)^2 / n  (Bjorck); the correction removes the mean's rounding
    m2 = (dev * dev).sum(dim=1) - dev.sum(dim=1) ** 2 / nf
    mn = (
        torch.where(finite, c, torch.full_like(c, math.inf)).amin(dim=1)
        if c.shape[1]
        else zero.expand(c.shape[0]) + math.inf
    )
    mx = (
        torch.where(finite, c, torch.full_like(c, -math.inf)).amax(dim=1)
        if c.shape[1]
        else zero.expand(c.shape[0]) - math.inf
    )
    moments = torch.stack([mn, mx, mean, m2.clamp(min=0)], dim=-1)
    return counts, moments


def _raw_whole(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw stats of all elements of x, chunk by chunk."""
    if x.numel() == 0:
        return empty_raw(device=x.device)
    parts = [_raw_rows(x[idx].to(F64).reshape(1, -1)) for idx in _chunk_index(tuple(x.shape))]
    if len(parts) == 1:
        return parts[0][0][0], parts[0][1][0]
    return reduce_raw(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), dim=0)


def tensor_stats(x: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not per_sample:
        return _raw_whole(x)
    rows = x.shape[0]
    inner = x.numel() // rows if rows else 0
    if rows == 0:
        return empty_raw((0,), device=x.device)
    if inner == 0:
        return empty_raw((rows,), device=x.device)
    if inner > CHUNK:
        parts = [_raw_whole(x[i]) for i in range(rows)]
        return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
    step = max(1, CHUNK // inner)
    parts = [_raw_rows(x[i : i + step].to(F64).reshape(-1, inner)) for i in range(0, rows, step)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def multi_tensor_stats(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_raw_whole(x) for x in xs]
    return torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])


def snapshot_runs(params: list[torch.Tensor], snapshot: torch.Tensor) -> list[torch.Tensor]:
    """The run of each parameter in the watch's snapshot (laid out by memory.aligned_runs), shaped like it."""
    offsets, total = aligned_runs([p.numel() for p in params], snapshot.element_size())
    if snapshot.dim() != 1 or snapshot.numel() != total or not snapshot.is_contiguous():
        raise ValueError(
            f"the snapshot must be a contiguous 1-d tensor of {total} elements (memory.aligned_runs of the "
            f"parameters); got shape {tuple(snapshot.shape)}"
        )
    return [snapshot[o : o + p.numel()].view(p.shape) for o, p in zip(offsets, params)]


def update_stats(params: list[torch.Tensor], snapshot: torch.Tensor, stats=multi_tensor_stats):
    """Stats of each parameter w (rows 0..P) and of its update w - s (rows P..2P), then s = w; for the
    probe's watch (the C++ backend does it in one pass). `snapshot`: one contiguous tensor holding each
    parameter's run at its `memory.aligned_runs` offset. s first takes s - w = -(w - s) exactly (IEEE
    subtraction is antisymmetric) in place, whose stats flip into those of w - s: no allocation.
    `stats`: the multi_tensor_stats of the calling backend."""
    if not params:
        return torch.empty(0, 5, dtype=torch.int64), torch.empty(0, 4, dtype=torch.float64)
    snapshots = snapshot_runs(params, snapshot)
    torch._foreach_sub_(snapshots, params)
    counts, moments = stats(list(params) + list(snapshots))
    n = len(params)
    up_counts, up_moments = negated_raw(counts[n:], moments[n:])
    torch._foreach_copy_(snapshots, params)
    return torch.cat([counts[:n], up_counts]), torch.cat([moments[:n], up_moments])


def _pair_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float64 [R, 6] pair accumulators of row-matrices a, b [R, N]."""
    d = a - b
    n = torch.full((a.shape[0],), float(a.shape[1]), dtype=F64, device=a.device)
    mx = d.abs().amax(dim=1) if a.shape[1] else torch.zeros_like(n)
    return torch.stack([n, (a * b).sum(1), (a * a).sum(1), (b * b).sum(1), (d * d).sum(1), mx], dim=-1)


def _pair_whole(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.numel() == 0:
        return empty_pair_raw(device=a.device)
    parts = [
        _pair_rows(a[idx].to(F64).reshape(1, -1), b[idx].to(F64).reshape(1, -1)) for idx in _chunk_index(tuple(a.shape))
    ]
    return merge_pair_raw(torch.cat(parts), dim=0)


def pair_stats(a: torch.Tensor, b: torch.Tensor, per_sample: bool) -> torch.Tensor:
    if not per_sample:
        return _pair_whole(a, b)
    rows = a.shape[0]
    inner = a.numel() // rows if rows else 0
    if rows == 0 or inner == 0:
        return empty_pair_raw((rows,), device=a.device)
    if inner > CHUNK:
        return torch.stack([_pair_whole(a[i], b[i]) for i in range(rows)])
    step = max(1, CHUNK // inner)
    return torch.cat(
        [
            _pair_rows(a[i : i + step].to(F64).reshape(-1, inner), b[i : i + step].to(F64).reshape(-1, inner))
            for i in range(0, rows, step)
        ]
    )


# --------------------------------------------------------------------------------------------------
# the generic step


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 arithmetic for fp16/bf16/fp32 storage, fp64 for fp64."""
    return F64 if dtype == F64 else torch.float32


def _term(c, t):
    """c * t, absent when the coefficient is exactly 0 (so 0 * inf does not invent a NaN)."""
    if isinstance(c, torch.Tensor):  # device-side coefficient (CoeffTable): select without a sync
        return torch.where(c != 0, c * t, torch.zeros((), dtype=t.dtype, device=t.device))
    return c * t if c != 0 else None


def _sum(*terms):
    total = None
    for t in terms:
        if t is not None:
            total = t if total is None else total + t
    return total


def step_math(L: StepLaunch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x', x0c, clipped) in the compute dtype: the lines of step.py in order."""
    ct = compute_dtype(L.x.dtype)
    if L.coeffs is not None:
        cx, co, cn, ex, eo, e0, en, px, p0, pe, pn, *ph = L.coeffs
    else:  # device-side table row: 0-d tensors, no sync
        cx, co, cn, ex, eo, e0, en, px, p0, pe, pn, *ph = L.table[L.table_index].to(ct).unbind()
    x = L.x.to(ct)
    o = L.out.to(ct)
    if L.uncond is not None:
        u = L.uncond.to(ct)
        o = u + L.guidance * (o - u)
    z = L.noise.to(ct) if L.noise is not None else None
    zero = torch.zeros_like(x)

    x0 = _sum(_term(cx, x), _term(co, o), _term(cn, z) if z is not None else None)
    x0 = zero if x0 is None else x0
    if L.clip_mode == 1:
        lo = -math.inf if L.clip_lo is None else L.clip_lo
        hi = math.inf if L.clip_hi is None else L.clip_hi
        clipped = ((x0 < lo) | (x0 > hi)).sum()
        x0c = x0.clamp(lo, hi)
    elif L.clip_mode == 2:
        s = L.threshold_scale.to(ct).reshape((-1,) + (1,) * (x0.dim() - 1))
        clipped = (x0.abs() > s).sum()
        x0c = torch.maximum(torch.minimum(x0, s), -s) / s
    else:
        clipped = torch.zeros((), dtype=torch.int64, device=x.device)
        x0c = x0

    eps = _sum(_term(ex, x), _term(eo, o), _term(e0, x0c), _term(en, z) if z is not None else None)
    eps = zero if eps is None else eps
    xp = _sum(
        _term(px, x),
        _term(p0, x0c),
        _term(pe, eps),
        *(_term(ph[k], h.to(ct)) for k, h in enumerate(L.history)),
        _term(pn, z) if z is not None else None,
    )
    return (zero if xp is None else xp), x0c, clipped


def fused_step(L: StepLaunch):
    if L.philox is not None:
        raise NotImplementedError(
            "backend 'torch' cannot generate noise inside the step (noise=PhiloxNoise); "
            "use backend='triton' or pass noise as a tensor"
        )
    xp, x0c, clipped = step_math(L)
    L.prev_out.copy_(xp)
    x0_stored = x0c.to(L.x.dtype)
    if L.x0_out is not None:
        L.x0_out.copy_(x0_stored)
    if not L.want_stats:
        return clipped, None
    (pc, pm), (xc, xm) = _raw_whole(L.prev_out), _raw_whole(x0_stored)
    return clipped, (torch.stack([pc, xc]), torch.stack([pm, xm]))
