// train_ops_dense.cpp — Python bindings of a Dense layer's kernels: the GEMM with the bias and the
// activation in its epilogue, and the column sum for the bias gradient.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings/train_ops.h"
#include "bindings/shapes.h"
#include "fastrnn.h"

namespace py = pybind11;

namespace {
using farr = py::array_t<float, py::array::c_style>;

// out (+)= the column sums of the 2-D X (rows ascending); returns out (a new array when None).
farr colsum(const farr& X, std::optional<farr> out, bool accumulate) {
  if (X.ndim() != 2) throw py::value_error("X: expected a 2-D array, got shape " + shape_str(X));
  const int64_t M = X.shape(0), N = X.shape(1);
  if (!out) {
    if (accumulate) throw py::value_error("out: required when accumulate is true");
    out = farr(std::vector<py::ssize_t>{(py::ssize_t)N});
  }
  if (out->ndim() != 1 || out->shape(0) != N)
    throw py::value_error("out: expected shape (" + std::to_string(N) + ",), got " + shape_str(*out));
  if (!out->writeable()) throw py::value_error("out: the array must be writeable");
  float* po = out->mutable_data();
  const int threads = fastrnn::get_num_threads();
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().colsum(X.data(), M, N, N, po, accumulate, threads);
  }
  return *out;
}
}  // namespace

farr dense_gemm(const farr& A, const farr& B, bool trans_a, bool trans_b, const std::optional<farr>& bias, int act,
               const std::optional<farr>& out, bool accumulate, const std::optional<farr>& colsum_b) {
  if (A.ndim() != 2) throw py::value_error("A: expected a 2-D array, got shape " + shape_str(A));
  if (B.ndim() != 2) throw py::value_error("B: expected a 2-D array, got shape " + shape_str(B));
  if (act < 0 || act > 3) throw py::value_error("act: expected 0 (none), 1 (relu), 2 (tanh) or 3 (sigmoid)");
  const int64_t M = trans_a ? A.shape(1) : A.shape(0), K = trans_a ? A.shape(0) : A.shape(1);
  const int64_t Kb = trans_b ? B.shape(1) : B.shape(0), N = trans_b ? B.shape(0) : B.shape(1);
  if (K != Kb)
    throw py::value_error("B: inner dimensions differ: op(A) is " + std::to_string(M) + "x" + std::to_string(K) +
                          ", op(B) is " + std::to_string(Kb) + "x" + std::to_string(N));
  if (bias && (bias->ndim() != 1 || bias->shape(0) != N))
    throw py::value_error("bias: expected shape (" + std::to_string(N) + ",), got " + shape_str(*bias));
  if (accumulate && !out) throw py::value_error("out: required when accumulate is true");
  if (accumulate && bias) throw py::value_error("bias: not with accumulate (C = op(A) op(B) + C)");
  if (out) {
    if (out->ndim() != 2 || out->shape(0) != M || out->shape(1) != N)
      throw py::value_error("out: expected shape (" + std::to_string(M) + ", " + std::to_string(N) + "), got " +
                            shape_str(*out));
    if (!out->writeable()) throw py::value_error("out: the array must be writeable");
    // C is written block by block while A and B are still read: any shared byte gives wrong results
    if (overlaps(*out, A)) throw py::value_error("out: must not overlap A");
    if (overlaps(*out, B)) throw py::value_error("out: must not overlap B");
  }
  farr C = out ? *out : farr(std::vector<py::ssize_t>{(py::ssize_t)M, (py::ssize_t)N});
  if (colsum_b) {
    if (colsum_b->ndim() != 1 || colsum_b->shape(0) != N)
      throw py::value_error("colsum_b: expected shape (" + std::to_string(N) + ",), got " + shape_str(*colsum_b));
    if (!colsum_b->writeable()) throw py::value_error("colsum_b: the array must be writeable");
    if (overlaps(*colsum_b, A) || overlaps(*colsum_b, B) || overlaps(*colsum_b, C))
      throw py::value_error("colsum_b: must not overlap A, B or out");
  }
  // A transposed operand is the same row-major array read with its strides swapped.
  fastrnn::CpuGemmArgs g{};
  g.M = M, g.N = N, g.K = K;
  g.A = A.data(), g.rsa = trans_a ? 1 : A.shape(1), g.csa = trans_a ? A.shape(1) : 1;
  g.B = B.data(), g.rsb = trans_b ? 1 : B.shape(1), g.csb = trans_b ? B.shape(1) : 1;
  g.C = C.mutable_data(), g.ldc = N;
  g.accumulate = accumulate, g.threads = fastrnn::get_num_threads();
  g.bias = bias ? bias->data() : nullptr;
  g.act = act;
  farr cs = colsum_b ? *colsum_b : farr();  // a handle of its own: mutable_data() is not const
  g.colsum_b = colsum_b ? cs.mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().gemm(g);
  }
  return C;
}

void register_train_ops_dense(py::module_& m) {
  m.def("dense_gemm", &dense_gemm, py::arg("A").noconvert(), py::arg("B").noconvert(), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("bias").noconvert().none(true) = py::none(), py::arg("act") = 0,
        py::arg("out").noconvert().none(true) = py::none(), py::arg("accumulate") = false,
        py::arg("colsum_b").noconvert().none(true) = py::none(),
        "C = act(op(A) @ op(B) + bias) with fastrnn's GEMM, bias and activation in its write-back (act: 0 none, "
        "1 relu, 2 tanh, 3 sigmoid; the kernels' vector tanh / sigmoid). With out, C is out (float32, "
        "C-contiguous, not overlapping A or B); with accumulate, C = act(op(A) @ op(B) + out). With colsum_b "
        "(float32 [N]), also colsum_b += op(B).sum(0) (rows in order), from B's packed blocks.");
  m.def("colsum", &colsum, py::arg("X").noconvert(), py::arg("out").noconvert().none(true) = py::none(),
        py::arg("accumulate") = false,
        "out (+)= X.sum(axis=0) for a 2-D float32 X, rows added in order (the same result for any thread count).");
}
