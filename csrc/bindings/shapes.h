// shapes.h (bindings) — the shape text every binding file's error messages use, and the memory
// overlap test of their output arguments.
#pragma once
#include <pybind11/numpy.h>

#include <string>

// "(3, 4)", "(5,)", "()": an array's shape as Python prints a tuple.
inline std::string shape_str(const pybind11::array& a) {
  std::string s = "(";
  for (pybind11::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// Whether two arrays share any byte of their buffers (empty arrays share none).
inline bool overlaps(const pybind11::array& a, const pybind11::array& b) {
  const char* p = reinterpret_cast<const char*>(a.data());
  const char* q = reinterpret_cast<const char*>(b.data());
  return a.nbytes() > 0 && b.nbytes() > 0 && p < q + b.nbytes() && q < p + a.nbytes();
}
