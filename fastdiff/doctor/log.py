"""Reading a probe log (API.md section 3's JSONL) for the doctor, tolerant of what real runs leave behind.

- A truncated last line (the process was killed mid-write) is dropped and reported, not an error.
- Unknown keys and records of unknown kinds (a newer writer) are skipped and counted.
- A line with a wrong type is skipped with a message naming the line number and the field.
- A file with no valid record at all is an error (`LogError`), as is a missing file.

Per-sample records (fields are lists, one entry per sample) are merged into whole-tensor statistics
with Chan's formula, so every rule sees one value per (name, step).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..probe.reader import scan_jsonl
from ..probe.records import KINDS

TENSOR_INT = ("count", "nan_count", "posinf_count", "neginf_count", "zero_count")
TENSOR_FLOAT = ("min", "max", "mean", "std", "absmax", "l2")
PAIR_FLOAT = ("cos", "norm_ratio", "mse", "max_abs_diff")
BASE_KEYS = ("step", "name", "kind", "role")
FIELDS = {"tensor": TENSOR_INT + TENSOR_FLOAT, "pair": PAIR_FLOAT, "scalar": ("value",)}
# keys a writer may add that the doctor knows and ignores (not counted as unknown)
KNOWN_EXTRA = ("time", "rank", "dtype", "shape", "every", "per_sample", "hist", "logs")


class LogError(ValueError):
    """The log cannot be read at all (missing, empty, or no valid record)."""


@dataclass
class Record:
    step: int
    name: str
    kind: str
    role: str | None
    fields: dict[str, float | None]
    line: int = 0
    logs: int = 1  # calls merged into this record (a scalar's value is their mean)

    def get(self, key: str) -> float | None:
        v = self.fields.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


@dataclass
class RunLog:
    path: str
    records: list[Record]
    truncated_last_line: bool = False
    unknown_keys: int = 0
    unknown_kinds: int = 0
    bad_lines: list[str] = field(default_factory=list)
    role_notes: list[str] = field(default_factory=list)  # how the doctor placed tensors logged without a role
    unplaced: list[str] = field(default_factory=list)  # tensor names it could not place

    def names(self, kind: str | None = None, role: str | None = None) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            if (kind is None or r.kind == kind) and (role is None or r.role == role):
                seen.setdefault(r.name, None)
        return list(seen)

    def series(self, name: str, kind: str | None = None) -> list[Record]:
        """Records of one name in step order."""
        return sorted(
            (r for r in self.records if r.name == name and (kind is None or r.kind == kind)), key=lambda r: r.step
        )

    def by_role(self, *roles: str, kind: str | None = "tensor") -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = defaultdict(list)
        for r in self.records:
            if r.role in roles and (kind is None or r.kind == kind):
                out[r.name].append(r)
        return {k: sorted(v, key=lambda r: r.step) for k, v in out.items()}

    def training_steps(self) -> set[int]:
        """Steps that logged a loss: the steps where the model was being trained."""
        return {r.step for r in self.records if r.kind == "scalar" and r.role == "loss"}

    def first_nonfinite(self) -> tuple[int, str] | None:
        """(step, name) where a NaN/Inf first shows in a tensor, pair or loss record (None if never)."""
        from .rules import nonfinite_records

        hits = nonfinite_records(self)
        return (hits[0].step, hits[0].name) if hits else None

    @property
    def steps(self) -> tuple[int, int]:
        s = [r.step for r in self.records]
        return min(s), max(s)

    def notes(self) -> list[str]:
        """What was skipped while reading, in words (for the report's header)."""
        out = []
        if self.truncated_last_line:
            out.append("the last line was cut off (the run was killed while writing); read up to the cut")
        if self.unknown_keys:
            out.append(f"{self.unknown_keys} unknown keys skipped (written by a newer fastdiff?)")
        if self.unknown_kinds:
            out.append(f"{self.unknown_kinds} records of unknown kinds skipped")
        if self.bad_lines:
            out.append(f"{len(self.bad_lines)} invalid lines skipped, e.g. {self.bad_lines[0]}")
        out.extend(self.role_notes)
        return out


def _merge_rows(values: dict) -> dict:
    """Whole-tensor stats from per-sample rows (lists): counts add, moments merge (Chan)."""
    n_rows = len(values["count"])
    out = {k: sum(int(v or 0) for v in values[k]) for k in TENSOR_INT}
    parts = []
    for i in range(n_rows):
        nf = int(values["count"][i] or 0) - sum(int(values[k][i] or 0) for k in TENSOR_INT[1:4])
        mean, std = values["mean"][i], values["std"][i]
        if nf <= 0 or mean is None:
            continue
        m2 = (std or 0.0) ** 2 * (nf - 1) if nf > 1 else 0.0
        parts.append((nf, float(mean), m2, values["min"][i], values["max"][i]))
    if not parts:
        out.update(dict.fromkeys(TENSOR_FLOAT))
        out["l2"] = 0.0
        return out
    n = sum(p[0] for p in parts)
    mean = sum(p[0] * p[1] for p in parts) / n
    m2 = sum(p[2] + p[0] * (p[1] - mean) ** 2 for p in parts)
    mn = min(p[3] for p in parts if p[3] is not None)
    mx = max(p[4] for p in parts if p[4] is not None)
    out.update(
        min=mn,
        max=mx,
        mean=mean,
        std=math.sqrt(m2 / (n - 1)) if n > 1 else None,
        absmax=max(abs(mn), abs(mx)),
        l2=math.sqrt(m2 + n * mean * mean),
    )
    return out


def _check_number(key: str, v, line: int, *, integer: bool = False):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        want = "an integer" if integer else "a number or null"
        raise ValueError(f"line {line}: {key!r} must be {want}; got {v!r}")
    return int(v) if integer else float(v)


def parse_record(obj, line: int, log: RunLog) -> Record | None:
    """One JSON object -> Record; raises ValueError naming the line and field on a wrong type."""
    if not isinstance(obj, dict):
        raise ValueError(f"line {line}: a record must be a JSON object; got {type(obj).__name__}")
    for k in ("step", "name", "kind"):
        if k not in obj:
            raise ValueError(f"line {line}: missing key {k!r}")
    step = obj["step"]
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"line {line}: 'step' must be an integer; got {step!r}")
    if not isinstance(obj["name"], str):
        raise ValueError(f"line {line}: 'name' must be a string; got {obj['name']!r}")
    kind = obj["kind"]
    if kind not in KINDS:
        log.unknown_kinds += 1
        return None
    role = obj.get("role")
    if role is not None and not isinstance(role, str):
        raise ValueError(f"line {line}: 'role' must be a string or null; got {role!r}")
    logs = obj.get("logs", 1)
    if isinstance(logs, bool) or not isinstance(logs, int) or logs < 1:
        raise ValueError(f"line {line}: 'logs' must be an integer >= 1; got {logs!r}")
    values = {}
    per_sample = False
    for key, v in obj.items():
        if key in BASE_KEYS or key in KNOWN_EXTRA:
            continue
        if key not in FIELDS[kind]:
            log.unknown_keys += 1
            continue
        integer = key in TENSOR_INT
        if isinstance(v, list):
            per_sample = True
            values[key] = [_check_number(key, e, line, integer=integer) for e in v]
        else:
            values[key] = _check_number(key, v, line, integer=integer)
    if per_sample and kind == "tensor":
        missing = [k for k in ("count", "mean", "std", "min", "max") if not isinstance(values.get(k), list)]
        if missing:
            raise ValueError(f"line {line}: per-sample record lacks list fields {missing}")
        values = _merge_rows({**dict.fromkeys(TENSOR_INT + TENSOR_FLOAT, []), **values})
    elif per_sample:
        # per-sample pair / scalar rows: keep the mean of the rows (a summary the rules can read)
        values = {
            k: (
                sum(x for x in v if x is not None) / max(1, sum(x is not None for x in v)) if isinstance(v, list) else v
            )
            for k, v in values.items()
        }
    return Record(step=step, name=obj["name"], kind=kind, role=role, fields=values, line=line, logs=logs)


def read_text(text: str | bytes, path: str = "<text>") -> RunLog:
    """Records of a JSONL text (split by the probe's `scan_jsonl`, shared with `fastdiff.probe.read_jsonl`)."""
    objects, problems, truncated = scan_jsonl(text)
    log = RunLog(path=path, records=[], truncated_last_line=truncated)
    log.bad_lines.extend(p for p in problems if "truncated last line" not in p)
    for line, obj in objects:
        try:
            rec = parse_record(obj, line, log)
        except ValueError as exc:
            log.bad_lines.append(str(exc))
            continue
        if rec is not None:
            log.records.append(rec)
    return log


def read_log(path: str | Path) -> RunLog:
    """Read a probe JSONL log; LogError if it is missing or holds no valid record."""
    p = Path(path)
    if not p.is_file():
        raise LogError(f"no such log file: {p}")
    log = read_text(p.read_bytes(), str(p))
    if not log.records:
        why = "; ".join(log.notes()) or "the file is empty"
        raise LogError(f"{p} holds no valid fastdiff record ({why})")
    return log
