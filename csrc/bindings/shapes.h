// shapes.h (bindings) — the shape text every binding file's error messages use.
#pragma once
#include <pybind11/numpy.h>

#include <string>

// "(3, 4)", "(5,)", "()": an array's shape as Python prints a tuple.
inline std::string shape_str(const pybind11::array& a) {
  std::string s = "(";
  for (pybind11::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}
