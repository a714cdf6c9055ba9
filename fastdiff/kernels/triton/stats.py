"""One-pass tensor / pair / multi-tensor statistics on the GPU (Triton), in the raw layouts of fastdiff.stats.

Launch 1 — `tensor_stats_kernel`: each program walks super-tiles of its row grid-stride, folds them into
per-lane moments (moments.py) and writes one partial (counts int64 [5], moments fp64 [4]).
Launch 2 — `merge_kernel`: one program per output row merges its partials in a fixed order (two-pass
Chan merge in fp64), scales by the broadcast repeat, and writes the final raw stats. Skipped when a row
has a single partial and nothing to scale. No float atomics, no host sync: results stay on the device.

Multi-tensor: one launch of the same kernel per dtype group over a table of segments (data pointer as an
int64, sizes, strides, programs) — the pointer-table pattern of Triton's grouped-GEMM tutorial, which the
interpreter runs as well (an int64 turned into a pointer is a bitcast there) — then one merge launch for
all groups, straight into the rows of the result. 300 fp32 parameter tensors: 2 launches and one
pinned host-to-device copy of the table (cached while the tensors stay the same).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import triton
import triton.language as tl

from ...stats import empty_pair_raw, empty_raw
from . import config
from .layout import Plan, plan
from .moments import accumulate, lane_state, store_partial
from .tiles import load_tile, tile_local

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
SEG_FIELDS = 9  # ptr, inner, s2, s3, t1, t2, t3, programs, contiguous

# Every kernel launch of this backend goes through `launch` (tests count them).
launches = 0


def launch(kernel, grid, *args, **kwargs):
    global launches
    launches += 1
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


@triton.jit
def _stats_range(
    base,
    row_off,
    c,
    C,
    inner,
    s2,
    s3,
    t1,
    t2,
    t3,
    ACC: tl.constexpr,
    CONTIG: tl.constexpr,
    SUB: tl.constexpr,
    LANES: tl.constexpr,
):
    """Per-lane moments of the super-tiles c, c + C, ... of one row."""
    n, mean, m2, vmin, vmax, nan, posinf, neginf, zero = lane_state(LANES, ACC)
    SUPER: tl.constexpr = SUB * LANES
    n_tiles = (inner + SUPER - 1) // SUPER
    for j in range(c, n_tiles, C):
        start = tl.cast(j, tl.int64) * SUPER
        if start + SUPER <= inner:
            v = load_tile(base, row_off, start, inner, s2, s3, t1, t2, t3, CONTIG, False, SUB, LANES).to(ACC)
            n, mean, m2, vmin, vmax, nan, posinf, neginf, zero = accumulate(
                n, mean, m2, vmin, vmax, nan, posinf, neginf, zero, v, v == v, False
            )
        else:
            v = load_tile(base, row_off, start, inner, s2, s3, t1, t2, t3, CONTIG, True, SUB, LANES).to(ACC)
            valid = tile_local(SUB, LANES) < inner - start
            n, mean, m2, vmin, vmax, nan, posinf, neginf, zero = accumulate(
                n, mean, m2, vmin, vmax, nan, posinf, neginf, zero, v, valid, True
            )
    return n, mean, m2, vmin, vmax, nan, posinf, neginf, zero


@triton.jit
def tensor_stats_kernel(
    x_ptr,
    counts_ptr,
    moments_ptr,
    seg_ptr,
    prog_ptr,
    part_base,
    inner,
    row_stride,
    s2,
    s3,
    t1,
    t2,
    t3,
    progs_per_row,
    ACC: tl.constexpr,
    TABLE: tl.constexpr,
    CONTIG: tl.constexpr,
    ALIGNED: tl.constexpr,
    SUB: tl.constexpr,
    LANES: tl.constexpr,
):
    """Scalar mode: program pid = row * progs_per_row + c. Table mode: (segment, c) from `prog_ptr`."""
    pid = tl.program_id(0)
    if TABLE:
        seg = tl.load(prog_ptr + 2 * pid)
        c = tl.load(prog_ptr + 2 * pid + 1)
        rec = seg_ptr + seg * SEG_FIELDS
        addr = tl.load(rec)
        if ALIGNED:  # every data pointer of this group is 16-byte aligned: lets the loads vectorise
            addr = tl.multiple_of(addr, 16)
        base = addr.to(tl.pointer_type(x_ptr.dtype.element_ty))
        seg_inner = tl.load(rec + 1)
        seg_s2 = tl.load(rec + 2)
        seg_s3 = tl.load(rec + 3)
        seg_t1 = tl.load(rec + 4)
        seg_t2 = tl.load(rec + 5)
        seg_t3 = tl.load(rec + 6)
        C = tl.load(rec + 7)
        row_off = tl.zeros((), tl.int64)
        if tl.load(rec + 8) != 0:
            acc = _stats_range(
                base, row_off, c, C, seg_inner, seg_s2, seg_s3, seg_t1, seg_t2, seg_t3, ACC, True, SUB, LANES
            )
        else:
            acc = _stats_range(
                base, row_off, c, C, seg_inner, seg_s2, seg_s3, seg_t1, seg_t2, seg_t3, ACC, False, SUB, LANES
            )
    else:
        r = pid // progs_per_row
        c = pid % progs_per_row
        row_off = r.to(tl.int64) * row_stride
        acc = _stats_range(x_ptr, row_off, c, progs_per_row, inner, s2, s3, t1, t2, t3, ACC, CONTIG, SUB, LANES)
    n, mean, m2, vmin, vmax, nan, posinf, neginf, zero = acc
    store_partial(counts_ptr, moments_ptr, part_base + pid, n, mean, m2, vmin, vmax, nan, posinf, neginf, zero)


@triton.jit
def merge_kernel(
    counts_p,
    moments_p,
    counts_o,
    moments_o,
    tab_ptr,
    n_out,
    per_output,
    repeat,
    extra_p,
    extra_o,
    n_extra,
    TABLE: tl.constexpr,
    HAS_EXTRA: tl.constexpr,
    BLOCK: tl.constexpr,
):
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
def pair_stats_kernel(
    a_ptr,
    b_ptr,
    part_ptr,
    inner,
    s2,
    s3,
    ar,
    a1,
    a2,
    a3,
    br,
    b1,
    b2,
    b3,
    progs_per_row,
    CONTIG: tl.constexpr,
    SUB: tl.constexpr,
    LANES: tl.constexpr,
):
    """Partial n, sum ab, sum a^2, sum b^2, sum (a - b)^2, max |a - b| of one program, in fp64.

    Products of fp32 values are exact in fp64; the max is NaN exactly when sum (a - b)^2 is (a NaN
    difference), so NaN propagates like torch.amax whatever the hardware max does with NaN.
    """
    pid = tl.program_id(0)
    r = pid // progs_per_row
    c = pid % progs_per_row
    a_off = r.to(tl.int64) * ar
    b_off = r.to(tl.int64) * br
    SUPER: tl.constexpr = SUB * LANES
    zf = tl.zeros((LANES,), tl.float64)
    n, dot, sa, sb, sd, mx = zf, zf, zf, zf, zf, zf
    n_tiles = (inner + SUPER - 1) // SUPER
    for j in range(c, n_tiles, progs_per_row):
        start = tl.cast(j, tl.int64) * SUPER
        if start + SUPER <= inner:
            a = load_tile(a_ptr, a_off, start, inner, s2, s3, a1, a2, a3, CONTIG, False, SUB, LANES).to(tl.float64)
            b = load_tile(b_ptr, b_off, start, inner, s2, s3, b1, b2, b3, CONTIG, False, SUB, LANES).to(tl.float64)
            n += SUB
        else:
            a = load_tile(a_ptr, a_off, start, inner, s2, s3, a1, a2, a3, CONTIG, True, SUB, LANES).to(tl.float64)
            b = load_tile(b_ptr, b_off, start, inner, s2, s3, b1, b2, b3, CONTIG, True, SUB, LANES).to(tl.float64)
            n += tl.sum((tile_local(SUB, LANES) < inner - start).to(tl.float64), axis=0)
        d = a - b
        dot += tl.sum(a * b, axis=0)
        sa += tl.sum(a * a, axis=0)
        sb += tl.sum(b * b, axis=0)
        sd += tl.sum(d * d, axis=0)
        mx = tl.maximum(mx, tl.max(tl.abs(d), axis=0))
    p = part_ptr + pid.to(tl.int64) * 6
    sd_t = tl.sum(sd, axis=0)
    tl.store(p, tl.sum(n, axis=0))
    tl.store(p + 1, tl.sum(dot, axis=0))
    tl.store(p + 2, tl.sum(sa, axis=0))
    tl.store(p + 3, tl.sum(sb, axis=0))
    tl.store(p + 4, sd_t)
    tl.store(p + 5, tl.where(sd_t != sd_t, float("nan"), tl.max(mx, axis=0)))


@triton.jit
def pair_merge_kernel(part_ptr, out_ptr, per_output, repeat, BLOCK: tl.constexpr):
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


def _plan_or_copy(x: torch.Tensor, *, per_sample: bool, min_row: int) -> tuple[torch.Tensor, Plan]:
    shape, stride = (tuple(x.shape), tuple(x.stride())) if x.dim() else ((1,), (1,))
    p = plan(shape, [stride], keep_rows=per_sample, drop_broadcast=True, min_row=min_row)
    if p is None:  # more than 4 irreducible dims: one contiguous copy (rare; documented)
        x = x.contiguous()
        p = plan(shape, [x.stride() if x.dim() else (1,)], keep_rows=per_sample, drop_broadcast=True, min_row=min_row)
    return x, p


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
    tile = config.stats_tile(x.element_size())
    x, p = _plan_or_copy(x, per_sample=per_sample, min_row=tile.size)
    C = _programs_per_row(p.inner, p.rows, tile.size, x.device)
    P = p.rows * C
    counts_p = torch.empty(P, 5, dtype=torch.int64, device=x.device)
    moments_p = torch.empty(P, 4, dtype=torch.float64, device=x.device)
    row_stride, t1, t2, t3 = p.strides[0]
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
        ACC=acc_dtype(x.dtype),
        TABLE=False,
        CONTIG=p.contiguous,
        ALIGNED=False,
        SUB=tile.sub,
        LANES=tile.lanes,
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
    a, b = as_native(a), as_native(b)
    tile = config.pair_tile()
    shape = tuple(a.shape) if a.dim() else (1,)
    strides = [tuple(t.stride()) if t.dim() else (1,) for t in (a, b)]
    p = plan(shape, strides, keep_rows=per_sample, drop_broadcast=True, min_row=tile.size)
    if p is None:
        a, b = a.contiguous(), b.contiguous()
        strides = [tuple(t.stride()) if t.dim() else (1,) for t in (a, b)]
        p = plan(shape, strides, keep_rows=per_sample, drop_broadcast=True, min_row=tile.size)
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
        CONTIG=p.contiguous,
        SUB=tile.sub,
        LANES=tile.lanes,
        num_warps=tile.num_warps,
    )
    n_out = p.rows if per_sample else 1
    per_output = C if per_sample else P
    if per_output == 1 and p.repeat == 1:
        out = part
    else:
        out = torch.empty(n_out, 6, dtype=torch.float64, device=a.device)
        launch(pair_merge_kernel, (n_out,), part, out, per_output, p.repeat, BLOCK=config.MERGE_BLOCK, num_warps=4)
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
    """(table on device, [(group dtype, aligned, part offset, programs, seg offset, prog offset)], keep-alive)."""
    device = xs[0].device
    target = config.target_programs(device)
    keep = []
    items = []  # (index, tensor, plan)
    for i, x in enumerate(xs):
        if x.numel() == 0:
            continue
        native = as_native(x)
        if native is not x:
            keep.append(native)
            x = native
        shape, stride = (tuple(x.shape), tuple(x.stride())) if x.dim() else ((1,), (1,))
        p = plan(shape, [stride], drop_broadcast=True, min_row=1 << 62)
        if p is None or p.rows > 1:  # segments have no row dim: irreducible layouts are copied (rare)
            x = x.contiguous()
            keep.append(x)
            p = plan(shape, [x.stride() if x.dim() else (1,)], drop_broadcast=True, min_row=1 << 62)
        items.append((i, x, p))
    groups: OrderedDict = OrderedDict()
    for i, x, p in items:
        aligned = x.data_ptr() % 16 == 0
        groups.setdefault((x.dtype, aligned), []).append((i, x, p))

    seg_rows, prog_rows, merge_rows, launches_info = [], [], [], []
    part = 0
    merge_by_index = {}
    for (dtype, aligned), members in groups.items():
        tile = config.stats_tile(torch.empty((), dtype=dtype).element_size())
        total = sum(p.inner for _, _, p in members)
        seg0, prog0, part0 = len(seg_rows), len(prog_rows), part
        for local_seg, (i, x, p) in enumerate(members):
            n_tiles = math.ceil(p.inner / tile.size)
            progs = max(1, min(n_tiles, round(target * p.inner / total)))
            _, t1, t2, t3 = p.strides[0]
            seg_rows.append([x.data_ptr(), p.inner, p.sizes[1], p.sizes[2], t1, t2, t3, progs, int(p.contiguous)])
            prog_rows.extend([[local_seg, c] for c in range(progs)])
            merge_by_index[i] = [part, progs, i, p.repeat]
            part += progs
        launches_info.append((dtype, aligned, tile, part0, part - part0, seg0, prog0))
    for i in range(len(xs)):
        merge_rows.append(merge_by_index.get(i, [0, 0, i, 1]))
    flat = [v for row in seg_rows for v in row] + [v for row in prog_rows for v in row]
    flat += [v for row in merge_rows for v in row]
    host = torch.tensor(flat, dtype=torch.int64)
    table = _to_device(host, device)
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
    seg_tab = table
    prog_tab = table[n_seg * SEG_FIELDS :]
    merge_tab = table[n_seg * SEG_FIELDS + 2 * n_prog :]
    for dtype, aligned, tile, part0, progs, seg0, prog0 in groups:
        first = torch.empty(1, dtype=dtype, device=device)  # carries the element type only
        launch(
            tensor_stats_kernel,
            (progs,),
            first,
            counts_p,
            moments_p,
            seg_tab[seg0 * SEG_FIELDS :],
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
            ACC=acc_dtype(dtype),
            TABLE=True,
            CONTIG=True,
            ALIGNED=aligned,
            SUB=tile.sub,
            LANES=tile.lanes,
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
