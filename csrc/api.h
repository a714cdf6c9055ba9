// Plain data shared by the bindings (module.cpp) and the kernels (kernels.h, compiled once per ISA).
//
// Everything here is validated by module.cpp before a kernel sees it: a ViewDesc only ever describes
// memory inside the buffer Python handed over. No code lives here, so the per-ISA translation units
// share no inline functions (an AVX2 copy of one could otherwise be picked for the baseline build).
#pragma once

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <omp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // the AVX intrinsics, usable in kernels_avx2.cpp's target("avx2") region
#endif

namespace fd {

// dtype codes; fastdiff/kernels/cpu.py holds the same table (DTYPE_CODES)
enum Dtype : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3, U8 = 4, I8 = 5, I16 = 6, I32 = 7, I64 = 8, BOOL = 9 };
constexpr int NUM_DTYPES = 10;
constexpr int64_t ITEMSIZE[NUM_DTYPES] = {4, 8, 2, 2, 1, 1, 2, 4, 8, 1};
// dtypes whose values need double arithmetic to be exact (float holds the others exactly)
constexpr bool WIDE[NUM_DTYPES] = {false, true, false, false, false, false, false, true, true, false};
inline bool is_float_dtype(int dt) { return dt == F32 || dt == F64 || dt == F16 || dt == BF16; }

constexpr int MAX_DIMS = 64;

// Work is cut into blocks of BLOCK elements (in row-major logical order), ITEM / BLOCK blocks to a
// work item; partial results are merged in item order. None of it depends on the thread count, so
// results are bit-identical for any number of threads. Items of 16K elements let two threads share
// an SDXL-sized latent (64K elements: 4 items); see PAR_MIN_ELEMENTS in kernels.h.
constexpr int64_t BLOCK = 1024;
constexpr int64_t ITEM = 16 * BLOCK;

// A validated strided view, dimensions coalesced (size-1 dims dropped, mergeable dims merged).
struct ViewDesc {
    const char* data = nullptr;  // address of the element at index (0, ..., 0)
    int dtype = F32;
    int ndim = 0;
    int64_t numel = 0;
    bool contiguous = true;      // elements are data[0 .. numel)
    int64_t sizes[MAX_DIMS] = {};
    int64_t strides[MAX_DIMS] = {};  // in elements, >= 0
};

// Raw tensor stats (fastdiff/stats.py): counts n, nan, +inf, -inf, zero; moments over finite elements.
struct Raw {
    int64_t n = 0, nan = 0, pinf = 0, ninf = 0, zero = 0;
    double mn = HUGE_VAL, mx = -HUGE_VAL, mean = 0.0, m2 = 0.0;
};

// Raw pair stats: n, sum ab, sum a^2, sum b^2, sum (a-b)^2, max |a-b| (NaN-propagating).
struct PairRaw {
    double n = 0, dot = 0, a2 = 0, b2 = 0, d2 = 0, mx = 0;
};

// Coefficient order of fastdiff.step.COEFF_FIELDS; history terms h_k, k < MAX_HISTORY (fastdiff.step.MAX_HISTORY).
constexpr int MAX_HISTORY = 4;
enum Coef : int { CX = 0, CO, CN, EX, EO, E0, EN, PX, P0, PE, PN, PH0, PH1, PH2, PH3, NUM_COEFS };

struct StepArgs {
    ViewDesc x, o, u, z, h[MAX_HISTORY], scale, prev, x0;
    bool has_u = false, has_z = false, has_x0 = false, want_stats = false;
    bool stream = false;  // write outputs with non-temporal stores (they exceed the cache)
    int num_hist = 0;
    int clip_mode = 0;  // 0 none, 1 static [lo, hi], 2 per-sample dynamic scale
    double coef[NUM_COEFS] = {};
    double guidance = 1.0, lo = -HUGE_VAL, hi = HUGE_VAL;
    int64_t rows = 1, inner = 1;  // dim 0 and elements per sample (for the dynamic scale)
};

struct StepOut {
    int64_t clipped = 0;
    Raw prev, x0;
};

// Entry points, one set per instruction set (kernels.h). They run with the GIL released.
#define FD_DECLARE_KERNELS(ns)                                                                              \
    namespace ns {                                                                                          \
    void tensor_stats(const ViewDesc* views, const int64_t* rows, size_t nv, Raw* out, int threads);         \
    void pair_stats(const ViewDesc& a, const ViewDesc& b, int64_t rows, PairRaw* out, int threads);          \
    void update_stats(const std::vector<ViewDesc>& w, const std::vector<ViewDesc>& s, Raw* out, int threads); \
    void fused_step(const StepArgs& args, StepOut* out, int threads);                                       \
    }
FD_DECLARE_KERNELS(base)
FD_DECLARE_KERNELS(avx2)
#undef FD_DECLARE_KERNELS

bool avx2_compiled();  // kernels_avx2.cpp

}  // namespace fd
