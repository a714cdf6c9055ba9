"""The generic fused step (fastdiff/step.py) as one Triton kernel, with stats of its outputs in the same pass.

Per element, in fp32 (fp64 for fp64 storage), the lines of step.py in order:

    o   = out | u + w (out - u)
    x0  = cx x + co o + cn z
    x0c = clip(x0)                      static [lo, hi] | per-sample s_b: clamp(x0, -s_b, s_b) / s_b
    eps = ex x + eo o + e0 x0c + en z
    x'  = px x + p0 x0c + pe eps + sum_k ph_k h_k + pn z

Rounding (the FMA policy): every product and sum is rounded as written — the kernel is compiled with FMA
contraction off (`stats.launch`), so the GPU gives the same bits as the interpreter that CI runs and as the
float64 oracle's same-dtype evaluation; the kernel is memory-bound, so the unfused multiply-adds cost nothing.

A term whose coefficient is exactly 0 is skipped by a branch on the (uniform) scalar, so it contributes
nothing even where its tensor holds Inf/NaN, and a history tensor whose coefficient is 0 is not read.
Each input is read in its own dtype (a float32 sample with a bfloat16 model output: no conversion pass).
x' and x0 are rounded to the storage dtype, stored, and their stored values folded into per-thread stats
(moments.py) while still in registers; the count of clipped elements goes with them. A second small launch
merges the partials (stats.merge).

One compiled kernel per (dtypes, STATS, LAYOUT, PHILOX, tile): whether there is CFG, a noise tensor,
how many history terms, which clip, a coefficient table, an x0 output — all of these are runtime arguments
tested once per program or per tile (uniform branches), and coefficients travel as float64 bit patterns in
int64 arguments that are never specialised on their value. Sampling never recompiles after its first step.

Grid: one program per (row, chunk); rows are samples when the clip scale is per sample, else usually 1.
"""

from __future__ import annotations

import functools
import math
import struct

import torch
import triton
import triton.language as tl

from ...stats import empty_raw
from ...step import COEFF_FIELDS, MAX_HISTORY
from ..launch import StepLaunch
from . import config
from .layout import layout_kind, plan, row_major_strides
from .moments import accumulate_two, empty_state, store_partial
from .philox import normal_tile
from .stats import launch, merge, tail_program
from .tiles import MAX_STRIDED_INNER, load_view, row_offset, store_view, thread_sum, tile_local, to_storage, unravel

KERNEL_HISTORY = 4  # history operands of the kernel (>= MAX_HISTORY)
assert MAX_HISTORY <= KERNEL_HISTORY
_BASE_FIELDS = COEFF_FIELDS[: len(COEFF_FIELDS) - MAX_HISTORY]  # cx ... pn, then ph_k
_COEFF_ARGS = [f"k_{f}" for f in _BASE_FIELDS] + [f"k_ph{k}" for k in range(KERNEL_HISTORY)]
_OPERANDS = ("p", "x", "o", "u", "z", "h0", "h1", "h2", "h3", "q", "l")  # q: x0 output, l: logical index
_PTR_ARGS = [f"{name}_ptr" for name in ("prev", "x", "o", "u", "z", "h0", "h1", "h2", "h3", "x0", "scale", "table")]
_PTR_ARGS += ["index_ptr", "noise_off_ptr", "counts_ptr", "moments_ptr", "clipped_ptr"]
_INT_ARGS = (
    ["n_parts", "inner", "s2", "s3", "progs_per_row", "tail_c", "table_cols"]
    + [f"{op}{d}" for op in _OPERANDS for d in "r123"]
    + _COEFF_ARGS
    + ["k_w", "k_lo", "k_hi", "seed", "noise_offset", "has_u", "has_z", "n_hist", "clip_mode", "use_table"]
    + ["want_x0", "off_from_ptr"]
)


@triton.jit
def _f64(bits):
    """A float64 passed as its int64 bit pattern."""
    return tl.cast(bits, tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _view(ptr, r, row_stride, t1, t2, t3, VEC: tl.constexpr, LAYOUT: tl.constexpr):
    """Row r of an operand as a view (base pointer, t1, t2, t3) for tiles.load_view / store_view."""
    return ptr + row_offset(r, row_stride, VEC, LAYOUT), t1, t2, t3


@triton.jit
def _coeffs(table_ptr, index_ptr, table_cols, use_table, n_hist, k, CT: tl.constexpr):
    """The 15 coefficients (cx ... pn, ph0 ... ph3) in CT: from the table row `table[index]`, or the arguments."""
    if use_table:
        cb = table_ptr + tl.load(index_ptr) * table_cols
        ph0 = tl.where(n_hist > 0, tl.load(cb + 11, mask=n_hist > 0, other=0.0), 0.0).to(CT)
        ph1 = tl.where(n_hist > 1, tl.load(cb + 12, mask=n_hist > 1, other=0.0), 0.0).to(CT)
        ph2 = tl.where(n_hist > 2, tl.load(cb + 13, mask=n_hist > 2, other=0.0), 0.0).to(CT)
        ph3 = tl.where(n_hist > 3, tl.load(cb + 14, mask=n_hist > 3, other=0.0), 0.0).to(CT)
        c = (
            tl.load(cb + 0).to(CT),
            tl.load(cb + 1).to(CT),
            tl.load(cb + 2).to(CT),
            tl.load(cb + 3).to(CT),
            tl.load(cb + 4).to(CT),
            tl.load(cb + 5).to(CT),
            tl.load(cb + 6).to(CT),
            tl.load(cb + 7).to(CT),
            tl.load(cb + 8).to(CT),
            tl.load(cb + 9).to(CT),
            tl.load(cb + 10).to(CT),
            ph0,
            ph1,
            ph2,
            ph3,
        )
    else:
        c = (
            _f64(k[0]).to(CT),
            _f64(k[1]).to(CT),
            _f64(k[2]).to(CT),
            _f64(k[3]).to(CT),
            _f64(k[4]).to(CT),
            _f64(k[5]).to(CT),
            _f64(k[6]).to(CT),
            _f64(k[7]).to(CT),
            _f64(k[8]).to(CT),
            _f64(k[9]).to(CT),
            _f64(k[10]).to(CT),
            _f64(k[11]).to(CT),
            _f64(k[12]).to(CT),
            _f64(k[13]).to(CT),
            _f64(k[14]).to(CT),
        )
    return c


@triton.jit
def _history(prev, c, view, start, local, s2, s3, limit, CT: tl.constexpr, LAYOUT: tl.constexpr,
             MASKED: tl.constexpr):  # fmt: skip
    """prev + c h for one history operand, which is read only when c != 0."""
    if c != 0:
        prev = prev + c * load_view(view, start, local, s2, s3, limit, LAYOUT, MASKED).to(CT)
    return prev


@triton.jit
def _step_tile(
    views, c, rt, start, local, limit, s2, s3, state_p, state_x, clipped,
    CT: tl.constexpr, STATS: tl.constexpr, LAYOUT: tl.constexpr, PHILOX: tl.constexpr, MASKED: tl.constexpr,
    EMULATE_RTNE: tl.constexpr, SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    """One tile of the step. views: prev, x, o, u, z, h0..h3, x0 (base, t1, t2, t3); c: the 15 coefficients;
    rt: w, lo, hi, s, has_u, has_z, clip_mode, want_x0, seed, noise base, logical view."""
    cx, co, cn, ex, eo, e0, en, px, p0, pe, pn, ph0, ph1, ph2, ph3 = c
    w, lo, hi, s, has_u, has_z, clip_mode, want_x0, seed, noise_base, lview = rt
    x = load_view(views[1], start, local, s2, s3, limit, LAYOUT, MASKED).to(CT)
    o = load_view(views[2], start, local, s2, s3, limit, LAYOUT, MASKED).to(CT)
    if has_u:
        u = load_view(views[3], start, local, s2, s3, limit, LAYOUT, MASKED).to(CT)
        o = u + w * (o - u)
    if PHILOX:
        if LAYOUT > 0:
            z = normal_tile(seed, noise_base + lview[0] + start, local, True, SUB, NT, VEC).to(CT)
        else:
            i1, i2, i3 = unravel(start.to(tl.int32) + local, s2, s3)
            k = noise_base + lview[0] + (i1.to(tl.int64) * lview[1] + i2.to(tl.int64) * lview[2])
            k = k + i3.to(tl.int64) * lview[3]
            z = normal_tile(seed, k, local, False, SUB, NT, VEC).to(CT)
    else:
        if has_z:
            z = load_view(views[4], start, local, s2, s3, limit, LAYOUT, MASKED).to(CT)
        else:
            z = tl.zeros((SUB, NT, VEC), CT)
    if MASKED:
        valid = local < limit
    else:
        valid = local >= 0

    # x0 = cx x + co o + cn z   (absent terms skipped)
    x0 = tl.zeros((SUB, NT, VEC), CT)
    if cx != 0:
        x0 = x0 + cx * x
    if co != 0:
        x0 = x0 + co * o
    if cn != 0:
        x0 = x0 + cn * z
    # clip (NaN stays NaN: comparisons with NaN are false)
    if clip_mode == 1:
        below = x0 < lo
        above = x0 > hi
        clipped += thread_sum(((below | above) & valid).to(tl.int32))
        x0 = tl.where(below, lo, tl.where(above, hi, x0))
    elif clip_mode == 2:
        clipped += thread_sum(((tl.abs(x0) > s) & valid).to(tl.int32))
        x0 = tl.where(x0 > s, s, tl.where(x0 < -s, -s, x0)) / s
    # x' = px x + p0 x0c + pe eps + sum ph_k h_k + pn z,  eps = ex x + eo o + e0 x0c + en z
    prev = tl.zeros((SUB, NT, VEC), CT)
    if px != 0:
        prev = prev + px * x
    if p0 != 0:
        prev = prev + p0 * x0
    if pe != 0:
        eps = tl.zeros((SUB, NT, VEC), CT)
        if ex != 0:
            eps = eps + ex * x
        if eo != 0:
            eps = eps + eo * o
        if e0 != 0:
            eps = eps + e0 * x0
        if en != 0:
            eps = eps + en * z
        prev = prev + pe * eps
    prev = _history(prev, ph0, views[5], start, local, s2, s3, limit, CT, LAYOUT, MASKED)
    prev = _history(prev, ph1, views[6], start, local, s2, s3, limit, CT, LAYOUT, MASKED)
    prev = _history(prev, ph2, views[7], start, local, s2, s3, limit, CT, LAYOUT, MASKED)
    prev = _history(prev, ph3, views[8], start, local, s2, s3, limit, CT, LAYOUT, MASKED)
    if pn != 0:
        prev = prev + pn * z

    out_dt = views[0][0].dtype.element_ty
    prev_st = to_storage(prev, out_dt, EMULATE_RTNE)
    x0_st = to_storage(x0, out_dt, EMULATE_RTNE)
    store_view(views[0], start, local, s2, s3, limit, prev_st, LAYOUT, MASKED)
    if want_x0:
        store_view(views[9], start, local, s2, s3, limit, x0_st, LAYOUT, MASKED)
    if STATS:  # stats of the stored values
        state_p, state_x = accumulate_two(state_p, prev_st.to(CT), state_x, x0_st.to(CT), valid, MASKED)
    return state_p, state_x, clipped


@triton.jit(do_not_specialize=_INT_ARGS, do_not_specialize_on_alignment=_PTR_ARGS)
def step_kernel(
    prev_ptr, x_ptr, o_ptr, u_ptr, z_ptr, h0_ptr, h1_ptr, h2_ptr, h3_ptr, x0_ptr,
    scale_ptr, table_ptr, index_ptr, noise_off_ptr, counts_ptr, moments_ptr, clipped_ptr,
    n_parts: tl.int64, inner: tl.int64, s2: tl.int64, s3: tl.int64, progs_per_row: tl.int32, tail_c: tl.int32,
    table_cols: tl.int64,
    # per operand: row stride, inner strides (t1, t2, t3)
    pr: tl.int64, p1: tl.int64, p2: tl.int64, p3: tl.int64,
    xr: tl.int64, x1: tl.int64, x2: tl.int64, x3: tl.int64,
    or_: tl.int64, o1: tl.int64, o2: tl.int64, o3: tl.int64,
    ur: tl.int64, u1: tl.int64, u2: tl.int64, u3: tl.int64,
    zr: tl.int64, z1: tl.int64, z2: tl.int64, z3: tl.int64,
    h0r: tl.int64, h01: tl.int64, h02: tl.int64, h03: tl.int64,
    h1r: tl.int64, h11: tl.int64, h12: tl.int64, h13: tl.int64,
    h2r: tl.int64, h21: tl.int64, h22: tl.int64, h23: tl.int64,
    h3r: tl.int64, h31: tl.int64, h32: tl.int64, h33: tl.int64,
    qr: tl.int64, q1: tl.int64, q2: tl.int64, q3: tl.int64,
    lr: tl.int64, l1: tl.int64, l2: tl.int64, l3: tl.int64,
    k_cx: tl.int64, k_co: tl.int64, k_cn: tl.int64, k_ex: tl.int64, k_eo: tl.int64, k_e0: tl.int64,
    k_en: tl.int64, k_px: tl.int64, k_p0: tl.int64, k_pe: tl.int64, k_pn: tl.int64,
    k_ph0: tl.int64, k_ph1: tl.int64, k_ph2: tl.int64, k_ph3: tl.int64,
    k_w: tl.int64, k_lo: tl.int64, k_hi: tl.int64, seed: tl.int64, noise_offset: tl.int64,
    has_u: tl.int64, has_z: tl.int64, n_hist: tl.int64, clip_mode: tl.int64, use_table: tl.int64,
    want_x0: tl.int64, off_from_ptr: tl.int64,
    CT: tl.constexpr, STATS: tl.constexpr, LAYOUT: tl.constexpr, PHILOX: tl.constexpr,
    EMULATE_RTNE: tl.constexpr, SUB: tl.constexpr, NT: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    TILE: tl.constexpr = SUB * NT * VEC
    pid = tl.program_id(0)
    r = (pid // progs_per_row).to(tl.int64)
    c = pid % progs_per_row
    k = (k_cx, k_co, k_cn, k_ex, k_eo, k_e0, k_en, k_px, k_p0, k_pe, k_pn, k_ph0, k_ph1, k_ph2, k_ph3)
    coeffs = _coeffs(table_ptr, index_ptr, table_cols, use_table, n_hist, k, CT)
    if clip_mode == 2:
        s = tl.load(scale_ptr + r).to(CT)
    else:
        s = tl.full((), 1.0, CT)
    noise_base = tl.cast(noise_offset, tl.int64)
    if PHILOX:
        if off_from_ptr:
            noise_base = tl.load(noise_off_ptr)
    views = (
        _view(prev_ptr, r, pr, p1, p2, p3, VEC, LAYOUT),
        _view(x_ptr, r, xr, x1, x2, x3, VEC, LAYOUT),
        _view(o_ptr, r, or_, o1, o2, o3, VEC, LAYOUT),
        _view(u_ptr, r, ur, u1, u2, u3, VEC, LAYOUT),
        _view(z_ptr, r, zr, z1, z2, z3, VEC, LAYOUT),
        _view(h0_ptr, r, h0r, h01, h02, h03, VEC, LAYOUT),
        _view(h1_ptr, r, h1r, h11, h12, h13, VEC, LAYOUT),
        _view(h2_ptr, r, h2r, h21, h22, h23, VEC, LAYOUT),
        _view(h3_ptr, r, h3r, h31, h32, h33, VEC, LAYOUT),
        _view(x0_ptr, r, qr, q1, q2, q3, VEC, LAYOUT),
    )
    lview = (r * lr, l1, l2, l3)  # the logical element index, for the noise stream
    rt = (
        _f64(k_w).to(CT),
        _f64(k_lo).to(CT),
        _f64(k_hi).to(CT),
        s,
        has_u != 0,
        has_z != 0,
        clip_mode,
        want_x0 != 0,
        seed,
        noise_base,
        lview,
    )

    state_p = empty_state(NT, CT)
    state_x = empty_state(NT, CT)
    clipped = tl.zeros((NT,), tl.int32)
    local = tile_local(SUB, NT, VEC)
    n_full = inner // TILE
    for j in range(c, n_full, progs_per_row):
        state_p, state_x, clipped = _step_tile(
            views, coeffs, rt, tl.cast(j, tl.int64) * TILE, local, TILE, s2, s3, state_p, state_x, clipped,
            CT, STATS, LAYOUT, PHILOX, False, EMULATE_RTNE, SUB, NT, VEC,
        )  # fmt: skip
    if c == tail_c:  # the partial last tile
        start = tl.cast(n_full, tl.int64) * TILE
        state_p, state_x, clipped = _step_tile(
            views, coeffs, rt, start, local, inner - start, s2, s3, state_p, state_x, clipped,
            CT, STATS, LAYOUT, PHILOX, True, EMULATE_RTNE, SUB, NT, VEC,
        )  # fmt: skip
    if STATS:
        store_partial(counts_ptr, moments_ptr, pid, state_p)
        store_partial(counts_ptr, moments_ptr, n_parts + pid, state_x)
    if clip_mode != 0:
        tl.store(clipped_ptr + pid, tl.sum(clipped.to(tl.int64), axis=0))


# --------------------------------------------------------------------------------------------------
# launcher


def _bits(v: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(v)))[0]


@functools.cache
def _placeholder(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A one-element tensor passed for a pointer argument the kernel does not touch (typed: one signature)."""
    return torch.zeros(1, dtype=dtype, device=device)


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.stride()) if t.dim() else (1,)


def fused_step(L: StepLaunch, philox=None):
    """Run the step of `L` (outputs written in place); returns (clipped, raw | None): raw = (counts [2, 5],
    moments [2, 4]), rows x' and x0.

    philox: a fastdiff.step.PhiloxNoise to draw z from in the kernel (then L.noise is None).
    """
    x = L.x
    device = x.device
    want_stats = L.want_stats
    if x.numel() == 0:
        clipped = torch.zeros((), dtype=torch.int64, device=device)
        return clipped, (empty_raw((2,), device=device) if want_stats else None)

    ops = {"p": L.prev_out, "x": x, "o": L.out}
    if L.uncond is not None:
        ops["u"] = L.uncond
    if L.noise is not None:
        ops["z"] = L.noise
    for k, h in enumerate(L.history):
        ops[f"h{k}"] = h
    if L.x0_out is not None:
        ops["q"] = L.x0_out
    shape = tuple(x.shape) if x.dim() else (1,)
    strides = [_strides(t) for t in ops.values()]
    if philox is not None:
        strides.append(row_major_strides(shape))  # the logical element index, for the noise stream
    tile = config.step_tile(x.element_size())
    keep_rows = L.clip_mode == 2
    p = plan(shape, strides, keep_rows=keep_rows, reorder=True, min_row=tile.size)
    copy_back = {}
    if p is None or (not p.contiguous and p.inner >= MAX_STRIDED_INNER):
        # more than 4 irreducible dims, or a huge strided walk: contiguous inputs, contiguous temporaries for
        # the outputs (rare; documented)
        for name, t in ops.items():
            if name in ("p", "q"):
                if not t.is_contiguous():
                    copy_back[name] = t
                    ops[name] = torch.empty(t.shape, dtype=t.dtype, device=device)
            else:
                ops[name] = t.contiguous()
        strides = [_strides(t) for t in ops.values()] + ([row_major_strides(shape)] if philox is not None else [])
        p = plan(shape, strides, keep_rows=keep_rows, reorder=True, min_row=tile.size)
    layout = layout_kind(p, list(ops.values()), tile.vec)
    if layout < 2:  # strided or misaligned rows: one element per load (per-element addresses of ten operands
        # in VEC-wide tiles spill); strided views unravel the index in int32
        tile = config.step_tile(x.element_size(), vector=False)
    names = list(ops)
    st = {name: p.strides[i] for i, name in enumerate(names)}
    if philox is not None:
        st["l"] = p.strides[len(names)]

    C = max(1, min(math.ceil(p.inner / tile.size), math.ceil(config.target_programs(device) / p.rows)))
    P = p.rows * C
    if want_stats:
        counts_p = torch.empty(2 * P, 5, dtype=torch.int64, device=device)
        moments_p = torch.empty(2 * P, 4, dtype=torch.float64, device=device)
    else:
        counts_p = moments_p = None
    clipped_p = torch.empty(P, dtype=torch.int64, device=device) if L.clip_mode else None

    if L.coeffs is not None:
        base, hist = L.coeffs[: len(_BASE_FIELDS)], L.coeffs[len(_BASE_FIELDS) :]
        coeff_bits = [_bits(v) for v in base + tuple(hist) + (0.0,) * (KERNEL_HISTORY - len(hist))]
        table = index = None
    else:
        coeff_bits = [0] * len(_COEFF_ARGS)
        table = L.table if L.table.is_contiguous() else L.table.contiguous()
        if table.shape[1] != len(COEFF_FIELDS):
            raise ValueError(f"the coefficient table must have {len(COEFF_FIELDS)} columns; got {table.shape[1]}")
        index = L.table_index
    lo = -math.inf if L.clip_lo is None else L.clip_lo
    hi = math.inf if L.clip_hi is None else L.clip_hi
    off_is_ptr = philox is not None and isinstance(philox.offset, torch.Tensor)
    # absent operands get stand-ins of the type they would have, so that the kernel's signature does not
    # depend on which features a call uses: u like the model output, z and h like x, the rest fixed
    stand_in = {"u": ops["o"], "z": x, "h0": x, "h1": x, "h2": x, "h3": x, "q": x}
    zero4 = (0, 0, 0, 0)
    launch(
        step_kernel,
        (P,),
        *(ops.get(name, stand_in.get(name)) for name in ("p", "x", "o", "u", "z", "h0", "h1", "h2", "h3", "q")),
        L.threshold_scale if L.threshold_scale is not None else _placeholder(device, torch.float32),
        table if table is not None else _placeholder(device, torch.float64),
        index if index is not None else _placeholder(device, torch.int64),
        philox.offset if off_is_ptr else _placeholder(device, torch.int64),
        counts_p if want_stats else _placeholder(device, torch.int64),
        moments_p if want_stats else _placeholder(device, torch.float64),
        clipped_p if clipped_p is not None else _placeholder(device, torch.int64),
        P,
        p.inner,
        p.sizes[1],
        p.sizes[2],
        C,
        tail_program(p.inner, tile.size, C),
        len(COEFF_FIELDS),
        *(v for name in _OPERANDS for v in st.get(name, zero4)),
        *coeff_bits,
        _bits(L.guidance),
        _bits(lo),
        _bits(hi),
        int(philox.seed) if philox is not None else 0,
        0 if (philox is None or off_is_ptr) else int(philox.offset),
        int(L.uncond is not None),
        int(L.noise is not None),
        len(L.history),
        L.clip_mode,
        int(table is not None),
        int(L.x0_out is not None),
        int(off_is_ptr),
        CT=tl.float64 if x.dtype == torch.float64 else tl.float32,
        STATS=want_stats,
        LAYOUT=layout,
        PHILOX=philox is not None,
        EMULATE_RTNE=device.type == "cpu",
        SUB=tile.sub,
        NT=tile.threads,
        VEC=tile.vec,
        num_warps=tile.num_warps,
    )
    for name, user in copy_back.items():
        user.copy_(ops[name])

    if want_stats:
        if P == 1:
            raw, clipped = (counts_p, moments_p), (clipped_p[0] if clipped_p is not None else None)
        else:
            counts, moments, clipped = merge(counts_p, moments_p, 2, P, 1, extra=clipped_p)
            raw = counts, moments
    else:
        raw = None
        if clipped_p is None:
            clipped = None
        elif P == 1:
            clipped = clipped_p[0]
        else:
            clipped = clipped_p.sum()
    if clipped is None:
        clipped = torch.zeros((), dtype=torch.int64, device=device)
    return clipped, raw
