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

import numpy as np
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


def host_arrays(*tensors: torch.Tensor) -> list[np.ndarray]:
    """NumPy arrays of tensors on one device, read with one host sync: CPU tensors as views (no copy), device
    tensors as the words of one concatenated buffer and one copy (one launch and one transfer on a GPU)."""
    if tensors[0].device.type == "cpu":
        return [t.detach().resolve_neg().numpy() for t in tensors]
    words = [t.detach().contiguous().view(torch.int64) if t.dtype == torch.float64 else t for t in tensors]
    flat = torch.cat([w.reshape(-1) for w in words]).cpu().numpy()
    out, at = [], 0
    for t, w in zip(tensors, words):
        part = flat[at : at + w.numel()].reshape(tuple(t.shape))
        out.append(part.view(np.float64) if t.dtype == torch.float64 else part)
        at += w.numel()
    return out


def _scalar_fields(counts: list[int], moments: list[float]) -> dict:
    """TensorStats.to_dict() of one raw row, in Python floats: the operations of the device fields (IEEE float64,
    so the same numbers), without a NumPy call per field."""
    count, nan, posinf, neginf, zero = counts
    vmin, vmax, mean, m2 = moments
    n = count - nan - posinf - neginf
    m2 = m2 if not m2 < 0.0 else 0.0  # clamp(min=0), NaN kept
    some = n > 0
    return {
        "count": count,
        "nan_count": nan,
        "posinf_count": posinf,
        "neginf_count": neginf,
        "zero_count": zero,
        "min": vmin if some else math.nan,
        "max": vmax if some else math.nan,
        "mean": mean if some else math.nan,
        "std": math.sqrt(m2 / max(n - 1, 1)) if n >= 2 else math.nan,
        "absmax": max(abs(vmin), abs(vmax)) if some else math.nan,
        "l2": math.sqrt(m2 + n * (mean * mean)),
    }


def tensor_fields(c: np.ndarray, m: np.ndarray) -> dict[str, np.ndarray]:
    """The TensorStats fields of raw rows on the host (counts [..., 5] int64, moments [..., 4] float64): the
    operations of the device fields in float64. `to_dict` and the probe's records both derive them here."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        n = c[..., 0] - c[..., 1] - c[..., 2] - c[..., 3]
        some = n > 0
        nf = n.astype(np.float64)
        m2 = np.maximum(m[..., 3], 0.0)
        out = {f: c[..., i] for i, f in enumerate(COUNT_FIELDS)}
        out["min"] = np.where(some, m[..., 0], np.nan)
        out["max"] = np.where(some, m[..., 1], np.nan)
        out["mean"] = np.where(some, m[..., 2], np.nan)
        out["std"] = np.where(nf >= 2, np.sqrt(m2 / np.maximum(nf - 1, 1.0)), np.nan)
        out["absmax"] = np.where(some, np.maximum(np.abs(m[..., 0]), np.abs(m[..., 1])), np.nan)
        out["l2"] = np.sqrt(m2 + nf * (m[..., 2] * m[..., 2]))
        return out


class _Stats:
    """Shared behaviour: lazily derived device-side fields; `to_dict()` reads the raw accumulators once
    (`host_arrays`) and derives the fields on the host with the same float64 operations as the device
    fields (IEEE: the same numbers), instead of one small device op per field."""

    _fields: tuple[str, ...] = ()
    _int_fields: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain Python numbers (lists for per-row / multi-tensor results); exactly one host sync."""
        raise NotImplementedError

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

    def to_dict(self) -> dict:
        """Plain Python numbers (lists for per-row / multi-tensor results); exactly one host sync."""
        c, m = host_arrays(self.counts, self.moments)
        if c.ndim == 1:
            return _scalar_fields(c.tolist(), m.tolist())
        fields = tensor_fields(c, m)
        return {f: fields[f].tolist() for f in self._fields}

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

    def to_dict(self) -> dict:
        """Plain Python numbers (lists for per-row results); exactly one host sync."""
        (r,) = host_arrays(self.raw)
        fields = pair_fields(r)
        return {f: fields[f].tolist() for f in self._fields}

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


def pair_fields(r: np.ndarray) -> dict[str, np.ndarray]:
    """The PairStats fields of raw pair rows [..., 6] on the host (the device fields' float64 operations)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return {
            "cos": r[..., 1] / (np.sqrt(r[..., 2]) * np.sqrt(r[..., 3])),
            "norm_ratio": np.sqrt(r[..., 2] / r[..., 3]),
            "mse": r[..., 4] / r[..., 0],
            "max_abs_diff": np.where(r[..., 0] > 0, r[..., 5], np.nan),
        }


def empty_pair_raw(shape=(), device=None) -> torch.Tensor:
    return torch.zeros(*shape, len(PAIR_RAW_FIELDS), dtype=torch.float64, device=device)


def merge_pair_raw(raw: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Sums add; the max-abs-diff takes the max (NaN-propagating)."""
    sums = raw[..., :5].sum(dim=dim)
    mx = raw[..., 5].amax(dim=dim) if raw.shape[dim] else torch.zeros_like(sums[..., 0])
    # amax ignores nothing: a NaN in any part propagates, as in torch.max
    return torch.cat([sums, mx.unsqueeze(-1)], dim=-1)
