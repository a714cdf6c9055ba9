"""The device-side record buffer: stats land here as they are logged and reach the host once per flush.

One flat int64 tensor per device holds every record's raw accumulators (fastdiff.stats layouts) back
to back; a float64 view of the same memory takes the float parts, so a flush copies one tensor to the
host — one sync. Record layouts, in 8-byte words:

    tensor   rows x 9   counts (5 x int64) then moments (4 x float64): min, max, mean, m2
    pair     rows x 6   float64: n, sum ab, sum a^2, sum b^2, sum (a - b)^2, max |a - b|
    scalar   1          float64
    hist     bins       int64 counts of a histogram over [min, max] of its tensor record

The buffer doubles when full (a device copy, no sync) so logging never blocks on the host.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..stats import RAW_WORDS as TENSOR_WORDS
from ..stats import write_raw_rows

PAIR_WORDS = 6


class Part(NamedTuple):
    """Where logged records live until the flush (host-side metadata only): one `log*` call, or a run of
    whole-tensor (or scalar) records from one watch call whose rows follow each other every `width`
    words — one object for hundreds of records, expanded with numpy at the flush (records.py)."""

    step: int
    names: list[str]
    kind: str  # "tensor" | "pair" | "scalar"
    roles: list  # str | None, one per name
    buffer: int  # index of the device buffer; -1 for a host value
    offset: int  # first word of the first record in that buffer
    rows: int = 1  # rows of each record: 1, or the batch size of a per-sample record (a single name)
    per_sample: bool = False
    hist_offset: int = -1  # first word of the histogram counts, -1 when none (a single name)
    bins: int = 0
    value: float = 0.0  # a Python scalar logged with log_scalar (buffer -1)
    width: int = 0  # words from one record's rows to the next one's (a run)


class DeviceBuffer:
    """A growable flat int64 buffer on one device with a float64 view of the same memory."""

    def __init__(self, device: torch.device, capacity: int = 1 << 14):
        self.device = torch.device(device)
        self.words = torch.empty(capacity, dtype=torch.int64, device=self.device)
        self.floats = self.words.view(torch.float64)
        self.used = 0

    def reserve(self, n: int) -> int:
        """The offset of n fresh words (grows by doubling: a device copy, never a host sync)."""
        start, end = self.used, self.used + n
        if end > self.words.numel():
            grown = torch.empty(max(2 * self.words.numel(), end), dtype=torch.int64, device=self.device)
            grown[:start].copy_(self.words[:start])
            self.words = grown
            self.floats = grown.view(torch.float64)
        self.used = end
        return start

    def rows(self, offset: int, rows: int, width: int = TENSOR_WORDS) -> torch.Tensor:
        """The words [offset, offset + rows * width) as an int64 [rows, width] view."""
        return self.words[offset : offset + rows * width].view(rows, width)

    def put_tensor_rows(self, counts: torch.Tensor, moments: torch.Tensor) -> int:
        """Raw tensor stats ([..., 5] int64, [..., 4] float64) as rows of 9 words (two device copies)."""
        rows = counts.numel() // 5
        off = self.reserve(rows * TENSOR_WORDS)
        write_raw_rows(self.rows(off, rows), counts, moments)
        return off

    def put_stats(self, impl, x: torch.Tensor, per_sample: bool) -> int:
        """The raw stats of x (one row, or one per index of dim 0) by backend `impl`, in fresh rows: straight
        into the buffer when the backend can (`tensor_stats_into`, no intermediate tensors)."""
        rows = x.shape[0] if per_sample else 1
        off = self.reserve(rows * TENSOR_WORDS)
        table = self.rows(off, rows)
        into = getattr(impl, "tensor_stats_into", None)
        if into is not None:
            into(x, per_sample, table)
        else:
            write_raw_rows(table, *impl.tensor_stats(x, per_sample))
        return off

    def put_floats(self, values: torch.Tensor) -> int:
        """Any real tensor, converted to float64 (pair raws, scalars)."""
        n = values.numel()
        off = self.reserve(n)
        self.floats[off : off + n].copy_(values.reshape(n))
        return off

    def put_words(self, values: torch.Tensor) -> int:
        """int64 values (histogram counts)."""
        n = values.numel()
        off = self.reserve(n)
        self.words[off : off + n].copy_(values.reshape(n))
        return off

    def take(self) -> np.ndarray:
        """The used words on the host (the flush's one sync for this device); the buffer restarts empty."""
        used = self.words[: self.used]
        host = used.cpu() if self.device.type != "cpu" else used.clone()
        self.used = 0
        return host.numpy()
