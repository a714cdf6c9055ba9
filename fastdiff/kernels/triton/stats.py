"""One-pass tensor / pair / multi-tensor statistics on the GPU (Triton), in the raw layouts of fastdiff.stats.

Launch 1 — `tensor_stats_kernel`: each program walks tiles of its row grid-stride, folds them into
per-thread moments (moments.py) and writes one partial (counts int64 [5], moments fp64 [4]).
Launch 2 — `merge_kernel`: one program per output row merges its partials in a fixed order (two-pass
Chan merge in fp64), scales by the broadcast repeat, and writes the final raw stats. Skipped when a row
has a single partial and nothing to scale. No float atomics, no host sync: results stay on the device.

Per-sample stats of short rows (<= config.ROWS_MAX_INNER elements) take `rows_stats_kernel` instead:
one launch, several rows per program (a [1, ROWS, COLS] tile, one row per "thread"), final rows written
directly — not one program per row.

Multi-tensor: one launch of the stats kernel per dtype group over a table of segments (data pointer as an
int64, sizes, strides, programs) — the pointer-table pattern of Triton's grouped-GEMM tutorial, which the
interpreter runs as well (an int64 turned into a pointer is a bitcast there) — then one merge launch for
all groups, straight into the rows of the result. 300 fp32 parameter tensors: 2 launches and one
pinned host-to-device copy of the table (cached while the tensors stay the same).

Kernel arguments: every integer size, stride and count is an int64 that is never specialised on its value
(`do_not_specialize`), so one compiled kernel serves every shape of a (dtype, layout kind); the launcher
states what the compiler may assume instead (`ROW_ALIGNED`: row offsets are multiples of the vector
width). Every launch disables FMA contraction (`launch`): results round as written, as the interpreter
and the float64 oracle's same-dtype runs do.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import triton
import triton.language as tl

from ...stats import empty_pair_raw, empty_raw
from . import config
from .layout import Plan, layout_kind, plan
from .moments import accumulate, empty_state, store_partial, store_rows
from .tiles import (
    MAX_STRIDED_INNER,
    load_view,
    per_thread,
    row_offset,
    rows_tile_offsets,
    thread_max,
    thread_sum,
    tile_local,
)

# dtypes a kernel loads directly; accumulation dtype per dtype (fp32 holds the small ones exactly)
NATIVE = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
)
ACC64 = (torch.float64, torch.int32, torch.int64)
# a segment of the multi-tensor table: ptr, inner, s2, s3, t1, t2, t3, programs, program of the partial tile
SEG_FIELDS = tl.constexpr(9)

# Every kernel launch of this backend goes through `launch` (tests count them). While `recording` is a list,
# launches are appended to it instead of run (fastdiff.kernels.triton_gate compiles what they would run).
launches = 0
recording: list | None = None


def launch(kernel, grid, *args, **kwargs):
    """kernel[grid](*args, **kwargs), FMA contraction off (the FMA policy of every fastdiff kernel)."""
    global launches
    launches += 1
    kwargs["enable_fp_fusion"] = False
    if recording is not None:
        recording.append((kernel, grid, args, kwargs))
        return
    kernel[grid](*args, **kwargs)


def acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype in ACC64 else tl.float32


def as_native(x: torch.Tensor) -> torch.Tensor:
    """x itself for the dtypes the kernels load; otherwise an exact-enough device copy (documented).

    uint16/uint32/uint64 go to float64 (what the float64 oracle reads them as), float8 types to float32.
    """
    if x.dtype in NATIVE:
        return x
    return x.to(torch.float64 if not x.dtype.is_floating_point else torch.float32)


# --------------------------------------------------------------------------------------------------
# kernels

_INTS = ["inner", "row_stride", "s2", "s3", "t1", "t2", "t3", "progs_per_row", "tail_c", "part_base", "n_rows"]
_PTRS = ["x_ptr", "counts_ptr", "moments_ptr", "seg_ptr", "prog_ptr"]


@triton.jit
def _stats_range(view, c, C, tail_c, inner, s2, s3, ACC: tl.constexpr, LAYOUT: tl.constexpr, SUB: tl.constexpr,
                 NT: tl.constexpr, VEC: tl.constexpr):  # fmt: skip
    """Per-thread moments of the tiles c, c + C, ... of one row (a view: base pointer, t1, t2, t3); program
    c == tail_c also takes the partial last tile."""
    TILE: tl.constexpr = SUB * NT * VEC
    state = empty_state(NT, ACC)
    local = tile_local(SUB, NT, VEC)
    n_full = inner // TILE
    for j in range(c, n_full, C):
        v = load_view(view, tl.cast(j, tl.int64) * TILE, local, s2, s3, TILE, LAYOUT, False).to(ACC)
        state = accumulate(state, v, local < TILE, False)
    if c == tail_c:  # the partial last tile
        start = tl.cast(n_full, tl.int64) * TILE
        v = load_view(view, start, local, s2, s3, inner - start, LAYOUT, True).to(ACC)
        state = accumulate(state, v, local < inner - start, True)
    return state


@triton.jit(do_not_specialize=_INTS, do_not_specialize_on_alignment=_PTRS)
def tensor_stats_kernel(
    x_ptr, counts_ptr, moments_ptr, seg_ptr, prog_ptr,
    part_base: tl.int64, inner: tl.int64, row_stride: tl.int64, s2: tl.int64, s3: tl.int64,
    t1: tl.int64, t2: tl.int64, t3: tl.int64, progs_per_row: tl.int32, tail_c: tl.int32,
    ACC: tl.constexpr, TABLE: tl.constexpr, LAYOUT: tl.constexpr,
    SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    """Scalar mode: program pid = row * progs_per_row + c. Table mode: (segment, c) from `prog_ptr`."""
    pid = tl.program_id(0)
    if TABLE:
        seg = tl.load(prog_ptr + 2 * pid)
        c = tl.load(prog_ptr + 2 * pid + 1)
        rec = seg_ptr + seg * SEG_FIELDS
        base = tl.load(rec).to(tl.pointer_type(x_ptr.dtype.element_ty))
        view = (base, tl.load(rec + 4), tl.load(rec + 5), tl.load(rec + 6))
        state = _stats_range(
            view, c, tl.load(rec + 7), tl.load(rec + 8), tl.load(rec + 1), tl.load(rec + 2), tl.load(rec + 3),
            ACC, LAYOUT, SUB, NT, VEC,
        )  # fmt: skip
    else:
        r = pid // progs_per_row
        c = pid % progs_per_row
        view = (x_ptr + row_offset(r, row_stride, VEC, LAYOUT), t1, t2, t3)
        state = _stats_range(view, c, progs_per_row, tail_c, inner, s2, s3, ACC, LAYOUT, SUB, NT, VEC)
    store_partial(counts_ptr, moments_ptr, part_base + pid, state)


@triton.jit(do_not_specialize=_INTS, do_not_specialize_on_alignment=_PTRS)
def rows_stats_kernel(
    x_ptr, counts_ptr, moments_ptr,
    n_rows: tl.int64, inner: tl.int64, row_stride: tl.int64, s2: tl.int64, s3: tl.int64,
    t1: tl.int64, t2: tl.int64, t3: tl.int64,
    ACC: tl.constexpr, LAYOUT: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Final raw stats of rows pid * ROWS + [0, ROWS), COLS columns of each at a time: no merge launch."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    cols = tl.arange(0, COLS)[None, None, :]
    state = empty_state(ROWS, ACC)
    for c0 in range(0, inner, COLS):
        valid = per_thread(row_ok) & (cols < inner - c0)
        offs = rows_tile_offsets(rows, row_stride, cols + c0, s2, s3, t1, t2, t3, LAYOUT)
        v = tl.load(x_ptr + offs, mask=valid, other=0).to(ACC)
        state = accumulate(state, v, valid, True)
    store_rows(counts_ptr, moments_ptr, rows, row_ok, state)


@triton.jit(
    do_not_specialize=["n_out", "per_output", "repeat", "n_extra"],
    do_not_specialize_on_alignment=["counts_p", "moments_p", "counts_o", "moments_o", "tab_ptr", "extra_p", "extra_o"],
)
def merge_kernel(
    counts_p, moments_p, counts_o, moments_o, tab_ptr,
    n_out: tl.int64, per_output: tl.int64, repeat: tl.int64, extra_p, extra_o, n_extra: tl.int64,
    TABLE: tl.constexpr, HAS_EXTRA: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Output row o = exact merge of partial rows [start, start + count) (Chan, two-pass, fp64), x repeat.

    Table rows (int64): start, count, output row, repeat. Program 0 also sums `extra_p` (the step's
    clipped counts) into `extra_o`.
    """
    o = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    if HAS_EXTRA:
        if o == 0:
            tot = tl.zeros((BLOCK,), tl.int64)
            for b in range(0, n_extra, BLOCK):
                tot += tl.load(extra_p + b + offs, mask=b + offs < n_extra, other=0)
            tl.store(extra_o, tl.sum(tot, axis=0))
    if o < n_out:
        if TABLE:
            start = tl.load(tab_ptr + 4 * o)
            count = tl.load(tab_ptr + 4 * o + 1)
            out = tl.load(tab_ptr + 4 * o + 2)
            rep = tl.load(tab_ptr + 4 * o + 3)
        else:
            start = o.to(tl.int64) * per_output
            count = per_output
            out = o.to(tl.int64)
            rep = repeat
        c_all = tl.zeros((BLOCK,), tl.int64)
        c_nan = tl.zeros((BLOCK,), tl.int64)
        c_pinf = tl.zeros((BLOCK,), tl.int64)
        c_ninf = tl.zeros((BLOCK,), tl.int64)
        c_zero = tl.zeros((BLOCK,), tl.int64)
        n_acc = tl.zeros((BLOCK,), tl.float64)
        s_acc = tl.zeros((BLOCK,), tl.float64)
        vmin = tl.full((BLOCK,), float("inf"), tl.float64)
        vmax = tl.full((BLOCK,), -float("inf"), tl.float64)
        for b in range(0, count, BLOCK):
            m = b + offs < count
            row = start + b + offs
            cc = counts_p + row * 5
            a = tl.load(cc, mask=m, other=0)
            na = tl.load(cc + 1, mask=m, other=0)
            pi = tl.load(cc + 2, mask=m, other=0)
            ni = tl.load(cc + 3, mask=m, other=0)
            c_all += a
            c_nan += na
            c_pinf += pi
            c_ninf += ni
            c_zero += tl.load(cc + 4, mask=m, other=0)
            mm = moments_p + row * 4
            vmin = tl.minimum(vmin, tl.load(mm, mask=m, other=float("inf")))
            vmax = tl.maximum(vmax, tl.load(mm + 1, mask=m, other=-float("inf")))
            nf = (a - na - pi - ni).to(tl.float64)
            n_acc += nf
            s_acc += nf * tl.load(mm + 2, mask=m, other=0.0)
        total = tl.sum(n_acc, axis=0)
        mean = tl.sum(s_acc, axis=0) / tl.where(total > 0, total, 1.0)
        q_acc = tl.zeros((BLOCK,), tl.float64)
        for b in range(0, count, BLOCK):
            m = b + offs < count
            row = start + b + offs
            cc = counts_p + row * 5
            nf = (
                tl.load(cc, mask=m, other=0)
                - tl.load(cc + 1, mask=m, other=0)
                - tl.load(cc + 2, mask=m, other=0)
                - tl.load(cc + 3, mask=m, other=0)
            ).to(tl.float64)
            mm = moments_p + row * 4
            dev = tl.load(mm + 2, mask=m, other=0.0) - mean
            q_acc += tl.load(mm + 3, mask=m, other=0.0) + nf * dev * dev
        q = tl.sum(q_acc, axis=0)
        co = counts_o + out * 5
        tl.store(co, tl.sum(c_all, axis=0) * rep)
        tl.store(co + 1, tl.sum(c_nan, axis=0) * rep)
        tl.store(co + 2, tl.sum(c_pinf, axis=0) * rep)
        tl.store(co + 3, tl.sum(c_ninf, axis=0) * rep)
        tl.store(co + 4, tl.sum(c_zero, axis=0) * rep)
        mo = moments_o + out * 4
        tl.store(mo, tl.min(vmin, axis=0))
        tl.store(mo + 1, tl.max(vmax, axis=0))
        tl.store(mo + 2, tl.where(total > 0, mean, 0.0))
        tl.store(mo + 3, tl.where(total > 0, q * rep, 0.0))


@triton.jit
def _pair_sums(a, b, valid):
    """Per-thread fp64 n, sum ab, sum a^2, sum b^2, sum (a - b)^2, max |a - b| of a pair of tiles (0 outside valid).

    Products of fp32 values are exact in fp64; the max is NaN exactly when sum (a - b)^2 is (a NaN
    difference), so NaN propagates like torch.amax whatever the hardware max does with NaN.
    """
    a = a.to(tl.float64)
    b = b.to(tl.float64)
    d = a - b
    n = thread_sum(valid.to(tl.float64))
    return n, thread_sum(a * b), thread_sum(a * a), thread_sum(b * b), thread_sum(d * d), thread_max(tl.abs(d))


@triton.jit
def _pair_add(acc, t):
    return acc[0] + t[0], acc[1] + t[1], acc[2] + t[2], acc[3] + t[3], acc[4] + t[4], tl.maximum(acc[5], t[5])


_PAIR_INTS = ["n_rows", "inner", "s2", "s3", "ar", "a1", "a2", "a3", "br", "b1", "b2", "b3", "progs_per_row", "tail_c"]
_PAIR_PTRS = ["a_ptr", "b_ptr", "part_ptr", "out_ptr"]


@triton.jit(do_not_specialize=_PAIR_INTS, do_not_specialize_on_alignment=_PAIR_PTRS)
def pair_stats_kernel(
    a_ptr, b_ptr, part_ptr, inner: tl.int64, s2: tl.int64, s3: tl.int64,
    ar: tl.int64, a1: tl.int64, a2: tl.int64, a3: tl.int64,
    br: tl.int64, b1: tl.int64, b2: tl.int64, b3: tl.int64, progs_per_row: tl.int32, tail_c: tl.int32,
    LAYOUT: tl.constexpr, SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    """Partial pair sums (fastdiff.stats pair layout) of one program, in fp64."""
    TILE: tl.constexpr = SUB * NT * VEC
    pid = tl.program_id(0)
    r = (pid // progs_per_row).to(tl.int64)
    c = pid % progs_per_row
    va = (a_ptr + row_offset(r, ar, VEC, LAYOUT), a1, a2, a3)
    vb = (b_ptr + row_offset(r, br, VEC, LAYOUT), b1, b2, b3)
    local = tile_local(SUB, NT, VEC)
    zf = tl.zeros((NT,), tl.float64)
    acc = (zf, zf, zf, zf, zf, zf)
    n_full = inner // TILE
    for j in range(c, n_full, progs_per_row):
        start = tl.cast(j, tl.int64) * TILE
        a = load_view(va, start, local, s2, s3, TILE, LAYOUT, False)
        b = load_view(vb, start, local, s2, s3, TILE, LAYOUT, False)
        acc = _pair_add(acc, _pair_sums(a, b, local < TILE))
    if c == tail_c:
        start = tl.cast(n_full, tl.int64) * TILE
        a = load_view(va, start, local, s2, s3, inner - start, LAYOUT, True)
        b = load_view(vb, start, local, s2, s3, inner - start, LAYOUT, True)
        acc = _pair_add(acc, _pair_sums(a, b, local < inner - start))
    p = part_ptr + pid.to(tl.int64) * 6
    sd_t = tl.sum(acc[4], axis=0)
    tl.store(p, tl.sum(acc[0], axis=0))
    tl.store(p + 1, tl.sum(acc[1], axis=0))
    tl.store(p + 2, tl.sum(acc[2], axis=0))
    tl.store(p + 3, tl.sum(acc[3], axis=0))
    tl.store(p + 4, sd_t)
    tl.store(p + 5, tl.where(sd_t != sd_t, float("nan"), tl.max(acc[5], axis=0)))


@triton.jit(do_not_specialize=_PAIR_INTS, do_not_specialize_on_alignment=_PAIR_PTRS)
def pair_rows_kernel(
    a_ptr, b_ptr, out_ptr, n_rows: tl.int64, inner: tl.int64, s2: tl.int64, s3: tl.int64,
    ar: tl.int64, a1: tl.int64, a2: tl.int64, a3: tl.int64,
    br: tl.int64, b1: tl.int64, b2: tl.int64, b3: tl.int64,
    LAYOUT: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Final pair sums of rows pid * ROWS + [0, ROWS), COLS columns of each at a time: no merge launch."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    cols = tl.arange(0, COLS)[None, None, :]
    zf = tl.zeros((ROWS,), tl.float64)
    acc = (zf, zf, zf, zf, zf, zf)
    for c0 in range(0, inner, COLS):
        valid = per_thread(row_ok) & (cols < inner - c0)
        a = tl.load(a_ptr + rows_tile_offsets(rows, ar, cols + c0, s2, s3, a1, a2, a3, LAYOUT), mask=valid, other=0)
        b = tl.load(b_ptr + rows_tile_offsets(rows, br, cols + c0, s2, s3, b1, b2, b3, LAYOUT), mask=valid, other=0)
        acc = _pair_add(acc, _pair_sums(a, b, valid))
    n, dot, sa, sb, sd, mx = acc
    p = out_ptr + rows * 6
    tl.store(p, n, mask=row_ok)
    tl.store(p + 1, dot, mask=row_ok)
    tl.store(p + 2, sa, mask=row_ok)
    tl.store(p + 3, sb, mask=row_ok)
    tl.store(p + 4, sd, mask=row_ok)
    tl.store(p + 5, tl.where(sd != sd, float("nan"), mx), mask=row_ok)


@triton.jit(do_not_specialize=["per_output", "repeat"], do_not_specialize_on_alignment=["part_ptr", "out_ptr"])
def pair_merge_kernel(part_ptr, out_ptr, per_output: tl.int64, repeat: tl.int64, BLOCK: tl.constexpr):
    """Output row o: sums of partial rows [o * per_output, ...) x repeat, NaN-propagating max."""
    o = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    start = o.to(tl.int64) * per_output
    acc0 = tl.zeros((BLOCK,), tl.float64)
    acc1, acc2, acc3, acc4 = acc0, acc0, acc0, acc0
    mx = acc0
    has_nan = tl.zeros((BLOCK,), tl.int32)
    for b in range(0, per_output, BLOCK):
        m = b + offs < per_output
        p = part_ptr + (start + b + offs) * 6
        acc0 += tl.load(p, mask=m, other=0.0)
        acc1 += tl.load(p + 1, mask=m, other=0.0)
        acc2 += tl.load(p + 2, mask=m, other=0.0)
        acc3 += tl.load(p + 3, mask=m, other=0.0)
        acc4 += tl.load(p + 4, mask=m, other=0.0)
        v = tl.load(p + 5, mask=m, other=0.0)
        has_nan = tl.maximum(has_nan, (v != v).to(tl.int32))
        mx = tl.maximum(mx, tl.where(v != v, 0.0, v))
    rep = repeat
    q = out_ptr + o.to(tl.int64) * 6
    tl.store(q, tl.sum(acc0, axis=0) * rep)
    tl.store(q + 1, tl.sum(acc1, axis=0) * rep)
    tl.store(q + 2, tl.sum(acc2, axis=0) * rep)
    tl.store(q + 3, tl.sum(acc3, axis=0) * rep)
    tl.store(q + 4, tl.sum(acc4, axis=0) * rep)
    tl.store(q + 5, tl.where(tl.max(has_nan, axis=0) > 0, float("nan"), tl.max(mx, axis=0)))


# --------------------------------------------------------------------------------------------------
# launchers


def _programs_per_row(inner: int, rows: int, tile_size: int, device: torch.device) -> int:
    return max(1, min(math.ceil(inner / tile_size), math.ceil(config.target_programs(device) / rows)))


def tail_program(inner: int, tile_size: int, programs: int) -> int:
    """The program (of `programs` per row, tiles dealt round-robin) that takes the partial last tile; -1: none."""
    return (inner // tile_size) % programs if inner % tile_size else -1


def _plan(tensors: list[torch.Tensor], *, per_sample: bool, min_row: int) -> tuple[list[torch.Tensor], Plan]:
    """The walk over same-shape tensors; more than 4 irreducible dims: contiguous copies (rare; documented)."""
    shape = tuple(tensors[0].shape) if tensors[0].dim() else (1,)
    strides = [tuple(t.stride()) if t.dim() else (1,) for t in tensors]
    p = plan(shape, strides, keep_rows=per_sample, drop_broadcast=True, min_row=min_row)
    if p is None or (not p.contiguous and p.inner >= MAX_STRIDED_INNER):
        tensors = [t.contiguous() for t in tensors]
        strides = [tuple(t.stride()) if t.dim() else (1,) for t in tensors]
        p = plan(shape, strides, keep_rows=per_sample, drop_broadcast=True, min_row=min_row)
    return tensors, p


def _packed_rows(p: Plan) -> bool:
    """Per-sample rows short enough for the packed kernels (several rows per program, no merge)."""
    return p.rows > 1 and p.inner <= config.ROWS_MAX_INNER and p.repeat == 1


def merge(counts_p, moments_p, n_out: int, per_output: int, repeat: int, *, extra=None):
    """Final raw stats [n_out, 5] / [n_out, 4] from partial rows; optionally the sum of `extra` (int64)."""
    dev = counts_p.device
    counts = torch.empty(n_out, 5, dtype=torch.int64, device=dev)
    moments = torch.empty(n_out, 4, dtype=torch.float64, device=dev)
    extra_o = torch.empty((), dtype=torch.int64, device=dev) if extra is not None else None
    launch(
        merge_kernel,
        (max(n_out, 1),),
        counts_p,
        moments_p,
        counts,
        moments,
        counts_p,
        n_out,
        per_output,
        repeat,
        extra if extra is not None else counts_p,
        extra_o if extra is not None else counts_p,
        extra.numel() if extra is not None else 0,
        TABLE=False,
        HAS_EXTRA=extra is not None,
        BLOCK=config.MERGE_BLOCK,
        num_warps=config.MERGE_WARPS,
    )
    return counts, moments, extra_o


def tensor_stats(x: torch.Tensor, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rows_out = x.shape[0] if per_sample else None
    if x.numel() == 0:
        return empty_raw(() if rows_out is None else (rows_out,), device=x.device)
    x = as_native(x)
    tile = config.stats_tile(x.dtype)
    (x,), p = _plan([x], per_sample=per_sample, min_row=tile.size)
    row_stride, t1, t2, t3 = p.strides[0]
    if per_sample and _packed_rows(p):
        counts = torch.empty(p.rows, 5, dtype=torch.int64, device=x.device)
        moments = torch.empty(p.rows, 4, dtype=torch.float64, device=x.device)
        launch(rows_stats_kernel, (math.ceil(p.rows / config.ROWS),), x, counts, moments, p.rows, p.inner,
               row_stride, p.sizes[1], p.sizes[2], t1, t2, t3, ACC=acc_dtype(x.dtype), LAYOUT=int(p.contiguous),
               ROWS=config.ROWS, COLS=config.COLS, num_warps=config.ROWS_WARPS)  # fmt: skip
        return counts, moments
    layout = layout_kind(p, [x], tile.vec)
    if layout < 2:  # strided, or rows not aligned for vector loads: one element per load (per-element
        # addresses in VEC-wide tiles cost the registers of a second program per SM)
        tile = config.stats_tile(x.dtype, vector=False)
    C = _programs_per_row(p.inner, p.rows, tile.size, x.device)
    P = p.rows * C
    counts_p = torch.empty(P, 5, dtype=torch.int64, device=x.device)
    moments_p = torch.empty(P, 4, dtype=torch.float64, device=x.device)
    launch(
        tensor_stats_kernel,
        (P,),
        x,
        counts_p,
        moments_p,
        counts_p,
        counts_p,
        0,
        p.inner,
        row_stride,
        p.sizes[1],
        p.sizes[2],
        t1,
        t2,
        t3,
        C,
        tail_program(p.inner, tile.size, C),
        ACC=acc_dtype(x.dtype),
        TABLE=False,
        LAYOUT=layout,
        SUB=tile.sub,
        NT=tile.threads,
        VEC=tile.vec,
        num_warps=tile.num_warps,
    )
    if per_sample:
        if C == 1 and p.repeat == 1:
            return counts_p, moments_p
        counts, moments, _ = merge(counts_p, moments_p, p.rows, C, p.repeat)
        return counts, moments
    if P == 1 and p.repeat == 1:
        return counts_p[0], moments_p[0]
    counts, moments, _ = merge(counts_p, moments_p, 1, P, p.repeat)
    return counts[0], moments[0]


def pair_stats(a: torch.Tensor, b: torch.Tensor, per_sample: bool) -> torch.Tensor:
    rows_out = a.shape[0] if per_sample else None
    if a.numel() == 0:
        return empty_pair_raw(() if rows_out is None else (rows_out,), device=a.device)
    tile = config.pair_tile()
    (a, b), p = _plan([as_native(a), as_native(b)], per_sample=per_sample, min_row=tile.size)
    if per_sample and _packed_rows(p):
        out = torch.empty(p.rows, 6, dtype=torch.float64, device=a.device)
        launch(pair_rows_kernel, (math.ceil(p.rows / config.ROWS),), a, b, out, p.rows, p.inner, p.sizes[1],
               p.sizes[2], *p.strides[0], *p.strides[1], LAYOUT=int(p.contiguous), ROWS=config.ROWS,
               COLS=config.COLS, num_warps=config.ROWS_WARPS)  # fmt: skip
        return out
    layout = layout_kind(p, [a, b], tile.vec)
    if layout < 2:  # strided or not aligned for vector loads: one element per load (as tensor_stats)
        tile = config.pair_tile(vector=False)
    C = _programs_per_row(p.inner, p.rows, tile.size, a.device)
    P = p.rows * C
    part = torch.empty(P, 6, dtype=torch.float64, device=a.device)
    launch(
        pair_stats_kernel,
        (P,),
        a,
        b,
        part,
        p.inner,
        p.sizes[1],
        p.sizes[2],
        *p.strides[0],
        *p.strides[1],
        C,
        tail_program(p.inner, tile.size, C),
        LAYOUT=layout,
        SUB=tile.sub,
        NT=tile.threads,
        VEC=tile.vec,
        num_warps=tile.num_warps,
    )
    n_out = p.rows if per_sample else 1
    per_output = C if per_sample else P
    if per_output == 1 and p.repeat == 1:
        out = part
    else:
        out = torch.empty(n_out, 6, dtype=torch.float64, device=a.device)
        launch(pair_merge_kernel, (n_out,), part, out, per_output, p.repeat, BLOCK=config.MERGE_BLOCK,
               num_warps=config.MERGE_WARPS)  # fmt: skip
    return out if per_sample else out[0]


# --------------------------------------------------------------------------------------------------
# multi-tensor: pointer tables


_TABLE_CACHE: OrderedDict = OrderedDict()
_TABLE_CACHE_SIZE = 16


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host-built table on `device` without syncing the host (pinned memory, non-blocking copy)."""
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


def _build_tables(xs: list[torch.Tensor]):
    """(table on device, [(dtype, layout, tile, part offset, programs, seg offset, prog offset)], n_seg, n_prog,
    n_part, keep-alive). Segments are grouped by dtype and layout kind (strided, contiguous, contiguous and
    aligned): one launch per group."""
    device = xs[0].device
    target = config.target_programs(device)
    keep = []
    groups: OrderedDict = OrderedDict()
    for i, x in enumerate(xs):
        if x.numel() == 0:
            continue
        native = as_native(x)
        if native is not x:
            keep.append(native)
            x = native
        shape, stride = (tuple(x.shape), tuple(x.stride())) if x.dim() else ((1,), (1,))
        p = plan(shape, [stride], drop_broadcast=True, min_row=1 << 62)
        if p is None or p.rows > 1 or (not p.contiguous and p.inner >= MAX_STRIDED_INNER):  # copied (rare)
            x = x.contiguous()
            keep.append(x)
            p = plan(shape, [x.stride() if x.dim() else (1,)], drop_broadcast=True, min_row=1 << 62)
        layout = layout_kind(p, [x], config.stats_tile(x.dtype).vec)
        groups.setdefault((x.dtype, layout), []).append((i, x, p))

    seg_rows, prog_rows, launches_info = [], [], []
    part = 0
    merge_rows = [[0, 0, i, 1] for i in range(len(xs))]
    for (dtype, layout), members in groups.items():
        tile = config.stats_tile(dtype, vector=layout == 2)  # as tensor_stats: vector tiles where aligned
        total = sum(p.inner for _, _, p in members)
        seg0, prog0, part0 = len(seg_rows), len(prog_rows), part
        for local_seg, (i, x, p) in enumerate(members):
            n_tiles = math.ceil(p.inner / tile.size)
            progs = max(1, min(n_tiles, round(target * p.inner / total)))
            _, t1, t2, t3 = p.strides[0]
            tail = tail_program(p.inner, tile.size, progs)
            seg_rows.append([x.data_ptr(), p.inner, p.sizes[1], p.sizes[2], t1, t2, t3, progs, tail])
            prog_rows.extend([[local_seg, c] for c in range(progs)])
            merge_rows[i] = [part, progs, i, p.repeat]
            part += progs
        launches_info.append((dtype, layout, tile, part0, part - part0, seg0, prog0))
    flat = [v for rows in (seg_rows, prog_rows, merge_rows) for row in rows for v in row]
    table = _to_device(torch.tensor(flat, dtype=torch.int64), device)
    return table, launches_info, len(seg_rows), len(prog_rows), part, keep


def multi_tensor_stats(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    device = xs[0].device
    key = (device, tuple((x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype) for x in xs))
    cached = _TABLE_CACHE.get(key)
    if cached is None:
        cached = _build_tables(xs)
        if not cached[5]:  # tables pointing at temporary copies are not reusable
            _TABLE_CACHE[key] = cached
            if len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
                _TABLE_CACHE.popitem(last=False)
    else:
        _TABLE_CACHE.move_to_end(key)
    table, groups, n_seg, n_prog, n_part, _keep = cached
    counts_p = torch.empty(max(n_part, 1), 5, dtype=torch.int64, device=device)
    moments_p = torch.empty(max(n_part, 1), 4, dtype=torch.float64, device=device)
    prog_tab = table[n_seg * SEG_FIELDS :]
    merge_tab = table[n_seg * SEG_FIELDS + 2 * n_prog :]
    for dtype, layout, tile, part0, progs, seg0, prog0 in groups:
        first = torch.empty(1, dtype=dtype, device=device)  # carries the element type only
        launch(
            tensor_stats_kernel,
            (progs,),
            first,
            counts_p,
            moments_p,
            table[seg0 * SEG_FIELDS :],
            prog_tab[2 * prog0 :],
            part0,
            0,
            0,
            1,
            1,
            0,
            0,
            0,
            1,
            -1,
            ACC=acc_dtype(dtype),
            TABLE=True,
            LAYOUT=layout,
            SUB=tile.sub,
            NT=tile.threads,
            VEC=tile.vec,
            num_warps=tile.num_warps,
        )
    counts = torch.empty(len(xs), 5, dtype=torch.int64, device=device)
    moments = torch.empty(len(xs), 4, dtype=torch.float64, device=device)
    launch(
        merge_kernel,
        (len(xs),),
        counts_p,
        moments_p,
        counts,
        moments,
        merge_tab,
        len(xs),
        0,
        1,
        counts_p,
        counts_p,
        0,
        TABLE=True,
        HAS_EXTRA=False,
        BLOCK=config.MERGE_BLOCK,
        num_warps=config.MERGE_WARPS,
    )
    return counts, moments
