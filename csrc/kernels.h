// The CPU kernels: one-pass tensor statistics, pair statistics and the generic fused sampler step.
//
// Included once per instruction set by kernels_base.cpp / kernels_avx2.cpp, with FD_ISA naming the
// namespace, after api.h has brought in every standard header (so that no standard inline function is
// compiled for AVX2 and then shared with the baseline build). Nothing here includes anything.
//
// Hot loops use GCC/Clang vector extensions of the target's native width: the compiler cannot decline
// to vectorise them, which it would for plain float reductions without -ffast-math (and -ffast-math
// would break NaN/Inf detection). Inputs are read in blocks of BLOCK elements (api.h): a unit-stride
// run of the compute type is used in place, anything else (strides, other dtypes) is converted into a
// small per-thread buffer first.

namespace fd {
namespace FD_ISA {

// ------------------------------------------------------------------------------------------------
// vectors

// FD_VBYTES: the native vector width of the target (16 for SSE2/NEON, 32 for AVX2). Vectors of other
// widths would be split, and a vector `?:` of a non-native width is lowered element by element.
template <class T>
struct VT;
template <>
struct VT<float> {
    typedef float V __attribute__((vector_size(FD_VBYTES)));
    typedef int32_t I __attribute__((vector_size(FD_VBYTES)));
    static constexpr int N = FD_VBYTES / 4;
    static constexpr int SCALE_EXP = 120;  // 2^-e stays a normal float for |e| <= this
};
template <>
struct VT<double> {
    typedef double V __attribute__((vector_size(FD_VBYTES)));
    typedef int64_t I __attribute__((vector_size(FD_VBYTES)));
    static constexpr int N = FD_VBYTES / 8;
    static constexpr int SCALE_EXP = 1000;
};
// Reductions keep several independent vector accumulators for instruction-level parallelism: U1 in
// the exact pass 1 of the stats (min, max, zero count and a sum that only picks the shift), U2 in the
// rounded pass 2 (a lane of a block sums BLOCK / (U2 N) terms before the lanes are added in double), U
// in the pair sums, 64 bytes of lanes (16 floats / 8 doubles): more would not fit 16 SIMD registers.
constexpr int U1 = 2;
constexpr int U = 64 / FD_VBYTES;
// pass 2's two sums are chains of adds and FMAs (latency 3-5 cycles): four accumulators each keep them from
// bounding the pass (the block is in L1 there), in 8 + 3 vector registers. The fused step with stats at
// 262K float32 elements, one thread: 284 -> 259 us (two accumulators -> four).
constexpr int U2 = 4;

template <class V, class T>
static inline V vload(const T* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof(V));
    return v;
}
template <class V, class T>
static inline void vstore(T* p, const V& v) {
    __builtin_memcpy(p, &v, sizeof(V));
}
// every lane = s, bit for bit (V{} + s would turn -0 into +0)
template <class V, class S>
static inline V splat(S s) {
    typedef std::remove_cv_t<std::remove_reference_t<decltype(V{}[0])>> E;
    V v;
    for (size_t l = 0; l < sizeof(V) / sizeof(E); ++l) v[l] = (E)s;
    return v;
}

// ------------------------------------------------------------------------------------------------
// storage dtypes <-> compute type

// The 16-bit float formats, N values at a time (scalar code of this kind is not reliably vectorised).
// Half -> float is exact: normal numbers re-bias the exponent, subnormals are em 2^-24, Inf/NaN keep
// their payload. Float -> half and -> bfloat16 round to nearest even as c10::Half / c10::BFloat16 do
// (NaN -> 0x7e00 / 0x7fc0, half overflow -> Inf; half results below 2^-14 are rounded by adding 0.5f,
// which aligns their ulp 2^-24 with the float's last bit). Masks select instead of branches.
typedef uint32_t VU __attribute__((vector_size(FD_VBYTES)));
typedef uint16_t VH __attribute__((vector_size(FD_VBYTES / 2)));

template <int DT>
static inline VT<float>::V from16(VU w) {  // DT: F16 or BF16
    typedef VT<float>::V V;
    typedef VT<float>::I I;
    if constexpr (DT == BF16) {
        return (V)(w << 16);
    } else {
        const VU sign = (w & 0x8000u) << 16;
        const VU em = w & 0x7fffu;
        const VU normal = (em << 13) + (112u << 23);
        const VU special = (em << 13) | 0x7f800000u;
        const VU sub = (VU)(__builtin_convertvector((I)em, V) * 5.9604644775390625e-08f);
        const VU is_special = (VU)(em >= 0x7c00u), is_sub = (VU)(em < 0x0400u);
        return (V)(sign | (special & is_special) | (sub & is_sub) | (normal & ~(is_special | is_sub)));
    }
}

template <int DT>
static inline VU to16(VT<float>::V f) {
    typedef VT<float>::V V;
    VU x = (VU)f;
    if constexpr (DT == BF16) {
        const VU nan = (VU)(f != f);
        const VU r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
        return (r & ~nan) | (0x7fc0u & nan);
    } else {
        const VU sign = (x >> 16) & 0x8000u;
        x &= 0x7fffffffu;
        const VU big = 0x7c00u | ((VU)(x > 0x7f800000u) & 0x0200u);
        const VU sub = (VU)((V)x + 0.5f) - 0x3f000000u;
        const VU norm = (x - (112u << 23) + 0xfffu + ((x >> 13) & 1u)) >> 13;
        const VU is_big = (VU)(x >= 0x47800000u), is_sub = (VU)(x < 0x38800000u);
        return sign | (big & is_big) | (sub & is_sub & ~is_big) | (norm & ~(is_big | is_sub));
    }
}

template <int DT>
static inline float from16(uint16_t h) {
    return from16<DT>(splat<VU>(h))[0];
}
template <int DT>
static inline uint16_t to16(float f) {
    return (uint16_t)to16<DT>(splat<VT<float>::V>(f))[0];
}

template <int DT>
struct St;
template <>
struct St<F32> {
    typedef float S;
    static inline float val(S v) { return v; }
    template <class T>
    static inline S put(T v) { return (float)v; }
};
template <>
struct St<F64> {
    typedef double S;
    static inline double val(S v) { return v; }
    template <class T>
    static inline S put(T v) { return (double)v; }
};
template <>
struct St<F16> {
    typedef uint16_t S;
    static inline float val(S v) { return from16<F16>(v); }
    template <class T>
    static inline S put(T v) { return to16<F16>((float)v); }
};
template <>
struct St<BF16> {
    typedef uint16_t S;
    static inline float val(S v) { return from16<BF16>(v); }
    template <class T>
    static inline S put(T v) { return to16<BF16>((float)v); }
};
template <>
struct St<U8> {
    typedef uint8_t S;
    static inline int32_t val(S v) { return v; }
};
template <>
struct St<I8> {
    typedef int8_t S;
    static inline int32_t val(S v) { return v; }
};
template <>
struct St<I16> {
    typedef int16_t S;
    static inline int32_t val(S v) { return v; }
};
template <>
struct St<I32> {
    typedef int32_t S;
    static inline int32_t val(S v) { return v; }
};
template <>
struct St<I64> {
    typedef int64_t S;
    static inline int64_t val(S v) { return v; }
};
template <>
struct St<BOOL> {
    typedef uint8_t S;
    static inline int32_t val(S v) { return v != 0; }
};

template <class T>
using LoadFn = void (*)(const char*, int64_t, int64_t, T*);
template <class T>
using StoreFn = void (*)(char*, int64_t, int64_t, T*);

template <class T>
constexpr int native_dtype() {
    return sizeof(T) == 8 ? F64 : F32;
}

template <int DT, class T>
constexpr bool vector_16bit() {
    return (DT == F16 || DT == BF16) && sizeof(T) == 4;
}

// out[i] = element i of a run of k elements `stride` apart, converted to T
template <int DT, class T>
static void load_run(const char* p, int64_t stride, int64_t k, T* out) {
    typedef typename St<DT>::S S;
    const S* s = reinterpret_cast<const S*>(p);
    if (stride == 1) {
        int64_t i = 0;
        if constexpr (vector_16bit<DT, T>()) {
            constexpr int N = VT<float>::N;
            for (; i + N <= k; i += N) vstore(out + i, from16<DT>(__builtin_convertvector(vload<VH>(s + i), VU)));
        }
        for (; i < k; ++i) out[i] = (T)St<DT>::val(s[i]);
    } else {
        for (int64_t i = 0; i < k; ++i) out[i] = (T)St<DT>::val(s[i * stride]);
    }
}

// d[0 .. k) = s[0 .. k); with `stream`, by non-temporal stores that bypass the caches (an output larger
// than the cache would only evict the inputs, and a normal store first reads the line it writes)
template <class T>
static inline void copy_out(T* d, const T* s, int64_t k, bool stream) {
#if defined(__SSE2__)
    if (stream) {
        int64_t i = 0;
#if FD_VBYTES == 32  // the AVX2 build (kernels_avx2.cpp)
        for (; i < k && ((uintptr_t)(d + i) & 31); ++i) d[i] = s[i];
        if constexpr (sizeof(T) == 4) {
            for (; i + 8 <= k; i += 8) _mm256_stream_ps((float*)(d + i), _mm256_loadu_ps((const float*)(s + i)));
        } else {
            for (; i + 4 <= k; i += 4) _mm256_stream_pd((double*)(d + i), _mm256_loadu_pd((const double*)(s + i)));
        }
#endif
        for (; i < k && ((uintptr_t)(d + i) & 15); ++i) d[i] = s[i];
        if constexpr (sizeof(T) == 4) {
            for (; i + 4 <= k; i += 4) _mm_stream_ps((float*)(d + i), _mm_loadu_ps((const float*)(s + i)));
        } else {
            for (; i + 2 <= k; i += 2) _mm_stream_pd((double*)(d + i), _mm_loadu_pd((const double*)(s + i)));
        }
        for (; i < k; ++i) d[i] = s[i];
        return;
    }
#endif
    (void)stream;
    __builtin_memcpy(d, s, (size_t)k * sizeof(T));
}

static inline void stream_fence() {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

// writes vals rounded to the storage dtype, and leaves in vals the values as stored
template <int DT, class T, bool STREAM>
static void store_run(char* p, int64_t stride, int64_t k, T* vals) {
    typedef typename St<DT>::S S;
    S* d = reinterpret_cast<S*>(p);
    int64_t i = 0;
    if (stride == 1) {
        if constexpr (DT == native_dtype<T>()) {  // stored as computed
            copy_out(d, vals, k, STREAM);
            return;
        }
        if constexpr (vector_16bit<DT, T>()) {
            constexpr int N = VT<float>::N;
            for (; i + N <= k; i += N) {
                const VU r = to16<DT>(vload<VT<float>::V>(vals + i));
                vstore(d + i, __builtin_convertvector(r, VH));
                vstore(vals + i, from16<DT>(r));
            }
        }
    }
    for (; i < k; ++i) {
        const S r = St<DT>::put(vals[i]);
        d[i * stride] = r;
        vals[i] = (T)St<DT>::val(r);
    }
}

template <int DT, class T>
static void roundtrip_run(T* vals, int64_t k) {
    int64_t i = 0;
    if constexpr (vector_16bit<DT, T>()) {
        constexpr int N = VT<float>::N;
        for (; i + N <= k; i += N) vstore(vals + i, from16<DT>(to16<DT>(vload<VT<float>::V>(vals + i))));
    }
    for (; i < k; ++i) vals[i] = (T)St<DT>::val(St<DT>::put(vals[i]));
}

template <class T>
static LoadFn<T> loader(int dt) {
    switch (dt) {
        case F32: return load_run<F32, T>;
        case F64: return load_run<F64, T>;
        case F16: return load_run<F16, T>;
        case BF16: return load_run<BF16, T>;
        case U8: return load_run<U8, T>;
        case I8: return load_run<I8, T>;
        case I16: return load_run<I16, T>;
        case I32: return load_run<I32, T>;
        case I64: return load_run<I64, T>;
        default: return load_run<BOOL, T>;
    }
}

template <class T>
static StoreFn<T> storer(int dt, bool stream) {
    switch (dt) {
        case F64: return stream ? store_run<F64, T, true> : store_run<F64, T, false>;
        case F16: return store_run<F16, T, false>;
        case BF16: return store_run<BF16, T, false>;
        default: return stream ? store_run<F32, T, true> : store_run<F32, T, false>;
    }
}

template <class T>
static void roundtrip(int dt, T* vals, int64_t k) {
    if (dt == F16) roundtrip_run<F16, T>(vals, k);
    if (dt == BF16) roundtrip_run<BF16, T>(vals, k);
}

// ------------------------------------------------------------------------------------------------
// walking a strided view: fn(address, stride, k) for each unit of k elements along the last dim

template <class F>
static inline void for_runs(const ViewDesc& v, int64_t f, int64_t len, F&& fn) {
    const int64_t isz = ITEMSIZE[v.dtype];
    if (v.contiguous) {
        fn(v.data + f * isz, (int64_t)1, len);
        return;
    }
    const int nd = v.ndim;
    int64_t idx[MAX_DIMS];
    int64_t off = 0, rem = f;
    for (int d = nd - 1; d >= 0; --d) {
        idx[d] = rem % v.sizes[d];
        rem /= v.sizes[d];
        off += idx[d] * v.strides[d];
    }
    const int64_t inner = v.sizes[nd - 1], is = v.strides[nd - 1];
    while (len > 0) {
        const int64_t k = std::min(len, inner - idx[nd - 1]);
        fn(v.data + off * isz, is, k);
        len -= k;
        if (len == 0) break;
        off -= idx[nd - 1] * is;  // back to the start of the row, then carry into the outer dims
        idx[nd - 1] = 0;
        for (int d = nd - 2; d >= 0; --d) {
            off += v.strides[d];
            if (++idx[d] < v.sizes[d]) break;
            off -= v.sizes[d] * v.strides[d];
            idx[d] = 0;
        }
    }
}

// gathers len elements from flat index f into buf, converted to T
template <class T>
static inline void gather(const ViewDesc& v, LoadFn<T> load, int64_t f, int64_t len, T* buf) {
    int64_t done = 0;
    for_runs(v, f, len, [&](const char* p, int64_t s, int64_t k) {
        load(p, s, k, buf + done);
        done += k;
    });
}

// len elements from flat index f as T: in place when they are one unit-stride run of T, else gathered
template <class T>
static inline const T* read_block(const ViewDesc& v, LoadFn<T> load, int64_t f, int64_t len, T* buf) {
    const bool native = v.dtype == native_dtype<T>();
    const T* direct = nullptr;
    int64_t done = 0;
    for_runs(v, f, len, [&](const char* p, int64_t s, int64_t k) {
        if (native && s == 1 && k == len) {
            direct = reinterpret_cast<const T*>(p);
            return;
        }
        load(p, s, k, buf + done);
        done += k;
    });
    return direct ? direct : buf;
}

// as read_block, readable up to plen >= len elements (zeros past len): whole vectors for the step
template <class T>
static inline const T* read_padded(const ViewDesc& v, LoadFn<T> load, int64_t f, int64_t len, int64_t plen,
                                   T* buf) {
    if (len == plen) return read_block(v, load, f, len, buf);
    gather(v, load, f, len, buf);
    for (int64_t i = len; i < plen; ++i) buf[i] = 0;
    return buf;
}

template <class T>
static inline void write_block(const ViewDesc& v, StoreFn<T> store, int64_t f, int64_t len, T* vals) {
    int64_t done = 0;
    for_runs(v, f, len, [&](const char* p, int64_t s, int64_t k) {
        store(const_cast<char*>(p), s, k, vals + done);
        done += k;
    });
}

// The stats kernels work on a block in L1 for a while after reading it (two passes), with no load of
// the input stream in flight, and the hardware prefetcher falls behind. At the start of each block
// they prefetch the block PREFETCH_BYTES further on in each contiguous input, up to its end (a list of
// small tensors would otherwise fetch 16 KB of unrelated memory per tensor). This doubles the
// single-thread stats rate on data that comes from DRAM. (The step kernel is not helped: measured
// slightly slower with it, so it has none.)
constexpr int64_t PREFETCH_BYTES = 16 << 10;

// [*from, *to): the bytes PREFETCH_BYTES past the block [f, f + k) of a contiguous view, up to its end
// (empty for a strided view)
static inline void prefetch_range(const ViewDesc& v, int64_t f, int64_t k, const char** from, const char** to) {
    *from = *to = nullptr;
    if (!v.contiguous) return;
    const int64_t isz = ITEMSIZE[v.dtype];
    const int64_t a = f * isz + PREFETCH_BYTES, b = std::min((f + k) * isz + PREFETCH_BYTES, v.numel * isz);
    if (a >= b) return;
    *from = v.data + a;
    *to = v.data + b;
}

static inline void prefetch_ahead(const ViewDesc& v, int64_t f, int64_t k) {
    const char *from, *to;
    prefetch_range(v, f, k, &from, &to);
    for (const char* b = from; b < to; b += 64) __builtin_prefetch(b);
}

static inline const char* element_address(const ViewDesc& v, int64_t f) {
    const char* p = nullptr;
    for_runs(v, f, 1, [&](const char* q, int64_t, int64_t) { p = q; });
    return p;
}

// ------------------------------------------------------------------------------------------------
// stats of one block

static inline int64_t finite_count(const Raw& r) { return r.n - r.nan - r.pinf - r.ninf; }

// Chan et al.: n = na + nb, mean = ma + d nb / n, m2 = m2a + m2b + d^2 na nb / n  (d = mb - ma)
static inline void merge(Raw& a, const Raw& b) {
    const int64_t na = finite_count(a), nb = finite_count(b);
    a.n += b.n;
    a.nan += b.nan;
    a.pinf += b.pinf;
    a.ninf += b.ninf;
    a.zero += b.zero;
    a.mn = b.mn < a.mn ? b.mn : a.mn;
    a.mx = b.mx > a.mx ? b.mx : a.mx;
    if (nb == 0) return;
    if (na == 0) {
        a.mean = b.mean;
        a.m2 = b.m2;
        return;
    }
    const double n = (double)na + (double)nb;
    const double d = b.mean - a.mean;
    a.mean += d * ((double)nb / n);
    a.m2 += b.m2 + d * d * ((double)na * (double)nb / n);
}

// e with v = f 2^e, f in [0.5, 1), for a positive normal double v (as std::frexp, without the call)
static inline int exponent(double v) {
    uint64_t b;
    __builtin_memcpy(&b, &v, 8);
    return (int)((b >> 52) & 0x7ff) - 1022;
}
// 2^k for -1022 <= k <= 1023
static inline double pow2(int k) {
    const uint64_t b = (uint64_t)(k + 1023) << 52;
    double v;
    __builtin_memcpy(&v, &b, 8);
    return v;
}

// Any block with a NaN/Inf (or whose shifted sums overflow): scalar, double, finite elements only.
template <class T>
static Raw block_stats_slow(const T* p, int64_t len) {
    Raw r;
    r.n = len;
    double sum = 0.0;
    int64_t nf = 0;
    for (int64_t i = 0; i < len; ++i) {
        const double v = (double)p[i];
        if (v != v) {
            ++r.nan;
        } else if (v == HUGE_VAL) {
            ++r.pinf;
        } else if (v == -HUGE_VAL) {
            ++r.ninf;
        } else {
            ++nf;
            sum += v;
            r.mn = v < r.mn ? v : r.mn;
            r.mx = v > r.mx ? v : r.mx;
            r.zero += v == 0.0;
        }
    }
    if (nf == 0) return r;
    const double m = sum / (double)nf;  // a shift: the mean is m + s1 / nf below
    const double spread = r.mx - r.mn;
    int e = 0;
    if (std::isfinite(spread) && spread > 0) std::frexp(spread, &e);
    const double sc = std::ldexp(1.0, -e);
    double s1 = 0.0, s2 = 0.0;
    for (int64_t i = 0; i < len; ++i) {
        const double v = (double)p[i];
        if (v - v == 0.0) {  // finite
            const double d = (v - m) * sc;
            s1 += d;
            s2 += d * d;
        }
    }
    r.mean = m + s1 / (double)nf / sc;
    r.m2 = std::max(0.0, (s2 - s1 * s1 / (double)nf) / sc / sc);
    return r;
}

// Stats of len (1..BLOCK) values. Pass 1: min, max, zero count and a plain sum in T lanes; a non-finite
// sum means the block holds NaN/Inf (or overflows) and goes to the slow path. Pass 2 (the block is in
// L1): shifted sums s1 = sum d, s2 = sum d^2 of d = (x - m) 2^-e, with m the pass-1 mean and 2^e the
// block's range, so d is O(1) (no overflow or underflow of d^2 for any data); each lane sums at most
// BLOCK / (U2 N) terms before the lanes are added in double. m2 = (s2 - s1^2 / n) 2^2e (Bjorck's corrected
// two-pass formula), mean = m + 2^e s1 / n. For a moderate range (|e| <= NOSCALE_EXP) the scaling is
// skipped: a power of two neither overflows nor underflows there, so it is exact and changes no bit.
//
// Pass 1 is a Pass1 accumulator fed U1 vectors at a time (vector j of a group into lane set j), so that
// the fused step can feed it the values it has just computed, in registers, in the same order as
// block_stats feeds it from memory: the two give bit-identical stats.
constexpr int NOSCALE_EXP = 40;

template <class T>
struct Pass1 {
    typedef typename VT<T>::V V;
    typedef typename VT<T>::I I;
    V mn[U1], mx[U1], s[U1];
    I z[U1];
    inline void init() {
        const T inf = std::numeric_limits<T>::infinity();
        for (int u = 0; u < U1; ++u) {
            mn[u] = splat<V>(inf);
            mx[u] = splat<V>(-inf);
            s[u] = V{};
            z[u] = I{};
        }
    }
    inline void add(int u, const V& a) {
        mn[u] = a < mn[u] ? a : mn[u];
        mx[u] = a > mx[u] ? a : mx[u];
        s[u] += a;
        z[u] += a == V{};
    }
    // the same result with fewer registers: min, max and the zero count are exact in any order, so
    // only the sum needs lane set u
    inline void add_shared(int u, const V& a) {
        mn[0] = a < mn[0] ? a : mn[0];
        mx[0] = a > mx[0] ? a : mx[0];
        s[u] += a;
        z[0] += a == V{};
    }
};

// pass 2: sums of d = (x - m) sc, and of d^2
template <class T, bool SCALE>
static inline void pass2(const T* p, int64_t len, T m, T sc, double& S1, double& S2) {
    typedef typename VT<T>::V V;
    constexpr int N = VT<T>::N, G = U2 * N;
    const int64_t ng = len / G;
    const V mv = splat<V>(m), scv = splat<V>(sc);
    V q[U2], r2[U2];
    for (int u = 0; u < U2; ++u) q[u] = r2[u] = V{};
    for (int64_t g = 0; g < ng; ++g) {
        for (int u = 0; u < U2; ++u) {
            V d = vload<V>(p + g * G + u * N) - mv;
            if (SCALE) d *= scv;
            q[u] += d;
            r2[u] += d * d;
        }
    }
    T tq = 0, tr = 0;
    for (int64_t j = ng * G; j < len; ++j) {
        T d = p[j] - m;
        if (SCALE) d *= sc;
        tq += d;
        tr += d * d;
    }
    for (int u = 1; u < U2; ++u) {
        q[0] += q[u];
        r2[0] += r2[u];
    }
    S1 = (double)tq;
    S2 = (double)tr;
    for (int l = 0; l < N; ++l) {
        S1 += (double)q[0][l];
        S2 += (double)r2[0][l];
    }
}

// The stats of p[0 .. len) from its pass-1 accumulator over the first (len / (U1 N)) U1 N values.
template <class T>
static Raw block_finish(const Pass1<T>& P1, const T* p, int64_t len) {
    typedef typename VT<T>::V V;
    typedef typename VT<T>::I I;
    constexpr int N = VT<T>::N, G1 = U1 * N;
    const T inf = std::numeric_limits<T>::infinity();
    const int64_t ng1 = len / G1;
    V mn = P1.mn[0], mx = P1.mx[0], s = P1.s[0];
    I z = P1.z[0];
    T tmn = inf, tmx = -inf, ts = 0;
    int64_t zeros = 0;
    for (int64_t j = ng1 * G1; j < len; ++j) {
        const T v = p[j];
        tmn = v < tmn ? v : tmn;
        tmx = v > tmx ? v : tmx;
        ts += v;
        zeros += v == 0;
    }
    for (int u = 1; u < U1; ++u) {  // min, max and counts are exact in any order; this sum only picks m
        mn = P1.mn[u] < mn ? P1.mn[u] : mn;
        mx = P1.mx[u] > mx ? P1.mx[u] : mx;
        s += P1.s[u];
        z += P1.z[u];
    }
    double sum = (double)ts;
    for (int l = 0; l < N; ++l) {
        sum += (double)s[l];
        tmn = mn[l] < tmn ? mn[l] : tmn;
        tmx = mx[l] > tmx ? mx[l] : tmx;
        zeros -= z[l];
    }
    if (!std::isfinite(sum)) return block_stats_slow(p, len);

    Raw r;
    r.n = len;
    r.zero = zeros;
    r.mn = (double)tmn;
    r.mx = (double)tmx;
    const double spread = r.mx - r.mn;
    if (spread == 0.0) {  // all equal
        r.mean = r.mn;
        return r;
    }
    const int e = exponent(spread);
    if (e > VT<T>::SCALE_EXP || e < -VT<T>::SCALE_EXP) return block_stats_slow(p, len);
    const T m = (T)(sum / (double)len);
    const bool scale = e > NOSCALE_EXP || e < -NOSCALE_EXP;
    const T sc = scale ? (T)pow2(-e) : (T)1;
    double S1, S2;
    if (scale)
        pass2<T, true>(p, len, m, sc, S1, S2);
    else
        pass2<T, false>(p, len, m, sc, S1, S2);
    if (!std::isfinite(S2)) return block_stats_slow(p, len);
    const double n = (double)len;
    r.mean = (double)m + S1 / n / (double)sc;
    r.m2 = std::max(0.0, (S2 - S1 * S1 / n) / (double)sc / (double)sc);
    return r;
}

// Stats of len (1..BLOCK) values at p. With prefetch lines [ahead, ahead_end) (see prefetch_range),
// group g of U1 N values prefetches line g: one prefetch per 64 bytes of input, inside the pass-1 loop.
template <class T>
static Raw block_stats(const T* p, int64_t len, const char* ahead = nullptr, const char* ahead_end = nullptr) {
    typedef typename VT<T>::V V;
    constexpr int N = VT<T>::N, G1 = U1 * N;
    const int64_t ng1 = len / G1;
    Pass1<T> P1;
    P1.init();
    const int64_t lines = ahead ? (int64_t)(ahead_end - ahead + 63) / 64 : 0;
    int64_t g = 0;
    for (; g < std::min(lines, ng1); ++g) {
        __builtin_prefetch(ahead + 64 * g);
        for (int u = 0; u < U1; ++u) P1.add(u, vload<V>(p + g * G1 + u * N));
    }
    for (; g < ng1; ++g)
        for (int u = 0; u < U1; ++u) P1.add(u, vload<V>(p + g * G1 + u * N));
    return block_finish(P1, p, len);
}

// ------------------------------------------------------------------------------------------------
// tensor stats: views cut into rows (one per tensor, or one per index of dim 0), rows into work items

template <class T>
static Raw stats_item(const ViewDesc& v, int64_t start, int64_t len, T* buf) {
    const LoadFn<T> load = loader<T>(v.dtype);
    Raw acc;
    for (int64_t f = 0; f < len; f += BLOCK) {
        const int64_t k = std::min(BLOCK, len - f);
        const char *from, *to;
        prefetch_range(v, start + f, k, &from, &to);
        merge(acc, block_stats(read_block(v, load, start + f, k, buf), k, from, to));
    }
    return acc;
}

// n values of E, inline up to K of them (no heap allocation for the common few views / items)
template <class E, int K>
struct SmallVec {
    E inl[K];
    std::vector<E> heap;
    E* p = inl;
    void assign(size_t n, const E& v) {
        if (n > (size_t)K) {
            heap.assign(n, v);
            p = heap.data();
        } else {
            p = inl;
            for (size_t i = 0; i < n; ++i) inl[i] = v;
        }
    }
    E& operator[](size_t i) { return p[i]; }
    const E& operator[](size_t i) const { return p[i]; }
};

// Rows of every view -> work items of ITEM elements; partials merged per row in item order.
struct RowPlan {
    SmallVec<int64_t, 5> item_start, row_start, row_len, items_per_row;
    size_t nv = 0;
    int64_t items = 0, rows = 0, elements = 0;

    RowPlan(const int64_t* numel, const int64_t* rows_of, size_t n) : nv(n) {
        item_start.assign(nv + 1, 0);
        row_start.assign(nv + 1, 0);
        row_len.assign(nv, 0);
        items_per_row.assign(nv, 0);
        for (size_t i = 0; i < nv; ++i) {
            row_len[i] = rows_of[i] ? numel[i] / rows_of[i] : 0;
            items_per_row[i] = (row_len[i] + ITEM - 1) / ITEM;
            item_start[i + 1] = item_start[i] + rows_of[i] * items_per_row[i];
            row_start[i + 1] = row_start[i] + rows_of[i];
            elements += numel[i];
        }
        items = item_start[nv];
        rows = row_start[nv];
    }
    size_t view_of_item(int64_t it) const {
        return (size_t)(std::upper_bound(&item_start[0], &item_start[0] + nv + 1, it) - &item_start[0]) - 1;
    }
    size_t view_of_row(int64_t row) const {
        return (size_t)(std::upper_bound(&row_start[0], &row_start[0] + nv + 1, row) - &row_start[0]) - 1;
    }
};

// Threads for a call: one below PAR_MIN_ELEMENTS, then at most one per item. Measured on the 2-core
// EPYC VM (float32, best of 400 calls, one thread -> two): at 32K elements stats 7.0 -> 7.6 us (the
// team costs more than the second core saves) and the DDIM step 24 -> 19 us; at 64K stats 15.7 ->
// 12.4 us and the step 47 -> 38 us; at 128K stats 34 -> 23 us, the step 96 -> 68 us. So: one thread
// below 64K elements (SD 1.5 latents, 16K, never start a team), two from 64K (SDXL).
// Results never depend on it (blocks and items are fixed, partials merged in item order).
constexpr int64_t PAR_MIN_ELEMENTS = 4 * ITEM;

static inline int team_size(int64_t elements, int64_t items, int threads) {
    if (threads < 1) threads = 1;
    if (elements < PAR_MIN_ELEMENTS || items < 2) return 1;
    return (int)std::min<int64_t>(threads, items);
}

// Per-thread scratch of at least n values of E: grown once per thread and kept (no allocation per call).
template <class E>
static inline E* scratch(size_t n) {
    static thread_local std::vector<E> buf;
    if (buf.size() < n) buf.resize(n);
    return buf.data();
}

// Results of `items` work items: on the stack for a few, else on the heap (large calls only).
template <class E>
struct Parts {
    static constexpr int64_t K = 8;
    E inl[K];
    std::vector<E> heap;
    E* p;
    explicit Parts(int64_t items) : p(inl) {
        if (items > K) {
            heap.resize((size_t)items);
            p = heap.data();
        }
    }
    E& operator[](int64_t i) { return p[i]; }
};

static inline Raw stats_of_item(const RowPlan& plan, const ViewDesc* views, int64_t it) {
    const size_t vi = plan.view_of_item(it);
    const int64_t local = it - plan.item_start[vi];
    const int64_t row = local / plan.items_per_row[vi], j = local % plan.items_per_row[vi];
    const int64_t start = row * plan.row_len[vi] + j * ITEM;
    const int64_t len = std::min(ITEM, plan.row_len[vi] - j * ITEM);
    const ViewDesc& v = views[vi];
    return WIDE[v.dtype] ? stats_item<double>(v, start, len, scratch<double>(BLOCK))
                         : stats_item<float>(v, start, len, scratch<float>(BLOCK));
}

void tensor_stats(const ViewDesc* views, const int64_t* rows, size_t nv, Raw* out, int threads) {
    SmallVec<int64_t, 4> numel;
    numel.assign(nv, 0);
    for (size_t i = 0; i < nv; ++i) numel[i] = views[i].numel;
    const RowPlan plan(&numel[0], rows, nv);
    const int nt = team_size(plan.elements, plan.items, threads);
    if (nt == 1) {  // no team, no partials: each row's items merged in order as they are computed
        int64_t it = 0;
        for (int64_t row = 0; row < plan.rows; ++row) {
            const size_t vi = plan.view_of_row(row);
            Raw acc;
            for (int64_t j = 0; j < plan.items_per_row[vi]; ++j, ++it) merge(acc, stats_of_item(plan, views, it));
            out[row] = acc;
        }
        return;
    }
    Parts<Raw> part(plan.items);

#pragma omp parallel num_threads(nt)
    {
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < plan.items; ++it) part[it] = stats_of_item(plan, views, it);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < plan.rows; ++row) {
            const size_t vi = plan.view_of_row(row);
            const int64_t first = plan.item_start[vi] + (row - plan.row_start[vi]) * plan.items_per_row[vi];
            Raw acc;
            for (int64_t j = 0; j < plan.items_per_row[vi]; ++j) merge(acc, part[first + j]);
            out[row] = acc;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// parameter updates (the probe's watch, fastdiff/probe/watch.py). For each parameter w and its snapshot
// s from the last watched step (same shape and float dtype; s contiguous and overlapping no w, checked
// by module.cpp): the stats of w, the stats of the update dw = w - s as torch computes it (in T, rounded
// to the storage dtype), then s = w (a bit copy); one pass over w and s instead of a subtraction, two
// stats passes and a copy. Blocks and items are those of tensor_stats: the rows equal tensor_stats(w)
// and tensor_stats(w - s) bit for bit.

template <class T>
static void update_item(const ViewDesc& w, const ViewDesc& s, int64_t start, int64_t len, T* wb, T* sb, T* db,
                        Raw& rw, Raw& rd) {
    const LoadFn<T> load = loader<T>(w.dtype);
    const int64_t isz = ITEMSIZE[w.dtype];
    for (int64_t f = 0; f < len; f += BLOCK) {
        const int64_t k = std::min(BLOCK, len - f);
        prefetch_ahead(w, start + f, k);
        prefetch_ahead(s, start + f, k);
        const T* p = read_block(w, load, start + f, k, wb);
        const T* q = read_block(s, load, start + f, k, sb);
        for (int64_t i = 0; i < k; ++i) db[i] = p[i] - q[i];
        roundtrip(w.dtype, db, k);
        merge(rw, block_stats(p, k));
        merge(rd, block_stats(db, k));
        char* to = const_cast<char*>(s.data) + (start + f) * isz;  // s is contiguous; q is read already
        for_runs(w, start + f, k, [&](const char* from, int64_t stride, int64_t n) {
            if (stride == 1) {
                __builtin_memcpy(to, from, (size_t)(n * isz));
            } else {
                for (int64_t i = 0; i < n; ++i) __builtin_memcpy(to + i * isz, from + i * stride * isz, (size_t)isz);
            }
            to += n * isz;
        });
    }
}

// out[i]: stats of w[i]; out[P + i]: stats of w[i] - s[i] (P = w.size())
void update_stats(const std::vector<ViewDesc>& w, const std::vector<ViewDesc>& s, Raw* out, int threads) {
    const size_t np = w.size();
    std::vector<int64_t> numel(np), ones(np, 1);
    for (size_t i = 0; i < np; ++i) numel[i] = w[i].numel;
    const RowPlan plan(numel.data(), ones.data(), np);
    std::vector<Raw> part((size_t)(2 * plan.items));
    const int nt = team_size(plan.elements, plan.items, threads);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float* fb = scratch<float>(3 * BLOCK);
        double* db = scratch<double>(3 * BLOCK);
#pragma omp for schedule(dynamic)
        for (int64_t it = 0; it < plan.items; ++it) {
            const size_t vi = plan.view_of_item(it);
            const int64_t start = (it - plan.item_start[vi]) * ITEM;
            const int64_t len = std::min(ITEM, plan.row_len[vi] - start);
            Raw& rw = part[(size_t)(2 * it)];
            Raw& rd = part[(size_t)(2 * it + 1)];
            if (WIDE[w[vi].dtype])
                update_item<double>(w[vi], s[vi], start, len, db, db + BLOCK, db + 2 * BLOCK, rw, rd);
            else
                update_item<float>(w[vi], s[vi], start, len, fb, fb + BLOCK, fb + 2 * BLOCK, rw, rd);
        }
#pragma omp for schedule(static)
        for (int64_t row = 0; row < plan.rows; ++row) {
            Raw aw, ad;
            for (int64_t j = plan.item_start[row]; j < plan.item_start[row + 1]; ++j) {
                merge(aw, part[(size_t)(2 * j)]);
                merge(ad, part[(size_t)(2 * j + 1)]);
            }
            out[row] = aw;
            out[(int64_t)np + row] = ad;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// pair stats (double arithmetic: cos and norm ratios need more than float sums)

static inline void merge(PairRaw& a, const PairRaw& b) {
    a.n += b.n;
    a.dot += b.dot;
    a.a2 += b.a2;
    a.b2 += b.b2;
    a.d2 += b.d2;
    a.mx = (a.mx != a.mx || b.mx != b.mx) ? NAN : (b.mx > a.mx ? b.mx : a.mx);
}

static PairRaw pair_block(const double* a, const double* b, int64_t len) {
    typedef VT<double>::V V;
    typedef VT<double>::I I;
    constexpr int N = VT<double>::N, G = U * N;
    const I absmask = splat<I>(INT64_MAX);
    const int64_t ng = len / G;
    V dot[U], a2[U], b2[U], d2[U], mx[U];
    for (int u = 0; u < U; ++u) dot[u] = a2[u] = b2[u] = d2[u] = mx[u] = V{};
    for (int64_t g = 0; g < ng; ++g) {
        for (int u = 0; u < U; ++u) {
            const V va = vload<V>(a + g * G + u * N), vb = vload<V>(b + g * G + u * N);
            const V d = va - vb;
            const V ad = (V)((I)d & absmask);
            dot[u] += va * vb;
            a2[u] += va * va;
            b2[u] += vb * vb;
            d2[u] += d * d;
            mx[u] = ad > mx[u] ? ad : mx[u];
        }
    }
    PairRaw r;
    r.n = (double)len;
    for (int64_t j = ng * G; j < len; ++j) {
        const double d = a[j] - b[j], ad = std::fabs(d);
        r.dot += a[j] * b[j];
        r.a2 += a[j] * a[j];
        r.b2 += b[j] * b[j];
        r.d2 += d * d;
        r.mx = ad > r.mx ? ad : r.mx;
    }
    for (int u = 0; u < U; ++u) {
        for (int l = 0; l < N; ++l) {
            r.dot += dot[u][l];
            r.a2 += a2[u][l];
            r.b2 += b2[u][l];
            r.d2 += d2[u][l];
            r.mx = mx[u][l] > r.mx ? mx[u][l] : r.mx;
        }
    }
    if (r.d2 != r.d2) r.mx = NAN;  // some a - b is NaN: max |a - b| is NaN, as torch.amax
    return r;
}

void pair_stats(const ViewDesc& a, const ViewDesc& b, int64_t rows, PairRaw* out, int threads) {
    const RowPlan plan(&a.numel, &rows, 1);
    Parts<PairRaw> part(plan.items);
    const int nt = team_size(plan.elements, plan.items, threads);
    const LoadFn<double> la = loader<double>(a.dtype), lb = loader<double>(b.dtype);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        double* ba = scratch<double>(2 * BLOCK);
        double* bb = ba + BLOCK;
#pragma omp for schedule(static)
        for (int64_t it = 0; it < plan.items; ++it) {
            const int64_t row = it / plan.items_per_row[0], j = it % plan.items_per_row[0];
            const int64_t start = row * plan.row_len[0] + j * ITEM;
            const int64_t len = std::min(ITEM, plan.row_len[0] - j * ITEM);
            PairRaw acc;
            for (int64_t f = 0; f < len; f += BLOCK) {
                const int64_t k = std::min(BLOCK, len - f);
                merge(acc, pair_block(read_block(a, la, start + f, k, ba), read_block(b, lb, start + f, k, bb), k));
            }
            part[it] = acc;
        }
#pragma omp for schedule(static)
        for (int64_t row = 0; row < plan.rows; ++row) {
            PairRaw acc;
            for (int64_t j = 0; j < plan.items_per_row[0]; ++j) merge(acc, part[row * plan.items_per_row[0] + j]);
            out[row] = acc;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// the generic fused step (fastdiff/step.py):
//   o = out | u + w (out - u);  x0 = cx x + co o + cn z;  x0c = clip(x0);
//   eps = ex x + eo o + e0 x0c + en z;  x' = px x + p0 x0c + pe eps + sum_k ph_k h_k + pn z
// evaluated left to right in T. A term whose coefficient is 0 is absent (an Inf/NaN in its tensor must
// not become 0 * Inf = NaN) and skipped: a line starts from -0, the exact identity of IEEE addition
// (-0 + v = v for every v, signed zeros and NaN included), and adds its present terms in order; a line
// with no term present is +0, as torch.zeros_like. Whether a term is present is the same for every
// element: its branch is always predicted, and costs less than masking the term's tensor to -0.

template <class T>
struct StepK {
    typedef typename VT<T>::V V;
    typedef typename VT<T>::I I;
    V c[NUM_COEFS];           // the coefficients
    bool present[NUM_COEFS];  // coefficient != 0
    V start[3];               // each line's starting value: -0, or +0 for a line with no term present
    V w, lo, hi;
    I absmask, iota;
};

// acc + c_k t where term k is present; acc where it is absent. PM: the presence of every term known at
// compile time (bit k: term k present), or DYN when it is read from K.present (one predicted branch).
constexpr uint32_t DYN = 0xffffffffu;
template <uint32_t PM, class T>
static inline typename VT<T>::V add_term(const StepK<T>& K, int k, const typename VT<T>::V& acc,
                                         const typename VT<T>::V& t) {
    if constexpr (PM != DYN) return ((PM >> k) & 1u) ? acc + K.c[k] * t : acc;
    return K.present[k] ? acc + K.c[k] * t : acc;
}

template <class T>
struct StepBufs {
    T *x, *o, *u, *cfg, *z, *h[MAX_HISTORY], *s, *xp, *x0;
};

// One vector of N elements; `valid` masks the lanes past the end of the last block for the count.
template <class T, bool HZ, int CLIP, bool EPS, uint32_t PM>
static inline void step_vector(const StepK<T>& K, const T* x, const T* o, const T* z, const T* s, T* xp, T* x0,
                               bool pn_here, typename VT<T>::I& count, const typename VT<T>::I& valid,
                               typename VT<T>::V& a_out, typename VT<T>::V& p_out) {
    typedef typename VT<T>::V V;
    typedef typename VT<T>::I I;
    const V xv = vload<V>(x), ov = vload<V>(o);
    const V zv = HZ ? vload<V>(z) : V{};
    V a = add_term<PM>(K, CO, add_term<PM>(K, CX, K.start[0], xv), ov);
    if (HZ) a = add_term<PM>(K, CN, a, zv);
    if (CLIP == 1) {  // clamp keeps NaN; NaN is not counted as clipped
        const I below = K.lo > a, above = a > K.hi;
        count += (below | above) & valid;
        a = below ? K.lo : a;
        a = above ? K.hi : a;
    } else if (CLIP == 2) {  // max(min(x0, s), -s) / s; a NaN s makes the result NaN through the division
        const V sv = vload<V>(s);
        count += ((V)((I)a & K.absmask) > sv) & valid;
        V t = a > sv ? sv : a;
        const V ns = -sv;
        t = t < ns ? ns : t;
        a = t / sv;
    }
    vstore(x0, a);
    V p = add_term<PM>(K, P0, add_term<PM>(K, PX, K.start[2], xv), a);
    if (EPS) {
        V e = add_term<PM>(K, E0, add_term<PM>(K, EO, add_term<PM>(K, EX, K.start[1], xv), ov), a);
        if (HZ) e = add_term<PM>(K, EN, e, zv);
        p = add_term<PM>(K, PE, p, e);
    }
    if (HZ && pn_here) p = add_term<PM>(K, PN, p, zv);
    vstore(xp, p);
    a_out = a;
    p_out = p;
}

template <class T, bool HZ, int CLIP, bool EPS, uint32_t PM>
static void step_item(const StepArgs& A, const StepK<T>& Kin, int64_t start, int64_t len, const StepBufs<T>& B,
                      StepOut& out) {
    // A local copy: the stores to the outputs (memcpy) could alias the caller's K, so every coefficient
    // and presence flag would be reloaded after each store; a local whose address never escapes cannot.
    const StepK<T> K = Kin;
    const bool want_stats = A.want_stats;
    typedef typename VT<T>::V V;
    typedef typename VT<T>::I I;
    constexpr int N = VT<T>::N;
    const LoadFn<T> lx = loader<T>(A.x.dtype), lo = loader<T>(A.o.dtype), lu = loader<T>(A.u.dtype);
    const LoadFn<T> lz = loader<T>(A.z.dtype);
    LoadFn<T> lh[MAX_HISTORY];
    for (int k = 0; k < A.num_hist; ++k) lh[k] = loader<T>(A.h[k].dtype);
    const StoreFn<T> sp = storer<T>(A.prev.dtype, A.stream), s0 = storer<T>(A.x0.dtype, A.stream);
    const I ones = splat<I>(-1);
    const bool pn_here = A.num_hist == 0;
    // the fused path (below): outputs of the compute type, no history pass after the main one
    constexpr int NAT = native_dtype<T>();
    const bool fast = A.num_hist == 0 && A.prev.dtype == NAT && (!A.has_x0 || A.x0.dtype == NAT) &&
                      (A.has_x0 || !A.want_stats || A.x.dtype == NAT);
    const bool direct_p = fast && A.prev.contiguous && !A.stream;
    const bool direct_0 = fast && A.has_x0 && A.x0.contiguous && !A.stream && A.x0.data != A.prev.data;

    for (int64_t f = start; f < start + len; f += BLOCK) {
        const int64_t k = std::min(BLOCK, start + len - f);
        const int64_t nfull = k / N, rem = k % N, nvec = nfull + (rem != 0), plen = nvec * N;
        // every read of this block's inputs happens before its first write: `out` may be `x` itself
        const T* x = read_padded(A.x, lx, f, k, plen, B.x);
        const T* o = read_padded(A.o, lo, f, k, plen, B.o);
        if (A.has_u) {  // o = u + w (out - u)
            const T* u = read_padded(A.u, lu, f, k, plen, B.u);
            for (int64_t i = 0; i < plen; i += N) {
                const V uv = vload<V>(u + i);
                vstore(B.cfg + i, uv + K.w * (vload<V>(o + i) - uv));
            }
            o = B.cfg;
        }
        const T* z = HZ ? read_padded(A.z, lz, f, k, plen, B.z) : nullptr;
        if (CLIP == 2) {  // per-element copy of its sample's threshold s_b
            int64_t j = 0;
            while (j < k) {
                const int64_t row = (f + j) / A.inner;
                const int64_t n = std::min(k - j, (row + 1) * A.inner - (f + j));
                const T sb = (T)(*reinterpret_cast<const float*>(element_address(A.scale, row)));
                for (int64_t q = 0; q < n; ++q) B.s[j + q] = sb;
                j += n;
            }
            for (; j < plen; ++j) B.s[j] = 1;
        }
        I count = I{};
        V av, pv;
        if (fast && k == BLOCK) {
            // Whole block, no history, outputs stored as computed: x' and x0 go straight to their
            // destination (the output itself when it is contiguous and not streamed, else the block
            // buffer), and pass 1 of their stats is fed from registers, as block_stats would feed it.
            // Per vector, every input is read before either output is written: `out` may be `x` itself.
            T* dp = direct_p ? reinterpret_cast<T*>(const_cast<char*>(A.prev.data)) + f : B.xp;
            T* d0 = direct_0 ? reinterpret_cast<T*>(const_cast<char*>(A.x0.data)) + f : B.x0;
            Pass1<T> Pp, P0;
            Pp.init();
            P0.init();
            for (int64_t v = 0; v < nfull; v += U1) {
                for (int u = 0; u < U1; ++u) {
                    const int64_t e = (v + u) * N;
                    step_vector<T, HZ, CLIP, EPS, PM>(K, x + e, o + e, HZ ? z + e : nullptr, B.s + e, dp + e, d0 + e,
                                                  pn_here, count, ones, av, pv);
                    if (want_stats) {
                        Pp.add_shared(u, pv);
                        P0.add_shared(u, av);
                    }
                }
            }
            for (int l = 0; l < N; ++l) out.clipped -= count[l];
            if (!direct_p) write_block(A.prev, sp, f, k, B.xp);
            if (A.has_x0 && !direct_0) write_block(A.x0, s0, f, k, B.x0);
            if (A.want_stats) {
                merge(out.prev, block_finish(Pp, dp, k));
                merge(out.x0, block_finish(P0, d0, k));
            }
            continue;
        }
        for (int64_t v = 0; v < nfull; ++v)
            step_vector<T, HZ, CLIP, EPS, PM>(K, x + v * N, o + v * N, HZ ? z + v * N : nullptr, B.s + v * N,
                                          B.xp + v * N, B.x0 + v * N, pn_here, count, ones, av, pv);
        if (rem)
            step_vector<T, HZ, CLIP, EPS, PM>(K, x + nfull * N, o + nfull * N, HZ ? z + nfull * N : nullptr,
                                          B.s + nfull * N, B.xp + nfull * N, B.x0 + nfull * N, pn_here, count,
                                          K.iota < splat<I>(rem), av, pv);
        if (A.num_hist > 0) {  // x' += sum_k ph_k h_k (+ pn z, which comes after the history terms)
            const T* h[MAX_HISTORY] = {};
            for (int q = 0; q < A.num_hist; ++q) h[q] = read_padded(A.h[q], lh[q], f, k, plen, B.h[q]);
            for (int64_t i = 0; i < plen; i += N) {
                V p = vload<V>(B.xp + i);
                for (int q = 0; q < A.num_hist; ++q) p = add_term<DYN>(K, PH0 + q, p, vload<V>(h[q] + i));
                if (HZ) p = add_term<DYN>(K, PN, p, vload<V>(z + i));
                vstore(B.xp + i, p);
            }
        }
        for (int l = 0; l < N; ++l) out.clipped -= count[l];
        write_block(A.prev, sp, f, k, B.xp);
        if (A.has_x0)
            write_block(A.x0, s0, f, k, B.x0);
        else if (A.want_stats)
            roundtrip(A.x.dtype, B.x0, k);
        if (A.want_stats) {
            merge(out.prev, block_stats(B.xp, k));
            merge(out.x0, block_stats(B.x0, k));
        }
    }
    if (A.stream) stream_fence();  // this thread's streamed stores are visible before the team joins
}

template <class T, bool HZ, int CLIP, bool EPS, uint32_t PM>
static void step_run(const StepArgs& A, const StepK<T>& K, StepOut* out, int threads) {
    const int64_t numel = A.x.numel;
    const int64_t items = (numel + ITEM - 1) / ITEM;
    const int nt = team_size(numel, items, threads);
    constexpr int NBUF = 8 + MAX_HISTORY;
    auto bufs = []() {  // this thread's block buffers
        T* m = scratch<T>((size_t)NBUF * BLOCK);
        StepBufs<T> B;
        T** slots[NBUF] = {&B.x, &B.o, &B.u, &B.cfg, &B.z, &B.h[0], &B.h[1], &B.h[2], &B.h[3], &B.s, &B.xp, &B.x0};
        for (int q = 0; q < NBUF; ++q) *slots[q] = m + q * BLOCK;
        return B;
    };
    auto merge_into = [&](const StepOut& p) {
        out->clipped += p.clipped;
        merge(out->prev, p.prev);
        merge(out->x0, p.x0);
    };
    if (nt == 1) {  // no team: items computed and merged in order
        const StepBufs<T> B = bufs();
        for (int64_t it = 0; it < items; ++it) {
            StepOut p;
            step_item<T, HZ, CLIP, EPS, PM>(A, K, it * ITEM, std::min(ITEM, numel - it * ITEM), B, p);
            merge_into(p);
        }
        return;
    }
    Parts<StepOut> part(items);
#pragma omp parallel num_threads(nt)
    {
        const StepBufs<T> B = bufs();
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; ++it)
            step_item<T, HZ, CLIP, EPS, PM>(A, K, it * ITEM, std::min(ITEM, numel - it * ITEM), B, part[it]);
    }
    for (int64_t it = 0; it < items; ++it) merge_into(part[it]);
}

template <class T>
static void step_dispatch(const StepArgs& A, StepOut* out, int threads) {
    typedef typename VT<T>::V V;
    typedef typename VT<T>::I I;
    StepK<T> K;
    for (int k = 0; k < NUM_COEFS; ++k) {
        K.present[k] = A.coef[k] != 0.0;
        K.c[k] = splat<V>((T)A.coef[k]);
    }
    // the terms each line evaluates (history only up to num_hist, noise terms only with noise)
    const std::vector<std::vector<int>> lines = {
        {CX, CO, CN},
        {EX, EO, E0, EN},
        {PX, P0, PE, PH0, PH1, PH2, PH3, PN},
    };
    for (size_t l = 0; l < lines.size(); ++l) {
        bool empty = true;
        for (int k : lines[l]) {
            const bool evaluated = (k != CN && k != EN && k != PN) || A.has_z;
            empty = empty && !(K.present[k] && evaluated && (k < PH0 || k > PH3 || k - PH0 < A.num_hist));
        }
        K.start[l] = splat<V>(empty ? (T)0.0 : (T)-0.0);
    }
    K.w = splat<V>((T)A.guidance);
    K.lo = splat<V>((T)A.lo);
    K.hi = splat<V>((T)A.hi);
    K.absmask = splat<I>(sizeof(T) == 8 ? (int64_t)INT64_MAX : (int64_t)INT32_MAX);
    for (int l = 0; l < VT<T>::N; ++l) K.iota[l] = l;
    const bool eps = A.coef[PE] != 0.0;
    // the presence of the terms as a mask (terms not evaluated by the case count as absent)
    uint32_t pm = 0;
    for (int k = 0; k < PH0; ++k)
        if (K.present[k] && ((k != CN && k != EN && k != PN) || A.has_z)) pm |= 1u << k;
    if (!A.has_z && A.num_hist == 0 && A.clip_mode < 2) {
        // The deterministic steps of the common samplers (DDIM, Euler, DPM-Solver-like x' = px x + p0 x0,
        // epsilon and v prediction), compiled with their terms known: no branch per term and element.
        constexpr uint32_t X0E = 1u << CX | 1u << CO | 1u << EO, X0V = X0E | 1u << EX;
        constexpr uint32_t DDIM = 1u << P0 | 1u << PE, EULER = 1u << PX | 1u << PE, MIX = 1u << PX | 1u << P0;
#define FD_HOT(M)                                                                                               \
    if (pm == (M)) {                                                                                            \
        if (A.clip_mode == 0)                                                                                   \
            step_run<T, false, 0, (((M) >> PE) & 1u) != 0, (M)>(A, K, out, threads);                            \
        else                                                                                                    \
            step_run<T, false, 1, (((M) >> PE) & 1u) != 0, (M)>(A, K, out, threads);                            \
        return;                                                                                                 \
    }
        FD_HOT(X0E | DDIM) FD_HOT(X0E | EULER) FD_HOT(X0E | MIX) FD_HOT(X0V | DDIM) FD_HOT(X0V | EULER) FD_HOT(X0V | MIX)
#undef FD_HOT
    }
    const int key = (A.has_z ? 1 : 0) + 2 * A.clip_mode + 6 * (eps ? 1 : 0);
    switch (key) {
#define FD_CASE(HZ, CLIP, EPS)                                               \
    case (HZ) + 2 * (CLIP) + 6 * (EPS):                                      \
        step_run<T, (HZ) != 0, CLIP, (EPS) != 0, DYN>(A, K, out, threads);   \
        break;
        FD_CASE(0, 0, 0) FD_CASE(1, 0, 0) FD_CASE(0, 1, 0) FD_CASE(1, 1, 0) FD_CASE(0, 2, 0) FD_CASE(1, 2, 0)
        FD_CASE(0, 0, 1) FD_CASE(1, 0, 1) FD_CASE(0, 1, 1) FD_CASE(1, 1, 1) FD_CASE(0, 2, 1) FD_CASE(1, 2, 1)
#undef FD_CASE
    }
}

void fused_step(const StepArgs& A, StepOut* out, int threads) {
    *out = StepOut();
    if (A.x.numel == 0) return;
    if (A.x.dtype == F64)
        step_dispatch<double>(A, out, threads);
    else
        step_dispatch<float>(A, out, threads);
}

}  // namespace FD_ISA
}  // namespace fd
