// JSONL lines of the probe's records, one per row of a column-wise block (fastdiff/probe/records.py):
//     {"step":S,"name":N,"kind":"K","role":R,"<int field>":I,...,"<float field>":F,...}
// Writing a flush is most of the probe's host cost, and in Python most of that is formatting floats
// (about a microsecond each on a slow core) and filling a template per record; here each line costs
// about as much as one Python float repr.
//
// Names and roles come JSON-encoded from Python (json.encoder, cached per name). Floats are the
// shortest text that reads back as the same double (std::to_chars, the same guarantee as Python's
// repr), with ".0" appended to integral values so that json.loads gives floats back as it does for
// repr's text; NaN and +-Inf are `null` (strict JSON). fastdiff/probe/encode.py holds the Python
// version of the same text, the reference in tests and the fallback without this extension.
#include "jsonl.h"

#include <charconv>
#include <cmath>
#include <cstdint>

namespace fd {

namespace {

// int64 or float64 items, however the exporter spells them (numpy: 'l' for int64 on LP64 systems)
template <class T>
bool items_are(const py::buffer_info& info) {
    return info.itemsize == (py::ssize_t)sizeof(T) && info.item_type_is_equivalent_to<T>();
}

template <class T>
const T* column_buffer(const py::buffer_info& info, const std::string& name, const char* dtype, py::ssize_t rows,
                       py::ssize_t cols) {
    const bool packed = rows * cols == 0 || (info.ndim == 2 && info.strides[1] == (py::ssize_t)sizeof(T) &&
                                             info.strides[0] == cols * (py::ssize_t)sizeof(T));
    if (!items_are<T>(info) || info.ndim != 2 || info.shape[0] != rows ||
        info.shape[1] != cols || !packed)
        throw py::type_error(name + " must be a C-contiguous " + dtype + " array of shape (" + std::to_string(rows) +
                             ", " + std::to_string(cols) + ")");
    return static_cast<const T*>(info.ptr);
}

void append_double(std::string& out, double v) {
    if (!std::isfinite(v)) {
        out += "null";
        return;
    }
    char buf[40];
    const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);  // at most 24 characters
    const std::string_view text(buf, (size_t)(r.ptr - buf));
    out += text;
    if (text.find_first_of(".e") == std::string_view::npos) out += ".0";
}

void append_int(std::string& out, int64_t v) {
    char buf[24];
    const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, (size_t)(r.ptr - buf));
}

}  // namespace

py::list jsonl_rows(const std::string& kind, const py::buffer& steps, const std::vector<std::string>& names,
                    const std::vector<std::string>& roles, const std::vector<std::string>& int_fields,
                    const py::buffer& ints, const std::vector<std::string>& float_fields, const py::buffer& floats) {
    const py::ssize_t rows = (py::ssize_t)names.size();
    if ((py::ssize_t)roles.size() != rows)
        throw py::value_error(std::to_string(rows) + " names but " + std::to_string(roles.size()) + " roles");
    const py::buffer_info si = steps.request(), ii = ints.request(), fi = floats.request();
    const py::ssize_t ni = (py::ssize_t)int_fields.size(), nf = (py::ssize_t)float_fields.size();
    if (!items_are<int64_t>(si) || si.ndim != 1 || si.shape[0] != rows ||
        (rows > 1 && si.strides[0] != 8))
        throw py::type_error("steps must be a contiguous int64 array of " + std::to_string(rows) + " values");
    const int64_t* step = static_cast<const int64_t*>(si.ptr);
    const int64_t* iv = column_buffer<int64_t>(ii, "ints", "int64", rows, ni);
    const double* fv = column_buffer<double>(fi, "floats", "float64", rows, nf);

    std::vector<std::string> ikeys, fkeys;  // ,"field":
    for (const auto& f : int_fields) ikeys.push_back(",\"" + f + "\":");
    for (const auto& f : float_fields) fkeys.push_back(",\"" + f + "\":");
    const std::string kind_part = ",\"kind\":\"" + kind + "\",\"role\":";

    py::list out(rows);
    std::string line;
    for (py::ssize_t r = 0; r < rows; ++r) {
        line.assign("{\"step\":");
        append_int(line, step[r]);
        line += ",\"name\":";
        line += names[(size_t)r];
        line += kind_part;
        line += roles[(size_t)r];
        for (py::ssize_t j = 0; j < ni; ++j) {
            line += ikeys[(size_t)j];
            append_int(line, iv[r * ni + j]);
        }
        for (py::ssize_t j = 0; j < nf; ++j) {
            line += fkeys[(size_t)j];
            append_double(line, fv[r * nf + j]);
        }
        line += "}\n";
        PyObject* s = PyUnicode_DecodeUTF8(line.data(), (py::ssize_t)line.size(), nullptr);
        if (!s) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), r, s);  // steals the reference
    }
    return out;
}

}  // namespace fd
