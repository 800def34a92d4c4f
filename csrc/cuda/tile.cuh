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

// KS > 1 splits K inside the block: KS groups of NTG threads each run the pipeline over every
// KS-th k-tile with their own shared-memory stages, and the partial tiles are added to group 0's
// registers in a fixed order (g = 1 .. KS-1) at the end. Only group 0 (leader()) holds the result.
// This shortens the serial k-loop of the step kernels, whose K is long (G*H in backward) and
// whose grids are small.
template <int BM_, int BN_, int BK_, int NGM_, int RM_, int NGN_, int RN_, int STAGES_, int KS_ = 1>
struct TileCfg {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, STAGES = STAGES_, KS = KS_;
  static constexpr int NGM = NGM_, RM = RM_, NGN = NGN_, RN = RN_;
  static constexpr int TM = NGM * RM, TN = NGN * RN;
  static constexpr int NTY = BM / TM, NTX = BN / TN, NTG = NTX * NTY, NT = NTG * KS;
  // Shared-memory rows (one per k): 4 floats of padding keep 16-byte alignment and spread the
  // transposing cp.async stores over the banks.
  static constexpr int LDA = BM + 4, LDB = BN + 4;
  static constexpr int GROUP_FLOATS = STAGES * BK * (LDA + LDB);
  static constexpr int RED_FLOATS = (KS - 1) * NTG * TM * TN;
  static constexpr int SMEM_FLOATS = KS * GROUP_FLOATS > RED_FLOATS ? KS * GROUP_FLOATS : RED_FLOATS;
  static_assert(BM % TM == 0 && BN % TN == 0, "the register tile must divide the block tile");
  static_assert(STAGES >= 2, "the pipeline needs two stages at least");
  static_assert(SMEM_FLOATS * 4 <= 48 * 1024, "static shared memory is limited to 48 KiB");
  __device__ __forceinline__ static int row(int i, int ty) { return (i / RM) * (BM / NGM) + ty * RM + i % RM; }
  __device__ __forceinline__ static int col(int j, int tx) { return (j / RN) * (BN / NGN) + tx * RN + j % RN; }
  __device__ __forceinline__ static int tx() { return (int)(threadIdx.x % NTG) % NTX; }
  __device__ __forceinline__ static int ty() { return (int)(threadIdx.x % NTG) / NTX; }
  __device__ __forceinline__ static bool leader() { return threadIdx.x < NTG; }  // holds the result
};

// acc[i][j] += sum over k in [kb, ke) of A(row(i), k) * B(k, col(j)).
// A_KC / B_KC: whether A's rows (B's columns) are contiguous in k in global memory; they only
// choose the order in which the threads of a warp load elements (coalescing), not the result.
// A_COHERENT: A was written by other blocks of the SAME launch (the persistent step kernels), so
// it is read with ld.global.cg (L2, never a stale L1 line) into registers one tile ahead and
// stored to shared memory after the compute of the current tile, which hides the load latency;
// otherwise A goes through cp.async like B (B is always read-only during a launch).
// Must be called by all Cfg::NT threads of the block (it synchronizes).
template <class Cfg, bool A_KC, bool B_KC, bool A_COHERENT = false, class LA, class LB>
__device__ __forceinline__ void tile_product(int kb, int ke, const LA& la, const LB& lb, float* smem,
                                             float (&acc)[Cfg::TM][Cfg::TN]) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, ST = Cfg::STAGES, NT = Cfg::NTG, KS = Cfg::KS;
  constexpr int LDA = Cfg::LDA, LDB = Cfg::LDB, TM = Cfg::TM, TN = Cfg::TN;
  constexpr int A_IT = (BM * BK + NT - 1) / NT, B_IT = (BN * BK + NT - 1) / NT;
  const int grp = threadIdx.x / NT, tid = threadIdx.x % NT;  // K-slice group, thread in the group
  const int tx = tid % Cfg::NTX, ty = tid / Cfg::NTX;
  float* As = smem + grp * Cfg::GROUP_FLOATS;  // [ST][BK][LDA]
  float* Bs = As + ST * BK * LDA;               // [ST][BK][LDB]
  // This group computes k-tiles grp, grp + KS, ...: its local tile i is global tile i*KS + grp.
  // Every group runs the same number of iterations (block-wide barriers); past the end of K a
  // tile is all zeros.
  const int ntiles = ((ke - kb + BK - 1) / BK + KS - 1) / KS;
  const int kb0 = kb + grp * BK;
  constexpr int KSTEP = KS * BK;

  // Element it of this thread's share of an A tile: (m, kk); false past the tile.
  auto a_elem = [&](int it, int& m, int& kk) {
    const int l = tid + it * NT;
    kk = A_KC ? l % BK : l / BM;
    m = A_KC ? l / BK : l % BM;
    return (BM * BK) % NT == 0 || l < BM * BK;
  };
  auto a_ptr = [&](int tile, int m, int kk) -> const float* {
    const int k = kb0 + tile * KSTEP + kk;
    return k < ke ? la(m, k) : nullptr;
  };
  auto load_a_async = [&](int stage, int tile) {
    float* as = As + stage * BK * LDA;
#pragma unroll
    for (int it = 0; it < A_IT; ++it) {
      int m, kk;
      if (a_elem(it, m, kk)) {
        const float* p = a_ptr(tile, m, kk);
        if (p) cp_async4(as + kk * LDA + m, p);
        else as[kk * LDA + m] = 0.0f;
      }
    }
  };
  auto fetch_a = [&](int tile, float (&r)[A_IT]) {
#pragma unroll
    for (int it = 0; it < A_IT; ++it) {
      int m, kk;
      const float* p = a_elem(it, m, kk) ? a_ptr(tile, m, kk) : nullptr;
      r[it] = p ? __ldcg(p) : 0.0f;
    }
  };
  auto store_a = [&](int stage, const float (&r)[A_IT]) {
    float* as = As + stage * BK * LDA;
#pragma unroll
    for (int it = 0; it < A_IT; ++it) {
      int m, kk;
      if (a_elem(it, m, kk)) as[kk * LDA + m] = r[it];
    }
  };
  auto load_b_async = [&](int stage, int tile) {
    const int k0 = kb0 + tile * KSTEP;
    float* bs = Bs + stage * BK * LDB;
#pragma unroll
    for (int it = 0; it < B_IT; ++it) {
      const int l = tid + it * NT;
      if ((BN * BK) % NT == 0 || l < BN * BK) {
        const int kk = B_KC ? l % BK : l / BN, n = B_KC ? l / BK : l % BN;
        const float* p = k0 + kk < ke ? lb(k0 + kk, n) : nullptr;
        if (p) cp_async4(bs + kk * LDB + n, p);
        else bs[kk * LDB + n] = 0.0f;
      }
    }
  };

  if constexpr (A_COHERENT) {  // all loads of the first ST-1 A tiles in flight before any store
    float pre[ST - 1][A_IT];
#pragma unroll
    for (int s = 0; s < ST - 1; ++s)
      if (s < ntiles) fetch_a(s, pre[s]);
#pragma unroll
    for (int s = 0; s < ST - 1; ++s)
      if (s < ntiles) store_a(s, pre[s]);
  }
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < ntiles) {
      if constexpr (!A_COHERENT) load_a_async(s, s);
      load_b_async(s, s);
    }
    cp_async_commit();  // always commit (maybe an empty group): the wait counts stay uniform
  }
  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait<ST - 2>();  // tile t has landed (at most ST-2 younger groups in flight) ...
    __syncthreads();           // ... for every thread, and everyone is done with tile t-1
    const int tn = t + ST - 1;  // refill the stage of tile t-1 with tile tn
    const bool refill = tn < ntiles;
    float areg[A_IT];
    if (refill) {
      if constexpr (A_COHERENT) fetch_a(tn, areg);
      else load_a_async(tn % ST, tn);
      load_b_async(tn % ST, tn);
    }
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
    // The stage of tile tn is free (everyone passed this iteration's barrier after computing
    // tile t-1) and is read at iteration tn > t, after at least one more barrier.
    if constexpr (A_COHERENT)
      if (refill) store_a(tn % ST, areg);
  }
  cp_async_wait<0>();
  __syncthreads();
  if constexpr (KS > 1) {  // add the other groups' partial tiles to group 0's, g ascending
    float* red = smem;     // [KS-1][TM*TN][NTG], reusing the stages
    if (grp > 0)
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) red[((grp - 1) * TM * TN + i * TN + j) * NT + tid] = acc[i][j];
    __syncthreads();
    if (grp == 0)
      for (int g = 1; g < KS; ++g)
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] += red[((g - 1) * TM * TN + i * TN + j) * NT + tid];
    __syncthreads();
  }
}

// Barrier across all blocks of a cooperative (co-resident) launch. counter starts at 0 and each
// barrier adds one per block; `target` (per thread 0, starting at 0) is the count that the k-th
// barrier waits for. Writes before the barrier are visible after it to reads that bypass L1
// (ld.global.cg, as in tile_product's A_COHERENT path) or that read the thread's own writes.
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned nblocks, unsigned& target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    target += nblocks;
    __threadfence();
    atomicAdd(counter, 1u);
    while ((int)(*reinterpret_cast<volatile unsigned*>(counter) - target) < 0) {
    }
    __threadfence();
  }
  __syncthreads();
}

}  // namespace fastrnn_cuda
