"""JSONL text of the probe's records, written a block (one kind of record) at a time.

Writing a flush is most of the probe's host cost. Line by line in Python, most of that is formatting
floats (Python's float repr takes about a microsecond on a slow core, and a watched step writes
thousands) and filling a template per record. `jsonl_rows` writes the lines of a whole block: with
the C++ extension (csrc/jsonl.cpp), else `jsonl_rows_py`, the reference. Both write floats as the
shortest text that reads back as the same double, with a "." or an exponent (json.loads returns
floats), and `null` for NaN / +-Inf (strict JSON); the texts may differ in form ("1e-04" / "0.0001"),
never in value.

>>> jsonl_rows_py("scalar", np.array([3]), [json_string("loss")], [json_string(None)], (), np.empty((1, 0), np.int64),
...               ("value",), np.array([[0.25]]))
['{"step":3,"name":"loss","kind":"scalar","role":null,"value":0.25}\\n']
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

try:
    from .._cpu import jsonl_rows as _jsonl_rows_cpp
except ImportError:  # the C++ extension is optional
    _jsonl_rows_cpp = None

# strict (NaN / Infinity raise) and compact; one encoder object, so the C encoder is set up once
strict_json = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


@lru_cache(maxsize=1 << 16)
def json_string(s: str | None) -> str:
    """A JSON string literal (as json.dumps, ASCII-escaped), `null` for None; cached: names repeat every step."""
    return "null" if s is None else json.encoder.encode_basestring_ascii(s)


def jsonl_rows_py(kind, steps, names, roles, int_fields, ints, float_fields, floats) -> list[str]:
    """One line per row (see `jsonl_rows`), in Python."""
    template = (
        '{"step":%d,"name":%s,"kind":"'
        + kind
        + '","role":%s'
        + "".join(f',"{f}":%d' for f in int_fields)
        + "".join(f',"{f}":%s' for f in float_fields)
        + "}\n"
    )
    numbers = [repr(v) if math.isfinite(v) else "null" for v in floats.reshape(-1).tolist()]  # row-major
    width = len(float_fields)
    columns = [steps.tolist(), names, roles, *ints.T.tolist(), *(numbers[j::width] for j in range(width))]
    return [template % row for row in zip(*columns)]


def jsonl_rows(
    kind: str,
    steps: np.ndarray,
    names: Sequence[str],
    roles: Sequence[str],
    int_fields: Sequence[str],
    ints: np.ndarray,
    float_fields: Sequence[str],
    floats: np.ndarray,
) -> list[str]:
    """One JSONL line per row of a block: step (int64 [R]), name and role (JSON literals, see
    `json_string`), then the int fields (int64 [R, I]) and float fields (float64 [R, F]) in order."""
    steps = np.ascontiguousarray(steps, dtype=np.int64)
    ints = np.ascontiguousarray(ints, dtype=np.int64)
    floats = np.ascontiguousarray(floats, dtype=np.float64)
    write = _jsonl_rows_cpp if _jsonl_rows_cpp is not None else jsonl_rows_py
    return write(kind, steps, list(names), list(roles), list(int_fields), ints, list(float_fields), floats)
