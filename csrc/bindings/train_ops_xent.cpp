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
               const std::optional<farr>& out) {
  if (z.ndim() != 2) throw py::value_error("z: expected a 2-D array [rows, classes], got shape " + shape_str(z));
  const int64_t N = z.shape(0), C = z.shape(1);
  if (C < 1) throw py::value_error("z: expected at least one class, got shape " + shape_str(z));
  if (ids.has_value() == y.has_value()) throw py::value_error("ids, y: expected exactly one of them");
  fastrnn::XentArgs a{};
  a.N = N, a.C = C, a.z = z.data(), a.from_logits = from_logits;
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
    if (grad.data() == z.data()) throw py::value_error("out: must not be z itself");
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

// The statistics of the sparse softmax cross-entropy from logits, without the gradient: per row
// (loss, maximum, w / sum exp(z - maximum), expm1(-loss / w) w); see XentArgs.
py::tuple xent_stats(const farr& z, const iarr& ids, const std::optional<u8arr>& mask,
                     const std::optional<darr>& weight) {
  if (z.ndim() != 2) throw py::value_error("z: expected a 2-D array [rows, classes], got shape " + shape_str(z));
  const int64_t N = z.shape(0), C = z.shape(1);
  if (C < 1) throw py::value_error("z: expected at least one class, got shape " + shape_str(z));
  need_1d(ids, N, "ids");
  check_ids(ids.data(), N, C, "ids");
  fastrnn::XentArgs a{};
  a.N = N, a.C = C, a.z = z.data(), a.from_logits = true, a.ids = ids.data();
  if (mask) {
    need_1d(*mask, N, "mask");
    a.mask = mask->data();
  }
  if (weight) {
    need_1d(*weight, N, "weight");
    a.weight = weight->data();
  }
  const std::vector<py::ssize_t> n1{(py::ssize_t)N};
  darr loss(n1), scale(n1), target(n1);
  farr rmax(n1);
  a.loss = loss.mutable_data(), a.row_max = rmax.mutable_data();
  a.row_scale = scale.mutable_data(), a.row_target = target.mutable_data();
  a.threads = fastrnn::get_num_threads();
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().xent(a);
  }
  return py::make_tuple(loss, rmax, scale, target);
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* pa = static_cast<const char*>(a.data());
  const char* pb = static_cast<const char*>(b.data());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// The fused backward of Dense + sparse softmax cross-entropy from logits (DenseXentArgs): dW and
// db accumulated in place, dx returned (None without need_dx).
py::object dense_xent_backward(const farr& x, const farr& w, const farr& z, const iarr& ids, const farr& row_max,
                               const darr& row_scale, const darr& row_target, double scale, farr& dw,
                               std::optional<farr> db, bool need_dx) {
  if (x.ndim() != 2) throw py::value_error("x: expected a 2-D array [rows, features], got shape " + shape_str(x));
  if (w.ndim() != 2) throw py::value_error("w: expected a 2-D array [features, classes], got shape " + shape_str(w));
  const int64_t N = x.shape(0), H = x.shape(1), C = w.shape(1);
  if (w.shape(0) != H)
    throw py::value_error("w: expected " + std::to_string(H) + " rows (x's features), got shape " + shape_str(w));
  if (z.ndim() != 2 || z.shape(0) != N || z.shape(1) != C)
    throw py::value_error("z: expected shape (" + std::to_string(N) + ", " + std::to_string(C) + "), got " +
                          shape_str(z));
  need_1d(ids, N, "ids");
  check_ids(ids.data(), N, C, "ids");
  need_1d(row_max, N, "row_max");
  need_1d(row_scale, N, "row_scale");
  need_1d(row_target, N, "row_target");
  if (dw.ndim() != 2 || dw.shape(0) != H || dw.shape(1) != C)
    throw py::value_error("dw: expected w's shape " + shape_str(w) + ", got " + shape_str(dw));
  if (!dw.writeable()) throw py::value_error("dw: the array must be writeable");
  for (const py::array* in : {(const py::array*)&x, (const py::array*)&w, (const py::array*)&z})
    if (overlaps(dw, *in)) throw py::value_error("dw: must not overlap x, w or z");
  if (db) {
    need_1d(*db, C, "db");
    if (!db->writeable()) throw py::value_error("db: the array must be writeable");
    if (overlaps(*db, dw)) throw py::value_error("db: must not overlap dw");
  }
  if (!std::isfinite(scale)) throw py::value_error("scale: expected a finite number, got " + std::to_string(scale));
  fastrnn::DenseXentArgs a{};
  a.N = N, a.H = H, a.C = C;
  a.x = x.data(), a.w = w.data(), a.z = z.data(), a.ids = ids.data();
  a.row_max = row_max.data(), a.row_scale = row_scale.data(), a.row_target = row_target.data();
  a.scale = scale;
  a.dw = dw.mutable_data();
  a.db = db ? db->mutable_data() : nullptr;
  py::object dx = py::none();
  if (need_dx) {
    farr t(std::vector<py::ssize_t>{(py::ssize_t)N, (py::ssize_t)H});
    a.dx = t.mutable_data();
    dx = t;
  }
  a.threads = fastrnn::get_num_threads();
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().dense_xent_backward(a);
  }
  return dx;
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
        py::arg("out").noconvert().none(true) = py::none(),
        "Fused softmax cross-entropy over the rows of z [N, C] (float32, C-contiguous) with class ids "
        "(int64 [N]) or dense targets y (float32 [N, C]); mask (uint8 [N]) and weight (float64 [N]) "
        "optional; out (float32 [N, C], not z) receives the gradient when given. Returns (per-row loss "
        "float64 [N], gradient float32 [N, C]).");
  m.def("xent_stats", &xent_stats, py::arg("z").noconvert(), py::arg("ids").noconvert(),
        py::arg("mask").noconvert().none(true) = py::none(), py::arg("weight").noconvert().none(true) = py::none(),
        "Sparse softmax cross-entropy from the logits z [N, C] (float32) without its gradient: per row the "
        "loss (float64 [N], as xent's), the maximum of z (float32 [N]), w / sum exp(z - max) and "
        "expm1(-loss / w) w (float64 [N] each; 0 at masked rows), for dense_xent_backward.");
  m.def("dense_xent_backward", &dense_xent_backward, py::arg("x").noconvert(), py::arg("w").noconvert(),
        py::arg("z").noconvert(), py::arg("ids").noconvert(), py::arg("row_max").noconvert(),
        py::arg("row_scale").noconvert(), py::arg("row_target").noconvert(), py::arg("scale"),
        py::arg("dw").noconvert(), py::arg("db").noconvert().none(true), py::arg("need_dx") = true,
        "The fused backward of a Dense decoder z = x w + b under sparse softmax cross-entropy from z: with "
        "g = scale * dloss/dz made from xent_stats' row statistics (never stored whole), dw += x^T g and "
        "db += g.sum(0) in place; returns dx = g w^T (float32 [N, H]), or None without need_dx.");
  m.def("embedding_forward", &embedding_forward, py::arg("table").noconvert(), py::arg("ids").noconvert(),
        "table[ids] for a float32 table [V, D] and int64 ids of any shape (values in [0, V)).");
  m.def("embedding_backward", &embedding_backward, py::arg("ids").noconvert(), py::arg("dy").noconvert(),
        py::arg("grad").noconvert(),
        "grad[ids[n]] += dy[n] in place, n ascending (the same bits for any thread count).");
}
