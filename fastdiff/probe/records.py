"""Host side of a flush: raw parts -> merged, derived, strict-JSON-ready records.

Parts with the same (step, name) — the same name logged twice in a step (micro-batches), or on
several ranks — merge into one record exactly as if their tensors had been concatenated:
tensor stats with `fastdiff.stats.reduce_raw` (exact counts and min/max, Chan's merge in float64),
pair stats by adding their sums (max for max |a - b|), per-sample rows by concatenation; scalars
are averaged (the mean loss over micro-batches / ranks). All of it is vectorised over the records.

A record is a dict in the JSONL layout of API.md section 3: step, name, kind, role, then the fields
of section 1 (`value` for scalars), non-finite numbers as None; per-sample records add
`per_sample: {field: [...]}` and histogram-carrying ones `hist: {min, max, counts}`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter

import numpy as np
import torch

from ..stats import (
    COUNT_FIELDS,
    PAIR_FIELDS,
    TENSOR_FIELDS,
    PairStats,
    TensorStats,
    merge_pair_raw,
    reduce_raw,
)
from .buffer import PAIR_WORDS, TENSOR_WORDS, Part

Snapshot = tuple[list[Part], list[np.ndarray]]  # the parts of one rank and its buffers' words


def _clean(values: list) -> list:
    """Strict JSON: NaN and +-Inf become None."""
    return [v if v is None or math.isfinite(v) else None for v in values]


def _gather_rows(snapshots: Sequence[Snapshot], parts: list[tuple[int, Part]], width: int) -> np.ndarray:
    """The rows of `parts`, in order, as one [sum of rows, width] int64 table (vectorised per buffer)."""
    rows = np.fromiter((p.rows for _, p in parts), dtype=np.int64, count=len(parts))
    offsets = np.fromiter((p.offset for _, p in parts), dtype=np.int64, count=len(parts))
    first_row = np.cumsum(rows) - rows  # where each part's rows start in the table
    table = np.empty((int(rows.sum()), width), dtype=np.int64)
    by_buffer: dict[tuple[int, int], list[int]] = {}
    for i, (rank, part) in enumerate(parts):
        by_buffer.setdefault((rank, part.buffer), []).append(i)
    for (rank, buffer), index in by_buffer.items():
        sel = np.asarray(index)
        n = rows[sel]
        within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)  # row number inside its part
        word_start = np.repeat(offsets[sel], n) + width * within
        table[np.repeat(first_row[sel], n) + within] = snapshots[rank][1][buffer][
            word_start[:, None] + np.arange(width)
        ]
    return table


def _merge_ranges(table: torch.Tensor, starts: np.ndarray, lengths: np.ndarray, merge) -> torch.Tensor:
    """One merged row per (start, length) range of `table` rows; ranges of one row pass through unchanged."""
    out = table[torch.from_numpy(starts)].clone() if len(starts) else table[:0].clone()
    for m in np.unique(lengths):
        if m == 1:
            continue
        sel = np.nonzero(lengths == m)[0]
        idx = torch.from_numpy(starts[sel][None, :] + np.arange(m)[:, None])  # [m, groups]
        out[torch.from_numpy(sel)] = merge(table[idx])
    return out


def _tensor_merge(rows: torch.Tensor) -> torch.Tensor:  # [m, G, 9] -> [G, 9]
    counts, moments = reduce_raw(rows[..., :5], rows[..., 5:].view(torch.float64), dim=0)
    return torch.cat([counts, moments.view(torch.int64)], dim=-1)


def _tensor_fields(rows: torch.Tensor) -> dict[str, list]:
    stats = TensorStats(rows[:, :5].contiguous(), rows[:, 5:].contiguous().view(torch.float64))
    return {
        f: getattr(stats, f).tolist() if f in COUNT_FIELDS else _clean(getattr(stats, f).tolist())
        for f in TENSOR_FIELDS
    }


def _pair_fields(rows: torch.Tensor) -> dict[str, list]:
    stats = PairStats(rows)
    return {f: _clean(getattr(stats, f).tolist()) for f in PAIR_FIELDS}


def _hist(part: Part, words: np.ndarray) -> dict:
    lo, hi = (float(v) for v in words[part.offset + 5 : part.offset + 7].view(np.float64))
    finite = math.isfinite(lo) and math.isfinite(hi)
    counts = words[part.hist_offset : part.hist_offset + part.bins].tolist()
    return {"min": lo if finite else None, "max": hi if finite else None, "counts": counts}


def build_records(snapshots: Sequence[Snapshot]) -> list[dict]:
    """Merge the parts of one or more ranks into records, ordered by step then by first appearance."""
    groups: dict[tuple[int, str], list[tuple[int, Part]]] = {}
    for rank, (parts, _) in enumerate(snapshots):
        for part in parts:
            group = groups.setdefault((part.step, part.name), [])
            if group and (group[0][1].kind, group[0][1].per_sample) != (part.kind, part.per_sample):
                first = group[0][1]
                raise ValueError(
                    f"probe record {part.name!r} at step {part.step} was logged as {first.kind}"
                    f"{' (per sample)' if first.per_sample else ''} and as {part.kind}"
                    f"{' (per sample)' if part.per_sample else ''} (on different ranks?); one name, one kind"
                )
            group.append((rank, part))
    keys = sorted(groups, key=itemgetter(0))  # stable: first appearance within a step

    records: dict[tuple[int, str], dict] = {}
    for kind, width, fields in (("tensor", TENSOR_WORDS, TENSOR_FIELDS), ("pair", PAIR_WORDS, PAIR_FIELDS)):
        kind_keys = [k for k in keys if groups[k][0][1].kind == kind]
        if not kind_keys:
            continue
        parts = [rp for key in kind_keys for rp in groups[key]]
        table = _gather_rows(snapshots, parts, width)
        lengths = np.fromiter((sum(p.rows for _, p in groups[k]) for k in kind_keys), np.int64, len(kind_keys))
        starts = np.cumsum(lengths) - lengths
        per_sample = any(groups[k][0][1].per_sample for k in kind_keys)
        if kind == "tensor":
            rows = torch.from_numpy(table)
            whole = _tensor_fields(_merge_ranges(rows, starts, lengths, _tensor_merge))
            per_row = _tensor_fields(rows) if per_sample else None
        else:
            rows = torch.from_numpy(table.view(np.float64))
            whole = _pair_fields(_merge_ranges(rows, starts, lengths, lambda r: merge_pair_raw(r, dim=0)))
            per_row = _pair_fields(rows) if per_sample else None
        keys_out = ("step", "name", "kind", "role", *fields)
        roles = [groups[k][0][1].role for k in kind_keys]
        columns = zip(*zip(*kind_keys), [kind] * len(kind_keys), roles, *(whole[f] for f in fields))
        for i, (key, values) in enumerate(zip(kind_keys, columns)):
            rec = records[key] = dict(zip(keys_out, values))
            group = groups[key]
            if group[0][1].per_sample:
                s, e = int(starts[i]), int(starts[i] + lengths[i])
                rec["per_sample"] = {f: per_row[f][s:e] for f in fields}
            for rank, part in group:
                if part.hist_offset >= 0:
                    rec["hist"] = _hist(part, snapshots[rank][1][part.buffer])
                    break

    for key in keys:
        if key in records:
            continue
        values = []
        for rank, part in groups[key]:
            if part.buffer < 0:
                values.append(float(part.value))
            else:
                values.append(float(snapshots[rank][1][part.buffer][part.offset : part.offset + 1].view(np.float64)[0]))
        value = math.fsum(values) / len(values) if all(map(math.isfinite, values)) else sum(values) / len(values)
        records[key] = {"step": key[0], "name": key[1], "kind": "scalar", "role": groups[key][0][1].role}
        records[key]["value"] = value if math.isfinite(value) else None
    return [records[k] for k in keys]
