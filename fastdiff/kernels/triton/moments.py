"""Per-thread statistics of a tile and their exact merges (Chan et al.), shared by the stats and step kernels.

A tile is a [SUB, NT, VEC] block of values in registers (tiles.py); thread t owns the K = SUB x VEC values
of column t. For each thread:

1. Tile moments, exact two-pass over the thread's K values (all in-thread, no shuffles):
   pivot p = the thread's mean estimate snapped into [min, max] (so constant values give d = 0 exactly),
   d = (v - p) * 2^-e with 2^-e chosen from the values' range so that d is O(1): squares neither
   overflow (|v| up to 3.4e38 in fp32) nor underflow (tiny spreads), and
       mean = p + sum(d) / (n 2^-e),   m2 = (sum d^2 - (sum d)^2 / n) / 2^-2e     (corrected two-pass).
   The accumulation dtype is the tile's: fp32 for fp16/bf16/fp32/small ints (their values are exact in
   fp32), fp64 for fp64 and 32/64-bit ints. A pivot close to the mean and K <= 32 summands keep the fp32
   sums at ~1e-7 relative, independent across threads; everything after (per-thread means and M2, their
   merges) is fp64.
   Fast branch: when every thread's raw sum is finite (no NaN/Inf in the tile, no overflow) the tile
   skips all masking and the NaN/Inf classification — per element: sum, min, max, zero test, d, d, d^2.
   The branch is taken for the whole program (one reduction of a flag per tile), so it never diverges.
2. Thread running moments in fp64 (12 registers a set), merged tile by tile with Chan's formula
       n = na + nb,  mean = ma + delta nb / n,  m2 = qa + qb + delta^2 na nb / n,
   which stays exact when the data drift between tiles (a pivot fixed once would not).
3. Program moments: the threads merged in fp64 (two-pass over threads: mean first, then m2 about it).

A state is the tuple (n, mean, m2, min, max, nan, posinf, neginf, zero) of [NT] tensors. Never
E[x^2] - E[x]^2; no float atomics; fixed reduction trees, so results are bit-reproducible.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tiles import per_thread, thread_max, thread_min, thread_sum

INF = tl.constexpr(float("inf"))


@triton.jit
def pow2_scale(half_range):
    """(2^-e, 2^e as fp64) with half_range * 2^-e in [1, 4): exact powers of two built from the exponent bits;
    (1, 1) where half_range <= 0."""
    if half_range.dtype == tl.float64:
        e = (half_range.to(tl.int64, bitcast=True) >> 52) & 0x7FF
        e = tl.minimum(e, 2045)
        sc = ((2046 - e) << 52).to(tl.float64, bitcast=True)  # 2^(1023 - e)
        inv = tl.where(e > 0, e << 52, 1 << 51).to(tl.float64, bitcast=True)  # 2^(e - 1023); 2^-1023 at e = 0
    else:
        e = (half_range.to(tl.int32, bitcast=True) >> 23) & 0xFF
        e = tl.minimum(e, 253)
        sc = ((254 - e) << 23).to(tl.float32, bitcast=True)  # 2^(127 - e)
        inv = ((e.to(tl.int64) + (1023 - 127)) << 52).to(tl.float64, bitcast=True)  # 2^(e - 127)
    return tl.where(half_range > 0, sc, 1.0), tl.where(half_range > 0, inv, 1.0)


@triton.jit
def recip(x):
    """1 / x (x > 0) in x's dtype without a division instruction: IEEE division compiles to a call to a slow
    path, which makes ptxas spill around it; an fp32 estimate refined by Newton steps r (2 - x r) is accurate
    to about an ulp (two steps for fp64, one for fp32) and stays inline."""
    r = tl.fdiv(tl.full(x.shape, 1.0, tl.float32), x.to(tl.float32), ieee_rounding=False).to(x.dtype)
    r = r * (2.0 - x * r)
    if x.dtype == tl.float64:
        r = r * (2.0 - x * r)
    return r


@triton.jit
def _finish(n, p, inv, s1, s2, rn):
    """fp64 (mean, m2) of a thread from its pivot, inverse scale 2^e, shifted sums and rn ~ 1/n (n > 0; else 0, 0).

    mean = p + (s1 / n) 2^e,  m2 = (s2 - s1 (s1 / n)) 2^2e.
    """
    has = n > 0
    s1_64 = s1.to(tl.float64)
    q = s1_64 * rn
    mean = p.to(tl.float64) + q * inv
    m2 = ((s2.to(tl.float64) - s1_64 * q) * inv) * inv
    return tl.where(has, mean, 0.0), tl.where(has, tl.maximum(m2, 0.0), 0.0)


@triton.jit
def tile_moments_masked(v, valid):
    """Per-thread raw stats of a tile over the finite elements where `valid`: a state tuple."""
    K: tl.constexpr = v.shape[0] * v.shape[2]
    fin = valid & (tl.abs(v) < INF)
    nfin = thread_sum(fin.to(tl.int32))
    # mean estimate from terms pre-divided by K (a power of two): no overflow, exact but for subnormals
    s = thread_sum(tl.where(fin, v, 0.0) * (1.0 / K))
    vmin = thread_min(tl.where(fin, v, INF))
    vmax = thread_max(tl.where(fin, v, -INF))
    has = nfin > 0
    n = tl.where(has, nfin, 1).to(tl.float64)
    rn = recip(n)
    p = tl.minimum(tl.maximum((s * rn.to(v.dtype)) * K, vmin), vmax)  # any pivot in [min, max] is exact
    p = tl.where(has, p, 0.0)
    half_range = tl.where(has, tl.maximum(vmax * 0.5 - p * 0.5, p * 0.5 - vmin * 0.5), 0.0)
    sc, inv = pow2_scale(half_range)
    d = tl.where(fin, v * per_thread(sc) - per_thread(p * sc), 0.0)
    mean, m2 = _finish(nfin, p, inv, thread_sum(d), thread_sum(d * d), rn)
    nan = thread_sum((valid & (v != v)).to(tl.int32))
    posinf = thread_sum((valid & (v == INF)).to(tl.int32))
    neginf = thread_sum((valid & (v == -INF)).to(tl.int32))
    zero = thread_sum((valid & (v == 0)).to(tl.int32))
    return nfin.to(tl.float64), mean, m2, vmin, vmax, nan, posinf, neginf, zero


@triton.jit
def tile_moments_finite(v, s):
    """`tile_moments_masked` of a full tile whose values are all finite; s = thread_sum(v) (finite)."""
    K: tl.constexpr = v.shape[0] * v.shape[2]
    vmin = thread_min(v)
    vmax = thread_max(v)
    p = tl.minimum(tl.maximum(s * (1.0 / K), vmin), vmax)
    sc, inv = pow2_scale(tl.maximum(vmax * 0.5 - p * 0.5, p * 0.5 - vmin * 0.5))
    d = v * per_thread(sc) - per_thread(p * sc)
    n = tl.full(s.shape, K, tl.float64)
    mean, m2 = _finish(n, p, inv, thread_sum(d), thread_sum(d * d), 1.0 / K)
    none = tl.zeros(s.shape, tl.int32)
    return n, mean, m2, vmin, vmax, none, none, none, thread_sum((v == 0).to(tl.int32))


@triton.jit
def all_finite(s):
    """Whether every thread's sum is finite (no NaN/Inf among the values, no overflow): program-wide."""
    return tl.min((tl.abs(s) < INF).to(tl.int32), axis=0) == 1


@triton.jit
def chan(na, ma, qa, nb, mb, qb):
    """Exact merge of two (n, mean, m2) moment sets (fp64), elementwise."""
    n = na + nb
    w = tl.where(n > 0, nb * recip(tl.where(n > 0, n, 1.0)), 0.0)
    delta = mb - ma
    return n, ma + delta * w, qa + qb + delta * delta * (na * w)


@triton.jit
def merge(state, tile):
    """The state after folding in a tile's per-thread stats (both state tuples)."""
    n, mean, m2 = chan(state[0], state[1], state[2], tile[0], tile[1], tile[2])
    return (
        n,
        mean,
        m2,
        tl.minimum(state[3], tile[3]),
        tl.maximum(state[4], tile[4]),
        state[5] + tile[5],
        state[6] + tile[6],
        state[7] + tile[7],
        state[8] + tile[8],
    )


@triton.jit
def empty_state(NT: tl.constexpr, dtype: tl.constexpr):
    """Per-thread accumulators of nothing: n, mean, m2 = 0 (fp64), min = +inf, max = -inf, counts 0."""
    zf = tl.zeros((NT,), tl.float64)
    zi = tl.zeros((NT,), tl.int32)
    return zf, zf, zf, tl.full((NT,), INF, dtype), tl.full((NT,), -INF, dtype), zi, zi, zi, zi


@triton.jit
def accumulate(state, v, valid, MASKED: tl.constexpr):
    """Fold a tile of values into a state; MASKED: only where `valid` (a partial tile), else all of it."""
    if MASKED:
        tile = tile_moments_masked(v, valid)
    else:
        s = thread_sum(v)
        if all_finite(s):
            tile = tile_moments_finite(v, s)
        else:
            tile = tile_moments_masked(v, valid)
    return merge(state, tile)


@triton.jit
def accumulate_two(state_a, a, state_b, b, valid, MASKED: tl.constexpr):
    """`accumulate` of two tiles at once, with one program-wide finiteness test for both."""
    if MASKED:
        tile_a = tile_moments_masked(a, valid)
        tile_b = tile_moments_masked(b, valid)
    else:
        sa = thread_sum(a)
        sb = thread_sum(b)
        if all_finite(sa + sb):  # a NaN/Inf in either sum makes their sum non-finite
            tile_a = tile_moments_finite(a, sa)
            tile_b = tile_moments_finite(b, sb)
        else:
            tile_a = tile_moments_masked(a, valid)
            tile_b = tile_moments_masked(b, valid)
    return merge(state_a, tile_a), merge(state_b, tile_b)


@triton.jit
def threads_to_program(n, mean, m2):
    """Merge per-thread fp64 moments into program scalars: n, mean, m2 (two-pass over the threads)."""
    total = tl.sum(n, axis=0)
    # the mean about a pivot taken from the data (the largest thread mean): threads that agree give it exactly
    pivot = tl.max(tl.where(n > 0, mean, -float("inf")), axis=0)
    pivot = tl.where(total > 0, pivot, 0.0)
    m = pivot + tl.sum(n * tl.where(n > 0, mean - pivot, 0.0), axis=0) * recip(tl.where(total > 0, total, 1.0))
    dev = mean - m
    q = tl.sum(m2, axis=0) + tl.sum(n * dev * dev, axis=0)
    return total, tl.where(total > 0, m, 0.0), tl.where(total > 0, q, 0.0)


@triton.jit
def store_partial(counts_ptr, moments_ptr, idx, state):
    """Write one program's raw stats (fastdiff.stats layout) at row `idx` of the partial buffers."""
    total, m, q = threads_to_program(state[0], state[1], state[2])
    nan_t = tl.sum(state[5].to(tl.int64), axis=0)
    pinf_t = tl.sum(state[6].to(tl.int64), axis=0)
    ninf_t = tl.sum(state[7].to(tl.int64), axis=0)
    c = counts_ptr + idx.to(tl.int64) * 5
    tl.store(c + 0, total.to(tl.int64) + nan_t + pinf_t + ninf_t)
    tl.store(c + 1, nan_t)
    tl.store(c + 2, pinf_t)
    tl.store(c + 3, ninf_t)
    tl.store(c + 4, tl.sum(state[8].to(tl.int64), axis=0))
    mo = moments_ptr + idx.to(tl.int64) * 4
    tl.store(mo + 0, tl.min(state[3], axis=0).to(tl.float64))
    tl.store(mo + 1, tl.max(state[4], axis=0).to(tl.float64))
    tl.store(mo + 2, m)
    tl.store(mo + 3, q)


@triton.jit
def store_rows(counts_ptr, moments_ptr, rows, mask, state):
    """Write each thread's raw stats as its own output row (`rows`, int64 [NT]; where `mask`)."""
    n = state[0]
    c = counts_ptr + rows * 5
    tl.store(c + 0, n.to(tl.int64) + state[5] + state[6] + state[7], mask=mask)
    tl.store(c + 1, state[5].to(tl.int64), mask=mask)
    tl.store(c + 2, state[6].to(tl.int64), mask=mask)
    tl.store(c + 3, state[7].to(tl.int64), mask=mask)
    tl.store(c + 4, state[8].to(tl.int64), mask=mask)
    mo = moments_ptr + rows * 4
    tl.store(mo + 0, state[3].to(tl.float64), mask=mask)
    tl.store(mo + 1, state[4].to(tl.float64), mask=mask)
    tl.store(mo + 2, state[1], mask=mask)
    tl.store(mo + 3, state[2], mask=mask)
