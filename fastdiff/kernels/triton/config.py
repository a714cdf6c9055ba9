"""Tile shapes, warps and grid sizes of the Triton kernels: the one place to tune them.

Every kernel walks its elements in *tiles* of shape [sub, threads, vec] (tiles.py): thread t of a program
owns `vec` consecutive elements (one 16-byte load) in each of `sub` rows of the tile, and keeps its own
running statistics of the values it has seen. The reductions of a tile therefore stay inside the thread
(no shuffles, no shared memory, no barrier); threads are combined once per program, at its end.

Register budget (checked for sm_80 / sm_89 / sm_90 by fastdiff.kernels.triton_gate): no spills, and at
most 128 registers per thread for the step and stats kernels, so that at least two 8-warp programs are
resident per SM (65536 registers / (2 x 256 threads)). `target_programs` launches ~4 programs per SM:
more than can be resident, so a program that finishes early is replaced (grid-stride loops balance the
rest). The defaults are a design made without a GPU in the loop; `benchmarks/gpu_check.py --sweep` times
alternatives on one. Under the interpreter (`TRITON_INTERPRET=1`) the same shapes run as NumPy arrays;
only the number of programs is kept small there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import torch


@dataclass(frozen=True)
class Tile:
    sub: int  # rows of a tile that each thread walks (power of two)
    vec: int  # consecutive elements per thread in a row (power of two; 16 bytes for full-width loads)
    num_warps: int

    @property
    def threads(self) -> int:
        return 32 * self.num_warps

    @property
    def size(self) -> int:
        return self.sub * self.threads * self.vec


# Contiguous rows: VEC consecutive elements per thread, one vector load where every row start is aligned
# (layout.layout_kind); 16 elements per thread and tile for the stats
STATS_TILE = {
    4: Tile(sub=4, vec=4, num_warps=8),
    2: Tile(sub=2, vec=8, num_warps=8),
    8: Tile(sub=4, vec=2, num_warps=8),
    1: Tile(sub=1, vec=8, num_warps=8),
}
STATS_TILE_INT32 = Tile(sub=2, vec=4, num_warps=8)  # int32 accumulates in fp64: half the rows
# pair stats: six float64 sums per thread; both operands in registers
PAIR_TILE = Tile(sub=2, vec=4, num_warps=8)
# the step: up to 9 operands of a tile in flight, two sets of per-thread stats; 4 elements per operand
STEP_TILE = {
    4: Tile(sub=1, vec=4, num_warps=4),
    2: Tile(sub=1, vec=4, num_warps=4),
    8: Tile(sub=1, vec=2, num_warps=4),
}
# strided views: one element per load, int32 unravelling of the index
STATS_SCALAR_TILE = Tile(sub=8, vec=1, num_warps=8)
PAIR_SCALAR_TILE = Tile(sub=4, vec=1, num_warps=8)
STEP_SCALAR_TILE = {
    4: Tile(sub=4, vec=1, num_warps=4),
    2: Tile(sub=4, vec=1, num_warps=4),
    8: Tile(sub=2, vec=1, num_warps=4),  # float64: four rows of two stats sets spill 8 B on sm_90
}
# per-sample stats of short rows (<= ROWS_MAX_INNER elements): ROWS rows per program, COLS columns of each
# per iteration ([1, ROWS, COLS] tiles: "thread" t of the moments code is row t); final rows, no merge
ROWS = 16
COLS = 32
ROWS_WARPS = 4
ROWS_MAX_INNER = 1024  # longer rows are split over programs and merged
# merging partial results: one program per output row
MERGE_BLOCK = 256
MERGE_WARPS = 4

# Tests shrink tiles to exercise block boundaries and multi-program merges at small sizes.
_override: dict[str, Tile] = {}
_programs_override: int | None = None


def stats_tile(dtype: torch.dtype, vector: bool = True) -> Tile:
    if not vector:
        return _override.get("stats", STATS_SCALAR_TILE)
    if dtype == torch.int32:
        return _override.get("stats", STATS_TILE_INT32)
    return _override.get("stats", STATS_TILE.get(dtype.itemsize, STATS_TILE[4]))


def pair_tile(vector: bool = True) -> Tile:
    return _override.get("pair", PAIR_TILE if vector else PAIR_SCALAR_TILE)


def step_tile(element_size: int, vector: bool = True) -> Tile:
    tiles = STEP_TILE if vector else STEP_SCALAR_TILE
    return _override.get("step", tiles.get(element_size, tiles[4]))


@cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """How many programs a reduction launches: ~4 per SM on a GPU, a handful in the interpreter."""
    if _programs_override is not None:
        return _programs_override
    env = os.environ.get("FASTDIFF_TRITON_PROGRAMS")
    if env:
        return max(1, int(env))
    if device.type == "cuda":
        return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 4
