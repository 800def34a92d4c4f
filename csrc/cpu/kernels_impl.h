// kernels_impl.h — the CPU kernels, written once against `Simd` (simd.h) and compiled once per
// instruction set by kernels_scalar.cpp / kernels_avx2.cpp / kernels_avx512.cpp, each of which
// defines FASTRNN_NS (the namespace) and, for the vector paths, FASTRNN_ISA_AVX2/AVX512.
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
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

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
// GEMM microkernel GEMM_MR x (GEMM_NV*W); forward-loop tiles MR rows x G gate vectors (CellTraits);
// backward-loop tiles are BWD_MR x (BWD_NV*W).
// Every tile keeps MR*NV accumulators + NV weight vectors + 1 broadcast in registers: at most 32
// (AVX-512) or 16 (AVX2, and SSE registers for the scalar path) of them.
#if defined(FASTRNN_ISA_AVX512)
constexpr int VREGS = 32, GEMM_MR = 8, GEMM_NV = 2, BWD_MR = 8, BWD_NV = 2;
#elif defined(FASTRNN_ISA_AVX2)
constexpr int VREGS = 16, GEMM_MR = 6, GEMM_NV = 2, BWD_MR = 6, BWD_NV = 2;
#else
constexpr int VREGS = 16, GEMM_MR = 4, GEMM_NV = 2, BWD_MR = 2, BWD_NV = 4;
#endif
static_assert(GEMM_MR * GEMM_NV + GEMM_NV + 1 <= VREGS, "GEMM tile exceeds the registers");
static_assert(BWD_MR * BWD_NV + BWD_NV + 1 <= VREGS, "backward tile exceeds the registers");
constexpr int GEMM_NR = GEMM_NV * W;
constexpr int64_t GEMM_KC = 512;
constexpr int64_t GEMM_MC = 120;   // a multiple of every GEMM_MR above
constexpr int64_t GEMM_NC = 2048;  // a multiple of every GEMM_NR above
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

// Per-thread packing scratch for the GEMM: grows once, reused by every later call on the thread.
thread_local std::vector<float> g_scratch[2];

static float* scratch(int which, size_t n) {
  if (g_scratch[which].size() < n) g_scratch[which].resize(n);
  return g_scratch[which].data();
}

// The calling thread's packing scratch in bytes, and freeing it on the calling thread and on the
// workers of a `threads`-thread team (libgomp reuses its worker threads from team to team).
static size_t scratch_bytes() { return sizeof(float) * (g_scratch[0].capacity() + g_scratch[1].capacity()); }

static void release_scratch(int threads) {
  auto release = [] {
    for (auto& b : g_scratch) std::vector<float>().swap(b);
  };
  release();
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    release();
  }
}

// =============================================================================================
// GEMM: C (+)= A B with general strides, BLIS-style packing, per-thread N or M split.
// =============================================================================================

#if defined(FASTRNN_ISA_AVX512)
// dst[k][i] = rows[i][k] for 8 rows and 16 values of k: an 8x16 -> 16x8 transpose in registers.
static inline void transpose_8x16(const float* A, int64_t rsa, float* dst) {
  __m512 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_ps(A + i * rsa);
  for (int i = 0; i < 8; i += 2) {  // per 128-bit lane l: (r_i[4l], r_i+1[4l], r_i[4l+1], r_i+1[4l+1]) ...
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {  // u[h+j], lane l: rows h..h+3 at k = 4l + j
    u[h + 0] = _mm512_shuffle_ps(t[h], t[h + 2], 0x44);
    u[h + 1] = _mm512_shuffle_ps(t[h], t[h + 2], 0xEE);
    u[h + 2] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    u[h + 3] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int half = 0; half < 2; ++half) {  // lanes {0,1} (k < 8), then lanes {2,3}
    for (int j = 0; j < 2; ++j) {         // the pairs k = 4l + 2j, 4l + 2j + 1
      const __m512 a = half ? _mm512_shuffle_f32x4(u[2 * j], u[4 + 2 * j], 0xEE)
                            : _mm512_shuffle_f32x4(u[2 * j], u[4 + 2 * j], 0x44);
      const __m512 b = half ? _mm512_shuffle_f32x4(u[2 * j + 1], u[5 + 2 * j], 0xEE)
                            : _mm512_shuffle_f32x4(u[2 * j + 1], u[5 + 2 * j], 0x44);
      const int k0 = 8 * half + 2 * j;
      _mm512_storeu_ps(dst + k0 * 8, _mm512_shuffle_f32x4(a, b, 0x88));        // k0, k0+1
      _mm512_storeu_ps(dst + (k0 + 4) * 8, _mm512_shuffle_f32x4(a, b, 0xDD));  // k0+4, k0+5
    }
  }
}
#endif

// dst[k * ldd + i] = src[i * lds + k] for i, k < W: one W x W block transposed in registers
// (16 x 16 on AVX-512, 8 x 8 on AVX2). Serves the packing of operands stored the other way round
// (W_hh for the forward tiles, W_ih^T for the input projection), which was a scalar gather.
static inline void transpose_w(const float* src, int64_t lds, float* dst, int64_t ldd) {
#if defined(FASTRNN_ISA_AVX512)
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {  // per 128-bit lane l: (r_i[4l], r_i+1[4l], r_i[4l+1], r_i+1[4l+1]) ...
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 16; h += 4) {  // r[h+j], lane l: rows h..h+3 at k = 4l + j
    const __m512d a = _mm512_castps_pd(t[h]), b = _mm512_castps_pd(t[h + 1]);
    const __m512d c = _mm512_castps_pd(t[h + 2]), e = _mm512_castps_pd(t[h + 3]);
    r[h + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[h + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    r[h + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  for (int h = 0; h < 16; h += 8)  // t[h+j] lanes: rows h..h+3 at k = j, 8+j, then h+4..h+7 at k = j, 8+j
    for (int j = 0; j < 4; ++j) {  // (t[h+4+j]: the same rows at k = 4+j, 12+j)
      t[h + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0x88);
      t[h + 4 + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {  // rows 0..15 at k = j (lanes from t[j], t[8+j]) and at k = 8+j
    _mm512_storeu_ps(dst + j * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
    _mm512_storeu_ps(dst + (8 + j) * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD));
  }
#elif defined(FASTRNN_ISA_AVX2)
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    r[h + 0] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ldd, _mm256_permute2f128_ps(r[j], r[4 + j], 0x20));
    _mm256_storeu_ps(dst + (4 + j) * ldd, _mm256_permute2f128_ps(r[j], r[4 + j], 0x31));
  }
#else
  for (int i = 0; i < W; ++i)
    for (int k = 0; k < W; ++k) dst[k * ldd + i] = src[i * lds + k];
#endif
}

// A block (mc x kc) -> GEMM_MR-row panels, each stored k-major: Ap[panel][k][i]; pads with zeros.
static void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rsa, int64_t csa, float* Ap) {
  if (rsa == 1 && csa != 1) {
    // Column k of A is contiguous (A = X^T of a row-major X, as in the weight gradients): walk k
    // and copy the mc values of each column into every panel. Columns lie csa floats apart, often
    // a page or more, where the hardware prefetchers stop: fetch the column PF_K ahead by hand.
    constexpr int64_t PF_K = 8;
    const int64_t np = ceil_div(mc, GEMM_MR);
    for (int64_t k = 0; k < kc; ++k) {
      if (k + PF_K < kc) {
        const char* pf = reinterpret_cast<const char*>(A + (k + PF_K) * csa);
        for (int64_t b = 0; b < mc * (int64_t)sizeof(float); b += 64) __builtin_prefetch(pf + b, 0, 3);
        __builtin_prefetch(pf + mc * (int64_t)sizeof(float) - 1, 0, 3);
      }
      const float* src = A + k * csa;
      for (int64_t p = 0; p < np; ++p) {
        const int64_t i0 = p * GEMM_MR;
        const int m = (int)std::min<int64_t>(GEMM_MR, mc - i0);
        float* d = Ap + i0 * kc + k * GEMM_MR;
        for (int c = 0; c < GEMM_MR; c += W) {
          const int nv = std::min(W, GEMM_MR - c), nl = std::min(nv, m - c);
          Simd::storen(d + c, nl > 0 ? Simd::loadn(src + i0 + c, nl) : Simd::zero(), nv);
        }
      }
    }
    return;
  }
  for (int64_t i0 = 0; i0 < mc; i0 += GEMM_MR) {
    const int m = (int)std::min<int64_t>(GEMM_MR, mc - i0);
    float* dst = Ap + i0 * kc;
#if defined(FASTRNN_ISA_AVX512)
    static_assert(GEMM_MR == 8, "transpose_8x16 packs 8-row panels");
    if (csa == 1 && m == GEMM_MR) {
      const float* src = A + i0 * rsa;
      int64_t k = 0;
      for (; k + 16 <= kc; k += 16) transpose_8x16(src + k, rsa, dst + k * GEMM_MR);
      for (; k < kc; ++k)
        for (int i = 0; i < GEMM_MR; ++i) dst[k * GEMM_MR + i] = src[i * rsa + k];
      continue;
    }
#endif
    if (csa == 1) {
      for (int i = 0; i < m; ++i) {
        const float* src = A + (i0 + i) * rsa;
        for (int64_t k = 0; k < kc; ++k) dst[k * GEMM_MR + i] = src[k];
      }
      for (int i = m; i < GEMM_MR; ++i)
        for (int64_t k = 0; k < kc; ++k) dst[k * GEMM_MR + i] = 0.0f;
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A + i0 * rsa + k * csa;
        for (int i = 0; i < GEMM_MR; ++i) dst[k * GEMM_MR + i] = i < m ? src[i * rsa] : 0.0f;
      }
    }
  }
}

// Width of the packed B panel holding n <= GEMM_NR columns: a last panel of at most W columns is
// packed (and multiplied) one vector wide, so that a narrow N (say 100 = 3*32 + 4) does not pay
// for a whole GEMM_NR-wide panel of zeros.
static inline int panel_width(int n) { return (GEMM_NV > 1 && n <= W) ? W : GEMM_NR; }

// B block (kc x nc) -> column panels (GEMM_NR wide, the last one maybe W), each stored k-major:
// Bp[panel][k][j]; pads with zeros.
static void pack_b(int64_t kc, int64_t nc, const float* B, int64_t rsb, int64_t csb, float* Bp) {
  for (int64_t j0 = 0; j0 < nc; j0 += GEMM_NR) {
    const int n = (int)std::min<int64_t>(GEMM_NR, nc - j0), nr = panel_width(n);
    float* dst = Bp + j0 * kc;
    if (csb == 1) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = B + k * rsb + j0;
        float* d = dst + k * nr;
        for (int j = 0; j < n; ++j) d[j] = src[j];
        for (int j = n; j < nr; ++j) d[j] = 0.0f;
      }
    } else {
      int64_t k0 = 0;
      if (rsb == 1 && n == nr)  // B's columns are contiguous: whole W x W blocks transposed in registers
        for (; k0 + W <= kc; k0 += W)
          for (int v = 0; v < nr; v += W) transpose_w(B + (j0 + v) * csb + k0, csb, dst + k0 * nr + v, nr);
      // the rest (all of it for other strides or a partial panel): k outer, contiguous writes; the
      // n source rows stay in L1 across 16 values of k
      for (int64_t k = k0; k < kc; ++k) {
        const float* src = B + k * rsb + j0 * csb;
        float* d = dst + k * nr;
        for (int j = 0; j < n; ++j) d[j] = src[j * csb];
        for (int j = n; j < nr; ++j) d[j] = 0.0f;
      }
    }
  }
}

// acc[MR][NV] = sum_k Ap[k][i] * Bp[k][v*W ..]
template <int MR, int NV>
static inline void micro_packed(int64_t kc, const float* __restrict Ap, const float* __restrict Bp,
                                V (&acc)[MR][NV]) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = Simd::zero();
  for (int64_t k = 0; k < kc; ++k) {
    V b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = Simd::load(Bp + k * (NV * W) + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V a = Simd::set1(Ap[k * MR + i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = Simd::fmadd(a, b[v], acc[i][v]);
    }
  }
}

// C[m x n] = acc + C (accumulate) or acc + bias (bias may be nullptr), for the valid m <= MR rows
// and n <= NV*W columns.
template <int MR, int NV>
static inline void store_tile(V (&acc)[MR][NV], float* C, int64_t ldc, int m, int n, bool accumulate,
                              const float* bias) {
  if (m == MR && n == NV * W) {
    V add[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) add[v] = (!accumulate && bias) ? Simd::load(bias + v * W) : Simd::zero();
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        float* p = C + i * ldc + v * W;
        Simd::store(p, Simd::add(accumulate ? Simd::load(p) : add[v], acc[i][v]));
      }
    return;
  }
  alignas(64) float tmp[MR * NV * W];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) Simd::store(tmp + i * NV * W + v * W, acc[i][v]);
  for (int i = 0; i < m; ++i) {
    float* p = C + i * ldc;
    const float* s = tmp + i * NV * W;
    if (accumulate)
      for (int j = 0; j < n; ++j) p[j] += s[j];
    else if (bias)
      for (int j = 0; j < n; ++j) p[j] = bias[j] + s[j];
    else
      for (int j = 0; j < n; ++j) p[j] = s[j];
  }
}

static void gemm_serial(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsa, int64_t csa,
                        const float* B, int64_t rsb, int64_t csb, float* C, int64_t ldc, bool accumulate,
                        const float* bias) {
  float* Ap = scratch(0, (size_t)(GEMM_MC * GEMM_KC));
  float* Bp = scratch(1, (size_t)(GEMM_KC * (GEMM_NC + GEMM_NR)));
  for (int64_t jc = 0; jc < N; jc += GEMM_NC) {
    const int64_t nc = std::min(GEMM_NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += GEMM_KC) {
      const int64_t kc = std::min(GEMM_KC, K - pc);
      const bool acc_c = accumulate || pc > 0;
      pack_b(kc, nc, B + pc * rsb + jc * csb, rsb, csb, Bp);
      for (int64_t ic = 0; ic < M; ic += GEMM_MC) {
        const int64_t mc = std::min(GEMM_MC, M - ic);
        pack_a(mc, kc, A + ic * rsa + pc * csa, rsa, csa, Ap);
        for (int64_t ir = 0; ir < mc; ir += GEMM_MR) {
          const int m = (int)std::min<int64_t>(GEMM_MR, mc - ir);
          for (int64_t jr = 0; jr < nc; jr += GEMM_NR) {
            const int n = (int)std::min<int64_t>(GEMM_NR, nc - jr);
            if (acc_c) {  // C is read back at the store: fetch it while the k-loop runs
              float* c0 = C + (ic + ir) * ldc + jc + jr;
              for (int i = 0; i < m; ++i) {
                __builtin_prefetch(c0 + i * ldc, 1);
                __builtin_prefetch(c0 + i * ldc + n - 1, 1);
              }
            }
            float* ct = C + (ic + ir) * ldc + jc + jr;
            const float* bt = bias ? bias + jc + jr : nullptr;
            if (panel_width(n) == GEMM_NR) {
              V acc[GEMM_MR][GEMM_NV];
              micro_packed<GEMM_MR, GEMM_NV>(kc, Ap + ir * kc, Bp + jr * kc, acc);
              store_tile<GEMM_MR, GEMM_NV>(acc, ct, ldc, m, n, acc_c, bt);
            } else {
              V acc[GEMM_MR][1];
              micro_packed<GEMM_MR, 1>(kc, Ap + ir * kc, Bp + jr * kc, acc);
              store_tile<GEMM_MR, 1>(acc, ct, ldc, m, n, acc_c, bt);
            }
          }
        }
      }
    }
  }
}

// C = A B (+ C or + bias) for N <= 4 without packing: dot products when A's rows are contiguous;
// when A's columns are, one sweep down A per block of SMALL_N_MB rows of C, scaling each column
// into N accumulator rows (at most 4 x SMALL_N_MB floats, in L1). Summation order fixed (k
// ascending per element).
static constexpr int64_t SMALL_N = 4;
static constexpr int64_t SMALL_N_MB = 1024;

static void gemm_small_n(const GemmArgs& g) {
  const int64_t M = g.M, N = g.N, K = g.K;
  auto init = [&](int64_t i, int64_t n) { return g.accumulate ? g.C[i * g.ldc + n] : (g.bias ? g.bias[n] : 0.0f); };
  if (g.csa == 1) {
    float* bt = scratch(1, (size_t)(N * K));  // op(B) transposed: bt[n][k]
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) bt[n * K + k] = g.B[k * g.rsb + n * g.csb];
    for (int64_t i = 0; i < M; ++i) {
      const float* a = g.A + i * g.rsa;
      for (int64_t n = 0; n < N; ++n) {
        V acc = Simd::zero();
        for (int64_t k = 0; k < K; k += W) {
          const int nv = (int)std::min<int64_t>(W, K - k);
          acc = Simd::fmadd(Simd::loadn(a + k, nv), Simd::loadn(bt + n * K + k, nv), acc);
        }
        g.C[i * g.ldc + n] = init(i, n) + Simd::hsum(acc);
      }
    }
  } else {  // g.rsa == 1: column k of A is contiguous
    const int64_t ldacc = ceil_div(std::min(M, SMALL_N_MB), W) * W;
    float* acc = scratch(1, (size_t)(N * ldacc));
    for (int64_t m0 = 0; m0 < M; m0 += SMALL_N_MB) {
      const int64_t mb = std::min(SMALL_N_MB, M - m0);
      std::memset(acc, 0, sizeof(float) * (size_t)(N * ldacc));
      for (int64_t k = 0; k < K; ++k) {
        const float* a = g.A + k * g.csa + m0;
        for (int64_t n = 0; n < N; ++n) {
          const V bk = Simd::set1(g.B[k * g.rsb + n * g.csb]);
          float* an = acc + n * ldacc;
          int64_t i0 = 0;
          for (; i0 + W <= mb; i0 += W) Simd::store(an + i0, Simd::fmadd(Simd::load(a + i0), bk, Simd::load(an + i0)));
          if (i0 < mb) Simd::store(an + i0, Simd::fmadd(Simd::loadn(a + i0, (int)(mb - i0)), bk, Simd::load(an + i0)));
        }
      }
      for (int64_t i = 0; i < mb; ++i)
        for (int64_t n = 0; n < N; ++n) g.C[(m0 + i) * g.ldc + n] = init(m0 + i, n) + acc[n * ldacc + i];
    }
  }
}

static void gemm(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K > 0 && g.N <= SMALL_N && (g.csa == 1 || g.rsa == 1)) {
    gemm_small_n(g);
    return;
  }
  if (g.K <= 0) {
    if (!g.accumulate)
      for (int64_t i = 0; i < g.M; ++i) {
        if (g.bias)
          std::memcpy(g.C + i * g.ldc, g.bias, sizeof(float) * (size_t)g.N);
        else
          std::memset(g.C + i * g.ldc, 0, sizeof(float) * (size_t)g.N);
      }
    return;
  }
  int nt = std::max(1, g.threads);
  if ((double)g.M * (double)g.N * (double)g.K < 5.0e5) nt = 1;  // not worth starting a team
  const int64_t pn = ceil_div(g.N, GEMM_NR), pm = ceil_div(g.M, GEMM_MR);
  // Split the larger of M and N: each thread packs all of the operand along the dimension that is
  // not split, so splitting N costs nt*M*K packing and splitting M costs nt*K*N.
  const bool split_n = g.N > g.M ? pn >= nt : pm < nt;
  nt = (int)std::min<int64_t>(nt, split_n ? pn : pm);
  auto part = [&](int tid) {
    if (split_n) {
      const int64_t j0 = pn * tid / nt * GEMM_NR, j1 = std::min(g.N, pn * (tid + 1) / nt * GEMM_NR);
      if (j1 > j0)
        gemm_serial(g.M, j1 - j0, g.K, g.A, g.rsa, g.csa, g.B + j0 * g.csb, g.rsb, g.csb, g.C + j0, g.ldc,
                    g.accumulate, g.bias ? g.bias + j0 : nullptr);
    } else {
      const int64_t i0 = pm * tid / nt * GEMM_MR, i1 = std::min(g.M, pm * (tid + 1) / nt * GEMM_MR);
      if (i1 > i0)
        gemm_serial(i1 - i0, g.N, g.K, g.A + i0 * g.rsa, g.rsa, g.csa, g.B, g.rsb, g.csb, g.C + i0 * g.ldc,
                    g.ldc, g.accumulate, g.bias);
    }
  };
  if (nt == 1) {
    part(0);
    return;
  }
#pragma omp parallel num_threads(nt)
  {  // the runtime may give fewer threads than asked for (OMP_DYNAMIC, thread limits, nesting)
    for (int w = omp_get_thread_num(); w < nt; w += omp_get_num_threads()) part(w);
  }
}

// =============================================================================================
// Recurrent loops
// =============================================================================================

// Thread tid of nt owns items [p0, p1) of P (unit panels, column panels or row blocks).
static inline void panel_range(int64_t P, int tid, int nt, int64_t& p0, int64_t& p1) {
  p0 = P * tid / nt;
  p1 = P * (tid + 1) / nt;
}

// Threads worth using for a time loop whose per-step work is `flops` over `panels` panels.
static int loop_threads(int requested, int64_t panels, double flops_per_step) {
  int nt = (int)std::min<int64_t>(std::max(1, requested), panels);
  if (flops_per_step < 1.0e6) nt = 1;  // under ~10 us of work per step a barrier per step does not pay
  return std::max(1, nt);
}

// How a time loop is split over threads. Two ways:
//  * by hidden units (the default): each thread owns a slice of the hidden units and keeps its
//    slice of W_hh in its own L2; every step needs all of h from every thread, so one barrier
//    per step;
//  * by batch rows: each thread runs whole sequences (blocks of ROW_BLOCK rows) through every
//    step on its own, with no barrier at all, but reads all of W_hh every step. Chosen when
//    more than one thread is asked for, the loop has >= 1 MFLOP in all, the packed W_hh is at
//    most ROWSPLIT_MAX_BYTES, and the row blocks give as many threads as the unit split would,
//    with no thread more than 15 % above the average number of rows.
//    Both splits stream W_hh once per tile of rows per step, so the cache traffic is about the
//    same; the row split saves the barriers and the exchange of h between cores (measured on a
//    2-core Zen 4 with 32 MiB L3: LSTM 1.36x on (T,B,I,H) = (50,32,1,20), 1.13x on
//    (256,32,100,128), 1.05x on (100,64,256,256) and (50,64,512,1024), forward).
// Results do not depend on the split or on the thread count: every output row is computed by the
// same arithmetic in the same order whoever computes it, and the bias gradients are summed per
// row block (rows ascending, steps descending) and then over the blocks in a fixed order.
constexpr int64_t ROW_BLOCK = 8;

// Above this the row split's extra streams of W_hh (one per thread) would come from DRAM rather
// than the L3 on most current x86 parts (16 MiB = an LSTM with H = 1024; the machine measured
// has 32 MiB of L3 per core complex).
constexpr double ROWSPLIT_MAX_BYTES = 16.0 * 1024.0 * 1024.0;

struct LoopSplit {
  int threads;
  bool by_rows;
};

static LoopSplit loop_split(int requested, int64_t panels, int64_t B, double weight_bytes, double flops_per_step,
                            int64_t T) {
  const LoopSplit by_units{loop_threads(requested, panels, flops_per_step), false};
  const int64_t blocks = ceil_div(B, ROW_BLOCK);
  const int nt = (int)std::min<int64_t>(std::max(1, requested), blocks);
  if (nt < 2 || nt < by_units.threads || weight_bytes > ROWSPLIT_MAX_BYTES || flops_per_step * (double)T < 1.0e6)
    return by_units;
  const double most_rows = (double)std::min(B, ceil_div(blocks, nt) * ROW_BLOCK);  // rows of the busiest thread
  if (most_rows > 1.15 * (double)B / nt) return by_units;
  return {nt, true};
}

// The rows [b_lo, b_hi) and unit panels [p0, p1) (of P) that thread tid of team computes.
static void loop_part(bool by_rows, int64_t P, int64_t B, int tid, int team, int64_t& p0, int64_t& p1,
                      int64_t& b_lo, int64_t& b_hi) {
  if (by_rows) {
    int64_t k0, k1;
    panel_range(ceil_div(B, ROW_BLOCK), tid, team, k0, k1);
    p0 = 0, p1 = P, b_lo = std::min(B, k0 * ROW_BLOCK), b_hi = std::min(B, k1 * ROW_BLOCK);
  } else {
    panel_range(P, tid, team, p0, p1);
    b_lo = 0, b_hi = B;
  }
}

// Packs W_hh rows for the forward tiles: panel p holds, for every k < H, the G gate vectors of
// hidden units [p*W, p*W+W): Wp[p][k][g][w] = w_hh[g*H + p*W + w][k] (0 past H).
template <int G>
static void pack_whh_forward(const float* w_hh, int64_t H, int64_t p0, int64_t p1, float* Wp) {
  for (int64_t p = p0; p < p1; ++p) {
    float* dst = Wp + p * H * G * W;
    const int64_t j0 = p * W;
    const int nv = (int)std::min<int64_t>(W, H - j0);
    const int64_t k0 = nv == W ? H / W * W : 0;  // whole W x W blocks: transposed in registers, one
    for (int g = 0; g < G; ++g)                  // gate at a time (W source rows streamed at once)
      for (int64_t k = 0; k < k0; k += W) transpose_w(w_hh + (g * H + j0) * H + k, H, dst + k * G * W + g * W, G * W);
    const float* src[G * W];  // the G*W source rows of this panel (nullptr: zero padding)
    for (int g = 0; g < G; ++g)
      for (int w = 0; w < W; ++w) src[g * W + w] = w < nv ? w_hh + (g * H + j0 + w) * H : nullptr;
    for (int64_t k = k0; k < H; ++k)  // the rest: contiguous writes; the source rows stay in L1 across k
      for (int r = 0; r < G * W; ++r) dst[k * G * W + r] = src[r] ? src[r][k] : 0.0f;
  }
}

// Packs columns [q*BWD_NR, ...) of w_hh ([GH, H], read as K=GH x N=H) for the backward product:
// Wb[q][k][j] = w_hh[k][q*BWD_NR + j] (0 past H).
static void pack_whh_backward(const float* w_hh, int64_t GH, int64_t H, int64_t q0, int64_t q1, float* Wb) {
  for (int64_t q = q0; q < q1; ++q) {
    float* dst = Wb + q * GH * BWD_NR;
    const int64_t j0 = q * BWD_NR;
    const int n = (int)std::min<int64_t>(BWD_NR, H - j0);
    for (int64_t k = 0; k < GH; ++k) {
      const float* src = w_hh + k * H + j0;
      float* d = dst + k * BWD_NR;
      for (int v = 0; v < BWD_NV; ++v) {
        const int nv = (int)std::max(0, std::min(W, n - v * W));
        Simd::store(d + v * W, Simd::loadn(src + v * W, nv));  // zeros past H
      }
    }
  }
}

// out[m*NV + v] = sum_k rows[m][k] * Bp[k][v*W ..], A read in place through row pointers.
// Not inlined on purpose: on its own the M*NV accumulators get registers of their own, while
// inlined into the time loop they compete with the hoisted constants of the pointwise pass.
template <int M, int NV>
__attribute__((noinline)) static void micro_rows(int64_t K, const float* const* rows,
                                                 const float* __restrict Bp, V* __restrict out) {
  V acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = Simd::zero();
  const float* r[M];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) r[i] = rows[i];
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = Simd::load(Bp + k * (NV * W) + v * W);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const V a = Simd::set1(r[i][k]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = Simd::fmadd(a, b[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) out[i * NV + v] = acc[i][v];
}

template <Cell C>
struct CellTraits {
  static constexpr int G = (C == Cell::LSTM) ? 4 : (C == Cell::GRU ? 3 : 1);
  static constexpr int MR = std::max(1, std::min(8, (VREGS - G - 2) / G));  // forward tile rows
};

// Forward pointwise for one row: z = recurrent pre-activations (registers), xg = x-projection row
// (gates buffer at this position), updates state, writes y/hnext and, when training, the cache.
template <Cell C>
static inline void forward_point(const V* z, float* xg, int64_t H, int nv, const float* hp_row, float* hnext,
                                 float* yrow, float* cstate, float* hprev_out, float* aux_out,
                                 const V* bhh, bool training) {
  if constexpr (C == Cell::LSTM) {
    const V i = vsigmoid(Simd::add(z[0], Simd::loadn(xg, nv)));
    const V f = vsigmoid(Simd::add(z[1], Simd::loadn(xg + H, nv)));
    const V g = vtanh(Simd::add(z[2], Simd::loadn(xg + 2 * H, nv)));
    const V o = vsigmoid(Simd::add(z[3], Simd::loadn(xg + 3 * H, nv)));
    const V cprev = Simd::loadn(cstate, nv);
    const V c = Simd::fmadd(f, cprev, Simd::mul(i, g));
    const V h = Simd::mul(o, vtanh(c));
    Simd::storen(cstate, c, nv);
    Simd::storen(hnext, h, nv);
    Simd::storen(yrow, h, nv);
    if (training) {
      Simd::storen(xg, i, nv);
      Simd::storen(xg + H, f, nv);
      Simd::storen(xg + 2 * H, g, nv);
      Simd::storen(xg + 3 * H, o, nv);
      Simd::storen(aux_out, cprev, nv);
      Simd::storen(hprev_out, Simd::loadn(hp_row, nv), nv);
    }
  } else if constexpr (C == Cell::GRU) {
    const V r = vsigmoid(Simd::add(Simd::loadn(xg, nv), Simd::add(z[0], bhh[0])));
    const V u = vsigmoid(Simd::add(Simd::loadn(xg + H, nv), Simd::add(z[1], bhh[1])));
    const V hn = Simd::add(z[2], bhh[2]);
    const V n = vtanh(Simd::fmadd(r, hn, Simd::loadn(xg + 2 * H, nv)));
    const V hp = Simd::loadn(hp_row, nv);
    const V h = Simd::fmadd(u, Simd::sub(hp, n), n);  // (1-z) n + z h
    Simd::storen(hnext, h, nv);
    Simd::storen(yrow, h, nv);
    if (training) {
      Simd::storen(xg, r, nv);
      Simd::storen(xg + H, u, nv);
      Simd::storen(xg + 2 * H, n, nv);
      Simd::storen(aux_out, hn, nv);
      Simd::storen(hprev_out, hp, nv);
    }
  } else {
    const V pre = Simd::add(z[0], Simd::loadn(xg, nv));
    const V h = (C == Cell::RNN_RELU) ? Simd::relu(pre) : vtanh(pre);
    Simd::storen(hnext, h, nv);
    Simd::storen(yrow, h, nv);
    if (training) {
      Simd::storen(xg, h, nv);
      Simd::storen(hprev_out, Simd::loadn(hp_row, nv), nv);
    }
  }
}

static size_t forward_ws(const Dims& d, bool training, int threads) {
  const int64_t G = d.G(), P = ceil_div(d.H, W);
  size_t n = (size_t)(P * d.H * G * W) + (size_t)(2 * d.B * padded_ld(d.H));
  if (!training) n += (size_t)(d.T * d.B * G * d.H);
  if (d.cell == Cell::LSTM) n += (size_t)(d.B * d.H);
  return n;
}

template <Cell C>
static void forward_impl(const ForwardArgs& a) {
  constexpr int G = CellTraits<C>::G;
  constexpr int MR = CellTraits<C>::MR;
  const Dims& d = a.d;
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H, N = T * B;
  const int64_t P = ceil_div(H, W);
  const bool training = a.gates != nullptr;

  float* ws = a.workspace;
  float* Wp = ws;
  ws += P * H * G * W;
  float* xw = training ? a.gates : ws;
  if (!training) ws += N * GH;
  const int64_t ldh = padded_ld(H);  // h ping-pong buffers: [2][B][ldh]
  float* hbuf = ws;
  ws += 2 * B * ldh;
  float* cstate = (C == Cell::LSTM) ? ws : nullptr;

  // 1. input projection for all steps: xw = x W_ih^T + b_ih (one GEMM, bias added at the store)
  gemm(GemmArgs{N, GH, I, a.x, I, 1, a.w_ih, 1, I, xw, GH, false, a.threads, a.b_ih});

  // 2. the time loop
  const LoopSplit split = loop_split(a.threads, P, B, 4.0 * (double)(P * H * G * W),
                                     2.0 * (double)B * (double)GH * (double)H, T);
#pragma omp parallel num_threads(split.threads)
  {
    // partition by the team actually granted (it may be smaller than asked for)
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t pp0, pp1;  // packing and initial state: by unit panels, whatever the split
    panel_range(P, tid, team, pp0, pp1);
    pack_whh_forward<G>(a.w_hh, H, pp0, pp1, Wp);
    for (int64_t b = 0; b < B; ++b) {
      float* hb = hbuf + b * ldh;
      for (int64_t j = std::min(H, pp0 * W); j < std::min(H, pp1 * W); ++j) {
        hb[j] = a.h0 ? a.h0[b * H + j] : 0.0f;
        if (cstate) cstate[b * H + j] = a.c0 ? a.c0[b * H + j] : 0.0f;
      }
    }
    int64_t p0, p1, b_lo, b_hi;  // what this thread computes
    loop_part(split.by_rows, P, B, tid, team, p0, p1, b_lo, b_hi);
    const int64_t j_lo = std::min(H, p0 * W), j_hi = std::min(H, p1 * W);
    std::vector<int64_t> act((size_t)B);
#pragma omp barrier
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = d.time_of_step(s);
      const float* hcur = hbuf + (s & 1) * B * ldh;
      float* hnext = hbuf + ((s + 1) & 1) * B * ldh;
      int64_t nact = 0;
      for (int64_t b = b_lo; b < b_hi; ++b) {
        if (d.valid(t, b)) {
          act[(size_t)nact++] = b;
        } else if (j_hi > j_lo) {  // masked: carry the state, output 0
          const int64_t pos = d.pos(t, b);
          std::memcpy(hnext + b * ldh + j_lo, hcur + b * ldh + j_lo, sizeof(float) * (size_t)(j_hi - j_lo));
          std::memset(a.y + pos * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
          if (training) std::memset(a.hprev + pos * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
          if (training && a.aux) std::memset(a.aux + pos * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
        }
      }
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t j0 = p * W;
        const int nv = (int)std::min<int64_t>(W, H - j0);
        const float* wp = Wp + p * H * G * W;
        V bhh[3];
        if constexpr (C == Cell::GRU)
          for (int g = 0; g < 3; ++g) bhh[g] = Simd::loadn(a.b_hh + g * H + j0, nv);
        for (int64_t r0 = 0; r0 < nact; r0 += MR) {
          const int m = (int)std::min<int64_t>(MR, nact - r0);
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int Mr = decltype(mc)::value;
            const float* rows[Mr];
            for (int i = 0; i < Mr; ++i) rows[i] = hcur + act[(size_t)(r0 + i)] * ldh;
            // The x-projection rows this tile's pointwise pass reads come from far away in
            // memory (one row per position): ask for them now, they arrive during the k-loop.
            for (int i = 0; i < Mr; ++i) {
              const int64_t pos = d.pos(t, act[(size_t)(r0 + i)]);
              for (int g = 0; g < G; ++g) {
                const float* q = xw + pos * GH + g * H + j0;
                __builtin_prefetch(q, 1);
                __builtin_prefetch(q + nv - 1, 1);
              }
              __builtin_prefetch(a.y + pos * H + j0, 1);
            }
            V acc[Mr][G];
            micro_rows<Mr, G>(H, rows, wp, &acc[0][0]);
            for (int i = 0; i < Mr; ++i) {
              const int64_t b = act[(size_t)(r0 + i)];
              const int64_t pos = d.pos(t, b);
              forward_point<C>(acc[i], xw + pos * GH + j0, H, nv, rows[i] + j0, hnext + b * ldh + j0,
                               a.y + pos * H + j0, cstate ? cstate + b * H + j0 : nullptr,
                               training ? a.hprev + pos * H + j0 : nullptr,
                               (training && a.aux) ? a.aux + pos * H + j0 : nullptr, bhh, training);
            }
          });
        }
      }
      if (!split.by_rows) {  // the next step reads every thread's units of h
#pragma omp barrier
      }
    }
    const float* hfin = hbuf + (T & 1) * B * ldh;
    for (int64_t b = b_lo; b < b_hi; ++b) {
      for (int64_t j = j_lo; j < j_hi; ++j) a.h_n[b * H + j] = hfin[b * ldh + j];
      if (cstate && a.c_n)
        for (int64_t j = j_lo; j < j_hi; ++j) a.c_n[b * H + j] = cstate[b * H + j];
    }
  }
}

// Backward pointwise for one row and W lanes: reads the carried dh/dc, writes the gate gradients
// (dgi: x side, at the position; dgh: h side, at the position (GRU only: they differ in the n
// gate) and in the compact step row dgs read by the recurrent product), adds them to the current
// row block's bias-gradient sums dbi/dbh (registers), and writes the carried dc and the direct
// part of dh_prev (GRU: dh*z; others 0; the recurrent product is added later).
static inline void put_grad(float* dg, V& db, V v, int nv) {
  Simd::storen(dg, v, nv);
  db = Simd::add(db, v);  // the bias-gradient sums of a column block live in registers
}

template <Cell C>
static inline void backward_point(int64_t H, int nv, const float* gates, const float* aux, const float* hp,
                                  const float* dyrow, float* dhc, float* dcc, float* dgi, float* dgh,
                                  float* dgs, V* dbi, V* dbh) {
  V dh = Simd::loadn(dhc, nv);
  if (dyrow) dh = Simd::add(dh, Simd::loadn(dyrow, nv));
  const V one = Simd::set1(1.0f);
  if constexpr (C == Cell::LSTM) {
    const V i = Simd::loadn(gates, nv), f = Simd::loadn(gates + H, nv);
    const V g = Simd::loadn(gates + 2 * H, nv), o = Simd::loadn(gates + 3 * H, nv);
    const V cprev = Simd::loadn(aux, nv);
    const V c = Simd::fmadd(f, cprev, Simd::mul(i, g));  // as in the forward pass
    const V tc = vtanh(c);
    V dc = Simd::loadn(dcc, nv);
    dc = Simd::fmadd(Simd::mul(dh, o), Simd::fnmadd(tc, tc, one), dc);
    const V dzi = Simd::mul(Simd::mul(dc, g), Simd::mul(i, Simd::sub(one, i)));
    const V dzf = Simd::mul(Simd::mul(dc, cprev), Simd::mul(f, Simd::sub(one, f)));
    const V dzg = Simd::mul(Simd::mul(dc, i), Simd::fnmadd(g, g, one));
    const V dzo = Simd::mul(Simd::mul(dh, tc), Simd::mul(o, Simd::sub(one, o)));
    put_grad(dgi, dbi[0], dzi, nv);
    put_grad(dgi + H, dbi[1], dzf, nv);
    put_grad(dgi + 2 * H, dbi[2], dzg, nv);
    put_grad(dgi + 3 * H, dbi[3], dzo, nv);
    Simd::storen(dgs, dzi, nv);
    Simd::storen(dgs + H, dzf, nv);
    Simd::storen(dgs + 2 * H, dzg, nv);
    Simd::storen(dgs + 3 * H, dzo, nv);
    Simd::storen(dcc, Simd::mul(dc, f), nv);
    Simd::storen(dhc, Simd::zero(), nv);
  } else if constexpr (C == Cell::GRU) {
    const V r = Simd::loadn(gates, nv), z = Simd::loadn(gates + H, nv), n = Simd::loadn(gates + 2 * H, nv);
    const V hn = Simd::loadn(aux, nv);
    const V h0 = Simd::loadn(hp, nv);
    const V dz = Simd::mul(dh, Simd::sub(h0, n));
    const V dn = Simd::fnmadd(dh, z, dh);          // dh (1 - z)
    const V dan = Simd::mul(dn, Simd::fnmadd(n, n, one));
    const V dzr = Simd::mul(Simd::mul(dan, hn), Simd::mul(r, Simd::sub(one, r)));
    const V dzz = Simd::mul(dz, Simd::mul(z, Simd::sub(one, z)));
    put_grad(dgi, dbi[0], dzr, nv);
    put_grad(dgi + H, dbi[1], dzz, nv);
    put_grad(dgi + 2 * H, dbi[2], dan, nv);
    const V dhn = Simd::mul(dan, r);
    put_grad(dgh, dbh[0], dzr, nv);
    put_grad(dgh + H, dbh[1], dzz, nv);
    put_grad(dgh + 2 * H, dbh[2], dhn, nv);
    Simd::storen(dgs, dzr, nv);
    Simd::storen(dgs + H, dzz, nv);
    Simd::storen(dgs + 2 * H, dhn, nv);
    Simd::storen(dhc, Simd::mul(dh, z), nv);
  } else {
    const V h = Simd::loadn(gates, nv);
    const V dz = (C == Cell::RNN_RELU) ? Simd::mul(dh, Simd::step(h)) : Simd::mul(dh, Simd::fnmadd(h, h, one));
    put_grad(dgi, dbi[0], dz, nv);
    Simd::storen(dgs, dz, nv);
    Simd::storen(dhc, Simd::zero(), nv);
  }
}

static size_t backward_ws(const Dims& d, int threads) {
  const int64_t G = d.G(), GH = G * d.H, N = d.T * d.B;
  const int64_t Q = ceil_div(d.H, BWD_NR);
  size_t n = (size_t)(N * GH);                                // dG (x side)
  if (d.cell == Cell::GRU) n += (size_t)(N * GH);             // dG (h side)
  n += (size_t)(Q * BWD_NR * GH);                             // packed w_hh columns
  n += (size_t)(2 * d.B * d.H);                               // carried dh, dc
  n += (size_t)(2 * d.B * padded_ld(GH));                     // compact h-side dG of a step, ping-pong
  n += (size_t)(2 * ceil_div(d.B, ROW_BLOCK) * GH);           // bias-gradient sums per row block
  return n;
}

template <Cell C>
static void backward_impl(const BackwardArgs& a) {
  constexpr int G = CellTraits<C>::G;
  const Dims& d = a.d;
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H, N = T * B;
  const int64_t Q = ceil_div(H, BWD_NR);
  const int64_t NBLK = ceil_div(B, ROW_BLOCK);

  float* ws = a.workspace;
  float* dgi = ws;
  ws += N * GH;
  float* dgh = dgi;
  if (C == Cell::GRU) {
    dgh = ws;
    ws += N * GH;
  }
  float* Wb = ws;
  ws += Q * BWD_NR * GH;
  float* dhc = ws;
  ws += B * H;
  float* dcc = ws;
  ws += B * H;
  const int64_t ldg = padded_ld(GH);  // compact step rows of the h-side dG: [2][B][ldg]
  float* dgs = ws;
  ws += 2 * B * ldg;
  float* sum_i = ws;  // [NBLK][GH]: per row block, the bias gradients of the x side ...
  float* sum_h = ws + NBLK * GH;  // ... and (GRU) of the h side

  const LoopSplit split = loop_split(a.threads, Q, B, 4.0 * (double)(Q * BWD_NR * GH),
                                     2.0 * (double)B * (double)GH * (double)H, T);
#pragma omp parallel num_threads(split.threads)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t qq0, qq1;  // packing and initial state: by column panels, whatever the split
    panel_range(Q, tid, team, qq0, qq1);
    pack_whh_backward(a.w_hh, GH, H, qq0, qq1, Wb);
    {
      const int64_t i_lo = std::min(H, qq0 * BWD_NR), i_hi = std::min(H, qq1 * BWD_NR);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = i_lo; j < i_hi; ++j) {
          dhc[b * H + j] = a.dh_n ? a.dh_n[b * H + j] : 0.0f;
          dcc[b * H + j] = a.dc_n ? a.dc_n[b * H + j] : 0.0f;
        }
      for (int64_t k = 0; k < NBLK; ++k)
        for (int g = 0; g < G; ++g)
          for (int64_t j = i_lo; j < i_hi; ++j) sum_i[k * GH + g * H + j] = sum_h[k * GH + g * H + j] = 0.0f;
    }
    int64_t q0, q1, b_lo, b_hi;  // what this thread computes
    loop_part(split.by_rows, Q, B, tid, team, q0, q1, b_lo, b_hi);
    const int64_t j_lo = std::min(H, q0 * BWD_NR), j_hi = std::min(H, q1 * BWD_NR);
    std::vector<int64_t> act((size_t)B);
#pragma omp barrier
    for (int64_t s = T - 1; s >= 0; --s) {
      const int64_t t = d.time_of_step(s);
      int64_t nact = 0;
      for (int64_t b = b_lo; b < b_hi; ++b) {
        if (d.valid(t, b)) {
          act[(size_t)nact++] = b;
          continue;
        }
        const int64_t pos = d.pos(t, b);  // masked: gradients pass through; this position's dG is 0
        for (int g = 0; g < G; ++g) {
          std::memset(dgi + pos * GH + g * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
          if (C == Cell::GRU)
            std::memset(dgh + pos * GH + g * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
        }
      }
      // Column blocks outer, rows inner: the bias-gradient sums of a row block stay in registers
      // (rows ascending) and are added to that block's sums once per step.
      for (int64_t j = j_lo; j < j_hi; j += W) {
        const int nv = (int)std::min<int64_t>(W, j_hi - j);
        for (int64_t r = 0; r < nact;) {
          const int64_t blk = act[(size_t)r] / ROW_BLOCK;
          V sbi[G], sbh[G];
          for (int g = 0; g < G; ++g) sbi[g] = sbh[g] = Simd::zero();
          for (; r < nact && act[(size_t)r] / ROW_BLOCK == blk; ++r) {
            const int64_t b = act[(size_t)r], pos = d.pos(t, b);
            backward_point<C>(H, nv, a.gates + pos * GH + j, a.aux ? a.aux + pos * H + j : nullptr,
                              a.hprev + pos * H + j, a.dy ? a.dy + pos * H + j : nullptr, dhc + b * H + j,
                              dcc + b * H + j, dgi + pos * GH + j, dgh + pos * GH + j,
                              dgs + ((s & 1) * B + b) * ldg + j, sbi, sbh);
          }
          for (int g = 0; g < G; ++g) {
            float* pi = sum_i + blk * GH + g * H + j;
            Simd::storen(pi, Simd::add(Simd::loadn(pi, nv), sbi[g]), nv);
            if (C == Cell::GRU) {
              float* ph = sum_h + blk * GH + g * H + j;
              Simd::storen(ph, Simd::add(Simd::loadn(ph, nv), sbh[g]), nv);
            }
          }
        }
      }
      const bool border = a.bptt_steps > 0 && s > 0 && s % a.bptt_steps == 0;
      if (border)  // chunk border: nothing flows into step s-1 (own rows, own columns)
        for (int64_t b = b_lo; b < b_hi; ++b)
          for (int64_t j = j_lo; j < j_hi; ++j) dhc[b * H + j] = 0.0f, dcc[b * H + j] = 0.0f;
      // Split by hidden units, every step has its barrier, borders included: the step rows dgs
      // are ping-pong buffers, and the barrier is what keeps a thread's pointwise pass two steps
      // on from overwriting rows that a slower thread's product is still reading. Split by rows,
      // a thread reads only its own rows.
      if (!split.by_rows) {
#pragma omp barrier
      }
      if (s > 0) {  // the next pointwise pass reads rows from far away: ask for them now
        const int64_t tn = d.time_of_step(s - 1);
        auto fetch = [&](const float* base, bool write) {  // this thread's columns, line by line
          for (int64_t j = j_lo; j < j_hi; j += 16) {
            if (write)  // into L2: a step's rows are more than L1 holds beside the product
              __builtin_prefetch(base + j, 1, 2);
            else
              __builtin_prefetch(base + j, 0, 2);
          }
        };
        for (int64_t b = b_lo; b < b_hi; ++b) {
          const int64_t pos = d.pos(tn, b);
          for (int g = 0; g < G; ++g) {
            fetch(a.gates + pos * GH + g * H, false);
            fetch(dgi + pos * GH + g * H, true);
            if (C == Cell::GRU) fetch(dgh + pos * GH + g * H, true);
          }
          if (a.aux) fetch(a.aux + pos * H, false);
          fetch(a.hprev + pos * H, false);
          if (a.dy) fetch(a.dy + pos * H, false);
        }
      }
      if (border) continue;
      // dh_prev[b, own columns] += dG_h[pos(t,b), :] W_hh[:, own columns]
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t j0 = q * BWD_NR;
        const int n = (int)std::min<int64_t>(BWD_NR, H - j0);
        const float* wq = Wb + q * GH * BWD_NR;
        for (int64_t r0 = 0; r0 < nact; r0 += BWD_MR) {
          const int m = (int)std::min<int64_t>(BWD_MR, nact - r0);
          with_rows<1, BWD_MR>(m, [&](auto mc) {
            constexpr int Mr = decltype(mc)::value;
            const float* rows[Mr];
            for (int i = 0; i < Mr; ++i) rows[i] = dgs + ((s & 1) * B + act[(size_t)(r0 + i)]) * ldg;
            V acc[Mr][BWD_NV];
            micro_rows<Mr, BWD_NV>(GH, rows, wq, &acc[0][0]);
            for (int i = 0; i < Mr; ++i) {
              float* out = dhc + act[(size_t)(r0 + i)] * H + j0;
              for (int v = 0; v < BWD_NV; ++v) {
                const int nv = std::max(0, std::min(W, n - v * W));
                if (nv == 0) break;
                Simd::storen(out + v * W, Simd::add(Simd::loadn(out + v * W, nv), acc[i][v]), nv);
              }
            }
          });
        }
      }
      // The next step's pointwise pass reads only this thread's part of dhc/dcc and writes the
      // other dgs buffer, so no second barrier is needed here.
    }
    for (int64_t b = b_lo; b < b_hi; ++b)
      for (int64_t j = j_lo; j < j_hi; ++j) {
        a.dh0[b * H + j] = dhc[b * H + j];
        if (C == Cell::LSTM && a.dc0) a.dc0[b * H + j] = dcc[b * H + j];
      }
#pragma omp barrier
    // Bias gradients: the row blocks' sums added in block order, by column panels.
    const int64_t i_lo = std::min(H, qq0 * BWD_NR), i_hi = std::min(H, qq1 * BWD_NR);
    for (int g = 0; g < G; ++g)
      for (int64_t j = i_lo; j < i_hi; ++j) {
        float si = 0.0f, sh = 0.0f;
        for (int64_t k = 0; k < NBLK; ++k) {
          si += sum_i[k * GH + g * H + j];
          sh += sum_h[k * GH + g * H + j];
        }
        a.db_ih[g * H + j] = si;
        if (C == Cell::GRU) a.db_hh[g * H + j] = sh;
      }
  }

  // Weight and input gradients: single GEMMs over all T*B positions.
  if (a.dx) gemm(GemmArgs{N, I, GH, dgi, GH, 1, a.w_ih, I, 1, a.dx, I, false, a.threads});
  gemm(GemmArgs{GH, I, N, dgi, 1, GH, a.x, I, 1, a.dw_ih, I, false, a.threads});
  gemm(GemmArgs{GH, H, N, dgh, 1, GH, a.hprev, H, 1, a.dw_hh, H, false, a.threads});
}

static void forward(const ForwardArgs& a) {
  switch (a.d.cell) {
    case Cell::RNN_TANH: forward_impl<Cell::RNN_TANH>(a); break;
    case Cell::RNN_RELU: forward_impl<Cell::RNN_RELU>(a); break;
    case Cell::LSTM: forward_impl<Cell::LSTM>(a); break;
    case Cell::GRU: forward_impl<Cell::GRU>(a); break;
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
                             scratch_bytes, release_scratch};
  return t;
}

}  // namespace FASTRNN_NS
}  // namespace fastrnn
