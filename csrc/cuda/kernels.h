// kernels.h — host interface of the CUDA kernels (included by the bindings; no CUDA headers here).
//
// Conventions are those of fastrnn.h (T, B, I, H, G; positions pos(t, b) = t*B + b or b*T + t;
// saved buffers gates / hprev / aux; mask [B, T] uint8; recurrent dropout mask Dims::hmask
// [B, H]; truncated BPTT by bptt_steps), with
// every pointer a DEVICE pointer (float32, dense, 4-byte aligned) on the current CUDA device.
//
// Memory: the caller allocates outputs and one workspace of *_workspace_floats() floats; the
// kernels allocate nothing. Everything is enqueued on `stream` (a cudaStream_t, 0 = the legacy
// default stream) and returns without synchronizing; launch errors throw std::runtime_error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/cell.h"

namespace fastrnn_cuda {

// The cell ids, gate counts and dimensions are the CPU kernels' (common/cell.h).
using fastrnn::Cell;
using fastrnn::Dims;
using fastrnn::gate_count;

struct ForwardArgs {
  Dims d;
  const float* x;     // [T*B, I] in position order
  const float* w_ih;  // [G*H, I]
  const float* w_hh;  // [G*H, H]
  const float* b_ih;  // [G*H]: the bias of SimpleRNN/LSTM, b_ih of GRU
  const float* b_hh;  // [G*H]: GRU only
  const float* h0;    // [B, H] or nullptr (zeros)
  const float* c0;    // [B, H] or nullptr (zeros), LSTM
  float* y;           // [T*B, H]
  float* h_n;         // [B, H]
  float* c_n;         // [B, H], LSTM
  float* gates;       // [T*B, G*H] when training, else nullptr (then hprev/aux are nullptr too)
  float* hprev;       // [T*B, H]
  float* aux;         // [T*B, H]: LSTM c before the step, GRU W_hn h + b_hn; nullptr for SimpleRNN
  float* workspace;
  size_t workspace_floats;
  void* stream;
};

struct BackwardArgs {
  Dims d;
  const float* x;      // [T*B, I] (masked positions must hold finite values, e.g. 0)
  const float* w_ih;   // [G*H, I]
  const float* w_hh;   // [G*H, H]
  const float* gates;  // saved by the training forward
  const float* hprev;
  const float* aux;
  const float* dy;     // [T*B, H] or nullptr
  const float* dh_n;   // [B, H] or nullptr
  const float* dc_n;   // [B, H] or nullptr (LSTM)
  int64_t bptt_steps;  // 0 = full BPTT
  float* dx;           // [T*B, I] or nullptr (skipped)
  float* dh0;          // [B, H]
  float* dc0;          // [B, H] (LSTM)
  float* dw_ih;        // [G*H, I]
  float* dw_hh;        // [G*H, H]
  float* db_ih;        // [G*H]
  float* db_hh;        // [G*H] (GRU)
  float* workspace;
  size_t workspace_floats;
  void* stream;
};

// The CUDA GEMM: C = op(A) op(B) (+ C when accumulate, else + bias when bias != nullptr). A: M x K
// with strides (rsa, csa); B: K x N with strides (rsb, csb); C: M x N row-major, leading dimension
// ldc. (The CPU GEMM takes fastrnn::CpuGemmArgs.) Filled field by field: CudaGemmArgs g{}; g.M = ...
struct CudaGemmArgs {
  int64_t M, N, K;
  const float* A; int64_t rsa, csa;
  const float* B; int64_t rsb, csb;
  float* C; int64_t ldc;
  bool accumulate;
  const float* bias;
  float* workspace;  // split-K partial sums: gemm_workspace_floats(M, N, K) floats (may be 0)
  size_t workspace_floats;
  void* stream;
};

size_t forward_workspace_floats(const Dims& d, bool training);
size_t backward_workspace_floats(const Dims& d);
size_t gemm_workspace_floats(int64_t M, int64_t N, int64_t K);

void forward(const ForwardArgs& a);
void backward(const BackwardArgs& a);
void gemm(const CudaGemmArgs& g);

// device.cu
int device_count();
int sm_count();  // multiprocessors of the current device (cached per device)

// Whether this build's kernels can run on a device (-1 = the current one): the build holds a
// SASS image for its architecture or PTX the driver can compile. When not, ok is false and
// error / message give the CUDA error (no kernel image, no device, ...); the error is cleared.
struct KernelSupport {
  bool ok;
  int device;
  int major, minor;                 // compute capability (0 when unknown)
  int binary_version, ptx_version;  // of the kernels' image (e.g. 90), when ok
  int error;                        // cudaError_t when not ok
  std::string message;
};
KernelSupport kernel_support(int device);

// Throws the error of a failed runtime call through the module's error check (tests that an
// error does not leak into the next call).
void fail_for_tests();

// Tile configuration of the per-step kernels: -1 = chosen by shape (default), 0 = large,
// 1 = small; and the time loop: -1 = one persistent launch where the grid fits on
// the device (default), 0 = one launch per step, 1 = persistent where it fits (as -1),
// 2 = try the persistent launch even where the grid does not fit (the launch is refused and
// the loop falls back to one launch per step). For tests and benchmarks (process-wide).
void set_step_tiles(int forward, int backward, int persistent);
int forward_tiles_override();
int backward_tiles_override();
int persistent_override();
// How many time loops ran as one persistent launch / one launch per step since the module was
// loaded (pass 0 forward, 1 backward).
long long time_loop_count(int pass, bool persistent);

}  // namespace fastrnn_cuda
