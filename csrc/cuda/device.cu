// device.cu — CUDA runtime queries for the optional CUDA module (devices, whether this build's
// kernels run on one), and the process-wide settings of the kernels (tile overrides, counters of
// the time loops that ran, for tests and benchmarks).
#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "cuda/common.cuh"

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

KernelSupport kernel_support(int device) {
  KernelSupport r{};
  r.device = device;
  int prev = -1;
  if (cudaGetDevice(&prev) != cudaSuccess) {  // no driver, no device
    const cudaError_t e = cudaGetLastError();
    r.error = (int)e;
    r.message = cudaGetErrorString(e);
    return r;
  }
  if (device < 0) device = r.device = prev;
  cudaError_t e = device == prev ? cudaSuccess : cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&r.major, cudaDevAttrComputeCapabilityMajor, device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&r.minor, cudaDevAttrComputeCapabilityMinor, device);
  // cudaErrorNoKernelImageForDevice / cudaErrorInvalidDeviceFunction: no image for this
  // architecture in the build (e.g. an sm_75 GPU and a build for 80 and 90 only);
  // cudaErrorUnsupportedPtxVersion: PTX newer than the driver. Every source file is probed.
  cudaFuncAttributes attr{};
  if (e == cudaSuccess) e = gemm_kernel_attributes(&attr);
  if (e == cudaSuccess) e = forward_kernel_attributes(&attr);
  if (e == cudaSuccess) e = backward_kernel_attributes(&attr);
  if (e == cudaSuccess) {
    r.ok = true;
    r.binary_version = attr.binaryVersion;
    r.ptx_version = attr.ptxVersion;
  } else {
    cudaGetLastError();  // not sticky: clear it so that later calls do not report it
    r.error = (int)e;
    r.message = cudaGetErrorString(e);
  }
  if (device != prev && cudaSetDevice(prev) != cudaSuccess) cudaGetLastError();
  return r;
}

void fail_for_tests() { check(cudaSetDevice(-1), "deliberate failure (cudaSetDevice(-1))"); }

namespace {
std::atomic<int> fwd_tiles{-1}, bwd_tiles{-1}, persistent{-1};
std::atomic<long long> loop_counts[2][2];  // [pass][persistent]
}  // namespace

void count_time_loop(int pass, bool persistent_loop) {
  loop_counts[pass & 1][persistent_loop ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
}
long long time_loop_count(int pass, bool persistent_loop) {
  return loop_counts[pass & 1][persistent_loop ? 1 : 0].load(std::memory_order_relaxed);
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
