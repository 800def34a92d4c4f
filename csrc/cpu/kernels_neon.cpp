// The kernels of kernels_impl.h for the NEON path (aarch64; AdvSIMD is baseline there, no flags).
#define FASTRNN_ISA_NEON 1
#define FASTRNN_NS isa_neon
#define FASTRNN_ISA_NAME "neon"
#include "cpu/kernels_impl.h"

namespace fastrnn {
const KernelTable& kernels_neon() { return isa_neon::table(); }
}  // namespace fastrnn
