// quant_ops.cpp — Python bindings of the int8 and bf16 inference kernels (cpu/qgemm.h, cpu/bgemm.h,
// cpu/qforward_loop.h): pack a quantized weight matrix for the active ISA, the quantized matrix
// product, the quantized forward pass of a recurrent cell. Argument checking for users lives in fastrnn/quantization.py;
// the checks here are the last line of defence for direct calls.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings/shapes.h"
#include "fastrnn.h"

namespace py = pybind11;
using fastrnn::Cell;

namespace {

using farr = py::array_t<float, py::array::c_style>;
using i8arr = py::array_t<int8_t, py::array::c_style>;
using i32arr = py::array_t<int32_t, py::array::c_style>;
using u8arr = py::array_t<uint8_t, py::array::c_style>;
using u16arr = py::array_t<uint16_t, py::array::c_style>;
using u32arr = py::array_t<uint32_t, py::array::c_style>;

void need(bool ok, const std::string& what) {
  if (!ok) throw py::value_error(what);
}

// A packed matrix as Python holds it: int8 (isa, w, scale, comp, N, K, NV, Hg), bf16 (isa, w, N, K, NV, Hg).
template <class Packed>
struct Pack {
  Packed q{};
  std::string isa;
};

// The packed sizes N, K, NV, Hg at t[first ..], checked; the tuple's path checked against the active one.
template <class Packed>
void unpack_sizes(const py::tuple& t, size_t first, const char* name, Pack<Packed>& p) {
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  p.isa = t[0].cast<std::string>();
  need(p.isa == k.name, std::string(name) + ": packed for the " + p.isa + " path, but the " + k.name +
                            " path is active; pack it again");
  p.q.N = t[first].cast<int64_t>();
  p.q.K = t[first + 1].cast<int64_t>();
  p.q.NV = t[first + 2].cast<int>();
  p.q.Hg = t[first + 3].cast<int64_t>();
  need(p.q.N >= 1 && p.q.K >= 1 && p.q.NV >= 1 && p.q.NV <= 4 && p.q.Hg >= 0 &&
           (p.q.Hg == 0 || p.q.N == p.q.NV * p.q.Hg),
       std::string(name) + ": inconsistent packed sizes");
  p.q.P = p.q.Hg ? (p.q.Hg + k.vector_width - 1) / k.vector_width
                 : (p.q.N + (int64_t)p.q.NV * k.vector_width - 1) / ((int64_t)p.q.NV * k.vector_width);
}

Pack<fastrnn::QPacked> unpack(const py::tuple& t, const char* name, fastrnn::QPacked*) {
  need(t.size() == 8, std::string(name) + ": expected a packed int8 weight tuple of 8 items");
  Pack<fastrnn::QPacked> p;
  unpack_sizes(t, 4, name, p);
  // exact dtypes and C order, so the casts below are views of the tuple's arrays (which the caller
  // keeps alive through the call), never temporary copies
  need(i8arr::check_(t[1]) && farr::check_(t[2]) && i32arr::check_(t[3]),
       std::string(name) + ": packed arrays must be C-contiguous int8 / float32 / int32");
  const i8arr w = t[1].cast<i8arr>();
  const farr scale = t[2].cast<farr>();
  const i32arr comp = t[3].cast<i32arr>();
  int64_t wbytes = 0, cols = 0;
  fastrnn::active_kernels().qpack_sizes(p.q.N, p.q.K, p.q.NV, p.q.Hg, &wbytes, &cols);
  need(w.ndim() == 1 && w.shape(0) == wbytes && scale.ndim() == 1 && scale.shape(0) == cols && comp.ndim() == 1 &&
           comp.shape(0) == cols,
       std::string(name) + ": packed arrays of the wrong sizes for this path");
  p.q.w = w.data();
  p.q.scale = scale.data();
  p.q.comp = comp.data();
  p.q.K4 = (p.q.K + 3) / 4;
  return p;
}

Pack<fastrnn::BPacked> unpack(const py::tuple& t, const char* name, fastrnn::BPacked*) {
  need(t.size() == 6, std::string(name) + ": expected a packed bf16 weight tuple of 6 items");
  Pack<fastrnn::BPacked> p;
  unpack_sizes(t, 2, name, p);
  need(u32arr::check_(t[1]), std::string(name) + ": the packed array must be C-contiguous uint32");
  const u32arr w = t[1].cast<u32arr>();
  int64_t words = 0;
  fastrnn::active_kernels().bpack_sizes(p.q.N, p.q.K, p.q.NV, p.q.Hg, &words);
  need(w.ndim() == 1 && w.shape(0) == words, std::string(name) + ": packed array of the wrong size for this path");
  p.q.w = w.data();
  p.q.K2 = (p.q.K + 1) / 2;
  return p;
}

// The kernel table's entries of each scheme.
template <class Packed>
struct Entries;
template <>
struct Entries<fastrnn::QPacked> {
  static auto gemm_ws(const fastrnn::KernelTable& k) { return k.qgemm_workspace_floats; }
  static auto gemm(const fastrnn::KernelTable& k) { return k.qgemm; }
  static auto forward_ws(const fastrnn::KernelTable& k) { return k.qforward_workspace_floats; }
  static auto forward(const fastrnn::KernelTable& k) { return k.qforward; }
};
template <>
struct Entries<fastrnn::BPacked> {
  static auto gemm_ws(const fastrnn::KernelTable& k) { return k.bgemm_workspace_floats; }
  static auto gemm(const fastrnn::KernelTable& k) { return k.bgemm; }
  static auto forward_ws(const fastrnn::KernelTable& k) { return k.bforward_workspace_floats; }
  static auto forward(const fastrnn::KernelTable& k) { return k.bforward; }
};

float* workspace(size_t floats) {
  thread_local std::vector<float> ws;
  if (ws.size() < floats) ws.assign(floats, 0.0f);
  return ws.data();
}

py::tuple qpack(const i8arr& wq, const farr& scale, int nv, int64_t hg) {
  need(wq.ndim() == 2 && wq.shape(0) >= 1 && wq.shape(1) >= 1, "wq: expected a 2-D int8 array, got shape " + shape_str(wq));
  const int64_t N = wq.shape(0), K = wq.shape(1);
  need(scale.ndim() == 1 && scale.shape(0) == N, "scale: expected shape (" + std::to_string(N) + ",), got " + shape_str(scale));
  need(nv >= 1 && nv <= 4, "nv: expected 1 .. 4");
  need(hg == 0 || (hg >= 1 && N == nv * hg), "hg: expected 0, or N / nv for a gate-grouped matrix");
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  int64_t wbytes = 0, cols = 0;
  k.qpack_sizes(N, K, nv, hg, &wbytes, &cols);
  i8arr out(wbytes);
  farr sc(cols);
  i32arr comp(cols);
  k.qpack(wq.data(), scale.data(), N, K, nv, hg, out.mutable_data(), sc.mutable_data(), comp.mutable_data());
  return py::make_tuple(std::string(k.name), out, sc, comp, N, K, nv, hg);
}

py::tuple bpack(const u16arr& wb, int nv, int64_t hg) {
  need(wb.ndim() == 2 && wb.shape(0) >= 1 && wb.shape(1) >= 1,
       "wb: expected a 2-D uint16 array (bf16 bits), got shape " + shape_str(wb));
  const int64_t N = wb.shape(0), K = wb.shape(1);
  need(nv >= 1 && nv <= 4, "nv: expected 1 .. 4");
  need(hg == 0 || (hg >= 1 && N == nv * hg), "hg: expected 0, or N / nv for a gate-grouped matrix");
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  int64_t words = 0;
  k.bpack_sizes(N, K, nv, hg, &words);
  u32arr out(words);
  k.bpack(wb.data(), N, K, nv, hg, out.mutable_data());
  return py::make_tuple(std::string(k.name), out, N, K, nv, hg);
}

template <class Packed>
farr lowp_gemm(const farr& a, const py::tuple& packed, const std::optional<farr>& bias) {
  const Pack<Packed> p = unpack(packed, "packed", (Packed*)nullptr);
  need(a.ndim() == 2 && a.shape(1) == p.q.K && a.shape(0) >= 1,
       "a: expected shape (M, " + std::to_string(p.q.K) + "), got " + shape_str(a));
  need(p.q.Hg == 0, "packed: a plain (not gate-grouped) matrix expected");
  if (bias) need(bias->ndim() == 1 && bias->shape(0) == p.q.N, "bias: expected shape (" + std::to_string(p.q.N) + ",)");
  const int64_t M = a.shape(0);
  farr c(std::vector<py::ssize_t>{(py::ssize_t)M, (py::ssize_t)p.q.N});
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  float* ws = workspace(Entries<Packed>::gemm_ws(k)(M, p.q) + 16);
  const float* pb = bias ? bias->data() : nullptr;
  float* pc = c.mutable_data();
  const int threads = fastrnn::get_num_threads();
  {
    py::gil_scoped_release release;
    Entries<Packed>::gemm(k)(a.data(), M, p.q, pb, pc, ws, threads);
  }
  return c;
}

template <class Packed>
py::tuple lowp_forward(int cell_id, const farr& x, const py::tuple& wih, const py::tuple& whh, const farr& b_ih,
                   const std::optional<farr>& b_hh, const std::optional<farr>& h0, const std::optional<farr>& c0,
                   const std::optional<u8arr>& mask, bool reverse, bool batch_first) {
  need(cell_id >= 0 && cell_id <= 3, "cell: expected 0 .. 3");
  const Cell cell = static_cast<Cell>(cell_id);
  const int G = fastrnn::gate_count(cell);
  const Pack<Packed> pi = unpack(wih, "w_ih", (Packed*)nullptr), ph = unpack(whh, "w_hh", (Packed*)nullptr);
  need(x.ndim() == 3, "x: expected a 3-D array, got shape " + shape_str(x));
  fastrnn::Dims d{};
  d.cell = cell;
  d.T = batch_first ? x.shape(1) : x.shape(0);
  d.B = batch_first ? x.shape(0) : x.shape(1);
  d.I = x.shape(2);
  d.H = ph.q.K;
  d.batch_first = batch_first;
  d.reverse = reverse;
  need(d.T >= 1 && d.B >= 1 && d.I >= 1, "x: every dimension must be at least 1, got shape " + shape_str(x));
  need(ph.q.NV == G && ph.q.Hg == d.H && pi.q.NV == G && pi.q.Hg == d.H && pi.q.K == d.I,
       "w_ih / w_hh: packed for another cell or shape");
  auto vec = [&](const std::optional<farr>& v, int64_t n, const char* name) -> const float* {
    if (!v) return nullptr;
    need(v->ndim() == 1 && v->shape(0) == n, std::string(name) + ": expected shape (" + std::to_string(n) + ",)");
    return v->data();
  };
  auto state = [&](const std::optional<farr>& v, const char* name) -> const float* {
    if (!v) return nullptr;
    need(v->ndim() == 2 && v->shape(0) == d.B && v->shape(1) == d.H,
         std::string(name) + ": expected shape (" + std::to_string(d.B) + ", " + std::to_string(d.H) + ")");
    return v->data();
  };
  need(b_ih.ndim() == 1 && b_ih.shape(0) == G * d.H, "b_ih: expected shape (G*H,)");
  need(cell != Cell::GRU || b_hh, "b_hh: required for GRU");
  d.mask = nullptr;
  if (mask) {
    need(mask->ndim() == 2 && mask->shape(0) == d.B && mask->shape(1) == d.T, "mask: expected shape (B, T)");
    d.mask = mask->data();
  }
  fastrnn::LowpForwardArgs<Packed> a{};
  a.d = d;
  a.x = x.data();
  a.wih = pi.q;
  a.whh = ph.q;
  a.b_ih = b_ih.data();
  a.b_hh = cell == Cell::GRU ? vec(b_hh, G * d.H, "b_hh") : nullptr;
  a.h0 = state(h0, "h0");
  a.c0 = cell == Cell::LSTM ? state(c0, "c0") : nullptr;
  const std::vector<py::ssize_t> ydims = batch_first ? std::vector<py::ssize_t>{(py::ssize_t)d.B, (py::ssize_t)d.T, (py::ssize_t)d.H}
                                                     : std::vector<py::ssize_t>{(py::ssize_t)d.T, (py::ssize_t)d.B, (py::ssize_t)d.H};
  farr y(ydims), hn(std::vector<py::ssize_t>{(py::ssize_t)d.B, (py::ssize_t)d.H});
  py::object cn = py::none();
  a.y = y.mutable_data();
  a.h_n = hn.mutable_data();
  if (cell == Cell::LSTM) {
    farr c(std::vector<py::ssize_t>{(py::ssize_t)d.B, (py::ssize_t)d.H});
    a.c_n = c.mutable_data();
    cn = c;
  }
  a.threads = fastrnn::get_num_threads();
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  a.workspace = workspace(Entries<Packed>::forward_ws(k)(d, a.threads) + 16);
  {
    py::gil_scoped_release release;
    Entries<Packed>::forward(k)(a);
  }
  return py::make_tuple(y, hn, cn);
}

}  // namespace

void bind_quant_ops(py::module_& m) {
  m.def("qpath", []() { return std::string(fastrnn::active_kernels().qpath()); },
        "The integer dot product the int8 kernels use on the active ISA path.");
  m.def("set_qvnni_allowed", &fastrnn::set_qvnni_allowed, py::arg("allowed"),
        "Let the int8 kernels use AVX-512 VNNI where the CPU has it (True, the default) or not.");
  m.def("qgemm_nv", []() { return fastrnn::active_kernels().qgemm_nv; });
  m.def("qpack", &qpack, py::arg("wq").noconvert(), py::arg("scale").noconvert(), py::arg("nv"), py::arg("hg"),
        "Pack int8 weights wq [N, K] (scale [N]) for the active ISA path: (isa, w, scale, comp, N, K, nv, hg).");
  m.def("qgemm", &lowp_gemm<fastrnn::QPacked>, py::arg("a").noconvert(), py::arg("packed"),
        py::arg("bias").noconvert() = py::none(), "deq(quant(a) . W^T) + bias for a packed plain matrix W [N, K].");
  m.def("qforward", &lowp_forward<fastrnn::QPacked>, py::arg("cell"), py::arg("x").noconvert(), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih").noconvert(), py::arg("b_hh").noconvert() = py::none(),
        py::arg("h0").noconvert() = py::none(), py::arg("c0").noconvert() = py::none(),
        py::arg("mask").noconvert() = py::none(), py::arg("reverse") = false, py::arg("batch_first") = true,
        "int8 inference forward pass of a recurrent cell: (y, h_n, c_n or None).");
  m.def("bpath", []() { return std::string(fastrnn::active_kernels().bpath()); },
        "The bf16 product the bf16 kernels use on the active ISA path.");
  m.def("set_bf16dot_allowed", &fastrnn::set_bf16dot_allowed, py::arg("allowed"),
        "Let the bf16 kernels use AVX512-BF16 (VDPBF16PS) where the CPU has it (True, the default) or not.");
  m.def("bpack", &bpack, py::arg("wb").noconvert(), py::arg("nv"), py::arg("hg"),
        "Pack bf16 weights wb [N, K] (uint16 bits) for the active ISA path: (isa, w, N, K, nv, hg).");
  m.def("bgemm", &lowp_gemm<fastrnn::BPacked>, py::arg("a").noconvert(), py::arg("packed"),
        py::arg("bias").noconvert() = py::none(), "bf16(a) . W^T + bias for a packed plain bf16 matrix W [N, K].");
  m.def("bforward", &lowp_forward<fastrnn::BPacked>, py::arg("cell"), py::arg("x").noconvert(), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih").noconvert(), py::arg("b_hh").noconvert() = py::none(),
        py::arg("h0").noconvert() = py::none(), py::arg("c0").noconvert() = py::none(),
        py::arg("mask").noconvert() = py::none(), py::arg("reverse") = false, py::arg("batch_first") = true,
        "bf16 inference forward pass of a recurrent cell: (y, h_n, c_n or None).");
}
