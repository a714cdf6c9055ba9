"""Addressing one tile of a planned walk (layout.py), and the reductions that stay inside a thread.

A tile is a [SUB, NT, VEC] block of consecutive elements of a row, row-major: element (s, t, v) sits at
position (s NT + t) VEC + v. Triton lays it out with VEC consecutive elements per thread (one 16-byte
load for full-width dtypes) and thread t owning column t of every row s, so a reduction over axes 2 and
0 (`thread_sum`, ...) never leaves the thread. The same shape serves per-sample stats of short rows as
[1, ROWS, COLS]: there "thread" t is sample row t.

Contiguous rows: `base + start` is an int64 scalar and the per-element offsets are small int32
(`< SUB NT VEC`), so loads vectorise and nothing overflows for any tensor size. Strided rows (fewer than
MAX_STRIDED_INNER elements): the element index is unravelled over (s1, s2, s3) in int32 and re-strided in
int64 for each operand.

Kernel arguments follow one rule: sizes and strides are int64 and never specialised on their value; the
program's place in the grid is int32; a tile that a program owns past the full ones is named by the host
(`tail_c`), so no kernel divides 64-bit integers (a call in SASS).
"""

from __future__ import annotations

import triton
import triton.language as tl

MAX_STRIDED_INNER = 1 << 31  # larger non-contiguous rows are copied first (int32 unravel)


@triton.jit
def tile_local(SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr):
    """[SUB, NT, VEC] int32 positions of a tile's elements, row-major."""
    s = tl.arange(0, SUB)[:, None, None]
    t = tl.arange(0, NT)[None, :, None]
    v = tl.arange(0, VEC)[None, None, :]
    return (s * NT + t) * VEC + v


@triton.jit
def thread_sum(v):
    """[SUB, NT, VEC] -> [NT]: the sum of each thread's elements."""
    return tl.sum(tl.sum(v, axis=2), axis=0)


@triton.jit
def thread_min(v):
    return tl.min(tl.min(v, axis=2), axis=0)


@triton.jit
def thread_max(v):
    return tl.max(tl.max(v, axis=2), axis=0)


@triton.jit
def per_thread(v):
    """[NT] -> [1, NT, 1], to combine a per-thread scalar with the thread's elements."""
    return v[None, :, None]


@triton.jit
def unravel(i, s2, s3):
    """int32 inner index -> (i1, i2, i3) over inner dims (s1, s2, s3), row-major.

    32-bit: a strided row holds fewer than 2^31 elements (launchers copy larger non-contiguous operands,
    `MAX_STRIDED_INNER`), and 32-bit division is inline where 64-bit division is a call that makes ptxas
    spill around it.
    """
    s3 = s3.to(tl.int32)
    s2 = s2.to(tl.int32)
    i3 = i % s3
    q = i // s3
    return q // s2, q % s2, i3


@triton.jit
def row_offset(r, row_stride, VEC: tl.constexpr, LAYOUT: tl.constexpr):
    """int64 offset of row r; a multiple of VEC elements where LAYOUT == 2 (the launcher checked)."""
    off = r.to(tl.int64) * row_stride
    if LAYOUT == 2:
        off = tl.multiple_of(off, VEC)
    return off


@triton.jit
def view_offsets(view, start, local, s2, s3, LAYOUT: tl.constexpr):
    """Pointers to the tile at inner positions start + local of a view (base pointer, t1, t2, t3).

    LAYOUT (layout.layout_kind): 0 strided, 1 contiguous, 2 contiguous with every row start aligned to VEC
    elements, which the pointers then state so that each thread's VEC elements load as one vector (pointer
    arguments are never specialised on alignment: the launcher checks it and says so here).
    """
    if LAYOUT > 0:
        p = view[0] + start + local
        if LAYOUT == 2:
            VEC: tl.constexpr = local.shape[2]
            ELEMENT_BYTES: tl.constexpr = max(1, view[0].dtype.element_ty.primitive_bitwidth // 8)
            p = tl.multiple_of(p, [1, 1, VEC * ELEMENT_BYTES])
        return p
    i1, i2, i3 = unravel(start.to(tl.int32) + local, s2, s3)
    return view[0] + (i1.to(tl.int64) * view[1] + i2.to(tl.int64) * view[2] + i3.to(tl.int64) * view[3])


@triton.jit
def load_view(view, start, local, s2, s3, limit, LAYOUT: tl.constexpr, MASKED: tl.constexpr):
    """The tile of a view at inner positions start + local; with MASKED only positions < limit are read."""
    p = view_offsets(view, start, local, s2, s3, LAYOUT)
    if MASKED:
        return tl.load(p, mask=local < limit, other=0)
    return tl.load(p)


@triton.jit
def store_view(view, start, local, s2, s3, limit, v, LAYOUT: tl.constexpr, MASKED: tl.constexpr):
    p = view_offsets(view, start, local, s2, s3, LAYOUT)
    if MASKED:
        tl.store(p, v, mask=local < limit)
    else:
        tl.store(p, v)


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


@triton.jit
def rows_tile_offsets(rows, row_stride, cols, s2, s3, t1, t2, t3, LAYOUT: tl.constexpr):
    """int64 offsets of a [1, ROWS, COLS] tile: element `cols` of each row in `rows` ([ROWS], int64)."""
    row_off = per_thread(rows * row_stride)
    if LAYOUT > 0:
        return row_off + cols
    i1, i2, i3 = unravel(cols, s2, s3)
    return row_off + (i1.to(tl.int64) * t1 + i2.to(tl.int64) * t2 + i3.to(tl.int64) * t3)
