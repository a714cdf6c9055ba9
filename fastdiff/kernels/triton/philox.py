"""Counter-based normal noise (fastdiff.step.PhiloxNoise): the stream every Triton kernel draws from.

Normal number k of stream `seed` is lane k % 4 of Box-Muller applied to the four uniforms of
Philox4x32-10 (key = seed, counter = k // 4; `tl.rand4x(seed, k // 4)`): for each pair (u1, u2)

    r = sqrt(-2 ln max(u1, 1e-7)),   (r cos 2 pi u2, r sin 2 pi u2)

as `tl.randn4x`, except that cos / sin of 2 pi u2 are evaluated from the exact quadrant of 4 u2 and Taylor
polynomials on |angle| <= pi / 4 (`cos_sin_2pi`): libdevice's sinf / cosf carry a large-argument reduction
with a local array, which ptxas counts as spilled registers, and 2 pi u2 never needs it. Element e (row-major
index over the sample's shape) of a draw at `offset` is normal number offset + e, so a draw is independent of
memory layout, a loop advancing `offset` by numel gets fresh numbers at every step, and a run of 4 aligned
elements costs one Philox evaluation (`normal_run`).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import config
from .tiles import tile_local, to_storage

# sin(pi y) = sum_k (-1)^k pi^(2k+1) y^(2k+1) / (2k+1)!,  cos(pi y) = sum_k (-1)^k pi^(2k) y^(2k) / (2k)!  (|y| <= 1/4:
# the first omitted terms are below 2e-9, under an fp32 ulp)
_S = [tl.constexpr((-1) ** k * math.pi ** (2 * k + 1) / math.factorial(2 * k + 1)) for k in range(5)]
_C = [tl.constexpr((-1) ** k * math.pi ** (2 * k) / math.factorial(2 * k)) for k in range(6)]
S1, S3, S5, S7, S9 = _S
C2, C4, C6, C8, C10 = _C[1:]


@triton.jit
def cos_sin_2pi(u):
    """(cos 2 pi u, sin 2 pi u) for u in [0, 1]: 2 pi u = (pi / 2)(q + f) with q the nearest integer to 4u and
    f = 4u - q in [-1/2, 1/2] (both exact), then the polynomials at y = f / 2 and a quadrant rotation."""
    t = u * 4.0
    q = tl.floor(t + 0.5)
    y = (t - q) * 0.5
    y2 = y * y
    s = y * (S1 + y2 * (S3 + y2 * (S5 + y2 * (S7 + y2 * S9))))
    c = 1.0 + y2 * (C2 + y2 * (C4 + y2 * (C6 + y2 * (C8 + y2 * C10))))
    quadrant = q.to(tl.int32) & 3
    cos = tl.where(quadrant == 0, c, tl.where(quadrant == 1, -s, tl.where(quadrant == 2, -c, s)))
    sin = tl.where(quadrant == 0, s, tl.where(quadrant == 1, c, tl.where(quadrant == 2, -s, -c)))
    return cos, sin


@triton.jit
def box_muller(u1, u2):
    r = tl.sqrt(-2.0 * tl.log(tl.maximum(1.0e-7, u1)))
    cos, sin = cos_sin_2pi(u2)
    return r * cos, r * sin


@triton.jit
def normal4(seed, counter):
    """The four normals of Philox counter `counter` (int64 tensor) of stream `seed`."""
    u1, u2, u3, u4 = tl.rand4x(seed, counter)
    n1, n2 = box_muller(u1, u2)
    n3, n4 = box_muller(u3, u4)
    return n1, n2, n3, n4


@triton.jit
def normal_at(seed, k):
    """Normal number k (int64 tensor, any values) of stream `seed`, one Philox evaluation per element."""
    n1, n2, n3, n4 = normal4(seed, k >> 2)
    lane = k & 3
    return tl.where(lane == 0, n1, tl.where(lane == 1, n2, tl.where(lane == 2, n3, n4)))


@triton.jit
def normal_run(seed, k0, SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr):
    """Normal numbers k0 + the [SUB, NT, VEC] row-major positions of a tile; k0 % 4 == 0 and VEC % 4 == 0."""
    counter = (k0 >> 2) + tile_local(SUB, NT, VEC // 4).to(tl.int64)
    n1, n2, n3, n4 = normal4(seed, counter)
    # tl.join adds a minor dim: [.., i, j] of join(join(n1, n3), join(n2, n4)) is n1, n2, n3, n4 in order
    return tl.reshape(tl.join(tl.join(n1, n3), tl.join(n2, n4)), (SUB, NT, VEC))


@triton.jit
def normal_tile(seed, k0, local, CONTIG_RUN: tl.constexpr, SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr):
    """Normals of a tile: k0 + local when CONTIG_RUN (local: the tile's row-major positions), else k0 itself
    holds each element's number."""
    if CONTIG_RUN:
        if VEC % 4 == 0:
            if k0 % 4 == 0:
                z = normal_run(seed, k0, SUB, NT, VEC)
            else:
                z = normal_at(seed, k0 + local.to(tl.int64))
        else:
            z = normal_at(seed, k0 + local.to(tl.int64))
    else:
        z = normal_at(seed, k0)
    return z


@triton.jit(
    do_not_specialize=["numel", "seed", "offset", "off_from_ptr"],
    do_not_specialize_on_alignment=["out_ptr", "offset_ptr"],
)
def _fill_kernel(
    out_ptr, offset_ptr, numel: tl.int64, seed: tl.int64, offset: tl.int64, off_from_ptr: tl.int64,
    SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr, EMULATE_RTNE: tl.constexpr,
):  # fmt: skip
    TILE: tl.constexpr = SUB * NT * VEC
    start = tl.program_id(0).to(tl.int64) * TILE
    off = tl.cast(offset, tl.int64)
    if off_from_ptr:
        off = tl.load(offset_ptr)
    local = tile_local(SUB, NT, VEC)
    z = normal_tile(seed, off + start, local, True, SUB, NT, VEC)
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
        offset if is_ptr else torch.zeros((), dtype=torch.int64, device=device),
        n,
        int(seed),
        0 if is_ptr else int(offset),
        int(is_ptr),
        SUB=tile.sub,
        NT=tile.threads,
        VEC=tile.vec,
        EMULATE_RTNE=device.type == "cpu",
        num_warps=tile.num_warps,
    )
    return out
