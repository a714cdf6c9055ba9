"""Host side of a flush: raw parts -> merged, derived, strict-JSON-ready records.

Parts with the same (step, name) — the same name logged twice in a step (micro-batches), or on
several ranks — merge into one record exactly as if their tensors had been concatenated:
tensor stats with `fastdiff.stats.reduce_raw` (exact counts and min/max, Chan's merge in float64),
pair stats by adding their sums (max for max |a - b|), per-sample rows by concatenation; scalars
are averaged (the mean loss over micro-batches / ranks). All of it is vectorised over the records.

A record is a dict in the JSONL layout of API.md section 3: step, name, kind, role, then the fields
of section 1 (`value` for scalars), non-finite numbers as None; per-sample records add
`per_sample: {field: [...]}` and histogram-carrying ones `hist: {min, max, counts}`. A flush's
`Records` keep them column-wise: the JSONL sink writes its text straight from the columns (most of
a flush's cost was building and encoding dicts one at a time); other sinks get the dicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from operator import itemgetter

import numpy as np
import torch

from ..stats import (
    COUNT_FIELDS,
    FLOAT_FIELDS,
    PAIR_FIELDS,
    PairStats,
    TensorStats,
    merge_pair_raw,
    reduce_raw,
)
from .buffer import PAIR_WORDS, TENSOR_WORDS, Part
from .encode import json_string, jsonl_rows, strict_json

Snapshot = tuple[list[Part], list[np.ndarray]]  # the parts of one rank and its buffers' words


FIELDS = {"tensor": (COUNT_FIELDS, FLOAT_FIELDS), "pair": ((), PAIR_FIELDS), "scalar": ((), ("value",))}


def _clean(values: list) -> list:
    """Strict JSON: NaN and +-Inf become None."""
    return [v if math.isfinite(v) else None for v in values]


class Block:
    """The records of one kind, column-wise: int fields [R, I] int64 and float fields [R, F] float64
    (non-finite kept as they are; None in dicts, null in JSON); extras: row -> per_sample / hist."""

    def __init__(self, kind: str, keys: list[tuple[int, str]], roles: list, ints: np.ndarray, floats: np.ndarray):
        self.kind, self.keys, self.roles = kind, keys, roles
        self.int_fields, self.float_fields = FIELDS[kind]
        self.ints, self.floats = ints, floats
        self.extras: dict[int, dict] = {}

    def field_lists(self, ints: np.ndarray, floats: np.ndarray) -> dict[str, list]:
        """{field: a column of values} in field order, as Python numbers (None when not finite)."""
        out = {f: col for f, col in zip(self.int_fields, ints.T.tolist())}
        out.update((f, _clean(col)) for f, col in zip(self.float_fields, floats.T.tolist()))
        return out

    def dicts(self, rows=None) -> list[dict]:
        """The records of `rows` (default: all) as dicts."""
        rows = range(len(self.keys)) if rows is None else list(rows)
        fields = self.int_fields + self.float_fields
        values = zip(*self.ints[rows].T.tolist(), *map(_clean, self.floats[rows].T.tolist()))
        out = []
        for i, row in zip(rows, values):
            step, name = self.keys[i]
            rec = {"step": step, "name": name, "kind": self.kind, "role": self.roles[i], **dict(zip(fields, row))}
            rec.update(self.extras.get(i, ()))
            out.append(rec)
        return out

    def lines(self) -> list[str]:
        """One JSONL line per record, written from the columns (the extras' records: the generic encoder)."""
        lines = jsonl_rows(
            self.kind,
            np.fromiter((s for s, _ in self.keys), np.int64, len(self.keys)),
            [json_string(n) for _, n in self.keys],
            [json_string(r) for r in self.roles],
            self.int_fields,
            self.ints,
            self.float_fields,
            self.floats,
        )
        for i, rec in zip(self.extras, self.dicts(self.extras)):  # per-sample rows, histograms
            lines[i] = strict_json(rec) + "\n"
        return lines


class Records(Sequence):
    """The records of one flush in step order: dicts (the API.md section 3 layout) built on first use,
    and the JSONL text built column-wise (`jsonl()`), which never builds them."""

    def __init__(self, blocks: list[Block], order: list[tuple[int, int]]):
        self.blocks, self.order = blocks, order

    @cached_property
    def _dicts(self) -> list[dict]:
        per_block = [b.dicts() for b in self.blocks]
        return [per_block[b][i] for b, i in self.order]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index):
        return self._dicts[index]

    def jsonl(self) -> str:
        lines = [b.lines() for b in self.blocks]
        return "".join([lines[b][i] for b, i in self.order])


def _gather_rows(
    snapshots: Sequence[Snapshot], parts: list[tuple[int, Part]], rows: np.ndarray, width: int
) -> np.ndarray:
    """The rows of `parts` (rows[i]: how many part i has), in order, as one [sum of rows, width] int64 table
    (vectorised per buffer)."""
    offsets = np.fromiter((p.offset for _, p in parts), dtype=np.int64, count=len(parts))
    places = {(rank, p.buffer) for rank, p in parts}
    if len(places) == 1 and len(parts) == int(rows.sum()):  # one buffer, one row each: one gather
        ((rank, buffer),) = places
        return snapshots[rank][1][buffer][offsets[:, None] + np.arange(width)]
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
    if len(lengths) == len(table):  # every range is one row (no name twice in a step, no per-sample rows)
        return table
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


def _tensor_columns(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Count fields int64 [R, 5] and float fields float64 [R, 6] of raw tensor rows [R, 9]."""
    stats = TensorStats(rows[:, :5].contiguous(), rows[:, 5:].contiguous().view(torch.float64))
    floats = torch.stack([getattr(stats, f) for f in FLOAT_FIELDS], dim=1)
    return stats.counts.numpy(), floats.numpy()


def _pair_columns(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    stats = PairStats(rows)
    return np.empty((rows.shape[0], 0), np.int64), torch.stack([getattr(stats, f) for f in PAIR_FIELDS], dim=1).numpy()


def _hist(part: Part, words: np.ndarray) -> dict:
    lo, hi = (float(v) for v in words[part.offset + 5 : part.offset + 7].view(np.float64))
    finite = math.isfinite(lo) and math.isfinite(hi)
    counts = words[part.hist_offset : part.hist_offset + part.bins].tolist()
    return {"min": lo if finite else None, "max": hi if finite else None, "counts": counts}


def _scalar_values(snapshots: Sequence[Snapshot], groups: list[list[tuple[int, Part]]]) -> np.ndarray:
    """The value of each scalar record: the mean of its parts (host values, or words of the buffers)."""
    parts = [rp for group in groups for rp in group]
    values = np.empty(len(parts), np.float64)
    on_device: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for j, (rank, part) in enumerate(parts):
        if part.buffer < 0:
            values[j] = part.value
        else:
            positions, offsets = on_device.setdefault((rank, part.buffer), ([], []))
            positions.append(j)
            offsets.append(part.offset)
    for (rank, buffer), (positions, offsets) in on_device.items():
        values[positions] = snapshots[rank][1][buffer].view(np.float64)[offsets]
    if len(parts) == len(groups):
        return values
    means, start = np.empty(len(groups), np.float64), 0
    for i, group in enumerate(groups):
        vals = values[start : start + len(group)].tolist()
        start += len(group)
        means[i] = math.fsum(vals) / len(vals) if all(map(math.isfinite, vals)) else sum(vals) / len(vals)
    return means


def build_records(snapshots: Sequence[Snapshot]) -> Records:
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

    blocks: list[Block] = []
    where: dict[tuple[int, str], tuple[int, int]] = {}  # key -> (block, row)
    first = [groups[k][0][1] for k in keys]  # each record's first part: its kind, role, per_sample
    for kind, width, columns, merge in (
        ("tensor", TENSOR_WORDS, _tensor_columns, _tensor_merge),
        ("pair", PAIR_WORDS, _pair_columns, lambda r: merge_pair_raw(r, dim=0)),
    ):
        chosen = [i for i, f in enumerate(first) if f.kind == kind]
        if not chosen:
            continue
        kind_keys = [keys[i] for i in chosen]
        parts = [rp for key in kind_keys for rp in groups[key]]
        part_rows = np.fromiter((p.rows for _, p in parts), np.int64, len(parts))
        table = _gather_rows(snapshots, parts, part_rows, width)
        sizes = np.fromiter((len(groups[k]) for k in kind_keys), np.int64, len(kind_keys))
        lengths = part_rows if len(parts) == len(kind_keys) else np.add.reduceat(part_rows, np.cumsum(sizes) - sizes)
        starts = np.cumsum(lengths) - lengths
        rows = torch.from_numpy(table if kind == "tensor" else table.view(np.float64))
        ints, floats = columns(_merge_ranges(rows, starts, lengths, merge))
        block = Block(kind, kind_keys, [first[i].role for i in chosen], ints, floats)
        base = len(blocks)
        where.update((key, (base, i)) for i, key in enumerate(kind_keys))
        for i in (i for i, c in enumerate(chosen) if first[c].per_sample):  # their rows' fields only
            s, e = int(starts[i]), int(starts[i] + lengths[i])
            block.extras[i] = {"per_sample": block.field_lists(*columns(rows[s:e]))}
        for i, key in enumerate(kind_keys if any(p.hist_offset >= 0 for _, p in parts) else ()):
            for rank, part in groups[key]:
                if part.hist_offset >= 0:
                    block.extras.setdefault(i, {})["hist"] = _hist(part, snapshots[rank][1][part.buffer])
                    break
        blocks.append(block)

    scalar_keys = [k for k in keys if k not in where]
    if scalar_keys:
        values = _scalar_values(snapshots, [groups[k] for k in scalar_keys])
        roles = [groups[k][0][1].role for k in scalar_keys]
        where.update((key, (len(blocks), i)) for i, key in enumerate(scalar_keys))
        blocks.append(Block("scalar", scalar_keys, roles, np.empty((len(values), 0), np.int64), values[:, None]))
    return Records(blocks, [where[k] for k in keys])
