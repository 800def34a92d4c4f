// train_ops.h (bindings) — what the training-op binding files give core_module.cpp.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>

// C = act(op(A) op(B) + bias) (or + out with accumulate) with the library's GEMM
// (train_ops_dense.cpp); act 0 none, 1 relu, 2 tanh, 3 sigmoid; out: C's array or None; colsum_b:
// op(B)'s column sums are added to it (a Dense layer's bias gradient in its weight-gradient GEMM).
pybind11::array_t<float, pybind11::array::c_style> dense_gemm(
    const pybind11::array_t<float, pybind11::array::c_style>& A,
    const pybind11::array_t<float, pybind11::array::c_style>& B, bool trans_a, bool trans_b,
    const std::optional<pybind11::array_t<float, pybind11::array::c_style>>& bias, int act,
    const std::optional<pybind11::array_t<float, pybind11::array::c_style>>& out, bool accumulate,
    const std::optional<pybind11::array_t<float, pybind11::array::c_style>>& colsum_b = std::nullopt);

void register_train_ops_optim(pybind11::module_& m);  // train_ops_optim.cpp
void register_train_ops_dense(pybind11::module_& m);  // train_ops_dense.cpp
