// cuda_module.cpp — the optional CUDA module (built where a CUDA compiler is found).
#include <pybind11/pybind11.h>

namespace fastrnn_cuda {
int device_count();
}

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastrnn CUDA module";
  m.def("device_count", &fastrnn_cuda::device_count, "Number of visible CUDA devices (0 without driver or GPU).");
}
