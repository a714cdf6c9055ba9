"""Addressing one super-tile (`SUB x LANES` consecutive elements of a row) of a planned walk (layout.py).

Contiguous rows: `base + row_off + start` is an int64 scalar and the per-element offsets are small int32
(`< SUB * LANES`), so loads vectorise and nothing overflows for any tensor size. Strided rows: the
element index is unravelled over (s1, s2, s3) and re-strided in int64 for each operand.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_local(SUB: tl.constexpr, LANES: tl.constexpr):
    """[SUB, LANES] int32 positions of a super-tile's elements, row-major."""
    return tl.arange(0, SUB)[:, None] * LANES + tl.arange(0, LANES)[None, :]


@triton.jit
def tile_index(start, SUB: tl.constexpr, LANES: tl.constexpr):
    """(i1, i2, i3)-free int64 element indices start + local of a super-tile."""
    return start + tile_local(SUB, LANES).to(tl.int64)


@triton.jit
def unravel(i, s2, s3):
    """int64 inner index -> (i1, i2, i3) over inner dims (s1, s2, s3), row-major."""
    i3 = i % s3
    q = i // s3
    return q // s2, q % s2, i3


@triton.jit
def strided_offsets(i1, i2, i3, row_off, t1, t2, t3):
    return row_off + i1 * t1 + i2 * t2 + i3 * t3


@triton.jit
def load_tile(
    ptr,
    row_off,
    start,
    inner,
    s2,
    s3,
    t1,
    t2,
    t3,
    CONTIG: tl.constexpr,
    MASKED: tl.constexpr,
    SUB: tl.constexpr,
    LANES: tl.constexpr,
):
    """One operand's super-tile at inner positions [start, start + SUB * LANES) of its row."""
    local = tile_local(SUB, LANES)
    if CONTIG:
        p = ptr + (row_off + start) + local
    else:
        i1, i2, i3 = unravel(start + local.to(tl.int64), s2, s3)
        p = ptr + strided_offsets(i1, i2, i3, row_off, t1, t2, t3)
    if MASKED:
        return tl.load(p, mask=local < inner - start, other=0)
    return tl.load(p)


@triton.jit
def to_storage(v, dtype: tl.constexpr, EMULATE_RTNE: tl.constexpr):
    """v rounded to the storage dtype, round-to-nearest-even as on the GPU and in PyTorch.

    The interpreter (triton 3.x) truncates fp32 -> bf16; with EMULATE_RTNE (set under the interpreter
    only) the rounding is done on the bits instead, so CI checks the numbers a GPU stores.
    """
    if EMULATE_RTNE and dtype == tl.bfloat16 and v.dtype == tl.float32:
        bits = v.to(tl.uint32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # RTNE on the 16 dropped bits; carries into the exponent
        bits = tl.where(v != v, bits | 0x400000, rounded)  # NaN stays a (quiet) NaN
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return v.to(dtype)
