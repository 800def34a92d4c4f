// tile.cuh — the one matrix-product main loop used by every kernel (the big GEMMs and the
// per-step recurrent products): a block computes a BM x BN tile of A·B over a range of K, with
// A and B staged through shared memory by a STAGES-deep cp.async pipeline and each thread
// holding a TM x TN register tile (plain float32 FMAs).
//
// Operands are read through "loaders": la(m, k) / lb(k, n) return the address of the element at
// tile row m (tile column n) and GLOBAL k, or nullptr when the element lies outside the matrix
// (zero-filled). This is how one main loop serves transposed operands, row-major and
// column-major matrices, and the gate-interleaved columns of W_hh.
//
// Thread register tile. Rows come in NGM groups of RM consecutive rows, the groups BM/NGM apart;
// columns in NGN groups of RN consecutive columns, BN/NGN apart:
//     row(i, ty) = (i / RM) * (BM / NGM) + ty * RM + i % RM        i < TM = NGM * RM
//     col(j, tx) = (j / RN) * (BN / NGN) + tx * RN + j % RN        j < TN = NGN * RN
// so a thread reads its RM (RN) values of one k as one vector, and threads next to each other
// read neighbouring vectors (no shared-memory bank conflicts). The step kernels use the column
// groups as gates: group g = gate g, so one thread holds all G gates of its hidden units.
#pragma once
#include <cuda_runtime.h>

namespace fastrnn_cuda {

// ---- cp.async (sm_80+); plain synchronous copies on older targets ---------------------------
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem) : "memory");
#else
  *smem = *gmem;
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// R consecutive floats from shared memory (p aligned to R*4 bytes when R is 2 or 4).
template <int R>
__device__ __forceinline__ void lds(const float* p, float* out) {
  if constexpr (R % 4 == 0) {
#pragma unroll
    for (int v = 0; v < R / 4; ++v) {
      const float4 q = reinterpret_cast<const float4*>(p)[v];
      out[4 * v] = q.x, out[4 * v + 1] = q.y, out[4 * v + 2] = q.z, out[4 * v + 3] = q.w;
    }
  } else if constexpr (R % 2 == 0) {
#pragma unroll
    for (int v = 0; v < R / 2; ++v) {
      const float2 q = reinterpret_cast<const float2*>(p)[v];
      out[2 * v] = q.x, out[2 * v + 1] = q.y;
    }
  } else {
#pragma unroll
    for (int v = 0; v < R; ++v) out[v] = p[v];
  }
}

template <int BM_, int BN_, int BK_, int NGM_, int RM_, int NGN_, int RN_, int STAGES_>
struct TileCfg {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, STAGES = STAGES_;
  static constexpr int NGM = NGM_, RM = RM_, NGN = NGN_, RN = RN_;
  static constexpr int TM = NGM * RM, TN = NGN * RN;
  static constexpr int NTY = BM / TM, NTX = BN / TN, NT = NTX * NTY;
  // Shared-memory rows (one per k): 4 floats of padding keep 16-byte alignment and spread the
  // transposing cp.async stores over the banks.
  static constexpr int LDA = BM + 4, LDB = BN + 4;
  static constexpr int SMEM_FLOATS = STAGES * BK * (LDA + LDB);
  static_assert(BM % TM == 0 && BN % TN == 0, "the register tile must divide the block tile");
  static_assert(STAGES >= 2, "the pipeline needs two stages at least");
  static_assert(SMEM_FLOATS * 4 <= 48 * 1024, "static shared memory is limited to 48 KiB");
  __device__ __forceinline__ static int row(int i, int ty) { return (i / RM) * (BM / NGM) + ty * RM + i % RM; }
  __device__ __forceinline__ static int col(int j, int tx) { return (j / RN) * (BN / NGN) + tx * RN + j % RN; }
};

// acc[i][j] += sum over k in [kb, ke) of A(row(i), k) * B(k, col(j)).
// A_KC / B_KC: whether A's rows (B's columns) are contiguous in k in global memory; they only
// choose the order in which the threads of a warp load elements (coalescing), not the result.
// Must be called by all Cfg::NT threads of the block (it synchronizes).
template <class Cfg, bool A_KC, bool B_KC, class LA, class LB>
__device__ __forceinline__ void tile_product(int kb, int ke, const LA& la, const LB& lb, float* smem,
                                             float (&acc)[Cfg::TM][Cfg::TN]) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, ST = Cfg::STAGES, NT = Cfg::NT;
  constexpr int LDA = Cfg::LDA, LDB = Cfg::LDB, TM = Cfg::TM, TN = Cfg::TN;
  float* As = smem;                 // [ST][BK][LDA]
  float* Bs = smem + ST * BK * LDA;  // [ST][BK][LDB]
  const int tid = threadIdx.x, tx = tid % Cfg::NTX, ty = tid / Cfg::NTX;
  const int ntiles = (ke - kb + BK - 1) / BK;

  auto load = [&](int stage, int tile) {
    const int k0 = kb + tile * BK;
    float* as = As + stage * BK * LDA;
    float* bs = Bs + stage * BK * LDB;
#pragma unroll
    for (int it = 0; it < (BM * BK + NT - 1) / NT; ++it) {
      const int l = tid + it * NT;
      if ((BM * BK) % NT == 0 || l < BM * BK) {
        const int kk = A_KC ? l % BK : l / BM, m = A_KC ? l / BK : l % BM;
        const float* p = k0 + kk < ke ? la(m, k0 + kk) : nullptr;
        if (p) cp_async4(as + kk * LDA + m, p);
        else as[kk * LDA + m] = 0.0f;
      }
    }
#pragma unroll
    for (int it = 0; it < (BN * BK + NT - 1) / NT; ++it) {
      const int l = tid + it * NT;
      if ((BN * BK) % NT == 0 || l < BN * BK) {
        const int kk = B_KC ? l % BK : l / BN, n = B_KC ? l / BK : l % BN;
        const float* p = k0 + kk < ke ? lb(k0 + kk, n) : nullptr;
        if (p) cp_async4(bs + kk * LDB + n, p);
        else bs[kk * LDB + n] = 0.0f;
      }
    }
  };

#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < ntiles) load(s, s);
    cp_async_commit();  // always commit (maybe an empty group): the wait counts stay uniform
  }
  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait<ST - 2>();  // tile t has landed (at most ST-2 younger groups in flight) ...
    __syncthreads();           // ... for every thread, and everyone is done with tile t-1
    if (t + ST - 1 < ntiles) load((t + ST - 1) % ST, t + ST - 1);  // refill the stage of tile t-1
    cp_async_commit();
    const float* as = As + (t % ST) * BK * LDA;
    const float* bs = Bs + (t % ST) * BK * LDB;
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[TM], b[TN];
#pragma unroll
      for (int g = 0; g < Cfg::NGM; ++g) lds<Cfg::RM>(as + kk * LDA + g * (BM / Cfg::NGM) + ty * Cfg::RM, a + g * Cfg::RM);
#pragma unroll
      for (int g = 0; g < Cfg::NGN; ++g) lds<Cfg::RN>(bs + kk * LDB + g * (BN / Cfg::NGN) + tx * Cfg::RN, b + g * Cfg::RN);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();
}

}  // namespace fastrnn_cuda
