// cuda_module.cpp — the optional CUDA module (built where a CUDA compiler is found).
//
// The kernels take raw device pointers (Python ints, e.g. CuPy's a.data.ptr; 0 = None) and shapes
// as Python ints, plus the stream to enqueue on (CuPy's cupy.cuda.get_current_stream().ptr).
// Checking arrays (kinds, dtypes, shapes, devices) and allocating outputs and the workspace is the
// caller's job: fastrnn/_cuda_ops.py does it with CuPy. These functions only check what they can
// (cell ids, sizes, null pointers, the workspace size), release the GIL and enqueue the kernels;
// they return before the GPU has finished.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/kernels.h"

namespace py = pybind11;
namespace fc = fastrnn_cuda;

namespace {

template <class T = float>
T* ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

fastrnn::Dims make_dims(int cell, int64_t T, int64_t B, int64_t I, int64_t H, bool batch_first, bool reverse,
                        std::uintptr_t mask, std::uintptr_t hmask) {
  if (cell < 0 || cell > 3)
    throw py::value_error("cell: expected 0 (rnn tanh), 1 (rnn relu), 2 (lstm) or 3 (gru), got " + std::to_string(cell));
  if (T < 1 || B < 1 || I < 1 || H < 1)
    throw py::value_error("T, B, I, H: every size must be at least 1");
  fastrnn::Dims d{};
  d.cell = static_cast<fastrnn::Cell>(cell);
  d.T = T, d.B = B, d.I = I, d.H = H;
  d.batch_first = batch_first, d.reverse = reverse;
  d.mask = ptr<const uint8_t>(mask);
  d.hmask = ptr<const float>(hmask);
  return d;
}

void forward(int cell, int64_t T, int64_t B, int64_t I, int64_t H, bool batch_first, bool reverse,
             std::uintptr_t mask, std::uintptr_t x, std::uintptr_t w_ih, std::uintptr_t w_hh, std::uintptr_t b_ih,
             std::uintptr_t b_hh, std::uintptr_t h0, std::uintptr_t c0, std::uintptr_t y, std::uintptr_t h_n,
             std::uintptr_t c_n, std::uintptr_t gates, std::uintptr_t hprev, std::uintptr_t aux,
             std::uintptr_t hmask, std::uintptr_t workspace, size_t workspace_floats, std::uintptr_t stream) {
  fc::ForwardArgs a{};
  a.d = make_dims(cell, T, B, I, H, batch_first, reverse, mask, hmask);
  a.x = ptr(x); a.w_ih = ptr(w_ih); a.w_hh = ptr(w_hh); a.b_ih = ptr(b_ih); a.b_hh = ptr(b_hh);
  a.h0 = ptr(h0); a.c0 = ptr(c0);
  a.y = ptr(y); a.h_n = ptr(h_n); a.c_n = ptr(c_n);
  a.gates = ptr(gates); a.hprev = ptr(hprev); a.aux = ptr(aux);
  a.workspace = ptr(workspace); a.workspace_floats = workspace_floats;
  a.stream = ptr<void>(stream);
  py::gil_scoped_release release;
  fc::forward(a);
}

void backward(int cell, int64_t T, int64_t B, int64_t I, int64_t H, bool batch_first, bool reverse,
              std::uintptr_t mask, std::uintptr_t x, std::uintptr_t w_ih, std::uintptr_t w_hh, std::uintptr_t gates,
              std::uintptr_t hprev, std::uintptr_t aux, std::uintptr_t dy, std::uintptr_t dh_n, std::uintptr_t dc_n,
              int64_t bptt_steps, std::uintptr_t dx, std::uintptr_t dh0, std::uintptr_t dc0, std::uintptr_t dw_ih,
              std::uintptr_t dw_hh, std::uintptr_t db_ih, std::uintptr_t db_hh, std::uintptr_t hmask,
              std::uintptr_t workspace, size_t workspace_floats, std::uintptr_t stream) {
  fc::BackwardArgs a{};
  a.d = make_dims(cell, T, B, I, H, batch_first, reverse, mask, hmask);
  a.x = ptr(x); a.w_ih = ptr(w_ih); a.w_hh = ptr(w_hh);
  a.gates = ptr(gates); a.hprev = ptr(hprev); a.aux = ptr(aux);
  a.dy = ptr(dy); a.dh_n = ptr(dh_n); a.dc_n = ptr(dc_n);
  if (bptt_steps < 0) throw py::value_error("bptt_steps: expected >= 0 (0 = full BPTT), got " + std::to_string(bptt_steps));
  a.bptt_steps = bptt_steps;
  a.dx = ptr(dx); a.dh0 = ptr(dh0); a.dc0 = ptr(dc0);
  a.dw_ih = ptr(dw_ih); a.dw_hh = ptr(dw_hh); a.db_ih = ptr(db_ih); a.db_hh = ptr(db_hh);
  a.workspace = ptr(workspace); a.workspace_floats = workspace_floats;
  a.stream = ptr<void>(stream);
  py::gil_scoped_release release;
  fc::backward(a);
}

void gemm(int64_t M, int64_t N, int64_t K, std::uintptr_t A, int64_t rsa, int64_t csa, std::uintptr_t B, int64_t rsb,
          int64_t csb, std::uintptr_t C, int64_t ldc, bool accumulate, std::uintptr_t bias, std::uintptr_t workspace,
          size_t workspace_floats, std::uintptr_t stream) {
  if (M < 0 || N < 0 || K < 0) throw py::value_error("M, N, K: expected sizes >= 0");
  if (ldc < N) throw py::value_error("ldc: expected >= N");
  fc::CudaGemmArgs g{};
  g.M = M, g.N = N, g.K = K;
  g.A = ptr(A), g.rsa = rsa, g.csa = csa;
  g.B = ptr(B), g.rsb = rsb, g.csb = csb;
  g.C = ptr(C), g.ldc = ldc;
  g.accumulate = accumulate, g.bias = ptr(bias);
  g.workspace = ptr(workspace), g.workspace_floats = workspace_floats;
  g.stream = ptr<void>(stream);
  py::gil_scoped_release release;
  fc::gemm(g);
}

void set_step_tiles(int forward, int backward, int persistent) {
  const auto tiles_ok = [](int v) { return v >= -1 && v <= 1; };
  if (!tiles_ok(forward))
    throw py::value_error("set_step_tiles: forward must be -1 (by shape), 0 (large) or 1 (small), got " +
                          std::to_string(forward));
  if (!tiles_ok(backward))
    throw py::value_error("set_step_tiles: backward must be -1 (by shape), 0 (large) or 1 (small), got " +
                          std::to_string(backward));
  if (persistent < -1 || persistent > 2)
    throw py::value_error("set_step_tiles: persistent must be -1 (where the grid fits), 0 (one launch per step), "
                          "1 (as -1) or 2 (always try the persistent launch), got " + std::to_string(persistent));
  fc::set_step_tiles(forward, backward, persistent);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastrnn CUDA module: kernels on raw device pointers (see fastrnn/_cuda_ops.py for the array API)";
  // std::invalid_argument (bad sizes, null pointers, small workspace) arrives as ValueError,
  // std::runtime_error (CUDA errors) as RuntimeError: pybind11's default translations.
  m.def("device_count", &fc::device_count, "Number of visible CUDA devices (0 without driver or GPU).");
  m.def("sm_count", &fc::sm_count, "Multiprocessors of the current CUDA device.");
  m.def("forward_workspace_floats",
        [](int cell, int64_t T, int64_t B, int64_t I, int64_t H, bool training, std::uintptr_t hmask) {
          return fc::forward_workspace_floats(make_dims(cell, T, B, I, H, true, false, 0, hmask), training);
        },
        py::arg("cell"), py::arg("T"), py::arg("B"), py::arg("I"), py::arg("H"), py::arg("training"), py::arg("hmask"),
        "Workspace (float32 elements) that forward needs on the current device.");
  m.def("backward_workspace_floats",
        [](int cell, int64_t T, int64_t B, int64_t I, int64_t H, std::uintptr_t hmask) {
          return fc::backward_workspace_floats(make_dims(cell, T, B, I, H, true, false, 0, hmask));
        },
        py::arg("cell"), py::arg("T"), py::arg("B"), py::arg("I"), py::arg("H"), py::arg("hmask"),
        "Workspace (float32 elements) that backward needs on the current device.");
  m.def("gemm_workspace_floats", &fc::gemm_workspace_floats, py::arg("M"), py::arg("N"), py::arg("K"),
        "Workspace (float32 elements) that gemm needs for its split-K partial sums (may be 0).");
  m.def("forward", &forward, py::arg("cell"), py::arg("T"), py::arg("B"), py::arg("I"), py::arg("H"),
        py::arg("batch_first"), py::arg("reverse"), py::arg("mask"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("b_ih"), py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("y"), py::arg("h_n"), py::arg("c_n"),
        py::arg("gates"), py::arg("hprev"), py::arg("aux"), py::arg("hmask"), py::arg("workspace"),
        py::arg("workspace_floats"), py::arg("stream"),
        "Enqueue a forward pass (training when gates != 0). Pointers are device addresses, 0 = None; hmask: "
        "the recurrent dropout mask [B, H] (the workspace size depends on whether it is given).");
  m.def("backward", &backward, py::arg("cell"), py::arg("T"), py::arg("B"), py::arg("I"), py::arg("H"),
        py::arg("batch_first"), py::arg("reverse"), py::arg("mask"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"),
        py::arg("gates"), py::arg("hprev"), py::arg("aux"), py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"),
        py::arg("bptt_steps"), py::arg("dx"), py::arg("dh0"), py::arg("dc0"), py::arg("dw_ih"), py::arg("dw_hh"),
        py::arg("db_ih"), py::arg("db_hh"), py::arg("hmask"), py::arg("workspace"), py::arg("workspace_floats"),
        py::arg("stream"),
        "Enqueue BPTT over a training forward's saved buffers. Pointers are device addresses, 0 = None.");
  m.def("gemm", &gemm, py::arg("M"), py::arg("N"), py::arg("K"), py::arg("A"), py::arg("rsa"), py::arg("csa"),
        py::arg("B"), py::arg("rsb"), py::arg("csb"), py::arg("C"), py::arg("ldc"), py::arg("accumulate"),
        py::arg("bias"), py::arg("workspace"), py::arg("workspace_floats"), py::arg("stream"),
        "Enqueue C = op(A) op(B) (+ C or + bias) with general strides.");
  m.def("kernel_support",
        [](int device) {
          const fc::KernelSupport r = fc::kernel_support(device);
          py::dict d;
          d["ok"] = r.ok;
          d["device"] = r.device;
          d["compute_capability"] = py::make_tuple(r.major, r.minor);
          d["binary_version"] = r.binary_version;
          d["ptx_version"] = r.ptx_version;
          d["error"] = r.error;
          d["message"] = r.message;
          return d;
        },
        py::arg("device") = -1,
        "Whether this build's kernels run on a CUDA device (-1 = the current one): a dict with ok, device, "
        "compute_capability, binary_version / ptx_version of the kernel image (when ok), and the CUDA error "
        "and message when not (e.g. no kernel image for the device's architecture). Never raises.");
  m.def("_fail_for_tests", &fc::fail_for_tests,
        "Raise the RuntimeError of a failed CUDA runtime call (tests that it does not leak into the next call).");
  m.def("set_step_tiles", &set_step_tiles, py::arg("forward"), py::arg("backward"), py::arg("persistent") = -1,
        "Force the tile size of the per-step kernels (0 large, 1 small; -1 = by shape) and the time loop "
        "(0 = one launch per step; -1 or 1 = one persistent launch where the grid fits; 2 = always try the "
        "persistent launch, which falls back to one launch per step when refused). ValueError for other "
        "values. For tests and benchmarks.");
  m.def("time_loop_counts", []() {
    py::dict d;
    d["forward_persistent"] = fc::time_loop_count(0, true);
    d["forward_per_step"] = fc::time_loop_count(0, false);
    d["backward_persistent"] = fc::time_loop_count(1, true);
    d["backward_per_step"] = fc::time_loop_count(1, false);
    return d;
  }, "How many time loops ran as one persistent (cooperative) launch and as one launch per step, "
     "forward and backward, since the module was loaded.");
  m.def("get_step_tiles", []() {
    return py::make_tuple(fc::forward_tiles_override(), fc::backward_tiles_override(), fc::persistent_override());
  });
}
