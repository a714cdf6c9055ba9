"""Where flushed records go: a JSONL file (default, needs nothing), TensorBoard event files, wandb.

A sink is opened once by the writing process (rank 0 under torch.distributed) and then receives lists
of records (dicts, see `records.py`) in step order. TensorBoard and wandb are optional extras
(`pip install 'fastdiff[tb]'`, `'fastdiff[wandb]'`) imported only when such a sink is opened.

>>> import json, os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
>>> sink = JsonlSink(path); sink.open()
>>> sink.write([{"step": 0, "name": "loss", "kind": "scalar", "role": "loss", "value": None}]); sink.close()
>>> open(path).read()
'{"step":0,"name":"loss","kind":"scalar","role":"loss","value":null}\\n'
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from ..stats import PAIR_FIELDS, TENSOR_FIELDS
from .encode import strict_json
from .records import Records


class Sink:
    """Receives records in step order. `open` runs once, in the writing process only."""

    def open(self) -> None:
        pass

    def write(self, records: Sequence[dict]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    """One strict-JSON object per line; a flush is one write + flush of whole lines, so a killed
    process leaves every flushed line intact (fsync=True also survives a machine crash).

    A write that fails part-way (disk full) is cut back to the last whole line and raises.
    """

    def __init__(self, path: str | os.PathLike, *, append: bool = False, fsync: bool = False):
        self.path = os.fspath(path)
        self.append = append
        self.fsync = fsync
        self._file = None

    def open(self) -> None:
        try:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
            self._file = open(self.path, "ab" if self.append else "wb")  # noqa: SIM115 (closed in close())
        except OSError as exc:
            raise OSError(
                exc.errno, f"fastdiff probe: cannot open the log {self.path!r} for writing: {exc.strerror or exc}"
            ) from exc

    def write(self, records: Sequence[dict]) -> None:
        if self._file is None:
            raise RuntimeError(f"the JSONL sink {self.path!r} is not open")
        if isinstance(records, Records):  # a flush: its text is built column-wise
            text = records.jsonl()
        else:
            text = "".join([strict_json(r) + "\n" for r in records])
        start = self._file.tell()
        try:
            self._file.write(text.encode("utf-8"))
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError:
            self._file.truncate(start)  # never leave half a flush behind
            raise

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


DEFAULT_FIELDS = {
    "tensor": ("mean", "std", "min", "max", "absmax", "nan_count", "posinf_count", "neginf_count"),
    "pair": PAIR_FIELDS,
}


def _check_fields(fields) -> dict[str, tuple[str, ...]]:
    fields = dict(DEFAULT_FIELDS if fields is None else fields)
    for kind, names in fields.items():
        known = {"tensor": TENSOR_FIELDS, "pair": PAIR_FIELDS}.get(kind)
        if known is None or not set(names) <= set(known):
            raise ValueError(f"fields={fields!r}: accepted kinds 'tensor' {TENSOR_FIELDS} and 'pair' {PAIR_FIELDS}")
    return fields


def _number(v) -> float:
    return math.nan if v is None else float(v)


def _hist_edges(hist: dict) -> tuple[list[float], list[int]] | None:
    """(bins + 1 edges, counts) of a record's histogram; None when it holds no finite value."""
    lo, hi, counts = hist["min"], hist["max"], hist["counts"]
    if lo is None or not sum(counts):
        return None
    if hi == lo:
        return [lo, hi], [sum(counts)]
    bins = len(counts)
    return [lo + (hi - lo) * k / bins for k in range(bins)] + [hi], counts


class TensorBoardSink(Sink):
    """Scalars `name/field` per record (fields: DEFAULT_FIELDS or your own) and histograms
    (`Recorder(histogram_bins=...)`) written with SummaryWriter.add_histogram_raw."""

    def __init__(self, logdir: str | os.PathLike, *, fields: dict | None = None, **writer_kwargs):
        self.logdir = os.fspath(logdir)
        self.fields = _check_fields(fields)
        self.writer_kwargs = writer_kwargs
        self.writer = None

    def open(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError(f"the TensorBoard sink needs tensorboard: pip install 'fastdiff[tb]' ({exc})") from exc
        self.writer = SummaryWriter(self.logdir, **self.writer_kwargs)

    def write(self, records: Sequence[dict]) -> None:
        w = self.writer
        for r in records:
            name, step = r["name"], r["step"]
            if r["kind"] == "scalar":
                w.add_scalar(name, _number(r["value"]), step)
                continue
            for f in self.fields.get(r["kind"], ()):
                w.add_scalar(f"{name}/{f}", _number(r[f]), step)
            hist = r.get("hist")
            edges = _hist_edges(hist) if hist else None
            if edges is not None:
                limits, counts = edges
                centres = [(a + b) / 2 for a, b in zip(limits[:-1], limits[1:])] if len(counts) > 1 else limits[:1]
                w.add_histogram_raw(
                    f"{name}/hist",
                    min=hist["min"],
                    max=hist["max"],
                    num=sum(counts),
                    sum=sum(c * m for c, m in zip(counts, centres)),
                    sum_squares=sum(c * m * m for c, m in zip(counts, centres)),
                    bucket_limits=limits[1:],
                    bucket_counts=counts,
                    global_step=step,
                )
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbSink(Sink):
    """One `run.log` per step of `{prefix}name/field` values, histograms as wandb.Histogram.

    Records reach wandb at flushes, after your own `run.log` calls of later steps, so they carry
    their own step metric (`{prefix}step`, set up with `run.define_metric`) instead of wandb's step:
    plot them against it. Pass a run you made (`wandb.init(...)`), or keyword arguments for
    `wandb.init` (the sink then finishes the run at close).
    """

    def __init__(self, run=None, *, prefix: str = "probe/", fields: dict | None = None, **init_kwargs):
        self.run = run
        self.prefix = prefix
        self.fields = _check_fields(fields)
        self.init_kwargs = init_kwargs
        self._owns_run = run is None
        self._wandb = None

    def open(self) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise ImportError(f"the wandb sink needs wandb: pip install 'fastdiff[wandb]' ({exc})") from exc
        self._wandb = wandb
        if self.run is None:
            self.run = wandb.init(**self.init_kwargs)
        self.run.define_metric(f"{self.prefix}step")
        self.run.define_metric(f"{self.prefix}*", step_metric=f"{self.prefix}step")

    def write(self, records: Sequence[dict]) -> None:
        by_step: dict[int, dict] = {}
        p = self.prefix
        for r in records:
            data = by_step.setdefault(r["step"], {})
            name = r["name"]
            if r["kind"] == "scalar":
                data[p + name] = _number(r["value"])
                continue
            for f in self.fields.get(r["kind"], ()):
                data[f"{p}{name}/{f}"] = _number(r[f])
            hist = r.get("hist")
            edges = _hist_edges(hist) if hist else None
            if edges is not None:
                limits, counts = edges
                data[f"{p}{name}/hist"] = self._wandb.Histogram(np_histogram=(counts, limits))
        for step in sorted(by_step):
            self.run.log({f"{p}step": step, **by_step[step]})

    def close(self) -> None:
        if self.run is not None and self._owns_run:
            self.run.finish()
        self.run = None
