// core_module.cpp — Python bindings of the CPU kernels: check arrays, allocate outputs and the
// workspace, release the GIL, call the kernel. Argument checking for users lives in
// fastrnn/ops.py; the checks here are the last line of defence for direct calls.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings/train_ops.h"
#include "bindings/shapes.h"
#include "fastrnn.h"

namespace py = pybind11;
using fastrnn::Cell;

void bind_quant_ops(py::module_& m);  // quant_ops.cpp

namespace {

using farr = py::array_t<float, py::array::c_style>;
using u8arr = py::array_t<uint8_t, py::array::c_style>;
using ofarr = std::optional<farr>;

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

void check_shape(const py::array& a, const std::vector<int64_t>& dims, const char* name) {
  bool ok = a.ndim() == (py::ssize_t)dims.size();
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = a.shape(i) == dims[i];
  if (!ok)
    throw py::value_error(std::string(name) + ": expected shape " + dims_str(dims) + ", got " + shape_str(a));
}

const float* opt_ptr(const ofarr& a, const std::vector<int64_t>& dims, const char* name) {
  if (!a) return nullptr;
  check_shape(*a, dims, name);
  return a->data();
}

Cell to_cell(int c) {
  if (c < 0 || c > 3) throw py::value_error("cell: expected 0 (rnn tanh), 1 (rnn relu), 2 (lstm) or 3 (gru)");
  return static_cast<Cell>(c);
}

// The kernels' workspace, cached per calling thread: it grows to the largest size asked for and is
// reused, so repeated calls (a training loop) pay no page faults for it. Large buffers are 2 MiB
// aligned and advised to use transparent huge pages. A buffer over the workspace limit
// (set_workspace_limit, default 256 MiB) is freed when the call that needed it returns, so that one
// large call does not leave its size resident. release_workspace() frees the calling thread's buffer.
std::atomic<size_t> g_workspace_limit{size_t(256) << 20};

struct Workspace {
  float* ptr = nullptr;
  size_t floats = 0;
  ~Workspace() { std::free(ptr); }
  float* get(size_t n) {
    if (n <= floats) return ptr;
    std::free(ptr);
    ptr = nullptr;
    floats = 0;
    const size_t bytes = n * sizeof(float);
    const size_t align = bytes >= (size_t(4) << 20) ? (size_t(2) << 20) : 64;
    void* p = nullptr;
    if (posix_memalign(&p, align, (bytes + align - 1) / align * align) != 0) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE)
    if (align > 64) madvise(p, (bytes + align - 1) / align * align, MADV_HUGEPAGE);
#endif
    ptr = static_cast<float*>(p);
    floats = n;
    return ptr;
  }
  void release() {
    std::free(ptr);
    ptr = nullptr;
    floats = 0;
  }
  // After a call: keep the buffer only within the limit.
  void trim() {
    if (floats * sizeof(float) > g_workspace_limit.load(std::memory_order_relaxed)) release();
  }
};

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

farr new_array(const std::vector<int64_t>& dims) { return farr(std::vector<py::ssize_t>(dims.begin(), dims.end())); }

fastrnn::Dims make_dims(Cell cell, const farr& x, int64_t H, const std::optional<u8arr>& mask, bool reverse,
                        bool batch_first) {
  if (x.ndim() != 3) throw py::value_error("x: expected a 3-D array, got shape " + shape_str(x));
  fastrnn::Dims d{};
  d.cell = cell;
  d.T = batch_first ? x.shape(1) : x.shape(0);
  d.B = batch_first ? x.shape(0) : x.shape(1);
  d.I = x.shape(2);
  d.H = H;
  d.batch_first = batch_first;
  d.reverse = reverse;
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1)
    throw py::value_error("x: every dimension must be at least 1, got shape " + shape_str(x));
  d.mask = nullptr;
  if (mask) {
    check_shape(*mask, {d.B, d.T}, "mask");
    d.mask = mask->data();
  }
  return d;
}

int64_t hidden_from_whh(const farr& w_hh, int G) {
  if (w_hh.ndim() != 2 || w_hh.shape(0) != G * w_hh.shape(1))
    throw py::value_error("w_hh: expected shape (G*H, H) with G = " + std::to_string(G) + ", got " + shape_str(w_hh));
  return w_hh.shape(1);
}

// A training buffer for the kernels to fill: the caller's (checked) when given, else a new array.
farr out_buffer(const ofarr& given, const std::vector<int64_t>& dims, const char* name) {
  if (!given) return new_array(dims);
  check_shape(*given, dims, name);
  if (!given->writeable()) throw py::value_error(std::string(name) + ": the array must be writeable");
  return *given;
}

// A packed W_hh of pack_whh as Python holds it, (isa, cell, H, layout, float32 array), checked
// against the active table and the call: its data, a view of the caller's array (alive through the
// call).
const float* packed_whh_data(const py::tuple& t, const fastrnn::KernelTable& k, int cell_id, int64_t H,
                             int64_t B) {
  if (t.size() != 5) throw py::value_error("whh_packed: expected the 5-tuple of pack_whh");
  const std::string isa = t[0].cast<std::string>();
  if (isa != k.name)
    throw py::value_error("whh_packed: packed for the " + isa + " path, but the " + k.name +
                          " path is active; pack it again");
  const Cell cell = to_cell(cell_id);
  if (t[1].cast<int>() != cell_id || t[2].cast<int64_t>() != H)
    throw py::value_error("whh_packed: packed for another cell or hidden size");
  if (t[3].cast<int>() != k.forward_whh_layout(cell, H, B))
    throw py::value_error("whh_packed: packed in another layout than this call's (another batch size); pack it "
                          "again for this batch");
  if (!farr::check_(t[4])) throw py::type_error("whh_packed: the packed array must be C-contiguous float32");
  const farr w = t[4].cast<farr>();
  if (w.ndim() != 1 || (size_t)w.shape(0) != k.forward_whh_packed_floats(cell, H))
    throw py::value_error("whh_packed: packed array of the wrong size for this path");
  return w.data();
}

py::tuple pack_whh(int cell_id, const farr& w_hh, int64_t batch) {
  const Cell cell = to_cell(cell_id);
  const int64_t H = hidden_from_whh(w_hh, fastrnn::gate_count(cell));
  if (batch < 1) throw py::value_error("batch: expected >= 1, got " + std::to_string(batch));
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  const int layout = k.forward_whh_layout(cell, H, batch);
  farr out = new_array({(int64_t)k.forward_whh_packed_floats(cell, H)});
  {
    py::gil_scoped_release release;
    k.forward_pack_whh(cell, w_hh.data(), H, layout, out.mutable_data());
  }
  return py::make_tuple(std::string(k.name), cell_id, H, layout, out);
}

py::tuple forward(int cell_id, const farr& x, const farr& w_ih, const farr& w_hh, const farr& b_ih, const ofarr& b_hh,
                  const ofarr& h0, const ofarr& c0, const std::optional<u8arr>& mask, bool reverse, bool batch_first,
                  bool training, const ofarr& hmask, const ofarr& out_gates, const ofarr& out_hprev,
                  const ofarr& out_aux, const std::optional<py::tuple>& whh_packed, const ofarr& wih_t) {
  const Cell cell = to_cell(cell_id);
  const int G = fastrnn::gate_count(cell);
  const int64_t H = hidden_from_whh(w_hh, G);
  fastrnn::Dims d = make_dims(cell, x, H, mask, reverse, batch_first);
  check_shape(w_ih, {G * H, d.I}, "w_ih");
  check_shape(b_ih, {G * H}, cell == Cell::GRU ? "b_ih" : "b");
  if (cell == Cell::GRU && !b_hh) throw py::value_error("b_hh: required for GRU");
  const float* bhh = cell == Cell::GRU ? opt_ptr(b_hh, {G * H}, "b_hh") : nullptr;
  const float* ph0 = opt_ptr(h0, {d.B, H}, "h0");
  const float* pc0 = cell == Cell::LSTM ? opt_ptr(c0, {d.B, H}, "c0") : nullptr;
  d.hmask = opt_ptr(hmask, {d.B, H}, "hmask");

  const std::vector<int64_t> ydims = batch_first ? std::vector<int64_t>{d.B, d.T, H} : std::vector<int64_t>{d.T, d.B, H};
  farr y = new_array(ydims), hn = new_array({d.B, H});
  py::object cn = py::none(), gates = py::none(), hprev = py::none(), aux = py::none();
  fastrnn::ForwardArgs a{};
  a.d = d;
  a.x = x.data(); a.w_ih = w_ih.data(); a.w_hh = w_hh.data(); a.b_ih = b_ih.data(); a.b_hh = bhh;
  a.h0 = ph0; a.c0 = pc0;
  a.y = y.mutable_data(); a.h_n = hn.mutable_data();
  if (cell == Cell::LSTM) {
    farr c = new_array({d.B, H});
    a.c_n = c.mutable_data();
    cn = c;
  }
  if (training) {
    farr g = out_buffer(out_gates, {d.T * d.B, G * H}, "gates"), hp = out_buffer(out_hprev, {d.T * d.B, H}, "hprev");
    a.gates = g.mutable_data(); a.hprev = hp.mutable_data();
    gates = g; hprev = hp;
    if (cell == Cell::LSTM || cell == Cell::GRU) {
      farr ax = out_buffer(out_aux, {d.T * d.B, H}, "aux");
      a.aux = ax.mutable_data();
      aux = ax;
    }
  }
  a.threads = fastrnn::get_num_threads();
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  if (whh_packed) a.w_hh_packed = packed_whh_data(*whh_packed, k, cell_id, H, d.B);
  a.w_ih_t = opt_ptr(wih_t, {d.I, G * H}, "wih_t");
  a.workspace = thread_workspace().get(k.forward_workspace_floats(d, training, a.threads) + 16);
  {
    py::gil_scoped_release release;
    k.forward(a);
  }
  thread_workspace().trim();
  return py::make_tuple(y, hn, cn, gates, hprev, aux);
}

py::tuple backward(int cell_id, const farr& x, const farr& w_ih, const farr& w_hh, const std::optional<u8arr>& mask,
                   bool reverse, bool batch_first, const farr& gates, const farr& hprev, const ofarr& aux,
                   const ofarr& dy, const ofarr& dh_n, const ofarr& dc_n, int64_t bptt_steps, bool need_dx,
                   const ofarr& hmask) {
  const Cell cell = to_cell(cell_id);
  const int G = fastrnn::gate_count(cell);
  const int64_t H = hidden_from_whh(w_hh, G);
  fastrnn::Dims d = make_dims(cell, x, H, mask, reverse, batch_first);
  check_shape(w_ih, {G * H, d.I}, "w_ih");
  d.hmask = opt_ptr(hmask, {d.B, H}, "hmask");
  const int64_t N = d.T * d.B;
  check_shape(gates, {N, G * H}, "gates");
  check_shape(hprev, {N, H}, "hprev");
  const bool needs_aux = cell == Cell::LSTM || cell == Cell::GRU;
  if (needs_aux && !aux) throw py::value_error("aux: required for LSTM and GRU");
  const float* paux = needs_aux ? opt_ptr(aux, {N, H}, "aux") : nullptr;
  const std::vector<int64_t> ydims = batch_first ? std::vector<int64_t>{d.B, d.T, H} : std::vector<int64_t>{d.T, d.B, H};
  const float* pdy = opt_ptr(dy, ydims, "dy");
  const float* pdh = opt_ptr(dh_n, {d.B, H}, "dh_n");
  const float* pdc = cell == Cell::LSTM ? opt_ptr(dc_n, {d.B, H}, "dc_n") : nullptr;
  if (bptt_steps < 0) throw py::value_error("bptt_steps: expected >= 0 (0 = full BPTT), got " + std::to_string(bptt_steps));

  const std::vector<int64_t> xdims = batch_first ? std::vector<int64_t>{d.B, d.T, d.I} : std::vector<int64_t>{d.T, d.B, d.I};
  py::object dx = py::none(), dc0 = py::none(), dbhh = py::none();
  farr dh0 = new_array({d.B, H}), dwih = new_array({G * H, d.I}), dwhh = new_array({G * H, H}), dbih = new_array({G * H});
  fastrnn::BackwardArgs a{};
  a.d = d;
  a.x = x.data(); a.w_ih = w_ih.data(); a.w_hh = w_hh.data();
  a.gates = gates.data(); a.hprev = hprev.data(); a.aux = paux;
  a.dy = pdy; a.dh_n = pdh; a.dc_n = pdc;
  a.bptt_steps = bptt_steps;
  if (need_dx) {
    farr t = new_array(xdims);
    a.dx = t.mutable_data();
    dx = t;
  }
  a.dh0 = dh0.mutable_data(); a.dw_ih = dwih.mutable_data(); a.dw_hh = dwhh.mutable_data(); a.db_ih = dbih.mutable_data();
  if (cell == Cell::LSTM) {
    farr t = new_array({d.B, H});
    a.dc0 = t.mutable_data();
    dc0 = t;
  }
  if (cell == Cell::GRU) {
    farr t = new_array({G * H});
    a.db_hh = t.mutable_data();
    dbhh = t;
  }
  a.threads = fastrnn::get_num_threads();
  const fastrnn::KernelTable& k = fastrnn::active_kernels();
  a.workspace = thread_workspace().get(k.backward_workspace_floats(d, a.threads) + 16);
  {
    py::gil_scoped_release release;
    k.backward(a);
  }
  thread_workspace().trim();
  return py::make_tuple(dx, dh0, dc0, dwih, dwhh, dbih, dbhh);
}

// C = op(A) op(B) with the library's GEMM; for tests and benchmarks.
farr gemm(const farr& A, const farr& B, bool trans_a, bool trans_b) {
  return dense_gemm(A, B, trans_a, trans_b, std::nullopt, 0, std::nullopt, false);
}

// Dropout of x (or the mask alone when x is None) with Philox4x32-10: (y | None, mask | None).
// The mask's values are 0 and scale; y = x * mask. threshold = floor(rate * 2^32).
py::tuple dropout(const std::optional<farr>& x, int64_t n, uint64_t key, uint32_t call, uint32_t stream,
                  uint32_t threshold, float scale, bool want_y, bool want_mask) {
  if (x) {
    if ((int64_t)x->size() != n)
      throw py::value_error("x: expected " + std::to_string(n) + " elements, got shape " + shape_str(*x));
  } else if (want_y) {
    throw py::value_error("x: required for y");
  }
  if (n < 0) throw py::value_error("n: expected >= 0, got " + std::to_string(n));
  py::object y = py::none(), mask = py::none();
  fastrnn::DropoutArgs a{};
  a.n = n, a.key = key, a.call = call, a.stream = stream, a.threshold = threshold, a.scale = scale;
  a.threads = fastrnn::get_num_threads();
  if (want_y) {
    farr t(std::vector<py::ssize_t>(x->shape(), x->shape() + x->ndim()));
    a.x = x->data(), a.y = t.mutable_data();
    y = t;
  }
  if (want_mask) {
    farr t = x ? farr(std::vector<py::ssize_t>(x->shape(), x->shape() + x->ndim())) : new_array({n});
    a.mask = t.mutable_data();
    mask = t;
  }
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().dropout(a);
  }
  return py::make_tuple(y, mask);
}

// Philox4x32-R of each row of ctr [n, 4] (uint32) with the key (lo word, hi word): [n, 4].
py::array_t<uint32_t> philox(const py::array_t<uint32_t, py::array::c_style>& ctr, uint64_t key, int rounds) {
  if (ctr.ndim() != 2 || ctr.shape(1) != 4) throw py::value_error("ctr: expected shape (n, 4), got " + shape_str(ctr));
  if (rounds < 1 || rounds > 16) throw py::value_error("rounds: expected 1..16, got " + std::to_string(rounds));
  py::array_t<uint32_t> out(std::vector<py::ssize_t>{ctr.shape(0), 4});
  fastrnn::active_kernels().philox(ctr.data(), out.mutable_data(), ctr.shape(0), key, rounds);
  return out;
}

farr activation(const std::string& kind, const farr& x) {
  int k;
  if (kind == "sigmoid") k = 0;
  else if (kind == "tanh") k = 1;
  else if (kind == "exp") k = 2;
  else throw py::value_error("kind: expected 'sigmoid', 'tanh' or 'exp', got '" + kind + "'");
  farr y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  {
    py::gil_scoped_release release;
    fastrnn::active_kernels().activation(k, x.data(), y.mutable_data(), (int64_t)x.size());
  }
  return y;
}

}  // namespace

// GOMP_SPINCOUNT as the environment held it when this module (and with it libgomp, which reads it
// once, at load) was loaded: fastrnn's Python side sets a short default just for that moment.
static const std::string g_spin_at_load = [] {
  const char* v = std::getenv("GOMP_SPINCOUNT");
  return std::string(v ? v : "");
}();

void register_train_ops_xent(py::module_& m);  // train_ops_xent.cpp

#define FASTRNN_STR_(x) #x
#define FASTRNN_STR(x) FASTRNN_STR_(x)

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastrnn CPU kernels (SimpleRNN, LSTM, GRU forward and BPTT; GEMM)";
  // The version the module was built as (pyproject reads it from fastrnn/_version.py), so that a
  // stale build beside newer Python code is detectable.
  m.attr("__version__") = FASTRNN_STR(VERSION_INFO);
  bind_quant_ops(m);
  m.def("forward", &forward, py::arg("cell"), py::arg("x").noconvert(), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("b_ih").noconvert(), py::arg("b_hh").noconvert().none(true),
        py::arg("h0").noconvert().none(true), py::arg("c0").noconvert().none(true),
        py::arg("mask").noconvert().none(true), py::arg("reverse"), py::arg("batch_first"), py::arg("training"),
        py::arg("hmask").noconvert().none(true) = py::none(),
        py::arg("gates").noconvert().none(true) = py::none(), py::arg("hprev").noconvert().none(true) = py::none(),
        py::arg("aux").noconvert().none(true) = py::none(), py::arg("whh_packed").none(true) = py::none(),
        py::arg("wih_t").noconvert().none(true) = py::none(),
        "Returns (y, h_n, c_n|None, gates|None, hprev|None, aux|None). With training, gates / hprev / aux may "
        "be given (float32, C-contiguous, writeable, [T*B, G*H] / [T*B, H] / [T*B, H]): the kernels fill them "
        "instead of new arrays. hmask [B, H]: recurrent dropout, the recurrent product reads h * hmask. "
        "whh_packed: pack_whh(cell, w_hh) of this very w_hh (the caller keeps them in step), or None. wih_t: "
        "w_ih transposed, [I, G*H] C-contiguous (the same values; the x projection reads it in place), or None.");
  m.def("pack_whh", &pack_whh, py::arg("cell"), py::arg("w_hh").noconvert(), py::arg("batch"),
        "W_hh in the forward time loop's layout for the active ISA path and calls of `batch` rows: (isa, cell, "
        "H, layout, float32 array), for forward's whh_packed.");
  m.def("backward", &backward, py::arg("cell"), py::arg("x").noconvert(), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("mask").noconvert().none(true), py::arg("reverse"),
        py::arg("batch_first"), py::arg("gates").noconvert(), py::arg("hprev").noconvert(),
        py::arg("aux").noconvert().none(true), py::arg("dy").noconvert().none(true),
        py::arg("dh_n").noconvert().none(true), py::arg("dc_n").noconvert().none(true), py::arg("bptt_steps"),
        py::arg("need_dx"), py::arg("hmask").noconvert().none(true) = py::none(),
        "Returns (dx|None, dh0, dc0|None, dw_ih, dw_hh, db_ih, db_hh|None); hmask: the forward's.");
  m.def("dropout", &dropout, py::arg("x").noconvert().none(true), py::arg("n"), py::arg("key"), py::arg("call"),
        py::arg("stream"), py::arg("threshold"), py::arg("scale"), py::arg("want_y"), py::arg("want_mask"),
        "Dropout with Philox4x32-10 masks: (x * mask | None, mask | None); mask values 0 and scale, element e "
        "dropped iff its Philox word (element 64g+16w+l: word w of counter (16g+l, call, stream)) < threshold.");
  m.def("philox4x32", &philox, py::arg("ctr").noconvert(), py::arg("key"), py::arg("rounds") = 10,
        "Philox4x32-R of each counter row [n, 4] (uint32) with the 64-bit key: [n, 4] (known-answer tests).");
  m.def("gemm", &gemm, py::arg("A").noconvert(), py::arg("B").noconvert(), py::arg("trans_a") = false,
        py::arg("trans_b") = false, "C = op(A) @ op(B) with fastrnn's own GEMM (float32).");
  m.def("activation", &activation, py::arg("kind"), py::arg("x").noconvert(),
        "The kernels' vectorised sigmoid / tanh / exp on the active ISA (for accuracy tests); the vector "
        "exp clamps its input to [-87, 88].");
  m.def("gomp_spincount_at_load", []() { return g_spin_at_load; },
        "GOMP_SPINCOUNT when the module was loaded ('' when unset).");
  m.def("release_workspace",
        []() {
          thread_workspace().release();
          py::gil_scoped_release release;
          fastrnn::release_scratch_all(fastrnn::get_num_threads());
        },
        "Free the calling thread's cached kernel workspace and the GEMM packing scratch of the "
        "calling thread and of the kernels' worker threads (all are reallocated when next needed).");
  m.def("scratch_bytes", []() { return fastrnn::scratch_bytes_all(); },
        "Bytes of GEMM scratch (packed blocks, and C^T of a product run transposed) held by the calling thread.");
  m.def("set_workspace_limit",
        [](int64_t bytes) {
          if (bytes < 0) throw py::value_error("bytes: expected >= 0, got " + std::to_string(bytes));
          g_workspace_limit.store(size_t(bytes), std::memory_order_relaxed);
          thread_workspace().trim();
        },
        py::arg("bytes"),
        "The most bytes of kernel workspace a thread keeps between calls (default 256 MiB): a call that "
        "needs more frees its buffer when it returns. Trims the calling thread's buffer now.");
  m.def("get_workspace_limit", []() { return (int64_t)g_workspace_limit.load(std::memory_order_relaxed); });
  m.def("workspace_bytes", []() { return thread_workspace().floats * sizeof(float); },
        "Bytes of kernel workspace cached for the calling thread.");
  m.def(
      "fma_peak",
      [](int64_t iters, int threads) {
        if (iters < 1 || iters > (int64_t(1) << 40)) throw py::value_error("iters: expected 1 .. 2**40");
        if (threads < 1 || threads > 4096) throw py::value_error("threads: expected 1 .. 4096");
        py::gil_scoped_release release;
        return fastrnn::active_kernels().fma_peak(iters, threads);
      },
      py::arg("iters"), py::arg("threads"),
      "Floating-point operations per second of `threads` threads each running `iters` rounds of "
      "independent fused multiply-add chains on the active ISA's vectors (cpu/peak.h).");
  m.def("cache_info", []() {
    const fastrnn::CacheInfo c = fastrnn::cache_info();
    py::dict d;
    d["l1d"] = c.l1d; d["l2"] = c.l2; d["l3"] = c.l3;
    d["l1d_shared_by"] = c.l1d_shared_by; d["l2_shared_by"] = c.l2_shared_by; d["l3_shared_by"] = c.l3_shared_by;
    d["source"] = c.source;
    return d;
  }, "Data-cache sizes in bytes (0: unknown) and the logical CPUs sharing each (0: unknown).");
  m.def("gemm_blocking", []() {
    const fastrnn::GemmCaches c = fastrnn::gemm_caches();
    const fastrnn::GemmBlocking b = fastrnn::active_kernels().gemm_blocking();
    py::dict d;
    d["isa"] = fastrnn::active_isa();
    d["mr"] = b.mr; d["nr"] = b.nr; d["kc"] = b.kc; d["mc"] = b.mc; d["nc"] = b.nc; d["mc_l2"] = b.mc_l2;
    d["rowsplit_max_bytes"] = b.rowsplit_max_bytes;
    d["l1d"] = c.l1d; d["l2"] = c.l2; d["l3"] = c.l3; d["l3_cores"] = c.l3_cores;
    d["source"] = c.source;
    d["env_error"] = c.env_error ? c.env_error : "";
    return d;
  }, "The CPU GEMM's register tile (mr x nr) and blocks (kc, mc, nc) on the active ISA path, and the "
     "cache sizes they were derived from (cpu/blocking.h).");
  m.def("gemm_transposed",
        [](int64_t M, int64_t N, int64_t K, bool accumulate) {
          if (M < 0 || N < 0 || K < 0) throw py::value_error("gemm_transposed: M, N and K must be >= 0");
          fastrnn::CpuGemmArgs g{};
          g.M = M, g.N = N, g.K = K, g.accumulate = accumulate;
          return fastrnn::active_kernels().gemm_transposes(g);
        },
        py::arg("M"), py::arg("N"), py::arg("K"), py::arg("accumulate") = false,
        "Whether the CPU GEMM on the active ISA path computes an M x N x K product C = A B (no bias, "
        "activation or column sums) as C^T = B^T A^T and transposes it into C (cpu/gemm.h).");
  m.def("gemm_a_in_place",
        [](int64_t N, int64_t K) {
          if (N < 0 || K < 0) throw py::value_error("gemm_a_in_place: N and K must be >= 0");
          return fastrnn::active_kernels().gemm_reads_a_in_place(N, K);
        },
        py::arg("N"), py::arg("K"),
        "Whether the CPU GEMM on the active ISA path reads a C-contiguous A (M x K) in place, unpacked, "
        "in a product of N columns and depth K (cpu/gemm.h, gemm_a_in_place). N is the columns one thread "
        "computes: where a team splits N, or a product runs as C^T (gemm_transposed), each thread decides for "
        "its own operands.");
  m.def("set_gemm_caches",
        [](int64_t l1d, int64_t l2, int64_t l3, int l3_cores) {
          if (l1d < 0 || l2 < 0 || l3 < 0) throw py::value_error("set_gemm_caches: sizes must be >= 0 bytes");
          if (l3_cores < 0 || l3_cores > 4096) throw py::value_error("set_gemm_caches: l3_cores must be in 0 .. 4096");
          fastrnn::set_gemm_caches(l1d, l2, l3, l3_cores);
        },
        py::arg("l1d"), py::arg("l2"), py::arg("l3"), py::arg("l3_cores") = 0,
        "Derive the GEMM's blocks from these cache sizes (bytes) from now on; all 0: the machine's again.");
  m.def("set_num_threads", &fastrnn::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &fastrnn::get_num_threads);
  m.def("get_isa", &fastrnn::active_isa);
  m.def("set_isa",
        [](const std::string& n) {
          // set_isa reads a C string: an embedded NUL would cut the name short ('scalar\0x' -> 'scalar')
          if (n.find('\0') != std::string::npos) throw py::value_error("isa: the name must not contain NUL characters");
          fastrnn::set_isa(n.c_str());
        },
        py::arg("name"));
  m.def("available_isas", []() {
    std::vector<std::string> out;
    for (const char* n : {"scalar", "avx2", "avx512", "neon"})
      if (fastrnn::isa_supported(n)) out.emplace_back(n);
    return out;
  });
  m.def("vector_width", []() { return fastrnn::active_kernels().vector_width; });
  register_train_ops_optim(m);
  register_train_ops_dense(m);
  register_train_ops_xent(m);
}
