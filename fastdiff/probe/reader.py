"""Read a probe JSONL log back: tolerant of a run killed mid-write, strict about what it keeps.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
>>> line = '{"step":0,"name":"loss","kind":"scalar","role":"loss","value":1.5,"extra":1}'
>>> _ = open(path, "w").write(line + '\\n{"step":1,"na')
>>> log = read_jsonl(path)
>>> log.series("loss", "value"), log.truncated, log.unknown_keys
(([0], [1.5]), True, 1)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..stats import PAIR_FIELDS, TENSOR_FIELDS

BASE_KEYS = ("step", "name", "kind", "role")
KIND_KEYS = {
    "tensor": frozenset(BASE_KEYS + TENSOR_FIELDS + ("per_sample", "hist")),
    "pair": frozenset(BASE_KEYS + PAIR_FIELDS + ("per_sample",)),
    "scalar": frozenset(BASE_KEYS + ("value", "logs")),
}


@dataclass
class ProbeLog:
    """The records of a log, and what reading it had to leave out."""

    records: list[dict]
    truncated: bool = False  # the last line was cut off (a killed writer); it is not in `records`
    skipped: int = 0  # lines that are not records (bad JSON mid-file, unknown kind, missing keys)
    unknown_keys: int = 0  # keys dropped from kept records
    problems: list[str] = field(default_factory=list)  # one message per skipped line (line number, why)

    def names(self, role: str | None = None, kind: str | None = None) -> list[str]:
        """Names in order of first appearance, optionally of one role and/or kind."""
        seen: dict[str, None] = {}
        for r in self.records:
            if (role is None or r["role"] == role) and (kind is None or r["kind"] == kind):
                seen.setdefault(r["name"], None)
        return list(seen)

    def series(self, name: str, field: str) -> tuple[list[int], list]:
        """(steps, values) of one field of one name (None where the value was not finite)."""
        steps, values = [], []
        for r in self.records:
            if r["name"] == name and field in r:
                steps.append(r["step"])
                values.append(r[field])
        return steps, values


def _why_not(record) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in BASE_KEYS if k not in record]
    if missing:
        return f"missing keys {missing}"
    if record["kind"] not in KIND_KEYS:
        return f"unknown kind {record['kind']!r}"
    if isinstance(record["step"], bool) or not isinstance(record["step"], int):
        return f"step is not an int: {record['step']!r}"
    if not isinstance(record["name"], str) or not (record["role"] is None or isinstance(record["role"], str)):
        return "name / role are not strings"
    return None


def scan_jsonl(data: bytes | str) -> tuple[list[tuple[int, object]], list[str], bool]:
    """Split a JSONL text into ((line number, parsed object) ..., problems, truncated): the one place that
    decides what a cut-off last line (a killed writer) and a bad line mid-file are. The probe's reader and
    the doctor's (`fastdiff.doctor.log`) both start here."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="replace")
    lines = data.split(b"\n")
    complete = data.endswith(b"\n") or not data
    objects, problems, truncated = [], [], False
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            objects.append((number, json.loads(raw)))
        except (ValueError, UnicodeDecodeError) as exc:
            if number == len(lines) and not complete:
                truncated = True
                problems.append(f"line {number}: truncated last line ({len(raw)} bytes)")
            else:
                problems.append(f"line {number}: not JSON ({exc})")
    return objects, problems, truncated


def read_jsonl(path: str | os.PathLike) -> ProbeLog:
    """All records of a probe log; a truncated last line is reported (`truncated`), bad lines and
    unknown keys are counted and left out (`skipped`, `unknown_keys`, `problems`)."""
    with open(path, "rb") as f:
        objects, problems, truncated = scan_jsonl(f.read())
    log = ProbeLog(records=[], truncated=truncated, skipped=len(problems) - truncated, problems=problems)
    for number, record in objects:
        why = _why_not(record)
        if why is not None:
            log.skipped += 1
            log.problems.append(f"line {number}: {why}")
            continue
        known = KIND_KEYS[record["kind"]]
        extra = [k for k in record if k not in known]
        if extra:
            log.unknown_keys += len(extra)
            for k in extra:
                del record[k]
        log.records.append(record)
    return log
