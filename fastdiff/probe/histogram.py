"""Histograms on the device, with bins from the tensor's own finite min/max — no host round trip.

`torch.histc(x, bins, min, max)` wants Python floats for the range (a sync per tensor); here the
range comes from the stats just computed, still on the device, and the counts from a scatter-add:

    bin(v) = clamp(floor((v - min) / (max - min) * bins), 0, bins - 1)   for finite v; max falls in the last bin

>>> import torch
>>> x = torch.tensor([0.0, 0.5, 1.0, float("nan")])
>>> moments = torch.tensor([0.0, 1.0, 0.5, 0.5], dtype=torch.float64)
>>> device_histogram(x, moments, 2).tolist()
[1, 2]
"""

from __future__ import annotations

import torch


def device_histogram(x: torch.Tensor, moments: torch.Tensor, bins: int) -> torch.Tensor:
    """int64 [bins] counts of the finite elements of x over [moments[0], moments[1]] (raw min, max)."""
    lo, hi = moments[0], moments[1]
    values = x.detach().reshape(-1).to(torch.float64)
    finite = torch.isfinite(values)
    width = hi - lo
    scale = torch.where(width > 0, bins / width, torch.zeros_like(width))  # all-equal values: bin 0
    index = torch.floor((values - lo) * scale).clamp(0, bins - 1)
    index = torch.where(finite, index, torch.zeros_like(index)).to(torch.int64)
    counts = torch.zeros(bins, dtype=torch.int64, device=x.device)
    return counts.index_add_(0, index, finite.to(torch.int64))
