// kernels_impl.h — the CPU kernels, written once against `Simd` (simd.h) and compiled once per
// instruction set by kernels_scalar.cpp / kernels_avx2.cpp / kernels_avx512.cpp / kernels_neon.cpp,
// each of which defines FASTRNN_NS (the namespace) and, for the vector paths,
// FASTRNN_ISA_AVX2/AVX512/NEON.
//
// Structure (see fastrnn.h for the conventions):
//   forward : xw = x W_ih^T + b (one GEMM over all T*B rows, written straight into the saved-gates
//             buffer when training) ; then one parallel region for the time loop. A thread owns
//             either the hidden units of a contiguous range of W-wide "panels" (one barrier per
//             step, h double-buffered) or, when W_hh is small, whole blocks of batch rows (no
//             barrier; see loop_split). Per step and per tile of rows it computes the recurrent
//             product for its panels with all G gates of a panel in registers (acc[row][gate]
//             vectors), and applies the gate nonlinearities and the state update to those
//             registers at once: the recurrent pre-activations never touch memory.
//   backward: per step, the fused pointwise pass (state gradients -> gate gradients, written in
//             x's row order; bias-gradient sums per row block), a barrier when split by units,
//             and dh_prev = dG_hh W_hh for the thread's own part. After the loop dx, dW_ih,
//             dW_hh are single GEMMs over all T*B rows.
//
// The parts, each included below inside namespace fastrnn::FASTRNN_NS:
//   blocking.h        the GEMM's blocks KC, MC, NC from the cache sizes and the register tile
//   gemm_pack.h       GEMM operand packing (A and B panels, register transposes)
//   gemm.h            GEMM micro-kernels, blocking, small-N path and threading
//   loop_split.h      how a time loop is split over threads (unit panels or row blocks)
//   cells/*.h         the per-cell pointwise maths, CellMath<C> (cells/cell_math.h)
//   forward_loop.h    the forward pass: workspace, W_hh packing, the time loop
//   backward_loop.h   the backward pass: workspace, W_hh packing, the time loop, weight GEMMs
//   peak.h            the FMA throughput of this ISA (the benchmark's physical limit)
//   qgemm.h           int8 inference: quantizing rows, packing int8 weights, the int8 products
//   bgemm.h           bf16 inference: rounding rows, packing bf16 weights, the bf16 products
//   qforward_loop.h   int8 / bf16 inference: the matrix product and the cells' forward pass
//   xent.h            fused softmax + cross-entropy: per-row loss and gradient, one sweep
//   embedding.h       Embedding gather and deterministic scatter-add
//   dropout.h         dropout masks (Philox4x32-10) generated and applied in one pass
// This file holds the tuning constants and small helpers they share, the dispatch on the cell
// and the kernel table.
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/philox.h"
#include "common/workspace.h"
#include "cpu/simd.h"
#include "fastrnn.h"

#ifndef FASTRNN_NS
#error "define FASTRNN_NS before including kernels_impl.h"
#endif

namespace fastrnn {
namespace FASTRNN_NS {

using namespace fastrnn_simd;
using V = Simd::V;
constexpr int W = Simd::W;

// ---- tuning per ISA -------------------------------------------------------------------------
// GEMM microkernel GEMM_MR x (GEMM_NV*W); forward-loop tiles MR rows x G gate vectors
// (forward_tile_rows; on AVX2 the LSTM's in two passes of 2 gates: forward_tile_vectors);
// backward-loop tiles are BWD_MR x (BWD_NV*W).
// Every tile keeps MR*NV accumulators + NV weight vectors + 1 broadcast in registers: at most 32
// (AVX-512, NEON) or 16 (AVX2, and SSE registers for the scalar path) of them. AVX2's backward
// tile is 4 x 3 (16 registers, 3 weight loads + 4 broadcasts per 12 FMAs) rather than the GEMM's
// 6 x 2 (2 + 6): the same speed for the LSTM, 5-7 % less time in the GRU's backward loop
// (bench/RESULTS.md, "AVX2 time loops retuned").
//
// NEON (32 registers of 4 floats): the broadcast operand of an FMA cannot come from memory as on
// x86; each row's value of a k step sits in a register of its own (LD1R, or a scalar load for the
// by-element FMLA), and GCC issues all MR of them ahead of the FMAs. A tile therefore needs
// MR*NV accumulators + NV weight vectors + MR row values <= 32 (checked below; 8 x 12 tiles, the
// usual ARMv8 sgemm shape, spill accumulators to the stack inside the k loop with GCC 12). 5 x 16 (MR 5,
// NV 4) uses 29 registers: per k step 20 FMAs against 4 vector loads of B and 5 scalar loads of
// A, and 20 independent accumulator chains, more than the 16 in flight that 4 FMA pipes of
// latency 4 need (Neoverse V1/V2, Apple cores; N1 has 2 pipes). The backward loop's tiles (rows of
// dG times panels of W_hh columns) have the same structure and take the same shape; the forward
// tiles follow from forward_tile_rows (8 rows for SimpleRNN, 7 for GRU, 5 for LSTM).
#if defined(FASTRNN_ISA_AVX512)
constexpr int VREGS = 32, GEMM_MR = 8, GEMM_NV = 2, BWD_MR = 8, BWD_NV = 2;
#elif defined(FASTRNN_ISA_AVX2)
constexpr int VREGS = 16, GEMM_MR = 6, GEMM_NV = 2, BWD_MR = 4, BWD_NV = 3;
#elif defined(FASTRNN_ISA_NEON)
constexpr int VREGS = 32, GEMM_MR = 5, GEMM_NV = 4, BWD_MR = 5, BWD_NV = 4;
#else
constexpr int VREGS = 16, GEMM_MR = 4, GEMM_NV = 2, BWD_MR = 2, BWD_NV = 4;
#endif
static_assert(GEMM_MR * GEMM_NV + GEMM_NV + 1 <= VREGS, "GEMM tile exceeds the registers");
static_assert(BWD_MR * BWD_NV + BWD_NV + 1 <= VREGS, "backward tile exceeds the registers");
#if defined(FASTRNN_ISA_NEON)
static_assert(GEMM_MR * GEMM_NV + GEMM_NV + GEMM_MR <= VREGS, "NEON GEMM tile exceeds the registers");
static_assert(BWD_MR * BWD_NV + BWD_NV + BWD_MR <= VREGS, "NEON backward tile exceeds the registers");
#endif
constexpr int GEMM_NR = GEMM_NV * W;
// The GEMM's blocks KC, MC, NC come from the cache sizes at run time: cpu/blocking.h.
constexpr int BWD_NR = BWD_NV * W;

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Leading dimension for row buffers read by the time-loop tiles: rounded up to 16 floats plus 16
// more, so that consecutive rows never sit a multiple of 4 KiB apart (rows read together in the
// k-loop would otherwise compete for the same L1 sets).
static inline int64_t padded_ld(int64_t n) { return ceil_div(n, 16) * 16 + 16; }

// Calls f(std::integral_constant<int, m>) for a run-time m in [M, MMAX].
template <int M, int MMAX, class F>
static inline void with_rows(int m, F&& f) {
  if constexpr (M <= MMAX) {
    if (m == M) {
      f(std::integral_constant<int, M>{});
      return;
    }
    with_rows<M + 1, MMAX>(m, std::forward<F>(f));
  }
}

// The parts, in dependency order.
#include "cpu/blocking.h"
#include "cpu/gemm_pack.h"
#include "cpu/gemm.h"
#include "cpu/loop_split.h"
#include "cpu/cells/cell_math.h"
#include "cpu/forward_loop.h"
#include "cpu/backward_loop.h"
#include "cpu/xent.h"
#include "cpu/embedding.h"
#include "cpu/dropout.h"
#include "cpu/peak.h"
#include "cpu/optim_update.h"
#include "cpu/dense_ops.h"
#include "cpu/qgemm.h"
#include "cpu/bgemm.h"
#include "cpu/qforward_loop.h"


static void forward(const ForwardArgs& a) {
  switch (a.d.cell) {
    case Cell::RNN_TANH: forward_impl<Cell::RNN_TANH>(a); break;
    case Cell::RNN_RELU: forward_impl<Cell::RNN_RELU>(a); break;
    case Cell::LSTM: forward_impl<Cell::LSTM>(a); break;
    case Cell::GRU: forward_impl<Cell::GRU>(a); break;
  }
}

// W_hh [G*H, H] in the forward time loop's layout (pack_whh_forward, all panels), for callers that
// keep it across calls (ForwardArgs::w_hh_packed).
static size_t forward_whh_packed_floats(Cell cell, int64_t H) {
  return (size_t)(ceil_div(H, W) * H * gate_count(cell) * W);
}

// The layout forward_impl packs W_hh in for a call of B rows: 0, one pass of all G gates per panel,
// or 1, passes of forward_tile_vectors gates (AVX2 LSTM with B above the rows of a one-pass tile;
// forward_pass_vectors). A kept packing made for one batch size is refused by the binding for a
// call whose layout differs.
template <int G>
static int forward_whh_layout_g(int64_t B) { return forward_pass_vectors<G>(B) == G ? 0 : 1; }

static int forward_whh_layout(Cell cell, int64_t H, int64_t B) {
  switch (gate_count(cell)) {
    case 1: return forward_whh_layout_g<1>(B);
    case 3: return forward_whh_layout_g<3>(B);
    default: return forward_whh_layout_g<4>(B);
  }
}

template <int G>
static void forward_pack_whh_g(const float* w_hh, int64_t H, int layout, float* out) {
  pack_whh_forward<G>(w_hh, H, 0, ceil_div(H, W), out, layout == 0 ? G : forward_tile_vectors<G>());
}

static void forward_pack_whh(Cell cell, const float* w_hh, int64_t H, int layout, float* out) {
  switch (gate_count(cell)) {
    case 1: forward_pack_whh_g<1>(w_hh, H, layout, out); break;
    case 3: forward_pack_whh_g<3>(w_hh, H, layout, out); break;
    default: forward_pack_whh_g<4>(w_hh, H, layout, out); break;
  }
}

static void backward(const BackwardArgs& a) {
  switch (a.d.cell) {
    case Cell::RNN_TANH: backward_impl<Cell::RNN_TANH>(a); break;
    case Cell::RNN_RELU: backward_impl<Cell::RNN_RELU>(a); break;
    case Cell::LSTM: backward_impl<Cell::LSTM>(a); break;
    case Cell::GRU: backward_impl<Cell::GRU>(a); break;
  }
}

static void activation(int kind, const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i < n; i += W) {
    const int nv = (int)std::min<int64_t>(W, n - i);
    const V v = Simd::loadn(x + i, nv);
    Simd::storen(y + i, kind == 0 ? vsigmoid(v) : (kind == 1 ? vtanh(v) : vexp(v)), nv);
  }
}

static const KernelTable& table() {
  static const KernelTable t{FASTRNN_ISA_NAME, W, forward_ws, backward_ws, forward, backward, gemm, activation,
                             dropout, philox_blocks, scratch_bytes, release_scratch, fma_peak, optim_update, colsum,
                             qpath, QGEMM_NV, qpack_sizes, qpack_entry, qgemm_ws, qgemm_entry, qforward_ws,
                             qforward, bpath, bpack_sizes, bpack, bgemm_ws, bgemm_entry, bforward_ws, bforward,
                             xent, embedding_forward, embedding_backward, forward_whh_packed_floats,
                             forward_whh_layout, forward_pack_whh, gemm_blocking, gemm_transposes,
                             gemm_reads_a_in_place};
  return t;
}

}  // namespace FASTRNN_NS
}  // namespace fastrnn
