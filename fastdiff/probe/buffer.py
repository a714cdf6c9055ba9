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

TENSOR_WORDS = 9
PAIR_WORDS = 6


class Part(NamedTuple):
    """Where one logged record lives until the flush (host-side metadata only)."""

    step: int
    name: str
    kind: str  # "tensor" | "pair" | "scalar"
    role: str | None
    buffer: int  # index of the device buffer; -1 for a host value
    offset: int  # first word in that buffer
    rows: int  # 1, or the batch size of a per-sample record
    per_sample: bool
    hist_offset: int = -1  # first word of the histogram counts, -1 when none
    bins: int = 0
    value: float | None = None  # a Python scalar logged with log_scalar


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

    def put_tensor_rows(self, counts: torch.Tensor, moments: torch.Tensor) -> int:
        """Raw tensor stats ([..., 5] int64, [..., 4] float64) as rows of 9 words; one device op."""
        rows = counts.numel() // 5
        off = self.reserve(rows * TENSOR_WORDS)
        out = self.words[off : off + rows * TENSOR_WORDS].view(rows, TENSOR_WORDS)
        torch.cat([counts.reshape(rows, 5), moments.reshape(rows, 4).view(torch.int64)], dim=1, out=out)
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
