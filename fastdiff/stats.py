"""Result types of the stats ops and the exact merge of partial results (blocks, chunks, ranks, steps).

Every backend produces the same *raw accumulators*; the public fields derive from them lazily, on the
device, so that nothing syncs the host until `to_dict()` or `.item()`:

    counts  int64   [..., 5]  count, nan_count, posinf_count, neginf_count, zero_count
    moments float64 [..., 4]  min, max, mean, m2      over the finite elements only

with n = count - nan - posinf - neginf finite elements, mean their mean and m2 = sum (x - mean)^2.
With no finite element the raw moments are (+inf, -inf, 0, 0): the identity of the merge below.

Partial results merge exactly with Chan et al.'s formula (never E[x^2] - E[x]^2, which cancels
catastrophically on data far from zero):

    n = sum n_i,   mean = sum n_i mean_i / n,   m2 = sum m2_i + sum n_i (mean_i - mean)^2

Stored together (the probe's record buffer, the C++ kernels' outputs), a tensor's raw accumulators are
one *raw row* of RAW_WORDS = 9 int64 words: the 5 counts, then the 4 moments' float64 bits
(`split_raw_rows`).

Pair stats keep  n, sum a b, sum a^2, sum b^2, sum (a - b)^2, max |a - b|  (float64 [..., 6]): sums and a
max merge by adding and taking the max.

Derived fields: std = sqrt(m2 / (n - 1)) (unbiased, NaN below 2 finite elements), l2 = sqrt(m2 + n mean^2)
(a sum of two non-negative terms, so no cancellation), absmax = max(|min|, |max|).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property

import torch

COUNT_FIELDS = ("count", "nan_count", "posinf_count", "neginf_count", "zero_count")
MOMENT_FIELDS = ("min", "max", "mean", "m2")
FLOAT_FIELDS = ("min", "max", "mean", "std", "absmax", "l2")
TENSOR_FIELDS = COUNT_FIELDS + FLOAT_FIELDS
PAIR_RAW_FIELDS = ("n", "dot", "sum_a2", "sum_b2", "sum_d2", "max_abs_diff")
PAIR_FIELDS = ("cos", "norm_ratio", "mse", "max_abs_diff")


RAW_WORDS = 9  # a raw row: 5 counts, then the 4 moments as float64 bits


def split_raw_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts [..., 5], moments [..., 4]) views of raw rows int64 [..., 9] (no copy)."""
    return rows[..., :5], rows.view(torch.float64)[..., 5:]


def write_raw_rows(rows: torch.Tensor, counts: torch.Tensor, moments: torch.Tensor) -> None:
    """Raw stats (counts [..., 5], moments [..., 4]) into raw rows int64 [R, 9] (device copies)."""
    c, m = split_raw_rows(rows)
    c.copy_(counts.reshape(c.shape))
    m.copy_(moments.reshape(m.shape))


def empty_raw(shape=(), device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw accumulators of no elements: the identity of `merge_raw`."""
    counts = torch.zeros(*shape, 5, dtype=torch.int64, device=device)
    moments = torch.zeros(*shape, 4, dtype=torch.float64, device=device)
    moments[..., 0] = math.inf
    moments[..., 1] = -math.inf
    return counts, moments


def finite_count(counts: torch.Tensor) -> torch.Tensor:
    return counts[..., 0] - counts[..., 1] - counts[..., 2] - counts[..., 3]


def reduce_raw(counts: torch.Tensor, moments: torch.Tensor, dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge partial results along `dim` (Chan et al., generalised to k parts). Device-side, no sync."""
    dim = dim % counts.dim()
    n_i = finite_count(counts).to(torch.float64)
    n = n_i.sum(dim=dim, keepdim=True)
    safe_n = n.clamp(min=1.0)
    mean_i, m2_i = moments[..., 2], moments[..., 3]
    mean = (n_i * mean_i).sum(dim=dim, keepdim=True) / safe_n
    m2 = m2_i.sum(dim=dim, keepdim=True) + (n_i * (mean_i - mean) ** 2).sum(dim=dim, keepdim=True)
    out_moments = torch.stack(
        [
            moments[..., 0].amin(dim=dim, keepdim=True),
            moments[..., 1].amax(dim=dim, keepdim=True),
            torch.where(n > 0, mean, torch.zeros_like(mean)),
            torch.where(n > 0, m2, torch.zeros_like(m2)),
        ],
        dim=-1,
    ).squeeze(dim)
    return counts.sum(dim=dim), out_moments


def merge_raw(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]):
    """Chan's pairwise merge of two raw results of the same shape."""
    return reduce_raw(torch.stack([a[0], b[0]]), torch.stack([a[1], b[1]]), dim=0)


def negated_raw(counts: torch.Tensor, moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw stats of -x from those of x ([..., 5], [..., 4]): min/max swap sign and place, the mean flips,
    the +-inf counts swap. 0.0 - v rather than -v keeps zeros +0.0 (the zeros of a difference are +0.0).
    """
    c = torch.stack([counts[..., 0], counts[..., 1], counts[..., 3], counts[..., 2], counts[..., 4]], dim=-1)
    m = torch.stack([0.0 - moments[..., 1], 0.0 - moments[..., 0], 0.0 - moments[..., 2], moments[..., 3]], dim=-1)
    return c, m


def _nan_where(cond: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return value.masked_fill(~cond, math.nan)


class _Stats:
    """Shared behaviour: lazily derived device-side fields, one-sync `to_dict()`."""

    _fields: tuple[str, ...] = ()
    _int_fields: tuple[str, ...] = ()

    def _stacked(self) -> torch.Tensor:
        return torch.stack([getattr(self, f).to(torch.float64) for f in self._fields], dim=-1)

    def to_dict(self) -> dict:
        """Plain Python numbers (lists for per-row / multi-tensor results); exactly one host sync."""
        values = self._stacked().cpu().tolist()  # the one sync

        def row(vals):
            return {f: (int(v) if f in self._int_fields else float(v)) for f, v in zip(self._fields, vals)}

        if self._stacked_dim() == 0:
            return row(values)
        cols = list(zip(*values)) if values else [()] * len(self._fields)
        return {
            f: [int(v) for v in col] if f in self._int_fields else [float(v) for v in col]
            for f, col in zip(self._fields, cols)
        }

    def _stacked_dim(self) -> int:
        return getattr(self, self._fields[0]).dim()

    @property
    def shape(self) -> torch.Size:
        return getattr(self, self._fields[0]).shape

    @property
    def device(self) -> torch.device:
        return getattr(self, self._fields[0]).device

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class TensorStats(_Stats):
    """Statistics of a tensor (API.md section 1). Fields are tensors on the input's device.

    Scalars for a whole tensor; shape [N] for `dim=0` (one row per index of dim 0) and for
    `multi_tensor_stats` (one row per tensor).
    """

    _fields = TENSOR_FIELDS
    _int_fields = COUNT_FIELDS

    def __init__(self, counts: torch.Tensor, moments: torch.Tensor):
        if counts.dtype != torch.int64 or moments.dtype != torch.float64:
            raise TypeError("TensorStats needs int64 counts and float64 moments")
        if counts.shape[-1] != 5 or moments.shape[-1] != 4 or counts.shape[:-1] != moments.shape[:-1]:
            raise ValueError(f"raw stats of shapes {tuple(counts.shape)} / {tuple(moments.shape)} do not match")
        self.counts = counts
        self.moments = moments

    @property
    def raw(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.counts, self.moments

    count = property(lambda self: self.counts[..., 0])
    nan_count = property(lambda self: self.counts[..., 1])
    posinf_count = property(lambda self: self.counts[..., 2])
    neginf_count = property(lambda self: self.counts[..., 3])
    zero_count = property(lambda self: self.counts[..., 4])

    @cached_property  # every float field needs it: computed once per TensorStats
    def finite_count(self) -> torch.Tensor:
        return finite_count(self.counts)

    @cached_property
    def _some_finite(self) -> torch.Tensor:
        return self.finite_count > 0

    @property
    def min(self) -> torch.Tensor:
        return _nan_where(self._some_finite, self.moments[..., 0])

    @property
    def max(self) -> torch.Tensor:
        return _nan_where(self._some_finite, self.moments[..., 1])

    @property
    def mean(self) -> torch.Tensor:
        return _nan_where(self._some_finite, self.moments[..., 2])

    @property
    def std(self) -> torch.Tensor:
        n = self.finite_count.to(torch.float64)
        return _nan_where(n >= 2, (self.moments[..., 3].clamp(min=0) / (n - 1).clamp(min=1)).sqrt())

    @property
    def absmax(self) -> torch.Tensor:
        return _nan_where(self._some_finite, torch.maximum(self.moments[..., 0].abs(), self.moments[..., 1].abs()))

    @property
    def l2(self) -> torch.Tensor:
        n = self.finite_count.to(torch.float64)
        return (self.moments[..., 3].clamp(min=0) + n * self.moments[..., 2] ** 2).sqrt()

    def merge(self, other: TensorStats) -> TensorStats:
        """Stats of the two inputs concatenated (exact counts, Chan merge of the moments)."""
        return TensorStats(*merge_raw(self.raw, other.raw))

    def __getitem__(self, idx) -> TensorStats:
        return TensorStats(self.counts[idx], self.moments[idx])

    @staticmethod
    def stack(items: Sequence[TensorStats]) -> TensorStats:
        return TensorStats(torch.stack([s.counts for s in items]), torch.stack([s.moments for s in items]))


class PairStats(_Stats):
    """Agreement of two tensors: cos, norm_ratio (|a|/|b|), mse, max_abs_diff (float64 tensors)."""

    _fields = PAIR_FIELDS

    def __init__(self, raw: torch.Tensor):
        if raw.dtype != torch.float64 or raw.shape[-1] != len(PAIR_RAW_FIELDS):
            raise ValueError(
                f"raw pair stats must be float64 [..., {len(PAIR_RAW_FIELDS)}]; got {raw.dtype} {tuple(raw.shape)}"
            )
        self.raw = raw

    @property
    def n(self) -> torch.Tensor:
        return self.raw[..., 0]

    @property
    def cos(self) -> torch.Tensor:
        """sum ab / sqrt(sum a^2 sum b^2); NaN when either norm is 0 (the angle is undefined)."""
        return self.raw[..., 1] / (self.raw[..., 2].sqrt() * self.raw[..., 3].sqrt())

    @property
    def norm_ratio(self) -> torch.Tensor:
        return (self.raw[..., 2] / self.raw[..., 3]).sqrt()

    @property
    def mse(self) -> torch.Tensor:
        return self.raw[..., 4] / self.raw[..., 0]

    @property
    def max_abs_diff(self) -> torch.Tensor:
        return _nan_where(self.raw[..., 0] > 0, self.raw[..., 5])

    def merge(self, other: PairStats) -> PairStats:
        return PairStats(merge_pair_raw(torch.stack([self.raw, other.raw]), dim=0))

    def __getitem__(self, idx) -> PairStats:
        return PairStats(self.raw[idx])


def empty_pair_raw(shape=(), device=None) -> torch.Tensor:
    return torch.zeros(*shape, len(PAIR_RAW_FIELDS), dtype=torch.float64, device=device)


def merge_pair_raw(raw: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Sums add; the max-abs-diff takes the max (NaN-propagating)."""
    sums = raw[..., :5].sum(dim=dim)
    mx = raw[..., 5].amax(dim=dim) if raw.shape[dim] else torch.zeros_like(sums[..., 0])
    # amax ignores nothing: a NaN in any part propagates, as in torch.max
    return torch.cat([sums, mx.unsqueeze(-1)], dim=-1)
