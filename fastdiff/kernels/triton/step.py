"""The generic fused step (fastdiff/step.py) as one Triton kernel, with stats of its outputs in the same pass.

Per element, in fp32 (fp64 for fp64 storage), the lines of step.py in order:

    o   = out | u + w (out - u)
    x0  = cx x + co o + cn z
    x0c = clip(x0)                      static [lo, hi] | per-sample s_b: clamp(x0, -s_b, s_b) / s_b
    eps = ex x + eo o + e0 x0c + en z
    x'  = px x + p0 x0c + pe eps + sum_k ph_k h_k + pn z

A term whose coefficient is exactly 0 is skipped by a branch on the (uniform) scalar, so it contributes
nothing even where its tensor holds Inf/NaN, and a history tensor whose coefficient is 0 is not read.
Coefficients arrive as kernel arguments (float64 bit patterns in int64, so fp64 storage gets fp64
coefficients) or from a device table row `table[index]` (CoeffTable: CUDA-graph capturable). Noise is
read from a tensor or generated in the kernel (philox.py). x' and x0 are rounded to the storage dtype,
stored, and their stored values folded into per-lane stats (moments.py) while still in registers; the
count of clipped elements goes with them. A second small launch merges the partials (stats.merge).

Grid: one program per (row, chunk); rows are samples when the clip scale is per sample, else usually 1.
"""

from __future__ import annotations

import math
import struct

import torch
import triton
import triton.language as tl

from ...stats import empty_raw
from ...step import COEFF_FIELDS, MAX_HISTORY
from ..launch import StepLaunch
from . import config
from .layout import plan, row_major_strides
from .moments import accumulate, lane_state, store_partial
from .philox import normal_at, normal_tile
from .stats import launch, merge
from .tiles import strided_offsets, tile_local, to_storage, unravel

_SCALARS = [f"k_{f}" for f in COEFF_FIELDS] + ["k_w", "k_lo", "k_hi", "seed", "noise_offset"]


@triton.jit
def _f64(bits):
    """A float64 passed as its int64 bit pattern."""
    return tl.cast(bits, tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _ptr(ptr, row_off, t1, t2, t3, start, local, i1, i2, i3, CONTIG: tl.constexpr):
    if CONTIG:
        return ptr + (row_off + start) + local
    return ptr + strided_offsets(i1, i2, i3, row_off, t1, t2, t3)


@triton.jit
def _ld(p, mask, full):
    if full:
        v = tl.load(p)
    else:
        v = tl.load(p, mask=mask, other=0)
    return v


@triton.jit
def _st(p, v, mask, full):
    if full:
        tl.store(p, v)
    else:
        tl.store(p, v, mask=mask)


@triton.jit(do_not_specialize=_SCALARS)
def step_kernel(
    prev_ptr,
    x_ptr,
    o_ptr,
    u_ptr,
    z_ptr,
    h0_ptr,
    h1_ptr,
    h2_ptr,
    h3_ptr,
    x0_ptr,
    scale_ptr,
    table_ptr,
    index_ptr,
    noise_off_ptr,
    counts_ptr,
    moments_ptr,
    clipped_ptr,
    n_parts,
    inner,
    s2,
    s3,
    progs_per_row,
    table_cols,
    # per operand: row stride, inner strides (t1, t2, t3)
    pr, p1, p2, p3,
    xr, x1, x2, x3,
    or_, o1, o2, o3,
    ur, u1, u2, u3,
    zr, z1, z2, z3,
    ar, a1, a2, a3,
    br, b1, b2, b3,
    cr, c1, c2, c3,
    dr, d1, d2, d3,
    qr, q1, q2, q3,
    lr, l1, l2, l3,
    k_cx, k_co, k_cn, k_ex, k_eo, k_e0, k_en, k_px, k_p0, k_pe, k_pn, k_ph0, k_ph1, k_ph2, k_ph3,
    k_w,
    k_lo,
    k_hi,
    seed,
    noise_offset,
    CT: tl.constexpr,
    HAS_U: tl.constexpr,
    NOISE: tl.constexpr,  # 0 none, 1 tensor, 2 Philox
    NOISE_OFF_PTR: tl.constexpr,
    N_HIST: tl.constexpr,
    CLIP: tl.constexpr,  # 0 none, 1 static, 2 per-sample scale
    TABLE: tl.constexpr,
    WANT_X0: tl.constexpr,
    STATS: tl.constexpr,
    CONTIG: tl.constexpr,
    SUB: tl.constexpr,
    LANES: tl.constexpr,
    EMULATE_RTNE: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    r = (pid // progs_per_row).to(tl.int64)
    c = pid % progs_per_row
    if TABLE:
        cb = table_ptr + tl.load(index_ptr) * table_cols
        cx = tl.load(cb + 0).to(CT)
        co = tl.load(cb + 1).to(CT)
        cn = tl.load(cb + 2).to(CT)
        ex = tl.load(cb + 3).to(CT)
        eo = tl.load(cb + 4).to(CT)
        e0 = tl.load(cb + 5).to(CT)
        en = tl.load(cb + 6).to(CT)
        px = tl.load(cb + 7).to(CT)
        p0 = tl.load(cb + 8).to(CT)
        pe = tl.load(cb + 9).to(CT)
        pn = tl.load(cb + 10).to(CT)
        ph0 = tl.load(cb + 11).to(CT)
        ph1 = tl.load(cb + 12).to(CT)
        ph2 = tl.load(cb + 13).to(CT)
        ph3 = tl.load(cb + 14).to(CT)
    else:
        cx = _f64(k_cx).to(CT)
        co = _f64(k_co).to(CT)
        cn = _f64(k_cn).to(CT)
        ex = _f64(k_ex).to(CT)
        eo = _f64(k_eo).to(CT)
        e0 = _f64(k_e0).to(CT)
        en = _f64(k_en).to(CT)
        px = _f64(k_px).to(CT)
        p0 = _f64(k_p0).to(CT)
        pe = _f64(k_pe).to(CT)
        pn = _f64(k_pn).to(CT)
        ph0 = _f64(k_ph0).to(CT)
        ph1 = _f64(k_ph1).to(CT)
        ph2 = _f64(k_ph2).to(CT)
        ph3 = _f64(k_ph3).to(CT)
    w = _f64(k_w).to(CT)
    lo = _f64(k_lo).to(CT)
    hi = _f64(k_hi).to(CT)
    if CLIP == 2:
        s = tl.load(scale_ptr + r).to(CT)
    else:
        s = tl.full((), 1.0, CT)
    if NOISE == 2:
        if NOISE_OFF_PTR:
            noise_base = tl.load(noise_off_ptr)
        else:
            noise_base = tl.cast(noise_offset, tl.int64)
    else:
        noise_base = tl.zeros((), tl.int64)
    out_dt = prev_ptr.dtype.element_ty

    if STATS:
        pn_, pm_, pq_, pmin, pmax, pnan, ppinf, pninf, pzero = lane_state(LANES, CT)
        xn_, xm_, xq_, xmin, xmax, xnan, xpinf, xninf, xzero = lane_state(LANES, CT)
    clipped = tl.zeros((LANES,), tl.int32)
    local = tile_local(SUB, LANES)
    SUPER: tl.constexpr = SUB * LANES
    n_tiles = (inner + SUPER - 1) // SUPER
    for j in range(c, n_tiles, progs_per_row):
        start = tl.cast(j, tl.int64) * SUPER
        full = start + SUPER <= inner
        mask = local < inner - start
        if CONTIG:
            i1, i2, i3 = local, local, local
        else:
            i1, i2, i3 = unravel(start + local.to(tl.int64), s2, s3)
        x = _ld(_ptr(x_ptr, r * xr, x1, x2, x3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
        o = _ld(_ptr(o_ptr, r * or_, o1, o2, o3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
        if HAS_U:
            u = _ld(_ptr(u_ptr, r * ur, u1, u2, u3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
            o = u + w * (o - u)
        if NOISE == 1:
            z = _ld(_ptr(z_ptr, r * zr, z1, z2, z3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
        elif NOISE == 2:
            if CONTIG:
                z = normal_tile(seed, noise_base + r * lr + start, local.to(tl.int64), True, SUB, LANES).to(CT)
            else:
                z = normal_at(seed, noise_base + strided_offsets(i1, i2, i3, r * lr, l1, l2, l3)).to(CT)
        else:
            z = x  # unused

        # x0 = cx x + co o + cn z   (absent terms skipped)
        x0 = tl.zeros((SUB, LANES), CT)
        if cx != 0:
            x0 = x0 + cx * x
        if co != 0:
            x0 = x0 + co * o
        if NOISE != 0:
            if cn != 0:
                x0 = x0 + cn * z
        # clip (NaN stays NaN: comparisons with NaN are false)
        if CLIP == 1:
            below = x0 < lo
            above = x0 > hi
            clipped += tl.sum(((below | above) & mask).to(tl.int32), axis=0)
            x0 = tl.where(below, lo, tl.where(above, hi, x0))
        elif CLIP == 2:
            clipped += tl.sum(((tl.abs(x0) > s) & mask).to(tl.int32), axis=0)
            x0 = tl.where(x0 > s, s, tl.where(x0 < -s, -s, x0)) / s
        # eps = ex x + eo o + e0 x0c + en z
        eps = tl.zeros((SUB, LANES), CT)
        if ex != 0:
            eps = eps + ex * x
        if eo != 0:
            eps = eps + eo * o
        if e0 != 0:
            eps = eps + e0 * x0
        if NOISE != 0:
            if en != 0:
                eps = eps + en * z
        # x' = px x + p0 x0c + pe eps + sum ph_k h_k + pn z
        prev = tl.zeros((SUB, LANES), CT)
        if px != 0:
            prev = prev + px * x
        if p0 != 0:
            prev = prev + p0 * x0
        if pe != 0:
            prev = prev + pe * eps
        if N_HIST >= 1:
            if ph0 != 0:
                h = _ld(_ptr(h0_ptr, r * ar, a1, a2, a3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
                prev = prev + ph0 * h
        if N_HIST >= 2:
            if ph1 != 0:
                h = _ld(_ptr(h1_ptr, r * br, b1, b2, b3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
                prev = prev + ph1 * h
        if N_HIST >= 3:
            if ph2 != 0:
                h = _ld(_ptr(h2_ptr, r * cr, c1, c2, c3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
                prev = prev + ph2 * h
        if N_HIST >= 4:
            if ph3 != 0:
                h = _ld(_ptr(h3_ptr, r * dr, d1, d2, d3, start, local, i1, i2, i3, CONTIG), mask, full).to(CT)
                prev = prev + ph3 * h
        if NOISE != 0:
            if pn != 0:
                prev = prev + pn * z

        prev_st = to_storage(prev, out_dt, EMULATE_RTNE)
        x0_st = to_storage(x0, out_dt, EMULATE_RTNE)
        _st(_ptr(prev_ptr, r * pr, p1, p2, p3, start, local, i1, i2, i3, CONTIG), prev_st, mask, full)
        if WANT_X0:
            _st(_ptr(x0_ptr, r * qr, q1, q2, q3, start, local, i1, i2, i3, CONTIG), x0_st, mask, full)
        if STATS:  # stats of the stored values
            pv = prev_st.to(CT)
            xv = x0_st.to(CT)
            if full:
                pn_, pm_, pq_, pmin, pmax, pnan, ppinf, pninf, pzero = accumulate(
                    pn_, pm_, pq_, pmin, pmax, pnan, ppinf, pninf, pzero, pv, mask, False
                )
                xn_, xm_, xq_, xmin, xmax, xnan, xpinf, xninf, xzero = accumulate(
                    xn_, xm_, xq_, xmin, xmax, xnan, xpinf, xninf, xzero, xv, mask, False
                )
            else:
                pn_, pm_, pq_, pmin, pmax, pnan, ppinf, pninf, pzero = accumulate(
                    pn_, pm_, pq_, pmin, pmax, pnan, ppinf, pninf, pzero, pv, mask, True
                )
                xn_, xm_, xq_, xmin, xmax, xnan, xpinf, xninf, xzero = accumulate(
                    xn_, xm_, xq_, xmin, xmax, xnan, xpinf, xninf, xzero, xv, mask, True
                )
    if STATS:
        store_partial(counts_ptr, moments_ptr, pid, pn_, pm_, pq_, pmin, pmax, pnan, ppinf, pninf, pzero)
        store_partial(counts_ptr, moments_ptr, n_parts + pid, xn_, xm_, xq_, xmin, xmax, xnan, xpinf, xninf, xzero)
    if CLIP != 0:
        tl.store(clipped_ptr + pid, tl.sum(clipped.to(tl.int64), axis=0))


# --------------------------------------------------------------------------------------------------
# launcher


def _bits(v: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(v)))[0]


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.stride()) if t.dim() else (1,)


def fused_step(L: StepLaunch, philox=None):
    """Run the step of `L` (outputs written in place); returns (clipped, prev raw | None, x0 raw | None).

    philox: a fastdiff.step.PhiloxNoise to draw z from in the kernel (then L.noise is None).
    """
    x = L.x
    device = x.device
    want_stats = L.want_stats
    if x.numel() == 0:
        clipped = torch.zeros((), dtype=torch.int64, device=device)
        return (
            clipped,
            (empty_raw(device=device) if want_stats else None),
            (empty_raw(device=device) if want_stats else None),
        )

    ops = {"prev": L.prev_out, "x": x, "o": L.out}
    if L.uncond is not None:
        ops["u"] = L.uncond
    if L.noise is not None:
        ops["z"] = L.noise
    for k, h in enumerate(L.history):
        ops[f"h{k}"] = h
    if L.x0_out is not None:
        ops["x0"] = L.x0_out
    shape = tuple(x.shape) if x.dim() else (1,)
    strides = [_strides(t) for t in ops.values()]
    if philox is not None:
        strides.append(row_major_strides(shape))  # the logical element index, for the noise stream
    tile = config.step_tile(x.element_size())
    keep_rows = L.clip_mode == 2
    p = plan(shape, strides, keep_rows=keep_rows, reorder=True, min_row=tile.size)
    copy_back = {}
    if p is None:  # more than 4 irreducible dims: contiguous inputs, contiguous temporaries for the outputs
        for name, t in ops.items():
            if name in ("prev", "x0"):
                if not t.is_contiguous():
                    copy_back[name] = t
                    ops[name] = torch.empty(t.shape, dtype=t.dtype, device=device)
            else:
                ops[name] = t.contiguous()
        strides = [_strides(t) for t in ops.values()] + ([row_major_strides(shape)] if philox is not None else [])
        p = plan(shape, strides, keep_rows=keep_rows, reorder=True, min_row=tile.size)
    names = list(ops)
    zero4 = (0, 0, 0, 0)
    st = {name: p.strides[i] for i, name in enumerate(names)}
    st_logical = p.strides[len(names)] if philox is not None else zero4

    C = max(1, min(math.ceil(p.inner / tile.size), math.ceil(config.target_programs(device) / p.rows)))
    P = p.rows * C
    if want_stats:
        counts_p = torch.empty(2 * P, 5, dtype=torch.int64, device=device)
        moments_p = torch.empty(2 * P, 4, dtype=torch.float64, device=device)
    else:
        counts_p = moments_p = None
    clipped_p = torch.empty(P, dtype=torch.int64, device=device) if L.clip_mode else None

    if L.coeffs is not None:
        coeff_bits = [_bits(v) for v in L.coeffs]
        table = index = None
    else:
        coeff_bits = [0] * len(COEFF_FIELDS)
        table = L.table if L.table.is_contiguous() else L.table.contiguous()
        if table.shape[1] != len(COEFF_FIELDS):
            raise ValueError(f"the coefficient table must have {len(COEFF_FIELDS)} columns; got {table.shape[1]}")
        index = L.table_index
    lo = -math.inf if L.clip_lo is None else L.clip_lo
    hi = math.inf if L.clip_hi is None else L.clip_hi
    off_is_ptr = philox is not None and isinstance(philox.offset, torch.Tensor)
    dummy = ops["prev"]
    hist = [ops.get(f"h{k}", dummy) for k in range(MAX_HISTORY)]
    launch(
        step_kernel,
        (P,),
        ops["prev"],
        ops["x"],
        ops["o"],
        ops.get("u", dummy),
        ops.get("z", dummy),
        *hist,
        ops.get("x0", dummy),
        L.threshold_scale if L.threshold_scale is not None else dummy,
        table if table is not None else dummy,
        index if index is not None else dummy,
        philox.offset if off_is_ptr else dummy,
        counts_p if want_stats else dummy,
        moments_p if want_stats else dummy,
        clipped_p if clipped_p is not None else dummy,
        P,
        p.inner,
        p.sizes[1],
        p.sizes[2],
        C,
        len(COEFF_FIELDS),
        *st["prev"],
        *st["x"],
        *st["o"],
        *st.get("u", zero4),
        *st.get("z", zero4),
        *st.get("h0", zero4),
        *st.get("h1", zero4),
        *st.get("h2", zero4),
        *st.get("h3", zero4),
        *st.get("x0", zero4),
        *st_logical,
        *coeff_bits,
        _bits(L.guidance),
        _bits(lo),
        _bits(hi),
        int(philox.seed) if philox is not None else 0,
        0 if (philox is None or off_is_ptr) else int(philox.offset),
        CT=tl.float64 if x.dtype == torch.float64 else tl.float32,
        HAS_U=L.uncond is not None,
        NOISE=2 if philox is not None else (1 if L.noise is not None else 0),
        NOISE_OFF_PTR=off_is_ptr,
        N_HIST=len(L.history),
        CLIP=L.clip_mode,
        TABLE=table is not None,
        WANT_X0=L.x0_out is not None,
        STATS=want_stats,
        CONTIG=p.contiguous,
        SUB=tile.sub,
        LANES=tile.lanes,
        EMULATE_RTNE=device.type == "cpu",
        num_warps=tile.num_warps,
    )
    for name, user in copy_back.items():
        user.copy_(ops[name])

    if want_stats:
        if P == 1:
            counts, moments, clipped = counts_p, moments_p, (clipped_p[0] if clipped_p is not None else None)
        else:
            counts, moments, clipped = merge(counts_p, moments_p, 2, P, 1, extra=clipped_p)
        prev_raw, x0_raw = (counts[0], moments[0]), (counts[1], moments[1])
    else:
        prev_raw = x0_raw = None
        if clipped_p is None:
            clipped = None
        elif P == 1:
            clipped = clipped_p[0]
        else:
            clipped = clipped_p.sum()
    if clipped is None:
        clipped = torch.zeros((), dtype=torch.int64, device=device)
    return clipped, prev_raw, x0_raw
