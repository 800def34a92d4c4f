// The kernels of kernels_impl.h for the scalar path (compiled with this path's flags only).

#define FASTRNN_NS isa_scalar
#define FASTRNN_ISA_NAME "scalar"
#include "cpu/kernels_impl.h"

namespace fastrnn {
const KernelTable& kernels_scalar() { return isa_scalar::table(); }
}  // namespace fastrnn
