// train_ops_xent.cpp — Python bindings of the fused cross-entropy and the Embedding kernels
// (cpu/xent.h, cpu/embedding.h): check arrays, allocate outputs, release the GIL, call the
// active ISA's kernel. Registered on fastrnn._core by register_train_ops_xent().
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "bindings/shapes.h"
#include "fastrnn.h"

namespace py = pybind11;

namespace {

using farr = py::array_t<float, py::array::c_style>;
using darr = py::array_t<double, py::array::c_style>;
using iarr = py::array_t<int64_t, py::array::c_style>;
using u8arr = py::array_t<uint8_t, py::array::c_style>;

void need_1d(const py::array& a, int64_t n, const char* name) {
  if (a.ndim() != 1 || a.shape(0) != n)
    throw py::value_error(std::string(name) + ": expected shape (" + std::to_string(n) + ",), got " + shape_str(a));
}

// The first id outside [0, limit), as a ValueError naming `name`.
void check_ids(const int64_t* ids, int64_t n, int64_t limit, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= limit)
      throw py::value_error(std::string(name) + ": expected values in [0, " + std::to_string(limit) + "), got " +
                            std::to_string(ids[i]) + " at flat position " + std::to_string(i));
}

py::tuple xent(const farr& z, const std::optional<iarr>& ids, const std::optional<farr>& y,
               const std::optional<u8arr>& mask, const std::optional<darr>& weight, bool from_logits,
               const std::optional<farr>& out, double grad_scale) {
  if (!std::isfinite(grad_scale))
    throw py::value_error("grad_scale: expected a finite number, got " + std::to_string(grad_scale));
  if (z.ndim() != 2) throw py::value_error("z: expected a 2-D array [rows, classes], got shape " + shape_str(z));
  const int64_t N = z.shape(0), C = z.shape(1);
  if (C < 1) throw py::value_error("z: expected at least one class, got shape " + shape_str(z));
  if (ids.has_value() == y.has_value()) throw py::value_error("ids, y: expected exactly one of them");
  fastrnn::XentArgs a{};
  a.N = N, a.C = C, a.z = z.data(), a.from_logits = from_logits, a.grad_scale = grad_scale;
  if (ids) {
    need_1d(*ids, N, "ids");
    check_ids(ids->data(), N, C, "ids");
    a.ids = ids->data();
  } else {
    if (y->ndim() != 2 || y->shape(0) != N || y->shape(1) != C)
      throw py::value_error("y: expected z's shape " + shape_str(z) + ", got " + shape_str(*y));
    a.y = y->data();
  }
  if (mask) {
    need_1d(*mask, N, "mask");
    a.mask = mask->data();
  }
  if (weight) {
    need_1d(*weight, N, "weight");
    a.weight = weight->data();
  }
  farr grad = out ? *out : farr(std::vector<py::ssize_t>{(py::ssize_t)N, (py::ssize_t)C});
  if (out) {
    if (grad.ndim() != 2 || grad.shape(0) != N || grad.shape(1) != C)
      throw py::value_error("out: expected z's shape " + shape_str(z) + ", got " + shape_str(grad));
    if (!grad.writeable()) throw py::value_error("out: the array must be writeable");
    const bool same = grad.data() == z.data();
    if (overlaps(grad, z) && !same) throw py::value_error("out: must be z itself or apart from it");
    if (same && y) throw py::value_error("out: must not be z itself with dense targets y");
  }
  darr loss(std::vector<py::ssize_t>{(py::ssize_t)N});
  a.grad = grad.mutable_data();
  a.loss = loss.mutable_data();
  a.threads = fastrnn::get_num_threads();
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().xent(a);
  }
  return py::make_tuple(loss, grad);
}

farr embedding_forward(const farr& table, const iarr& ids) {
  if (table.ndim() != 2) throw py::value_error("table: expected a 2-D array [input_dim, output_dim], got shape " +
                                               shape_str(table));
  fastrnn::EmbeddingArgs a{};
  a.V = table.shape(0), a.D = table.shape(1), a.N = (int64_t)ids.size();
  check_ids(ids.data(), a.N, a.V, "ids");
  std::vector<py::ssize_t> dims(ids.shape(), ids.shape() + ids.ndim());
  dims.push_back((py::ssize_t)a.D);
  farr out(dims);
  a.ids = ids.data(), a.table = table.data(), a.out = out.mutable_data();
  a.threads = fastrnn::get_num_threads();
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().embedding_forward(a);
  }
  return out;
}

void embedding_backward(const iarr& ids, const farr& dy, farr& grad) {
  if (grad.ndim() != 2) throw py::value_error("grad: expected a 2-D array [input_dim, output_dim], got shape " +
                                              shape_str(grad));
  if (!grad.writeable()) throw py::value_error("grad: the array must be writeable");
  fastrnn::EmbeddingArgs a{};
  a.V = grad.shape(0), a.D = grad.shape(1), a.N = (int64_t)ids.size();
  bool ok = dy.ndim() == ids.ndim() + 1 && dy.shape(dy.ndim() - 1) == a.D;
  for (py::ssize_t i = 0; ok && i < ids.ndim(); ++i) ok = dy.shape(i) == ids.shape(i);
  if (!ok)
    throw py::value_error("dy: expected the ids' shape plus (" + std::to_string(a.D) + ",), got " + shape_str(dy) +
                          " for ids of shape " + shape_str(ids));
  check_ids(ids.data(), a.N, a.V, "ids");
  a.ids = ids.data(), a.dy = dy.data(), a.grad = grad.mutable_data();
  a.threads = fastrnn::get_num_threads();
  py::gil_scoped_release release;
  fastrnn::active_kernels().embedding_backward(a);
}

}  // namespace

void register_train_ops_xent(py::module_& m) {
  m.def("xent", &xent, py::arg("z").noconvert(), py::arg("ids").noconvert().none(true),
        py::arg("y").noconvert().none(true), py::arg("mask").noconvert().none(true),
        py::arg("weight").noconvert().none(true), py::arg("from_logits"),
        py::arg("out").noconvert().none(true) = py::none(), py::arg("grad_scale") = 1.0,
        "Fused softmax cross-entropy over the rows of z [N, C] (float32, C-contiguous) with class ids "
        "(int64 [N]) or dense targets y (float32 [N, C]); mask (uint8 [N]) and weight (float64 [N]) "
        "optional; out (float32 [N, C]; z itself only with ids) receives the gradient when given; grad_scale multiplies "
        "the gradient (not the loss). Returns (per-row loss float64 [N], gradient float32 [N, C]).");
  m.def("embedding_forward", &embedding_forward, py::arg("table").noconvert(), py::arg("ids").noconvert(),
        "table[ids] for a float32 table [V, D] and int64 ids of any shape (values in [0, V)).");
  m.def("embedding_backward", &embedding_backward, py::arg("ids").noconvert(), py::arg("dy").noconvert(),
        py::arg("grad").noconvert(),
        "grad[ids[n]] += dy[n] in place, n ascending (the same bits for any thread count).");
}
