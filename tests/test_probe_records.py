"""`records.build_records` on hand-made parts of two ranks: a watch's run of records expands row by row,
records are ordered by step across ranks, and one name logged as two kinds is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastdiff as fd
from fastdiff.probe.buffer import TENSOR_WORDS, Part
from fastdiff.probe.records import build_records
from fastdiff.stats import write_raw_rows


def raw_words(*tensors: torch.Tensor) -> np.ndarray:
    """The raw rows of each tensor's stats, back to back, as the record buffer holds them."""
    table = torch.empty(len(tensors), TENSOR_WORDS, dtype=torch.int64)
    for i, t in enumerate(tensors):
        write_raw_rows(table[i], *fd.tensor_stats(t, backend="torch").raw)
    return table.reshape(-1).numpy()


def test_runs_expand_and_ranks_merge_in_step_order():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(7, generator=g) * (k + 1) + 10 * k for k in range(3))
    rank0 = (
        [Part(1, ["param/a", "param/b"], "tensor", ["param", "param"], 0, 0, width=TENSOR_WORDS)],
        [raw_words(a, b)],
    )
    rank1 = (
        [Part(0, ["y"], "tensor", [None], 0, 0), Part(1, ["lr"], "scalar", [None], 0, TENSOR_WORDS)],
        [np.concatenate([raw_words(c), np.array([2.5]).view(np.int64)])],
    )
    records = build_records([rank0, rank1])
    assert [(r["step"], r["name"]) for r in records] == [(0, "y"), (1, "param/a"), (1, "param/b"), (1, "lr")]
    got = {r["name"]: r for r in records}
    for name, t in (("param/a", a), ("param/b", b), ("y", c)):
        want = fd.tensor_stats(t, backend="torch").to_dict()
        assert {k: got[name][k] for k in want} == want, name
    assert got["param/b"]["role"] == "param" and got["lr"]["value"] == 2.5
    assert records.jsonl().splitlines()[1].startswith('{"step":1,"name":"param/a","kind":"tensor","role":"param"')


def test_one_name_logged_as_two_kinds_on_two_ranks_is_refused():
    rank0 = ([Part(3, ["x"], "tensor", [None], 0, 0)], [raw_words(torch.ones(2))])
    rank1 = ([Part(3, ["x"], "scalar", [None], -1, 0, value=1.0)], [np.empty(0, np.int64)])
    with pytest.raises(ValueError, match="'x' at step 3 was logged as tensor and as scalar"):
        build_records([rank0, rank1])
