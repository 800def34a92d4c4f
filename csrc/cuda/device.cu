// device.cu — CUDA runtime queries for the optional CUDA module, and the process-wide settings
// of the kernels (tile overrides for tests and benchmarks).
#include <cuda_runtime.h>

#include <atomic>

#include "cuda/kernels.h"

namespace fastrnn_cuda {

// Number of visible CUDA devices; 0 when there is no driver or no device.
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

// Multiprocessors of the current device, read once per device (at least 1).
int sm_count() {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return 1;
  }
  if (dev >= 0 && dev < 64) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n < 1) {
    cudaGetLastError();
    n = 1;
  }
  if (dev >= 0 && dev < 64) cache[dev].store(n, std::memory_order_relaxed);
  return n;
}

namespace {
std::atomic<int> fwd_tiles{-1}, bwd_tiles{-1}, persistent{-1};
}

void set_step_tiles(int forward, int backward, int persistent_loop) {
  fwd_tiles.store(forward, std::memory_order_relaxed);
  bwd_tiles.store(backward, std::memory_order_relaxed);
  persistent.store(persistent_loop, std::memory_order_relaxed);
}
int forward_tiles_override() { return fwd_tiles.load(std::memory_order_relaxed); }
int backward_tiles_override() { return bwd_tiles.load(std::memory_order_relaxed); }
int persistent_override() { return persistent.load(std::memory_order_relaxed); }

}  // namespace fastrnn_cuda
