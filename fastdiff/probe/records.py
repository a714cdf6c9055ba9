"""Host side of a flush: raw parts -> merged, derived, strict-JSON-ready records.

Parts with the same (step, name) — the same name logged twice in a step (micro-batches), or on
several ranks — merge into one record exactly as if their tensors had been concatenated:
tensor stats with `fastdiff.stats.reduce_raw` (exact counts and min/max, Chan's merge in float64),
pair stats by adding their sums (max for max |a - b|), per-sample rows by concatenation; scalars
are averaged (the mean loss over micro-batches / ranks), and such a record carries `logs`: the number
of calls averaged (so a count logged at every sampling step of one record step can be summed back).
All of it is vectorised over the records.

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
from itertools import chain
from operator import itemgetter

import numpy as np
import torch

from ..stats import (
    COUNT_FIELDS,
    FLOAT_FIELDS,
    PAIR_FIELDS,
    merge_pair_raw,
    pair_fields,
    reduce_raw,
    split_raw_rows,
    tensor_fields,
    write_raw_rows,
)
from .buffer import PAIR_WORDS, TENSOR_WORDS, Part
from .encode import json_string, jsonl_rows, strict_json

Snapshot = tuple[list[Part], list[np.ndarray]]  # the parts of one rank and its buffers' words


KINDS = ("tensor", "pair", "scalar")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
FIELDS = {"tensor": (COUNT_FIELDS, FLOAT_FIELDS), "pair": ((), PAIR_FIELDS), "scalar": ((), ("value",))}


def _clean(values: list) -> list:
    """Strict JSON: NaN and +-Inf become None."""
    return [v if math.isfinite(v) else None for v in values]


class Block:
    """The records of one kind, column-wise: int fields [R, I] int64 and float fields [R, F] float64
    (non-finite kept as they are; None in dicts, null in JSON); extras: row -> per_sample / hist."""

    def __init__(
        self, kind: str, steps: np.ndarray, names: list[str], roles: list, ints: np.ndarray, floats: np.ndarray
    ):
        self.kind, self.steps, self.names, self.roles = kind, steps, names, roles
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
        rows = range(len(self.names)) if rows is None else list(rows)
        fields = self.int_fields + self.float_fields
        values = zip(*self.ints[rows].T.tolist(), *map(_clean, self.floats[rows].T.tolist()))
        out = []
        steps = self.steps.tolist()
        for i, row in zip(rows, values):
            rec = {
                "step": steps[i],
                "name": self.names[i],
                "kind": self.kind,
                "role": self.roles[i],
                **dict(zip(fields, row)),
            }
            rec.update(self.extras.get(i, ()))
            out.append(rec)
        return out

    def lines(self) -> list[str]:
        """One JSONL line per record, written from the columns (the extras' records: the generic encoder)."""
        lines = jsonl_rows(
            self.kind,
            self.steps,
            [json_string(n) for n in self.names],
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


def _within(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ..., lengths[0] - 1, 0, 1, ..., lengths[1] - 1, ...: each element's place in its group."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _expand(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The ranges [starts[i], starts[i] + lengths[i]) concatenated, as one index array."""
    return np.repeat(starts, lengths) + _within(lengths)


def _gather_rows(
    words: Sequence[list[np.ndarray]], rank: np.ndarray, buffer: np.ndarray, offset: np.ndarray, rows: np.ndarray,
    width: int,
) -> np.ndarray:  # fmt: skip
    """The rows of some parts (rows[i] rows of `width` words from word offset[i] of buffer[i] of rank[i]),
    in order, as one [sum of rows, width] int64 table (vectorised per buffer)."""
    places = sorted(set(zip(rank.tolist(), buffer.tolist())))
    if len(places) == 1 and len(rows) == int(rows.sum()):  # one buffer, one row each: one gather
        ((r, b),) = places
        return words[r][b][offset[:, None] + np.arange(width)]
    first_row = np.cumsum(rows) - rows  # where each part's rows start in the table
    table = np.empty((int(rows.sum()), width), dtype=np.int64)
    for r, b in places:
        sel = np.nonzero((rank == r) & (buffer == b))[0]
        n = rows[sel]
        within = _within(n)  # row number inside its part
        word_start = np.repeat(offset[sel], n) + width * within
        table[np.repeat(first_row[sel], n) + within] = words[r][b][word_start[:, None] + np.arange(width)]
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
    merged = torch.empty(rows.shape[1:], dtype=torch.int64)
    write_raw_rows(merged, *reduce_raw(*split_raw_rows(rows), dim=0))
    return merged


def _tensor_columns(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Count fields int64 [R, 5] and float fields float64 [R, 6] of raw tensor rows [R, 9]."""
    counts, moments = (t.numpy() for t in split_raw_rows(rows))
    fields = tensor_fields(counts, moments)  # as TensorStats.to_dict derives them: the same numbers
    return counts, np.stack([fields[f] for f in FLOAT_FIELDS], axis=1)


def _pair_columns(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    fields = pair_fields(rows.numpy())
    return np.empty((rows.shape[0], 0), np.int64), np.stack([fields[f] for f in PAIR_FIELDS], axis=1)


def _hist(words: np.ndarray, offset: int, hist_offset: int, bins: int) -> dict:
    lo, hi = (float(v) for v in words[offset + 5 : offset + 7].view(np.float64))
    finite = math.isfinite(lo) and math.isfinite(hi)
    counts = words[hist_offset : hist_offset + bins].tolist()
    return {"min": lo if finite else None, "max": hi if finite else None, "counts": counts}


class _AllParts:
    """The records of every rank's parts, one entry per record, as arrays (a watch's runs expanded)."""

    def __init__(self, logs: Sequence[list[Part]]):
        parts = [p for log in logs for p in log]

        def field(f: str, dtype) -> np.ndarray:  # a field of every part, repeated for each of its records
            return np.repeat(np.array([getattr(p, f) for p in parts], dtype=dtype), sizes)

        sizes = np.array([len(p.names) for p in parts], dtype=np.int64)
        self.names = list(chain.from_iterable(p.names for p in parts))
        self.roles = list(chain.from_iterable(p.roles for p in parts))
        self.step = field("step", np.int64)
        self.steps = self.step.tolist()
        self.kind = np.repeat(np.array([KIND_CODE[p.kind] for p in parts], dtype=np.int64), sizes)
        self.per_sample = field("per_sample", bool)
        self.buffer = field("buffer", np.int64)
        self.offset = field("offset", np.int64) + _within(sizes) * field("width", np.int64)  # runs: row by row
        self.rows = field("rows", np.int64)
        self.hist_offset = field("hist_offset", np.int64)
        self.bins = field("bins", np.int64)
        self.value = field("value", np.float64)
        self.rank = np.repeat(np.arange(len(logs)), [sum(len(p.names) for p in log) for log in logs])

    def describe(self, j: int) -> str:
        return f"{KINDS[self.kind[j]]}{' (per sample)' if self.per_sample[j] else ''}"

    def records(self) -> tuple[np.ndarray, np.ndarray]:
        """Parts grouped by (step, name), records ordered by step then by first appearance: (members,
        sizes): the parts of record i are members[sum(sizes[:i]) :][: sizes[i]]."""
        keys = list(zip(self.steps, self.names))
        n = len(keys)
        if len(set(keys)) == n:  # no name twice in a step, on any rank: one part per record
            ordered = n < 2 or bool((self.step[1:] >= self.step[:-1]).all())
            members = np.arange(n) if ordered else np.argsort(self.step, kind="stable")
            return members, np.ones(n, dtype=np.int64)
        groups: dict[tuple[int, str], list[int]] = {}
        for j, key in enumerate(keys):
            groups.setdefault(key, []).append(j)
        record_keys = sorted(groups, key=itemgetter(0))  # stable: first appearance within a step
        for step, name in record_keys:
            first, *rest = groups[step, name]
            for j in rest:
                if (self.kind[j], self.per_sample[j]) != (self.kind[first], self.per_sample[first]):
                    raise ValueError(
                        f"probe record {name!r} at step {step} was logged as {self.describe(first)} and as "
                        f"{self.describe(j)} (on different ranks?); one name, one kind"
                    )
        members = np.fromiter(chain.from_iterable(groups[k] for k in record_keys), np.int64, n)
        sizes = np.fromiter((len(groups[k]) for k in record_keys), np.int64, len(record_keys))
        return members, sizes


def _scalar_values(words: Sequence[list[np.ndarray]], parts: _AllParts, members: np.ndarray, sizes: np.ndarray):
    """The value of each scalar record: the mean of its parts (host values, or words of the buffers)."""
    values = parts.value[members]
    buffer, rank, offset = parts.buffer[members], parts.rank[members], parts.offset[members]
    for r, b in set(zip(rank.tolist(), buffer.tolist())) - {(r, -1) for r in range(len(words))}:
        sel = (rank == r) & (buffer == b)
        values[sel] = words[r][b].view(np.float64)[offset[sel]]
    if len(members) == len(sizes):
        return values
    means, start = np.empty(len(sizes), np.float64), 0
    for i, size in enumerate(sizes.tolist()):
        vals = values[start : start + size].tolist()
        start += size
        means[i] = math.fsum(vals) / size if all(map(math.isfinite, vals)) else sum(vals) / size
    return means


def build_records(snapshots: Sequence[Snapshot]) -> Records:
    """Merge the parts of one or more ranks into records, ordered by step then by first appearance."""
    parts = _AllParts([log for log, _ in snapshots])
    words = [w for _, w in snapshots]
    members, sizes = parts.records()
    first_member = np.cumsum(sizes) - sizes  # where each record's parts start in `members`
    first = members[first_member]  # each record's first part: its kind, role, per_sample
    kind = parts.kind[first]
    blocks: list[Block] = []
    block_of = np.empty(len(sizes), np.int64)
    row_of = np.empty(len(sizes), np.int64)
    for code, width, columns, merge in (
        (KIND_CODE["tensor"], TENSOR_WORDS, _tensor_columns, _tensor_merge),
        (KIND_CODE["pair"], PAIR_WORDS, _pair_columns, lambda r: merge_pair_raw(r, dim=0)),
        (KIND_CODE["scalar"], 1, None, None),
    ):
        chosen = np.nonzero(kind == code)[0]
        if not len(chosen):
            continue
        own = members[_expand(first_member[chosen], sizes[chosen])]  # their parts, record by record
        heads = first[chosen]
        at = heads.tolist()
        steps, names, roles = (
            parts.step[heads],
            list(map(parts.names.__getitem__, at)),
            list(map(parts.roles.__getitem__, at)),
        )
        block_of[chosen], row_of[chosen] = len(blocks), np.arange(len(chosen))
        if columns is None:  # scalars
            values = _scalar_values(words, parts, own, sizes[chosen])
            block = Block("scalar", steps, names, roles, np.empty((len(values), 0), np.int64), values[:, None])
            for i in np.nonzero(sizes[chosen] > 1)[0].tolist():  # a mean of several calls says how many
                block.extras[i] = {"logs": int(sizes[chosen][i])}
            blocks.append(block)
            continue
        part_rows = parts.rows[own]
        table = _gather_rows(words, parts.rank[own], parts.buffer[own], parts.offset[own], part_rows, width)
        n = sizes[chosen]
        lengths = part_rows if len(own) == len(chosen) else np.add.reduceat(part_rows, np.cumsum(n) - n)
        starts = np.cumsum(lengths) - lengths
        rows = torch.from_numpy(table if width == TENSOR_WORDS else table.view(np.float64))
        ints, floats = columns(_merge_ranges(rows, starts, lengths, merge))
        block = Block(KINDS[code], steps, names, roles, ints, floats)
        per_sample = np.nonzero(parts.per_sample[heads])[0]
        if len(per_sample):  # their rows' fields only, derived together
            ps_ints, ps_floats = columns(rows[torch.from_numpy(_expand(starts[per_sample], lengths[per_sample]))])
            ends = np.cumsum(lengths[per_sample]).tolist()
            for i, a, e in zip(per_sample.tolist(), [0, *ends[:-1]], ends):
                block.extras[i] = {"per_sample": block.field_lists(ps_ints[a:e], ps_floats[a:e])}
        with_hist = np.nonzero(parts.hist_offset[own] >= 0)[0]
        record_of = np.repeat(np.arange(len(chosen)), n)
        for k in with_hist.tolist():  # the first part of a record with a histogram carries it
            j, extra = int(own[k]), block.extras.setdefault(int(record_of[k]), {})
            if "hist" not in extra:
                w = words[parts.rank[j]][parts.buffer[j]]
                extra["hist"] = _hist(w, int(parts.offset[j]), int(parts.hist_offset[j]), int(parts.bins[j]))
        blocks.append(block)
    return Records(blocks, list(zip(block_of.tolist(), row_of.tolist())))
