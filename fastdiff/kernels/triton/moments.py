"""Per-lane statistics of a super-tile and their exact merges (Chan et al.), shared by stats and step kernels.

A super-tile is a [SUB, LANES] block of values held in registers; lane l is column l. For each lane:

1. Tile moments, exact two-pass over the SUB values of the lane (all in-thread, no shuffles):
   pivot p = the lane's mean estimate snapped into [min, max] (so a constant lane gives d = 0 exactly),
   d = (v - p) * 2^-e with 2^-e chosen from the lane's range so that d is O(1): squares neither
   overflow (|v| up to 3.4e38 in fp32) nor underflow (tiny spreads), and
       mean = p + sum(d) / (n 2^-e),   m2 = (sum d^2 - (sum d)^2 / n) / 2^-2e     (corrected two-pass).
   The accumulation dtype is the tile's: fp32 for fp16/bf16/fp32/small ints (their values are exact in
   fp32), fp64 for fp64 and 32/64-bit ints. A pivot close to the lane mean and a few summands per
   lane keep the fp32 sums at ~1e-7 relative, independent across lanes; everything after (per-lane
   means and M2, their merges) is fp64.
   Fast branch: when every lane's raw sum is finite (no NaN/Inf in the tile, no overflow) the tile
   skips all masking and the NaN/Inf classification — per element: sum, min, max, zero test, d, d, d^2.
2. Lane running moments in fp64, merged tile by tile with Chan's formula
       n = na + nb,  mean = ma + delta nb / n,  m2 = qa + qb + delta^2 na nb / n,
   which stays exact when the data drift between tiles (a pivot fixed once would not).
3. Program moments: the lanes merged in fp64 (two-pass over lanes: mean first, then m2 about it).

Never E[x^2] - E[x]^2; no float atomics; fixed reduction trees, so results are bit-reproducible.
"""

from __future__ import annotations

import triton
import triton.language as tl

INF = float("inf")


@triton.jit
def pow2_scale(half_range):
    """2^-e with half_range * 2^-e in [1, 4): an exact power of two from the exponent bits; 1 where <= 0."""
    if half_range.dtype == tl.float64:
        e = (half_range.to(tl.int64, bitcast=True) >> 52) & 0x7FF
        e = tl.minimum(e, 2045)
        sc = ((2046 - e) << 52).to(tl.float64, bitcast=True)
    else:
        e = (half_range.to(tl.int32, bitcast=True) >> 23) & 0xFF
        e = tl.minimum(e, 253)
        sc = ((254 - e) << 23).to(tl.float32, bitcast=True)
    return tl.where(half_range > 0, sc, 1.0)


@triton.jit
def _finish(n, p, sc, s1, s2):
    """fp64 (mean, m2) of a lane from its pivot, scale and shifted sums (n > 0; else 0, 0)."""
    n64 = n.to(tl.float64)
    safe_n = tl.where(n64 > 0, n64, 1.0)
    inv = 1.0 / sc.to(tl.float64)
    s1_64 = s1.to(tl.float64)
    mean = p.to(tl.float64) + (s1_64 / safe_n) * inv
    m2 = ((s2.to(tl.float64) - s1_64 * s1_64 / safe_n) * inv) * inv
    return tl.where(n64 > 0, mean, 0.0), tl.where(n64 > 0, tl.maximum(m2, 0.0), 0.0)


@triton.jit
def lane_moments_masked(v, valid):
    """Per-lane raw stats of a [SUB, LANES] tile over the finite elements where `valid`.

    Returns n (fp64), mean (fp64), m2 (fp64), min, max (v's dtype; +inf/-inf when n = 0) and the
    int32 counts nan, posinf, neginf, zero.
    """
    SUB: tl.constexpr = v.shape[0]
    fin = valid & (tl.abs(v) < INF)
    nfin = tl.sum(fin.to(tl.int32), axis=0)
    # mean estimate from terms pre-divided by SUB (a power of two): no overflow, exact but for subnormals
    s = tl.sum(tl.where(fin, v, 0.0) * (1.0 / SUB), axis=0)
    vmin = tl.min(tl.where(fin, v, INF), axis=0)
    vmax = tl.max(tl.where(fin, v, -INF), axis=0)
    has = nfin > 0
    nf = tl.where(has, nfin, 1).to(v.dtype)
    p = tl.minimum(tl.maximum((s / nf) * SUB, vmin), vmax)
    p = tl.where(has, p, 0.0)
    half_range = tl.where(has, tl.maximum(vmax * 0.5 - p * 0.5, p * 0.5 - vmin * 0.5), 0.0)
    sc = pow2_scale(half_range)
    d = tl.where(fin, v * sc[None, :] - (p * sc)[None, :], 0.0)
    s1 = tl.sum(d, axis=0)
    s2 = tl.sum(d * d, axis=0)
    mean, m2 = _finish(nfin, p, sc, s1, s2)
    nan = tl.sum((valid & (v != v)).to(tl.int32), axis=0)
    posinf = tl.sum((v == INF).to(tl.int32), axis=0)
    neginf = tl.sum((v == -INF).to(tl.int32), axis=0)
    zero = tl.sum((valid & (v == 0)).to(tl.int32), axis=0)
    return nfin.to(tl.float64), mean, m2, vmin, vmax, nan, posinf, neginf, zero


@triton.jit
def lane_moments(v):
    """`lane_moments_masked` of a full tile, with a fast branch when the whole tile is finite."""
    SUB: tl.constexpr = v.shape[0]
    s = tl.sum(v, axis=0)
    # a finite raw sum means no NaN, no Inf and no overflow in this lane
    all_finite = tl.min((tl.abs(s) < INF).to(tl.int32), axis=0)
    if all_finite == 1:
        vmin = tl.min(v, axis=0)
        vmax = tl.max(v, axis=0)
        p = tl.minimum(tl.maximum(s * (1.0 / SUB), vmin), vmax)
        sc = pow2_scale(tl.maximum(vmax * 0.5 - p * 0.5, p * 0.5 - vmin * 0.5))
        d = v * sc[None, :] - (p * sc)[None, :]
        n = tl.full(s.shape, SUB, tl.int32)
        mean, m2 = _finish(n, p, sc, tl.sum(d, axis=0), tl.sum(d * d, axis=0))
        zero = tl.sum((v == 0).to(tl.int32), axis=0)
        none = tl.zeros(s.shape, tl.int32)
        n64 = n.to(tl.float64)
        nan, posinf, neginf = none, none, none
    else:
        everything = tl.full(v.shape, 1, tl.int1)
        n64, mean, m2, vmin, vmax, nan, posinf, neginf, zero = lane_moments_masked(v, everything)
    return n64, mean, m2, vmin, vmax, nan, posinf, neginf, zero


@triton.jit
def chan(na, ma, qa, nb, mb, qb):
    """Exact merge of two (n, mean, m2) moment sets (fp64), elementwise."""
    n = na + nb
    w = tl.where(n > 0, nb / tl.where(n > 0, n, 1.0), 0.0)
    delta = mb - ma
    return n, ma + delta * w, qa + qb + delta * delta * (na * w)


@triton.jit
def lanes_to_program(n, mean, m2):
    """Merge per-lane fp64 moments into program scalars: n, mean, m2 (two-pass over the lanes)."""
    total = tl.sum(n, axis=0)
    safe = tl.where(total > 0, total, 1.0)
    m = tl.sum(n * mean, axis=0) / safe
    dev = mean - m
    q = tl.sum(m2, axis=0) + tl.sum(n * dev * dev, axis=0)
    return total, tl.where(total > 0, m, 0.0), tl.where(total > 0, q, 0.0)


@triton.jit
def lane_state(LANES: tl.constexpr, dtype: tl.constexpr):
    """Empty per-lane accumulators: n, mean, m2 (fp64), min, max (dtype), nan, posinf, neginf, zero (int32)."""
    zf = tl.zeros((LANES,), tl.float64)
    zi = tl.zeros((LANES,), tl.int32)
    return (
        zf,
        zf,
        zf,
        tl.full((LANES,), INF, dtype),
        tl.full((LANES,), -INF, dtype),
        zi,
        zi,
        zi,
        zi,
    )


@triton.jit
def accumulate(n, mean, m2, vmin, vmax, nan, posinf, neginf, zero, v, valid, MASKED: tl.constexpr):
    """Fold a [SUB, LANES] tile of values into the per-lane accumulators."""
    if MASKED:
        tn, tm, tq, tmin, tmax, tnan, tpinf, tninf, tzero = lane_moments_masked(v, valid)
    else:
        tn, tm, tq, tmin, tmax, tnan, tpinf, tninf, tzero = lane_moments(v)
    n, mean, m2 = chan(n, mean, m2, tn, tm, tq)
    return (
        n,
        mean,
        m2,
        tl.minimum(vmin, tmin),
        tl.maximum(vmax, tmax),
        nan + tnan,
        posinf + tpinf,
        neginf + tninf,
        zero + tzero,
    )


@triton.jit
def store_partial(counts_ptr, moments_ptr, idx, n, mean, m2, vmin, vmax, nan, posinf, neginf, zero):
    """Write one program's raw stats (fastdiff.stats layout) at row `idx` of the partial buffers."""
    total, m, q = lanes_to_program(n, mean, m2)
    nan_t = tl.sum(nan.to(tl.int64), axis=0)
    pinf_t = tl.sum(posinf.to(tl.int64), axis=0)
    ninf_t = tl.sum(neginf.to(tl.int64), axis=0)
    c = counts_ptr + idx.to(tl.int64) * 5
    tl.store(c + 0, total.to(tl.int64) + nan_t + pinf_t + ninf_t)
    tl.store(c + 1, nan_t)
    tl.store(c + 2, pinf_t)
    tl.store(c + 3, ninf_t)
    tl.store(c + 4, tl.sum(zero.to(tl.int64), axis=0))
    mo = moments_ptr + idx.to(tl.int64) * 4
    tl.store(mo + 0, tl.min(vmin, axis=0).to(tl.float64))
    tl.store(mo + 1, tl.max(vmax, axis=0).to(tl.float64))
    tl.store(mo + 2, m)
    tl.store(mo + 3, q)
