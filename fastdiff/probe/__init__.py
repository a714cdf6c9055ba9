"""The probe engine: high-throughput training diagnostics with no host syncs (API.md section 3).

recorder.py   Recorder: log / log_pair / log_scalar / watch / step / flush / close
buffer.py     the preallocated device buffer the stats land in (one host copy per flush)
records.py    host side of a flush: exact merges (micro-batches, ranks) and derived fields, column-wise
encode.py     the JSONL text of a block of records (C++ csrc/jsonl.cpp, or Python)
watch.py      parameter / gradient / update / activation hooks
histogram.py  device-side histograms (no per-tensor sync)
sinks.py      JSONL (default), TensorBoard, wandb
distributed.py  torch.distributed: merge on rank 0
reader.py     read_jsonl for the doctor
roles.py      what a tensor is, and the default roles of common names
"""

from .reader import ProbeLog, read_jsonl
from .recorder import Recorder
from .roles import ROLES, default_role
from .sinks import JsonlSink, Sink, TensorBoardSink, WandbSink
from .watch import Watch

__all__ = [
    "ROLES",
    "JsonlSink",
    "ProbeLog",
    "Recorder",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "Watch",
    "default_role",
    "read_jsonl",
]
