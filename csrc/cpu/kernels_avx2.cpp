// The kernels of kernels_impl.h for the avx2 path (compiled with this path's flags only).
#define FASTRNN_ISA_AVX2 1
#define FASTRNN_NS isa_avx2
#define FASTRNN_ISA_NAME "avx2"
#include "cpu/kernels_impl.h"

namespace fastrnn {
const KernelTable& kernels_avx2() { return isa_avx2::table(); }
}  // namespace fastrnn
