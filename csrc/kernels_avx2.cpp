// The same kernels compiled for AVX2 (+ F16C), chosen at run time on CPUs that have it (module.cpp).
// The baseline build stays portable: no -march=native needed. FMA is left out on purpose: a fused
// multiply-add would round `c0 t0 + c1 t1` differently from the step's formula as written (and from
// the torch backend, which these kernels match bit for bit in float32 and float64).
#include "api.h"

// 64-byte vectors passed between static inline helpers: no ABI is involved
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
#define FD_VBYTES 32
#define FD_ISA avx2
#include "kernels.h"
#pragma GCC pop_options

bool fd::avx2_compiled() { return true; }
#else
bool fd::avx2_compiled() { return false; }
namespace fd {
namespace avx2 {  // never called: module.cpp only dispatches here when avx2_compiled()
void tensor_stats(const ViewDesc*, const int64_t*, size_t, Raw*, int) {}
void pair_stats(const ViewDesc&, const ViewDesc&, int64_t, PairRaw*, int) {}
void update_stats(const std::vector<ViewDesc>&, const std::vector<ViewDesc>&, Raw*, int) {}
void fused_step(const StepArgs&, StepOut*, int) {}
}  // namespace avx2
}  // namespace fd
#endif
