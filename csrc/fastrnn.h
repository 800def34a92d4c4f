// fastrnn.h — the C++ kernel interface.
//
// GENERAL NOTES (they hold for every kernel in csrc/):
//  * Sizes: T = time steps, B = batch, I = input features, H = hidden units, G = gates
//    (SimpleRNN 1, GRU 3, LSTM 4). All arrays float32, row-major, dense (no strides).
//  * Positions. A sequence array is [T, B, F] (time-major) or [B, T, F] (batch_first); viewed as a
//    matrix of T*B rows, row pos(t, b) = t*B + b or b*T + t. Every per-step array (outputs, saved
//    activations, gradients of the gates) uses the SAME row order as x, so that the big GEMMs
//    (input projection, dx, dW_ih, dW_hh) run directly on the caller's layout with no copies.
//  * Weights in PyTorch layouts: w_ih [G*H, I], w_hh [G*H, H]. Gate orders: LSTM i,f,g,o with one
//    bias b [4H]; GRU r,z,n with b_ih [3H] and b_hh [3H], n = tanh(a_n + r * (W_hn h + b_hn));
//    SimpleRNN h' = act(W_ih x + W_hh h + b).
//  * Masking: mask [B, T] (uint8, 1 = valid) or nullptr (all valid). At a masked step the row's
//    state is carried unchanged and its output row is 0. reverse processes t = T-1 .. 0.
//    Processing step s handles t = s (forward) or t = T-1-s (reverse).
//  * Truncated BPTT: bptt_steps = k > 0 zeroes the state gradient carried from processing step s
//    back to s-1 whenever s is a positive multiple of k (chunks trained one after another with the
//    state detached at their borders). k = 0 means full BPTT.
//  * Caller-owned memory: outputs, saved activations and the workspace are passed in; sizes come
//    from forward_workspace_floats / backward_workspace_floats. The kernels allocate nothing per
//    call except the GEMM's per-thread packing scratch, which grows once and is reused.
//  * Threads: each call runs its own OpenMP team of `threads` threads: the input projection GEMM,
//    then ONE parallel region for the whole time loop in which each thread owns either a fixed
//    slice of hidden units (all G gate columns of it; one barrier per step) or, when W_hh is not
//    too big and the batch has several blocks of 8 rows, whole row blocks (no barrier; see
//    loop_split in cpu/loop_split.h). Results are bit-identical for any thread count and
//    either split: each output element is computed by the same operations in the same order
//    whoever computes it; the bias gradients are summed per row block, then over the blocks in
//    block order.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/cell.h"  // Cell, gate_count, Dims (shared with the CUDA kernels)
#include "train_ops.h"    // OptimArgs: the fused optimizer step

namespace fastrnn {

struct ForwardArgs {
  Dims d;
  const float* x;      // [T*B, I] in position order
  const float* w_ih;   // [G*H, I]
  const float* w_hh;   // [G*H, H]
  const float* b_ih;   // [G*H]: the single bias for SimpleRNN/LSTM, b_ih for GRU
  const float* b_hh;   // [G*H]: GRU only, nullptr otherwise
  const float* h0;     // [B, H] or nullptr (zeros)
  const float* c0;     // [B, H] or nullptr (zeros); LSTM only
  float* y;            // [T*B, H] out
  float* h_n;          // [B, H] out
  float* c_n;          // [B, H] out, LSTM only
  // Saved for backward; all nullptr for inference.
  float* gates;        // [T*B, G*H]: activated gates (LSTM i,f,g,o; GRU r,z,n; SimpleRNN h')
  float* hprev;        // [T*B, H]: state h before the step (0 at masked positions)
  float* aux;          // [T*B, H]: LSTM c before the step; GRU W_hn h + b_hn; unused for SimpleRNN
  float* workspace;    // forward_workspace_floats(d, training, threads) floats
  int threads;
  // W_hh already in the time loop's layout (KernelTable::forward_pack_whh of the same table, cell,
  // H and forward_whh_layout for this call), or nullptr: the loop packs w_hh itself (into the
  // workspace) at every call.
  const float* w_hh_packed;
  // W_ih transposed, [I, G*H] row-major (the same values as w_ih), or nullptr. The x projection then
  // reads B's rows in place (a step call's few rows take the GEMM's unpacked path); same results.
  const float* w_ih_t;
};

struct BackwardArgs {
  Dims d;
  const float* x;      // [T*B, I]
  const float* w_ih;   // [G*H, I]
  const float* w_hh;   // [G*H, H]
  const float* gates;  // saved by the training forward
  const float* hprev;
  const float* aux;
  // d.hmask (recurrent dropout, [B, H] or nullptr) must be the forward's.
  const float* dy;     // [T*B, H] or nullptr
  const float* dh_n;   // [B, H] or nullptr
  const float* dc_n;   // [B, H] or nullptr (LSTM)
  int64_t bptt_steps;  // 0 = full BPTT
  float* dx;           // [T*B, I] out, or nullptr to skip
  float* dh0;          // [B, H] out
  float* dc0;          // [B, H] out (LSTM)
  float* dw_ih;        // [G*H, I] out (overwritten)
  float* dw_hh;        // [G*H, H] out
  float* db_ih;        // [G*H] out
  float* db_hh;        // [G*H] out (GRU)
  float* workspace;    // backward_workspace_floats(d, threads) floats
  int threads;
};

// The CPU GEMM: C = A * B + C (accumulate) or C = A * B + bias (bias: [N] added to every row, or
// nullptr); A: M x K with strides (rsa, csa), B: K x N with strides (rsb, csb), C: M x N row-major
// with leading dimension ldc. (The CUDA GEMM takes fastrnn_cuda::CudaGemmArgs.) Filled field by
// field: CpuGemmArgs g{}; g.M = ...
struct CpuGemmArgs {
  int64_t M, N, K;
  const float* A; int64_t rsa, csa;
  const float* B; int64_t rsb, csb;
  float* C; int64_t ldc;
  bool accumulate;
  int threads;
  const float* bias = nullptr;
  // Epilogue activation applied to the final C (after the bias or the accumulation): 0 none,
  // 1 relu, 2 tanh, 3 sigmoid (the kernels' vector tanh / sigmoid, see cpu/simd.h).
  int act = 0;
  // When set: colsum_b[j] += the sum over k (ascending) of op(B)[k][j], taken from B's packed
  // blocks (a Dense layer's bias gradient, the column sums of dZ = B in dW = X^T dZ).
  float* colsum_b = nullptr;
};

// int8 inference (cpu/qgemm.h, cpu/qforward_loop.h). Packed int8 weights of one matrix W [N, K]:
// panels of NV vectors of the ISA's vector width, 4 k per int32 lane (see qgemm.h).
struct QPacked {
  const int8_t* w;      // [P][K4][NV][W][4]
  const float* scale;   // [P][NV][W]: the weight scale of each packed column (0 for padding)
  const int32_t* comp;  // [P][NV][W]: 128 * the column's sum of int8 weights
  int64_t N, K, K4, P;
  int NV;
  int64_t Hg;           // gate stride of the gate-grouped layout (the cells' H), 0 for a plain matrix
};

// bf16 inference (cpu/bgemm.h). Packed bf16 weights of one matrix W [N, K]: panels as for int8,
// 2 k per 32-bit lane (the even k in the low half, the odd one in the high half; see bgemm.h).
struct BPacked {
  const uint32_t* w;    // [P][K2][NV][W]
  int64_t N, K, K2, P;
  int NV;
  int64_t Hg;           // as in QPacked
};

// The forward pass of a recurrent cell with low-precision weights (Packed: QPacked or BPacked).
template <class Packed>
struct LowpForwardArgs {
  Dims d;
  const float* x;    // [T*B, I] in position order
  Packed wih;        // W_ih [G*H, I], gate-grouped (NV = G, Hg = H)
  Packed whh;        // W_hh [G*H, H], gate-grouped
  const float* b_ih; // [G*H]
  const float* b_hh; // [G*H] (GRU) or nullptr
  const float* h0;   // [B, H] or nullptr
  const float* c0;   // [B, H] or nullptr (LSTM)
  float* y;          // [T*B, H]
  float* h_n;        // [B, H]
  float* c_n;        // [B, H] (LSTM) or nullptr
  float* workspace;  // qforward_workspace_floats / bforward_workspace_floats(d, threads) floats
  int threads;
};
using QForwardArgs = LowpForwardArgs<QPacked>;
using BForwardArgs = LowpForwardArgs<BPacked>;

// Fused softmax (or normalised probabilities) + cross-entropy over the rows of z [N, C]: the
// per-row loss (weighted, 0 at masked rows) and its gradient with respect to z. Targets are
// class ids (ids, [N]) or dense (soft) targets (y, [N, C]); exactly one is given. Ids must lie
// in [0, C) (the caller checks). See cpu/xent.h.
struct XentArgs {
  int64_t N, C;
  const float* z;
  const int64_t* ids;    // sparse targets or nullptr
  const float* y;        // dense targets or nullptr
  const uint8_t* mask;   // [N], nonzero = valid, or nullptr (all valid)
  const double* weight;  // [N] or nullptr (all 1)
  bool from_logits;
  float* grad;           // [N, C]
  double* loss;          // [N]
  int threads;
  double grad_scale = 1.0;  // multiplies the gradient (not the loss): 1 / the count for a mean
};

// Embedding gather out[n] = table[ids[n]] and the deterministic scatter-add grad[ids[n]] += dy[n]
// (rows n ascending for every entry, whatever the thread count). Ids in [0, V) (the caller
// checks). See cpu/embedding.h.
struct EmbeddingArgs {
  int64_t N, V, D;
  const int64_t* ids;
  const float* table;  // forward: [V, D]
  float* out;          // forward: [N, D]
  const float* dy;     // backward: [N, D]
  float* grad;         // backward: [V, D], accumulated into
  int threads;
};

// Dropout (cpu/dropout.h): m[e] = scale if the Philox word of element e under (key, call, stream)
// is >= threshold, else 0 (element 64 g + 16 w + l: word w of block 16 g + l); y = x * m. The same mask for any thread count and instruction set.
struct DropoutArgs {
  const float* x;      // [n], or nullptr when y is nullptr
  float* y;            // [n] out (may be x), or nullptr
  float* mask;         // [n] out (0 or scale), or nullptr
  int64_t n;
  uint64_t key;        // the stream's key (words lo, hi)
  uint32_t call, stream;
  uint32_t threshold;  // floor(rate * 2^32): a word below it drops its element
  float scale;         // 1 / (1 - rate) as the caller rounds it
  int threads;
};

// The CPU GEMM's blocking (cpu/blocking.h): register tile mr x nr, and the blocks kc (depth),
// mc (rows of A), nc (columns of B) derived from the caches of gemm_caches(); mc_l2: the rows of
// A per block when all of B's columns fit one block (the A block is then used once, from the L2).
struct GemmBlocking {
  int64_t kc, mc, nc, mc_l2;
  int mr, nr;
  int64_t rowsplit_max_bytes;  // the largest packed W_hh the time loops split by rows (cpu/loop_split.h)
};

// One instruction set's kernels.
struct KernelTable {
  const char* name;
  int vector_width;
  size_t (*forward_workspace_floats)(const Dims& d, bool training, int threads);
  size_t (*backward_workspace_floats)(const Dims& d, int threads);
  void (*forward)(const ForwardArgs& a);
  void (*backward)(const BackwardArgs& a);
  void (*gemm)(const CpuGemmArgs& g);
  void (*activation)(int kind, const float* x, float* y, int64_t n);  // 0 sigmoid, 1 tanh, 2 exp
  void (*dropout)(const DropoutArgs& a);
  void (*philox)(const uint32_t* ctr, uint32_t* out, int64_t n, uint64_t key, int rounds);
  size_t (*scratch_bytes)();              // the calling thread's GEMM packing scratch
  void (*release_scratch)(int threads);   // frees it on the calling thread and a team's workers
  double (*fma_peak)(int64_t iters, int threads);  // cpu/peak.h: measured FMA flop/s
  void (*optim_update)(const OptimArgs& a);  // cpu/optim_update.h
  // out[j] = (accumulate ? out[j] : 0) + sum over rows i ascending of X[i*ld + j]; X: M x N
  void (*colsum)(const float* X, int64_t M, int64_t N, int64_t ld, float* out, bool accumulate, int threads);
  // int8 inference
  const char* (*qpath)();  // the integer dot product in use: "avx512-vnni", "avx512bw", "avx2", ...
  int qgemm_nv;            // NV of a plain packed matrix
  void (*qpack_sizes)(int64_t N, int64_t K, int NV, int64_t Hg, int64_t* wbytes, int64_t* cols);
  void (*qpack)(const int8_t* wq, const float* wscale, int64_t N, int64_t K, int NV, int64_t Hg, int8_t* out,
                float* scale_out, int32_t* comp_out);
  size_t (*qgemm_workspace_floats)(int64_t M, const QPacked& pw);
  void (*qgemm)(const float* A, int64_t M, const QPacked& pw, const float* bias, float* C, float* workspace,
                int threads);
  size_t (*qforward_workspace_floats)(const Dims& d, int threads);
  void (*qforward)(const QForwardArgs& a);
  // bf16 inference (plain matrices use qgemm_nv vectors per panel too)
  const char* (*bpath)();  // the bf16 product in use: "avx512-bf16" (VDPBF16PS), "avx512", "avx2", ...
  void (*bpack_sizes)(int64_t N, int64_t K, int NV, int64_t Hg, int64_t* words);
  void (*bpack)(const uint16_t* wb, int64_t N, int64_t K, int NV, int64_t Hg, uint32_t* out);
  size_t (*bgemm_workspace_floats)(int64_t M, const BPacked& pw);
  void (*bgemm)(const float* A, int64_t M, const BPacked& pw, const float* bias, float* C, float* workspace,
                int threads);
  size_t (*bforward_workspace_floats)(const Dims& d, int threads);
  void (*bforward)(const BForwardArgs& a);
  void (*xent)(const XentArgs& a);
  void (*embedding_forward)(const EmbeddingArgs& a);
  void (*embedding_backward)(const EmbeddingArgs& a);
  // The forward time loop's packed W_hh (ForwardArgs::w_hh_packed): its floats, the layout the loop
  // reads for a call of B rows (an id; calls whose loops read different layouts need different
  // packings), and the packing in a layout.
  size_t (*forward_whh_packed_floats)(Cell cell, int64_t H);
  int (*forward_whh_layout)(Cell cell, int64_t H, int64_t B);
  void (*forward_pack_whh)(Cell cell, const float* w_hh, int64_t H, int layout, float* out);
  GemmBlocking (*gemm_blocking)();  // cpu/blocking.h: the GEMM's blocks for the caches in use now
  bool (*gemm_transposes)(const CpuGemmArgs& g);  // cpu/gemm.h: whether gemm(g) computes C^T
  bool (*gemm_reads_a_in_place)(int64_t N, int64_t K);  // cpu/gemm.h: a row-major A read unpacked
};

const KernelTable& kernels_scalar();
#if defined(FASTRNN_BUILD_AVX2)
const KernelTable& kernels_avx2();
#endif
#if defined(FASTRNN_BUILD_AVX512)
const KernelTable& kernels_avx512();
#endif
#if defined(FASTRNN_BUILD_NEON)
const KernelTable& kernels_neon();
#endif

// isa.cpp: the table in use (CPUID once at start on x86; NEON on aarch64; FASTRNN_ISA=
// scalar|avx2|avx512|neon overrides).
const KernelTable& active_kernels();
// The GEMM packing scratch of every instruction-set path this CPU runs: bytes held by the calling
// thread, and freeing it there and on the workers of a `threads`-thread team.
size_t scratch_bytes_all();
void release_scratch_all(int threads);
const char* active_isa();
// The int8 kernels use AVX-512 VNNI where the CPU has it unless this is false (tests of the
// AVX-512 BW product on a VNNI machine).
bool qvnni_allowed();
void set_qvnni_allowed(bool allowed);
// The bf16 kernels use AVX512-BF16 (VDPBF16PS) where the CPU has it unless this is false (tests
// and timings of the widening fallback on a BF16 machine).
bool bf16dot_allowed();
void set_bf16dot_allowed(bool allowed);
void set_isa(const char* name);   // throws std::invalid_argument for an unknown or unsupported name
int isa_supported(const char* name);  // by the build and the CPU

// cpu_info.cpp: data-cache sizes in bytes (0: unknown) and how many logical CPUs share each (0:
// unknown), as the operating system reports them for CPU 0.
struct CacheInfo {
  int64_t l1d, l2, l3;
  int l1d_shared_by, l2_shared_by, l3_shared_by;
  const char* source;  // "sysfs", "sysconf", "sysctl" or "unknown"
};
CacheInfo cache_info();

// The caches the CPU GEMM blocks for (cpu/blocking.h): l1d and l2 of one core, l3 and the number
// of cores sharing it (0: unknown). They are cache_info()'s (cores = logical CPUs sharing the L3
// over those sharing the L1d), unless FASTRNN_CACHE_SIZES="l1d,l2,l3[,cores]" (bytes, read once
// per process) or set_gemm_caches() overrides them. `source` says which: "sysfs" etc. as
// cache_info(), "FASTRNN_CACHE_SIZES" or "set_gemm_caches"; `env_error` is non-empty when
// FASTRNN_CACHE_SIZES was set but not understood (then it is ignored).
struct GemmCaches {
  int64_t l1d, l2, l3;
  int l3_cores;
  const char* source;
  const char* env_error;
};
GemmCaches gemm_caches();
// Blocks for these sizes from now on (l3_cores 0: the L3 is one core's); all sizes 0: the machine's
// again (or FASTRNN_CACHE_SIZES's). Throws std::invalid_argument for negative sizes or cores.
void set_gemm_caches(int64_t l1d, int64_t l2, int64_t l3, int l3_cores);

// threads.cpp
int get_num_threads();
void set_num_threads(int n);

}  // namespace fastrnn
