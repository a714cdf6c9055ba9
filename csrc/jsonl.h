// JSONL text of the probe's records (jsonl.cpp); bound in module.cpp.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <vector>

namespace py = pybind11;

namespace fd {
py::list jsonl_rows(const std::string& kind, const py::buffer& steps, const std::vector<std::string>& names,
                    const std::vector<std::string>& roles, const std::vector<std::string>& int_fields,
                    const py::buffer& ints, const std::vector<std::string>& float_fields, const py::buffer& floats);
}
