"""What one `fastdiff bench` run asks of every suite: device, sizes, dtypes, repeats, and where to report progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class BenchConfig:
    """The settings a suite runs under (validated by `fastdiff.bench.cli` before anything runs).

    sizes: element counts of the elementwise suites (step, stats); the model suites (multi_stats,
    probe) size their model by `quick` instead. copy_gbps: the copy bandwidth measured in the same run
    (GB/s), for each row's `frac_copy_bw`. progress(n): called after each finished case.
    """

    device: str = "cpu"
    sizes: tuple[int, ...] = (1 << 20,)
    dtypes: tuple[torch.dtype, ...] = (torch.float32,)
    repeats: int = 15
    quick: bool = False
    compile: bool = True
    copy_gbps: float | None = None
    progress: Callable[[int], None] | None = None

    def done(self, cases: int = 1) -> None:
        if self.progress is not None:
            self.progress(cases)
