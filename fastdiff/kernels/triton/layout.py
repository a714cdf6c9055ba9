"""How a kernel walks the elements of one or more same-shape tensors: rows x (up to 3 inner dims).

Kernels address element `i` of row `r` of operand k as

    ptr_k + r * row_stride_k + i1 * t1_k + i2 * t2_k + i3 * t3_k,   (i1, i2, i3) = unravel(i, (s1, s2, s3))

with int64 arithmetic, or — when every operand's row is one unit-stride run (`contiguous`) — as
`ptr_k + r * row_stride_k + i`, which vectorises. The plan reorders dimensions by the first operand's
strides (stats do not depend on the order; an elementwise op only needs the same order for every
operand), drops size-1 dims and coalesces dims that are one run in every operand, so transposed,
sliced, offset and expanded views mostly become one or two dims. Stats may also drop dims along which
every operand is broadcast (stride 0): the result then scales exactly by `repeat`.

More than 4 irreducible dims (rows + 3) gets no plan: the caller makes a contiguous copy (documented).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_INNER = 3


@dataclass(frozen=True)
class Plan:
    rows: int
    inner: int  # elements per row
    sizes: tuple[int, int, int]  # s1, s2, s3 (s1 * s2 * s3 == inner); s3 innermost
    strides: tuple[tuple[int, int, int, int], ...]  # per operand: (row_stride, t1, t2, t3)
    contiguous: bool  # one inner dim with unit stride in every operand
    repeat: int = 1  # product of the dropped all-broadcast dims (stats only)

    def args(self, k: int) -> tuple[int, int, int, int]:
        return self.strides[k]


def _coalesce(dims: list[tuple[int, tuple[int, ...]]]) -> list[tuple[int, tuple[int, ...]]]:
    out: list[tuple[int, tuple[int, ...]]] = []
    for size, strides in dims:
        if out:
            osize, ostrides = out[-1]
            if all(so == s * size for so, s in zip(ostrides, strides)):
                out[-1] = (osize * size, strides)
                continue
        out.append((size, strides))
    return out


def plan(
    shape: Sequence[int],
    strides: Sequence[Sequence[int]],
    *,
    keep_rows: bool = False,
    reorder: bool = True,
    drop_broadcast: bool = False,
    min_row: int = 1024,
) -> Plan | None:
    """The walk over `shape` for operands of the given strides; None when it needs more than 4 dims.

    keep_rows: dim 0 is the row dimension (per-sample results, per-sample clipping scale).
    min_row: a whole-tensor walk peels its outer dim into rows only when that leaves one unit-stride
    run of at least this many elements (so tiles stay full), or when it must (more than 3 dims).
    """
    nops = len(strides)
    dims = [(int(s), tuple(int(st[d]) for st in strides)) for d, s in enumerate(shape)]
    row = None
    if keep_rows:
        row, dims = dims[0], dims[1:]
    dims = [d for d in dims if d[0] != 1]
    repeat = 1
    if drop_broadcast:
        for d in dims:
            if all(s == 0 for s in d[1]):
                repeat *= d[0]
        dims = [d for d in dims if not all(s == 0 for s in d[1])]
    if reorder:
        # outermost first: larger stride of the first operand; broadcast (stride 0) dims outermost
        dims.sort(key=lambda d: (d[1][0] == 0, abs(d[1][0])), reverse=True)
    dims = _coalesce(dims)
    if row is None and dims:
        innermost_unit = all(s == 1 for s in dims[-1][1])
        if len(dims) > MAX_INNER or (len(dims) == 2 and innermost_unit and dims[-1][0] >= min_row):
            row, dims = dims[0], dims[1:]
    if len(dims) > MAX_INNER:
        return None
    contiguous = len(dims) == 0 or (len(dims) == 1 and all(s == 1 for s in dims[0][1]))
    dims = [(1, (0,) * nops)] * (MAX_INNER - len(dims)) + dims
    rows, row_strides = (1, (0,) * nops) if row is None else row
    inner = dims[0][0] * dims[1][0] * dims[2][0]
    per_op = tuple((row_strides[k], dims[0][1][k], dims[1][1][k], dims[2][1][k]) for k in range(nops))
    return Plan(
        rows=rows,
        inner=inner,
        sizes=(dims[0][0], dims[1][0], dims[2][0]),
        strides=per_op,
        contiguous=contiguous,
        repeat=repeat,
    )


def row_major_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Strides of a contiguous tensor of `shape` (the logical element index as an operand)."""
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(out))


def layout_kind(p: Plan, tensors: Sequence, vec: int) -> int:
    """The kernels' LAYOUT: 0 strided; 1 contiguous rows; 2 contiguous rows that every operand starts aligned to
    `vec` elements (data pointer and row stride; `tensors` in the plan's operand order), so that `vec`
    elements per thread load as one vector."""
    if not p.contiguous:
        return 0
    aligned = all(
        t.data_ptr() % (vec * t.element_size()) == 0 and (p.rows == 1 or st[0] % vec == 0)
        for t, st in zip(tensors, p.strides)
    )
    return 2 if aligned and vec > 1 else 1
