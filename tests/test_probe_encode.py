"""The JSONL text of a flush is built column-wise (probe/encode.py, records.Records.jsonl): it must equal,
value for value, the generic strict-JSON encoding of the record dicts that the other sinks receive."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastdiff as fd
from fastdiff.probe import encode
from fastdiff.probe.encode import json_string, strict_json
from fastdiff.probe.records import Records, build_records

WRITERS = [encode.jsonl_rows_py] + ([encode._jsonl_rows_cpp] if encode._jsonl_rows_cpp is not None else [])


def _special_doubles() -> np.ndarray:
    bits = [0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF, 0x8000000000000000]
    values = [struct.unpack("<d", struct.pack("<Q", b))[0] for b in bits]
    values += [0.0, 1.0, -3.0, 1e15, 1e16, 123456789012.0, 2.0**53, 0.1, 1 / 3, 1e-5, 1e-4, -2.5e-308]
    values += [math.nan, math.inf, -math.inf]
    return np.array(values)


def _block(values: np.ndarray, width: int = 3):
    """A block of rows with int and float fields; names that need escaping."""
    rows = len(values) // width
    floats = values[: rows * width].reshape(rows, width)
    ints = np.arange(rows * 2, dtype=np.int64).reshape(rows, 2) * (-(2**40))
    names = [json_string(f'näme/{i}\n"q"') for i in range(rows)]
    roles = [json_string(None if i % 2 else "grad") for i in range(rows)]
    steps = np.arange(rows, dtype=np.int64) + 2**40
    return ("tensor", steps, names, roles, ("a", "b"), ints, ("x", "y", "z")[:width], floats)


@pytest.mark.parametrize("write", WRITERS, ids=lambda f: f.__name__)
def test_lines_read_back_as_the_same_numbers(write):
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**63, size=30000, dtype=np.int64).view(np.float64)  # every exponent
    values = np.concatenate([_special_doubles(), random_bits, rng.standard_normal(999).astype(np.float32)])
    args = _block(np.ascontiguousarray(values, dtype=np.float64))
    lines = write(*args)
    _, steps, names, roles, _, ints, _, floats = args
    assert len(lines) == len(names)
    for i, line in enumerate(lines):
        assert line.endswith("}\n") and "\n" not in line[:-1]
        rec = json.loads(line)
        assert list(rec) == ["step", "name", "kind", "role", "a", "b", "x", "y", "z"]
        assert rec["step"] == steps[i] and rec["name"] == json.loads(names[i]) and rec["role"] == json.loads(roles[i])
        assert [rec["a"], rec["b"]] == ints[i].tolist()
        for key, v in zip("xyz", floats[i].tolist()):
            if not math.isfinite(v):
                assert rec[key] is None
                continue
            assert isinstance(rec[key], float), line  # integral values keep a "." or an exponent, as repr
            assert struct.pack("<d", rec[key]) == struct.pack("<d", v), (v, line)  # same bits, -0.0 included


def test_cpp_writer_refuses_what_it_cannot_read():
    if encode._jsonl_rows_cpp is None:
        pytest.skip("the C++ extension is not built")
    kind, steps, names, roles, int_fields, ints, float_fields, floats = _block(np.zeros(6))
    cases = [
        (dict(roles=roles[:1]), ValueError, "2 names but 1 roles"),
        (dict(steps=steps.astype(np.int32)), TypeError, "steps must be a contiguous int64"),
        (dict(ints=np.zeros((2, 2))), TypeError, "ints must be a C-contiguous int64"),
        (dict(ints=np.zeros((2, 4), np.int64)[:, ::2]), TypeError, "ints must be a C-contiguous"),
        (dict(floats=np.zeros((2, 2))), TypeError, r"floats must be a C-contiguous float64 array of shape \(2, 3\)"),
        (dict(floats=np.zeros((2, 3), np.float32)), TypeError, "floats must be"),
    ]
    base = dict(kind=kind, steps=steps, names=names, roles=roles, int_fields=int_fields, ints=ints)
    base.update(float_fields=float_fields, floats=floats)
    for change, err, match in cases:
        with pytest.raises(err, match=match):
            encode._jsonl_rows_cpp(**{**base, **change})
    assert len(encode.jsonl_rows(*_block(np.zeros(6)))) == 2  # the wrapper converts what it can


def _records(seed: int) -> Records:
    """The records of a flush with every kind of record: NaN/Inf, per-sample rows, histograms,
    merged parts, host and device scalars, names that need escaping."""
    g = torch.Generator().manual_seed(seed)
    captured = []

    class Capture(fd.probe.Sink):
        def write(self, records):
            captured.append(records)

    with fd.Recorder(None, sinks=[Capture()], backend="torch", histogram_bins=5) as rec:
        for step in range(3):
            x = torch.randn(4, 6, generator=g) * 10**step
            x[0, 0] = [math.nan, math.inf, -math.inf][step]
            rec.log("x_t", x)
            rec.log("x_t", x * 2)  # merged with the first
            rec.log_pair('pred~"target"', x, x.flip(0))
            rec.log_scalar("loss", torch.tensor(float(x[1:].std())))
            rec.log_scalar("lr", 1e-4 / (step + 1))
            rec.log_scalar("nan_loss", math.nan)
            rec.log_scalar("naïve/ünïcode\n", torch.tensor(3.0))
            rec.step()
        for name in ("a", "b"):
            rec.log(f"per/{name}", torch.randn(3, 2, generator=g), per_sample=True)
            rec.log("empty", torch.empty(0))
            rec.log("int", torch.arange(7))
    (records,) = captured
    return records


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_column_built_jsonl_equals_the_dicts(seed):
    records = _records(seed)
    assert isinstance(records, Records) and len(records) == 3 * 6 + 4
    lines = records.jsonl().splitlines()
    assert len(lines) == len(records)
    for line, rec in zip(lines, records):
        back = json.loads(line)
        assert list(back) == list(rec) and back == rec, (line, rec)
        assert all(type(back[k]) is type(rec[k]) for k in rec)  # ints stay ints, floats floats
    # written in Python (repr for the numbers), the text itself is the generic encoder's, byte for byte
    saved = encode._jsonl_rows_cpp
    encode._jsonl_rows_cpp = None
    try:
        assert records.jsonl() == "".join(strict_json(r) + "\n" for r in records)
    finally:
        encode._jsonl_rows_cpp = saved


def test_records_are_a_sequence_of_dicts():
    records = build_records([])
    assert len(records) == 0 and records.jsonl() == "" and list(records) == []
