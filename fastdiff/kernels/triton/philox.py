"""Counter-based normal noise (fastdiff.step.PhiloxNoise): the stream every Triton kernel draws from.

Normal number k of stream `seed` is lane k % 4 of Box-Muller applied to Philox4x32-10
(key = seed, counter = k // 4), i.e. of `tl.randn4x(seed, k // 4)`. Element e (row-major index over
the sample's shape) of a draw at `offset` is normal number offset + e, so a draw is independent of
memory layout, a loop advancing `offset` by numel gets fresh numbers at every step, and a run of 4
aligned elements costs one Philox evaluation (`normal_run`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import config
from .tiles import tile_local, to_storage


@triton.jit
def normal_at(seed, k):
    """Normal number k (int64 tensor, any values) of stream `seed`, one Philox evaluation per element."""
    n1, n2, n3, n4 = tl.randn4x(seed, k >> 2)
    lane = k & 3
    return tl.where(lane == 0, n1, tl.where(lane == 1, n2, tl.where(lane == 2, n3, n4)))


@triton.jit
def normal_run(seed, k0, SUB: tl.constexpr, LANES: tl.constexpr):
    """Normal numbers k0 + [SUB, LANES] row-major positions; k0 % 4 == 0 and LANES % 4 == 0."""
    counter = (k0 >> 2) + tile_local(SUB, LANES // 4).to(tl.int64)
    n1, n2, n3, n4 = tl.randn4x(seed, counter)
    # tl.join adds a minor dim: [q, i, j] = (join(n1, n3), join(n2, n4))[j][q, i] -> n1, n2, n3, n4 along q
    return tl.reshape(tl.join(tl.join(n1, n3), tl.join(n2, n4)), (SUB, LANES))


@triton.jit
def normal_tile(seed, k0, local, CONTIG_RUN: tl.constexpr, SUB: tl.constexpr, LANES: tl.constexpr):
    """Normals k0 + local for a [SUB, LANES] tile; `CONTIG_RUN` when local is the row-major tile_local."""
    if CONTIG_RUN:
        if k0 % 4 == 0:
            z = normal_run(seed, k0, SUB, LANES)
        else:
            z = normal_at(seed, k0 + local)
    else:
        z = normal_at(seed, k0 + local)
    return z


@triton.jit(do_not_specialize=["numel", "seed", "offset"])
def _fill_kernel(
    out_ptr, numel, seed, offset_ptr, offset, OFFSET_PTR: tl.constexpr, SUB: tl.constexpr, LANES: tl.constexpr,
    EMULATE_RTNE: tl.constexpr,
):  # fmt: skip
    SUPER: tl.constexpr = SUB * LANES
    start = tl.program_id(0).to(tl.int64) * SUPER
    if OFFSET_PTR:
        off = tl.load(offset_ptr)
    else:
        off = tl.cast(offset, tl.int64)
    local = tile_local(SUB, LANES)
    z = normal_tile(seed, off + start, local.to(tl.int64), True, SUB, LANES)
    tl.store(out_ptr + start + local, to_storage(z, out_ptr.dtype.element_ty, EMULATE_RTNE), mask=local < numel - start)


def philox_normal(shape, seed: int, offset, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The noise a kernel draws for a sample of `shape` from `PhiloxNoise(seed, offset)`, as a tensor.

    `offset` is an int or an int64 0-d tensor on `device` (read on the device: no sync).
    """
    from .stats import launch

    if isinstance(offset, torch.Tensor):
        device = offset.device if device is None else torch.device(device)
    device = torch.device("cpu" if device is None else device)
    out = torch.empty(shape, dtype=dtype, device=device)
    n = out.numel()
    if n == 0:
        return out
    tile = config.step_tile(4)
    grid = ((n + tile.size - 1) // tile.size,)
    is_ptr = isinstance(offset, torch.Tensor)
    launch(
        _fill_kernel,
        grid,
        out,
        n,
        int(seed),
        offset if is_ptr else out,
        0 if is_ptr else int(offset),
        OFFSET_PTR=is_ptr,
        SUB=tile.sub,
        LANES=tile.lanes,
        EMULATE_RTNE=device.type == "cpu",
        num_warps=tile.num_warps,
    )
    return out
