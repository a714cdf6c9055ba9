"""Tile shapes and grid sizes of the Triton kernels: the one place to tune them.

Every kernel walks its elements in *super-tiles* of `sub x lanes` elements: `sub` rows of `lanes`
consecutive elements. Each thread owns `vec` consecutive elements of a row (one 16-byte load for fp32),
so the column-wise (axis 0) reductions that accumulate per-lane statistics stay inside a thread: no
shuffles or shared memory per tile, only once per program. A program walks super-tiles grid-stride and
writes one partial result, so the merge that follows reads a few hundred partials, not millions.

On Hopper (H100/H200: 132 SMs, ~3.35-4.8 TB/s) the defaults keep ~32 KB of loads in flight per program
with 8 warps; they are a design choice made without a GPU in the loop, to be tuned by
`benchmarks/gpu_check.py --sweep`. Under the interpreter (`TRITON_INTERPRET=1`) the same constexprs run
as NumPy code; only the number of programs is kept small there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import torch


@dataclass(frozen=True)
class Tile:
    sub: int  # rows of a super-tile (power of two)
    vec: int  # consecutive elements per thread in a row (power of two)
    num_warps: int

    @property
    def lanes(self) -> int:
        return 32 * self.num_warps * self.vec

    @property
    def size(self) -> int:
        return self.sub * self.lanes


# stats of one tensor: 8 x 1024 fp32 = 32 KB per super-tile; 2-byte dtypes read 8 x 2048 (16-byte loads)
STATS_TILE = {
    4: Tile(sub=8, vec=4, num_warps=8),
    2: Tile(sub=8, vec=8, num_warps=8),
    8: Tile(sub=4, vec=2, num_warps=8),
}
# pair stats accumulate four float64 sums per lane: fewer rows keep the registers in check
PAIR_TILE = Tile(sub=4, vec=4, num_warps=8)
# the step holds up to 9 operands of a tile plus two sets of per-lane stats
STEP_TILE = {4: Tile(sub=4, vec=4, num_warps=8), 2: Tile(sub=4, vec=8, num_warps=8), 8: Tile(sub=2, vec=2, num_warps=8)}
# merging partial results: one program per output row
MERGE_BLOCK = 256
MERGE_WARPS = 4

# Tests shrink tiles to exercise block boundaries and multi-program merges at small sizes.
_override: dict[str, Tile] = {}
_programs_override: int | None = None


def stats_tile(element_size: int) -> Tile:
    return _override.get("stats", STATS_TILE.get(element_size, STATS_TILE[4]))


def pair_tile() -> Tile:
    return _override.get("pair", PAIR_TILE)


def step_tile(element_size: int) -> Tile:
    return _override.get("step", STEP_TILE.get(element_size, STEP_TILE[4]))


@cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """How many programs a reduction launches: ~4 resident per SM on a GPU, a handful in the interpreter."""
    if _programs_override is not None:
        return _programs_override
    env = os.environ.get("FASTDIFF_TRITON_PROGRAMS")
    if env:
        return max(1, int(env))
    if device.type == "cuda":
        return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4
