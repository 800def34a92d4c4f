// common.cuh — helpers shared by the CUDA kernels: error checks, the sequence layout on the
// device, accurate activations.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/kernels.h"

namespace fastrnn_cuda {

// Throws on an error, after clearing the runtime's last error: otherwise the next healthy call
// would report this one again from check_launch's cudaGetLastError(). (Sticky errors, which
// corrupt the context, cannot be cleared and keep failing every call.)
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("fastrnn CUDA: ") + what + ": " + cudaGetErrorString(e));
  }
}

// After a launch: configuration errors show up here (execution errors surface at a later sync).
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// The sequence layout as the kernels see it (see fastrnn.h): positions, processing order, mask.
struct Seq {
  int T, B;
  bool batch_first, reverse;
  const unsigned char* mask;  // [B, T] or nullptr
  __device__ __forceinline__ int time_of_step(int s) const { return reverse ? T - 1 - s : s; }
  __device__ __forceinline__ long long pos(int t, int b) const {
    return batch_first ? (long long)b * T + t : (long long)t * B + b;
  }
  __device__ __forceinline__ bool valid(int t, int b) const { return mask == nullptr || mask[(long long)b * T + t] != 0; }
};

inline Seq make_seq(const Dims& d) {
  return Seq{(int)d.T, (int)d.B, d.batch_first, d.reverse, d.mask};
}

// Accurate float32 activations (expf/tanhf, no fast-math intrinsics). 1/(1+e^-x) saturates
// cleanly: e^-x = inf gives 0, and NaN stays NaN.
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float reluf_(float x) { return x > 0.0f ? x : (x == x ? 0.0f : x); }  // NaN stays NaN

// gemm.cu: out[c] = sum_r A[r, c] for a row-major [R, Ncols] matrix (fixed summation order).
void column_sums(const float* A, int64_t R, int64_t Ncols, float* out, void* stream);

// gemm.cu: out[r, j] = a[r, j] * m[b(r), j] for `rows` rows of H, where row r is position r of
// a [T*B] sequence (b(r) = r / T if batch_first, else r % B): recurrent dropout's masked states.
void scale_rows(const float* a, const float* m, float* out, int64_t rows, int64_t H, int64_t T, int64_t B,
                bool batch_first, void* stream);

// device.cu: count the time loop that ran (pass 0 forward, 1 backward) for tests and benchmarks.
void count_time_loop(int pass, bool persistent);

// Attributes of one kernel of each source file (gemm.cu, forward.cu, backward.cu): the error
// says whether this build holds an image that runs on the current device.
cudaError_t gemm_kernel_attributes(cudaFuncAttributes* attr);
cudaError_t forward_kernel_attributes(cudaFuncAttributes* attr);
cudaError_t backward_kernel_attributes(cudaFuncAttributes* attr);

// Shape limits of the launch grids (rows of the step kernels on gridDim.y).
constexpr int64_t MAX_GRID_Y = 65535;

}  // namespace fastrnn_cuda
