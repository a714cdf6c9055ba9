"""torch.distributed glue: which rank writes, and collecting every rank's flushed parts on rank 0.

Each rank sends its host-side parts (already off the device: the flush's one sync) with
`gather_object` (works over gloo and NCCL); rank 0 merges them exactly in `records.build_records`
(int64 count sums, exact min/max, Chan's merge in float64) and writes once.
"""

from __future__ import annotations

import torch


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when torch.distributed is not initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_to_rank0(obj, rank: int, world: int) -> list | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None elsewhere (a collective: every rank calls it)."""
    if world == 1:
        return [obj]
    out = [None] * world if rank == 0 else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out
