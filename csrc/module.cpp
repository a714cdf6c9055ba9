// fastdiff._cpu: the pybind11 bindings of the C++ CPU kernels.
//
// Python (fastdiff/kernels/cpu.py) passes each tensor as a *view spec*
//     (storage data pointer, storage size in bytes, dtype code, storage offset, sizes, strides)
// with the offset and strides in elements. Everything is checked here before a kernel touches memory:
// dtype codes, non-negative sizes/strides/offset, no integer overflow, and that the last element the
// view can reach lies inside the buffer; outputs must be writable without self-overlap. A bad spec is
// a Python exception (ValueError / TypeError / IndexError), never a crash. Kernels run with the GIL
// released, on `threads` OpenMP threads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>

#include "api.h"
#include "jsonl.h"

namespace py = pybind11;

namespace fd {

// A view spec as Python passes it: (data pointer, buffer bytes, dtype code, offset, sizes, strides).
// Converted by the caster below straight into fixed arrays: no heap allocation per tensor per call.
struct Spec {
    uint64_t ptr = 0;
    int64_t nbytes = 0;
    int dtype = 0;
    int64_t offset = 0;
    size_t nsizes = 0, nstrides = 0;  // as passed; more than MAX_DIMS is refused by check_view
    int64_t sizes[MAX_DIMS];          // the first min(n, MAX_DIMS) entries
    int64_t strides[MAX_DIMS];
};

}  // namespace fd

namespace pybind11 {
namespace detail {

// fd::Spec from any 6-element sequence whose last two fields are sequences of ints; the same values
// (and TypeErrors) as pybind11's std::tuple<uint64_t, int64_t, int, int64_t, vector<int64_t>,
// vector<int64_t>> caster, which it replaces: the fields go through pybind11's own int casters.
template <>
struct type_caster<fd::Spec> {
    PYBIND11_TYPE_CASTER(fd::Spec, const_name("tuple[int, int, int, int, Sequence[int], Sequence[int]]"));

    static bool ints(handle src, bool convert, size_t* n, int64_t* out) {
        if (!isinstance<sequence>(src) || isinstance<bytes>(src) || isinstance<str>(src)) return false;
        object fast = reinterpret_steal<object>(PySequence_Fast(src.ptr(), ""));
        if (!fast) {
            PyErr_Clear();
            return false;
        }
        const Py_ssize_t len = PySequence_Fast_GET_SIZE(fast.ptr());
        PyObject** items = PySequence_Fast_ITEMS(fast.ptr());
        for (Py_ssize_t i = 0; i < len; ++i) {
            make_caster<int64_t> c;
            if (!c.load(items[i], convert)) return false;
            if (i < fd::MAX_DIMS) out[i] = cast_op<int64_t>(c);
        }
        *n = (size_t)len;
        return true;
    }

    bool load(handle src, bool convert) {
        if (!isinstance<sequence>(src)) return false;
        object fast = reinterpret_steal<object>(PySequence_Fast(src.ptr(), ""));
        if (!fast) {
            PyErr_Clear();
            return false;
        }
        if (PySequence_Fast_GET_SIZE(fast.ptr()) != 6) return false;
        PyObject** f = PySequence_Fast_ITEMS(fast.ptr());
        make_caster<uint64_t> ptr;
        make_caster<int64_t> nbytes, offset;
        make_caster<int> dtype;
        if (!ptr.load(f[0], convert) || !nbytes.load(f[1], convert) || !dtype.load(f[2], convert) ||
            !offset.load(f[3], convert))
            return false;
        value.ptr = cast_op<uint64_t>(ptr);
        value.nbytes = cast_op<int64_t>(nbytes);
        value.dtype = cast_op<int>(dtype);
        value.offset = cast_op<int64_t>(offset);
        return ints(f[4], convert, &value.nsizes, value.sizes) && ints(f[5], convert, &value.nstrides, value.strides);
    }
};

}  // namespace detail
}  // namespace pybind11

namespace fd {
namespace {

const char* const DTYPE_NAMES[NUM_DTYPES] = {"float32", "float64", "float16", "bfloat16", "uint8",
                                             "int8",    "int16",   "int32",   "int64",    "bool"};

std::string join(const int64_t* v, size_t n) {
    std::string s = "(";
    for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + (n == 1 ? ",)" : ")");
}
std::string join(const std::vector<int64_t>& v) { return join(v.data(), v.size()); }

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

// A checked view: the kernel's coalesced ViewDesc plus what the checks between views need (the spec's
// own sizes and strides, which outlive the call's checks).
struct Checked {
    ViewDesc v;
    const Spec* spec = nullptr;
    uintptr_t lo = 0, hi = 0;  // byte span [lo, hi) the view can reach (empty when numel == 0)
    size_t ndim() const { return spec->nsizes; }
    int64_t size(size_t d) const { return spec->sizes[d]; }
    int64_t stride(size_t d) const { return spec->strides[d]; }
    std::string sizes_str() const { return join(spec->sizes, spec->nsizes); }
    std::string strides_str() const { return join(spec->strides, spec->nstrides); }
    bool same_shape(const Checked& o) const {
        return ndim() == o.ndim() && std::equal(spec->sizes, spec->sizes + ndim(), o.spec->sizes);
    }
    bool shape_is(std::initializer_list<int64_t> s) const {
        return ndim() == s.size() && std::equal(s.begin(), s.end(), spec->sizes);
    }
};

// Fills c from spec (which must outlive c): every check of the module comment, then the coalesced view.
void check_view(const Spec& spec, const char* name, Checked& c) {
    const uint64_t ptr = spec.ptr;
    const int64_t nbytes = spec.nbytes, offset = spec.offset;
    const int dtype = spec.dtype;
    const int64_t* sizes = spec.sizes;
    const int64_t* strides = spec.strides;
    if (dtype < 0 || dtype >= NUM_DTYPES)
        throw py::type_error(std::string(name) + ": unknown dtype code " + std::to_string(dtype) + "; accepted: 0 to " +
                             std::to_string(NUM_DTYPES - 1) + " (fastdiff.kernels.cpu.DTYPE_CODES)");
    if (spec.nsizes != spec.nstrides)
        fail(std::string(name) + ": " + std::to_string(spec.nsizes) + " sizes but " + std::to_string(spec.nstrides) +
             " strides");
    if (spec.nsizes > (size_t)MAX_DIMS)
        fail(std::string(name) + ": " + std::to_string(spec.nsizes) + " dimensions; at most " + std::to_string(MAX_DIMS));
    const size_t nd_in = spec.nsizes;
    c.spec = &spec;
    if (nbytes < 0) fail(std::string(name) + ": negative buffer size " + std::to_string(nbytes));
    if (offset < 0) fail(std::string(name) + ": negative storage offset " + std::to_string(offset));
    const int64_t isz = ITEMSIZE[dtype];
    int64_t numel = 1, last = offset;
    for (size_t d = 0; d < nd_in; ++d) {
        if (sizes[d] < 0) fail(std::string(name) + ": negative size in " + c.sizes_str());
        if (strides[d] < 0)
            fail(std::string(name) + ": negative stride in " + c.strides_str() + "; only non-negative strides are supported");
        if (__builtin_mul_overflow(numel, sizes[d], &numel) || numel > ((int64_t)1 << 62))
            fail(std::string(name) + ": sizes " + c.sizes_str() + " hold too many elements");
    }
    for (size_t d = 0; d < nd_in && numel > 0; ++d) {
        int64_t ext;
        if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &ext) || __builtin_add_overflow(last, ext, &last))
            fail(std::string(name) + ": sizes " + c.sizes_str() + " with strides " + c.strides_str() + " overflow");
    }
    c.v.dtype = dtype;
    c.v.numel = numel;
    c.v.ndim = 0;
    c.v.contiguous = true;
    c.v.data = nullptr;
    c.lo = c.hi = 0;
    if (numel == 0) return;  // nothing is ever read or written
    if (ptr == 0) fail(std::string(name) + ": null data pointer for " + std::to_string(numel) + " elements");
    const int64_t capacity = nbytes / isz;
    if (last >= capacity)
        fail(std::string(name) + ": sizes " + c.sizes_str() + ", strides " + c.strides_str() + " and offset " +
             std::to_string(offset) + " reach element " + std::to_string(last) + " but the buffer holds " +
             std::to_string(capacity) + " elements of " + DTYPE_NAMES[dtype]);
    if (ptr + (uint64_t)nbytes < ptr) fail(std::string(name) + ": the buffer wraps around the address space");
    const uintptr_t start = ptr + (uintptr_t)(offset * isz);
    if (start % (uintptr_t)isz)
        fail(std::string(name) + ": data is not aligned to its " + std::to_string(isz) + "-byte elements");
    c.lo = start;
    c.hi = ptr + (uintptr_t)((last + 1) * isz);
    c.v.data = reinterpret_cast<const char*>(start);
    // coalesce: drop size-1 dims, merge an outer dim into the next when stride_outer == stride_inner * size_inner
    int nd = 0;
    for (size_t d = 0; d < nd_in; ++d) {
        if (sizes[d] == 1) continue;
        if (nd > 0 && c.v.strides[nd - 1] == strides[d] * sizes[d]) {
            c.v.sizes[nd - 1] *= sizes[d];
            c.v.strides[nd - 1] = strides[d];
        } else {
            c.v.sizes[nd] = sizes[d];
            c.v.strides[nd] = strides[d];
            ++nd;
        }
    }
    c.v.ndim = nd;
    c.v.contiguous = nd == 0 || (nd == 1 && c.v.strides[0] == 1);
}

// An output: no element reachable by two indices (strides sorted ascending, each one past the extent of
// the smaller ones: a sufficient condition; fastdiff/kernels/cpu.py routes other layouts through a copy).
void check_writable(const Checked& c, const char* name) {
    if (c.v.numel == 0) return;
    std::pair<int64_t, int64_t> dims[MAX_DIMS];  // (stride, size)
    size_t n = 0;
    for (size_t d = 0; d < c.ndim(); ++d)
        if (c.size(d) > 1) dims[n++] = {c.stride(d), c.size(d)};
    std::sort(dims, dims + n);
    int64_t extent = 0;  // largest offset reachable by the dims so far
    for (size_t i = 0; i < n; ++i) {
        const auto [stride, size] = dims[i];
        if (stride <= extent)
            fail(std::string(name) + ": sizes " + c.sizes_str() + " with strides " + c.strides_str() +
                 " may reach an element twice; an output needs non-overlapping elements");
        extent += (size - 1) * stride;
    }
}

bool same_view(const Checked& a, const Checked& b) {
    return a.lo == b.lo && a.v.dtype == b.v.dtype && a.same_shape(b) &&
           std::equal(a.spec->strides, a.spec->strides + a.ndim(), b.spec->strides);
}

void check_no_partial_overlap(const Checked& out, const char* out_name, const Checked& in, const char* in_name) {
    if (out.v.numel == 0 || in.v.numel == 0) return;
    if (out.lo < in.hi && in.lo < out.hi && !same_view(out, in))
        fail(std::string(out_name) + " partially overlaps " + in_name +
             "; an output may alias an input only as the very same view");
}

// A result: dtype `dt`, exactly [rows, cols], columns adjacent and rows `stride` >= cols elements apart
// (row-major contiguous, or e.g. the counts and the moments columns of the probe's 9-word record rows).
template <class P>
struct ResultRows {
    P* data;
    int64_t stride;
    P* operator[](int64_t r) const { return data + r * stride; }
};

template <class P>
ResultRows<P> result_rows(const Spec& spec, const char* name, int dt, int64_t rows, int64_t cols) {
    Checked c;
    check_view(spec, name, c);
    if (c.v.dtype != dt)
        throw py::type_error(std::string(name) + ": dtype " + DTYPE_NAMES[c.v.dtype] + ", expected " + DTYPE_NAMES[dt]);
    if (!c.shape_is({rows, cols}))
        fail(std::string(name) + ": shape " + c.sizes_str() + ", expected " + join({rows, cols}));
    const int64_t stride = rows > 1 ? c.stride(0) : cols;
    if (c.v.numel > 0 && ((cols > 1 && c.stride(1) != 1) || stride < cols))
        fail(std::string(name) + ": strides " + c.strides_str() + "; accepted: rows at least " + std::to_string(cols) +
             " elements apart, columns adjacent");
    return {reinterpret_cast<P*>(const_cast<char*>(c.v.data)), stride};
}

// Outputs of at least this many bytes are written with non-temporal stores: beyond the size of a
// typical last-level cache share they could not stay cached next to the step's inputs anyway, and a
// normal store first reads every line it writes. (The cache size the OS reports is unreliable in VMs.)
constexpr int64_t STREAM_BYTES = 8 << 20;

int check_threads(int threads) {
    if (threads < 1 || threads > 4096) fail("threads=" + std::to_string(threads) + "; accepted: 1 to 4096");
    return threads;
}

// ------------------------------------------------------------------------------------------------
// instruction set

enum Isa { BASE = 0, AVX2 = 1 };

bool avx2_supported() {
#if defined(__x86_64__) && defined(__GNUC__)
    return avx2_compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

Isa g_isa = BASE;

void set_isa(const std::string& name) {
    if (name == "auto")
        g_isa = avx2_supported() ? AVX2 : BASE;
    else if (name == "base")
        g_isa = BASE;
    else if (name == "avx2") {
        if (!avx2_supported()) fail("the avx2 kernels need a CPU with AVX2 and F16C (and an x86-64 build)");
        g_isa = AVX2;
    } else
        fail("isa=" + name + " is not supported; accepted: 'auto', 'base', 'avx2'");
}

// ------------------------------------------------------------------------------------------------
// entry points

void write_raw(const Raw& r, int64_t* counts, double* moments) {
    counts[0] = r.n;
    counts[1] = r.nan;
    counts[2] = r.pinf;
    counts[3] = r.ninf;
    counts[4] = r.zero;
    moments[0] = r.mn;
    moments[1] = r.mx;
    moments[2] = r.mean;
    moments[3] = r.m2;
}

// n values of E: on the stack up to K, else on the heap (no allocation for the common small calls)
template <class E, size_t K>
struct Buf {
    E inl[K];
    std::vector<E> heap;
    E* p = inl;
    explicit Buf(size_t n) {
        if (n > K) {
            heap.resize(n);
            p = heap.data();
        }
    }
    E& operator[](size_t i) { return p[i]; }
};

std::string indexed(const char* what, size_t i) { return std::string(what) + "[" + std::to_string(i) + "]"; }

void tensor_stats(const std::vector<Spec>& specs, const std::vector<int64_t>& rows, const Spec& counts_spec,
                  const Spec& moments_spec, int threads) {
    if (specs.size() != rows.size())
        fail(std::to_string(specs.size()) + " tensors but " + std::to_string(rows.size()) + " row counts");
    const size_t nv = specs.size();
    Buf<ViewDesc, 2> views(nv);
    int64_t total = 0;
    for (size_t i = 0; i < nv; ++i) {
        Checked c;
        check_view(specs[i], nv == 1 ? "tensors[0]" : indexed("tensors", i).c_str(), c);
        views[i] = c.v;
        const int64_t r = rows[i], n = c.v.numel;
        if (r < 0 || (r == 0 && n != 0) || (r > 0 && n % r != 0))
            fail(indexed("tensors", i) + ": " + std::to_string(n) + " elements cannot be cut into " + std::to_string(r) +
                 " equal rows");
        total += r;
    }
    const auto counts = result_rows<int64_t>(counts_spec, "counts", I64, total, 5);
    const auto moments = result_rows<double>(moments_spec, "moments", F64, total, 4);
    check_threads(threads);
    Buf<Raw, 8> out((size_t)total);
    {
        py::gil_scoped_release release;
        (g_isa == AVX2 ? avx2::tensor_stats : base::tensor_stats)(&views[0], rows.data(), nv, &out[0], threads);
    }
    for (int64_t r = 0; r < total; ++r) write_raw(out[(size_t)r], counts[r], moments[r]);
}

// The snapshot is written while every parameter is read: it may share no byte with any parameter
// (parameters may overlap each other: they are only read).
void check_snapshot_apart(const std::vector<Checked>& w, const Checked& s) {
    if (s.v.numel == 0) return;
    for (size_t i = 0; i < w.size(); ++i)
        if (w[i].v.numel > 0 && w[i].lo < s.hi && s.lo < w[i].hi)
            fail("params[" + std::to_string(i) + "] overlaps the snapshot; the snapshot needs memory of its own");
}

void update_stats(const std::vector<Spec>& w_specs, const Spec& s_spec, const std::vector<int64_t>& offsets,
                  const Spec& counts_spec, const Spec& moments_spec, int threads) {
    Checked s;
    check_view(s_spec, "snapshot", s);
    std::vector<Checked> w(w_specs.size());
    int64_t total = 0;
    for (size_t i = 0; i < w_specs.size(); ++i) {
        const std::string wn = "params[" + std::to_string(i) + "]";
        check_view(w_specs[i], wn.c_str(), w[i]);
        const int dt = w[i].v.dtype;
        if (!is_float_dtype(dt))
            throw py::type_error(wn + ": dtype " + DTYPE_NAMES[dt] + "; accepted: float32, float64, float16, bfloat16");
        if (s.v.dtype != dt)
            throw py::type_error("snapshot: dtype " + std::string(DTYPE_NAMES[s.v.dtype]) + " but " + wn + " is " +
                                 DTYPE_NAMES[dt]);
        if (__builtin_add_overflow(total, w[i].v.numel, &total)) fail("the parameters hold too many elements");
    }
    if (offsets.size() != w.size())
        fail("offsets: " + std::to_string(offsets.size()) + " for " + std::to_string(w.size()) + " parameters");
    // runs in order, apart, inside the snapshot (its element at offsets[i] starts parameter i)
    int64_t end = 0;
    for (size_t i = 0; i < w.size(); ++i) {
        int64_t run_end = 0;
        if (offsets[i] < end || __builtin_add_overflow(offsets[i], w[i].v.numel, &run_end) || run_end > s.v.numel)
            fail("snapshot: the run of params[" + std::to_string(i) + "] at offset " + std::to_string(offsets[i]) +
                 " (" + std::to_string(w[i].v.numel) + " elements) is not after the previous run and inside the " +
                 std::to_string(s.v.numel) + " elements of the snapshot");
        end = run_end;
    }
    if (s.v.numel > 0 && !s.v.contiguous) fail("snapshot: must be contiguous");
    check_snapshot_apart(w, s);
    const int64_t np = (int64_t)w.size();
    const auto counts = result_rows<int64_t>(counts_spec, "counts", I64, 2 * np, 5);
    const auto moments = result_rows<double>(moments_spec, "moments", F64, 2 * np, 4);
    check_threads(threads);
    std::vector<ViewDesc> wv, sv;
    for (size_t i = 0; i < w.size(); ++i) {
        wv.push_back(w[i].v);
        ViewDesc v;  // parameter i's elements of the snapshot: numel of them from offsets[i], flat
        v.dtype = s.v.dtype;
        v.numel = w[i].v.numel;
        v.ndim = 1;
        v.sizes[0] = v.numel;
        v.strides[0] = 1;
        v.data = v.numel ? s.v.data + offsets[i] * ITEMSIZE[s.v.dtype] : nullptr;
        sv.push_back(v);
    }
    std::vector<Raw> out((size_t)(2 * np));
    {
        py::gil_scoped_release release;
        (g_isa == AVX2 ? avx2::update_stats : base::update_stats)(wv, sv, out.data(), threads);
    }
    for (int64_t r = 0; r < 2 * np; ++r) write_raw(out[(size_t)r], counts[r], moments[r]);
}

void pair_stats(const Spec& a_spec, const Spec& b_spec, int64_t rows, const Spec& out_spec, int threads) {
    Checked a, b;
    check_view(a_spec, "a", a);
    check_view(b_spec, "b", b);
    if (!a.same_shape(b)) fail("b has shape " + b.sizes_str() + " but a has shape " + a.sizes_str() + "; they must match");
    const int64_t n = a.v.numel;
    if (rows < 0 || (rows == 0 && n != 0) || (rows > 0 && n % rows != 0))
        fail(std::to_string(n) + " elements cannot be cut into " + std::to_string(rows) + " equal rows");
    const auto out = result_rows<double>(out_spec, "out", F64, rows, 6);
    check_threads(threads);
    Buf<PairRaw, 8> res((size_t)rows);
    {
        py::gil_scoped_release release;
        (g_isa == AVX2 ? avx2::pair_stats : base::pair_stats)(a.v, b.v, rows, &res[0], threads);
    }
    for (int64_t r = 0; r < rows; ++r) {
        const PairRaw& p = res[(size_t)r];
        const double vals[6] = {p.n, p.dot, p.a2, p.b2, p.d2, p.mx};
        std::copy(vals, vals + 6, out[r]);
    }
}

py::bytearray fused_step(const Spec& x_spec, const Spec& o_spec, const std::optional<Spec>& u_spec,
                const std::optional<Spec>& z_spec, const std::vector<Spec>& h_specs, const std::vector<double>& coeffs,
                const std::optional<Spec>& table_spec, const std::optional<Spec>& index_spec, double guidance,
                int clip_mode, double lo, double hi, const std::optional<Spec>& scale_spec, const Spec& prev_spec,
                const std::optional<Spec>& x0_spec, bool want_stats, int threads) {
    static const char* const HISTORY_NAMES[MAX_HISTORY] = {"history[0]", "history[1]", "history[2]", "history[3]"};
    StepArgs A;
    // the views read (x, model_output, uncond, noise, history...; then out, for x0_out's checks)
    constexpr int MAX_INPUTS = 5 + MAX_HISTORY;
    Checked in[MAX_INPUTS];
    const char* in_name[MAX_INPUTS];
    int n_in = 0;
    Checked& x = in[n_in];
    in_name[n_in++] = "x";
    check_view(x_spec, "x", x);
    if (!is_float_dtype(x.v.dtype))
        throw py::type_error(std::string("x: dtype ") + DTYPE_NAMES[x.v.dtype] + "; accepted: float32, float64, float16, bfloat16");
    auto input = [&](const Spec& spec, const char* name) -> const ViewDesc& {
        Checked& c = in[n_in];
        in_name[n_in++] = name;
        check_view(spec, name, c);
        if (!is_float_dtype(c.v.dtype))
            throw py::type_error(std::string(name) + ": dtype " + DTYPE_NAMES[c.v.dtype] +
                                 "; accepted: float32, float64, float16, bfloat16");
        if (!c.same_shape(x)) fail(std::string(name) + " has shape " + c.sizes_str() + " but x has shape " + x.sizes_str());
        return c.v;
    };
    A.x = x.v;
    A.o = input(o_spec, "model_output");
    if ((A.has_u = u_spec.has_value())) A.u = input(*u_spec, "uncond");
    if ((A.has_z = z_spec.has_value())) A.z = input(*z_spec, "noise");
    if (h_specs.size() > (size_t)MAX_HISTORY)
        fail("at most " + std::to_string(MAX_HISTORY) + " history tensors are supported; got " + std::to_string(h_specs.size()));
    A.num_hist = (int)h_specs.size();
    for (int k = 0; k < A.num_hist; ++k) A.h[k] = input(h_specs[k], HISTORY_NAMES[k]);

    // coefficients: NUM_COEFS (15) host values, or row `index` of a float64 [steps, NUM_COEFS] table
    if (table_spec.has_value() != index_spec.has_value()) fail("a coefficient table needs both table and index");
    if (table_spec) {
        if (!coeffs.empty()) fail("pass either coeffs or a table, not both");
        Checked t, ix;
        check_view(*table_spec, "table", t);
        check_view(*index_spec, "index", ix);
        if (t.v.dtype != F64 || t.ndim() != 2 || t.size(1) != NUM_COEFS)
            fail("table: expected float64 [steps, " + std::to_string(NUM_COEFS) + "], got " + DTYPE_NAMES[t.v.dtype] +
                 " " + t.sizes_str());
        if (ix.v.dtype != I64 || ix.v.numel != 1) fail("index: expected one int64 element");
        const int64_t i = *reinterpret_cast<const int64_t*>(ix.v.data);
        if (i < 0 || i >= t.size(0))
            throw py::index_error("coefficient table index " + std::to_string(i) + " is out of range for " +
                                  std::to_string(t.size(0)) + " steps");
        const double* row = reinterpret_cast<const double*>(t.v.data) + i * t.stride(0);
        for (int k = 0; k < NUM_COEFS; ++k) {
            const double c = row[k * t.stride(1)];
            // as the torch backend: the row is converted to the compute dtype, then tested for zero
            A.coef[k] = x.v.dtype == F64 ? c : (double)(float)c;
        }
    } else {
        if (coeffs.size() != (size_t)NUM_COEFS)
            fail("coeffs: expected " + std::to_string(NUM_COEFS) + " values, got " + std::to_string(coeffs.size()));
        std::copy(coeffs.begin(), coeffs.end(), A.coef);
    }
    A.guidance = guidance;

    const int64_t numel = x.v.numel;
    A.rows = x.ndim() == 0 ? 1 : x.size(0);
    A.inner = A.rows ? numel / A.rows : 0;
    if (clip_mode < 0 || clip_mode > 2) fail("clip_mode=" + std::to_string(clip_mode) + "; accepted: 0, 1, 2");
    A.clip_mode = clip_mode;
    if (clip_mode == 1) {
        if (lo != lo || hi != hi || lo > hi) fail("clip bounds must satisfy lo <= hi; got [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        A.lo = lo;
        A.hi = hi;
    }
    if (clip_mode == 2) {
        if (!scale_spec) fail("clip_mode=2 needs the per-sample scale");
        if (x.ndim() == 0 || numel == 0) fail("dynamic thresholding needs x with samples along dim 0");
        Checked sc;
        check_view(*scale_spec, "scale", sc);
        if (sc.v.dtype != F32 || !sc.shape_is({A.rows}))
            fail("scale: expected float32 [" + std::to_string(A.rows) + "], got " + DTYPE_NAMES[sc.v.dtype] + " " + sc.sizes_str());
        A.scale = sc.v;
    }

    Checked prev, x0;
    check_view(prev_spec, "out", prev);
    auto output = [&](const Checked& c, const char* name) {
        if (c.v.dtype != x.v.dtype)
            throw py::type_error(std::string(name) + ": dtype " + DTYPE_NAMES[c.v.dtype] + " but x is " + DTYPE_NAMES[x.v.dtype]);
        if (!c.same_shape(x)) fail(std::string(name) + " has shape " + c.sizes_str() + " but x has shape " + x.sizes_str());
        check_writable(c, name);
        for (int i = 0; i < n_in; ++i) check_no_partial_overlap(c, name, in[i], in_name[i]);
    };
    output(prev, "out");
    A.prev = prev.v;
    if ((A.has_x0 = x0_spec.has_value())) {
        check_view(*x0_spec, "x0_out", x0);
        in[n_in] = prev;
        in_name[n_in++] = "out";
        output(x0, "x0_out");
        A.x0 = x0.v;
    }
    A.want_stats = want_stats;
    A.stream = numel * ITEMSIZE[x.v.dtype] >= STREAM_BYTES;
    check_threads(threads);

    StepOut out;
    {
        py::gil_scoped_release release;
        (g_isa == AVX2 ? avx2::fused_step : base::fused_step)(A, &out, threads);
    }
    // the results as one packed buffer (no tensor to allocate per call): the clipped count, then the raw rows
    // (fastdiff.stats: 5 int64 counts, then 4 float64 moments) of x' and x0 — 19 eight-byte words
    struct Packed {
        int64_t clipped;
        struct Row {
            int64_t counts[5];
            double moments[4];
        } rows[2];
    } words;
    static_assert(sizeof(Packed) == 19 * 8, "the packed step result is 19 words without padding");
    words.clipped = out.clipped;
    write_raw(out.prev, words.rows[0].counts, words.rows[0].moments);
    write_raw(out.x0, words.rows[1].counts, words.rows[1].moments);
    return py::bytearray(reinterpret_cast<const char*>(&words), sizeof(words));
}

}  // namespace
}  // namespace fd

PYBIND11_MODULE(_cpu, m) {
    using namespace fd;
    m.doc() = "fastdiff's C++ CPU kernels (see fastdiff/kernels/cpu.py for the Python side)";
    m.attr("BLOCK") = BLOCK;
    m.attr("ITEM") = ITEM;
    m.attr("MAX_DIMS") = MAX_DIMS;
    m.def("avx2_supported", &avx2_supported, "whether this CPU and build can run the AVX2 kernels");
    m.def("set_isa", &set_isa, py::arg("name"), "'auto' (the best this CPU runs), 'base' or 'avx2'");
    m.def("isa", []() { return std::string(g_isa == AVX2 ? "avx2" : "base"); }, "the instruction set in use");
    m.def("tensor_stats", &fd::tensor_stats, py::arg("views"), py::arg("rows"), py::arg("counts"), py::arg("moments"),
          py::arg("threads"),
          "Raw stats of each of `rows[i]` equal consecutive rows of each view into counts int64 [R, 5] and "
          "moments float64 [R, 4] (rows of each may be further apart: e.g. columns of one [R, 9] table).");
    m.def("pair_stats", &fd::pair_stats, py::arg("a"), py::arg("b"), py::arg("rows"), py::arg("out"),
          py::arg("threads"), "Raw pair stats of `rows` equal rows of a and b into out float64 [rows, 6].");
    m.def("update_stats", &fd::update_stats, py::arg("params"), py::arg("snapshot"), py::arg("offsets"),
          py::arg("counts"), py::arg("moments"), py::arg("threads"),
          "Raw stats of each parameter (rows 0..P) and of its update params[i] - s[i] (rows P..2P) into counts "
          "int64 [2P, 5] and moments float64 [2P, 4] (as in tensor_stats), where s[i] is the run of the contiguous "
          "snapshot starting at offsets[i] (runs in order, apart); then s[i] = params[i].");
    m.def("fused_step", &fd::fused_step, py::arg("x"), py::arg("model_output"), py::arg("uncond"), py::arg("noise"),
          py::arg("history"), py::arg("coeffs"), py::arg("table"), py::arg("index"), py::arg("guidance"),
          py::arg("clip_mode"), py::arg("lo"), py::arg("hi"), py::arg("scale"), py::arg("out"), py::arg("x0_out"),
          py::arg("want_stats"), py::arg("threads"),
          "The generic step (fastdiff/step.py) in one pass. Returns 19 int64 words (bytearray): the clipped count, "
          "then the raw stats rows (5 counts, 4 float64 moments) of the stored x' and x0 (fastdiff.kernels.cpu).");
    m.def("jsonl_rows", &fd::jsonl_rows, py::arg("kind"), py::arg("steps"), py::arg("names"), py::arg("roles"),
          py::arg("int_fields"), py::arg("ints"), py::arg("float_fields"), py::arg("floats"),
          "One JSONL line per row of a block of probe records (fastdiff/probe/encode.py); names and roles "
          "JSON-encoded, ints int64 [R, I], floats float64 [R, F] (non-finite: null).");
    set_isa("auto");
    if (const char* env = std::getenv("FASTDIFF_CPU_ISA"); env && *env) {
        try {
            set_isa(env);
        } catch (const py::value_error& e) {
            PyErr_WarnEx(PyExc_RuntimeWarning, ("FASTDIFF_CPU_ISA ignored: " + std::string(e.what())).c_str(), 1);
        }
    }
}
