// The kernels of kernels_impl.h for the avx512 path (compiled with this path's flags only).
#define FASTRNN_ISA_AVX512 1
#define FASTRNN_NS isa_avx512
#define FASTRNN_ISA_NAME "avx512"
#include "cpu/kernels_impl.h"

namespace fastrnn {
const KernelTable& kernels_avx512() { return isa_avx512::table(); }
}  // namespace fastrnn
