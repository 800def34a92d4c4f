// device.cu — CUDA runtime queries for the optional CUDA module.
#include <cuda_runtime.h>

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

}  // namespace fastrnn_cuda
