// gemm.h — the CPU GEMM: per-thread packing scratch, the register micro-kernels, the
// serial blocked product, the small-N path and the threaded driver.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h, the standard headers and the tuning constants it defines.

// Per-thread scratch for the GEMM (0, 1: the packed blocks of A and B; 2: C^T of a product run
// transposed, see gemm_transposes): grows once, reused by every later call on the thread.
thread_local std::vector<float> g_scratch[3];

static float* scratch(int which, size_t n) {
  if (g_scratch[which].size() < n) g_scratch[which].resize(n);
  return g_scratch[which].data();
}

// The calling thread's packing scratch in bytes, and freeing it on the calling thread and on the
// workers of a `threads`-thread team (libgomp reuses its worker threads from team to team).
static size_t scratch_bytes() {
  size_t n = 0;
  for (const auto& b : g_scratch) n += b.capacity();
  return sizeof(float) * n;
}

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

// acc[MR][NV] = sum_k Ap[k][i] * Bp[k][v*W ..], for the first MR rows of an A micro-panel packed
// LDA rows wide (LDA = GEMM_MR; MR < LDA for the last rows of a block, which then cost only their
// own FMAs; every row's sum is the same either way).
template <int MR, int NV, int LDA = MR>
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
      const V a = Simd::set1(Ap[k * LDA + i]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = Simd::fmadd(a, b[v], acc[i][v]);
    }
  }
}

#if defined(FASTRNN_ISA_AVX512)
// micro_packed<MR, 1> for a last panel of at most 8 columns (a W-wide packed panel whose upper 8
// lanes are zero padding; the input gradient of a Dense layer with 200 inputs ends in one): the
// products in 256-bit registers, which cost half the cycles of 512-bit ones on cores that split
// 512-bit FMAs in two (Zen 4) and the same elsewhere; the same sums, widened with zero upper lanes.
// A's element (k, i) comes from a_at(k, i): the packed micro-panel, or A's rows in place.
template <int MR, class AAt>
static inline void micro_half(int64_t kc, AAt a_at, const float* __restrict Bp, V (&acc)[MR][1]) {
  __m256 h[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) h[i] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b = _mm256_loadu_ps(Bp + k * W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) h[i] = _mm256_fmadd_ps(_mm256_set1_ps(a_at(k, i)), b, h[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) acc[i][0] = _mm512_zextps256_ps512(h[i]);
}
#endif

// out[m*LDO + v] = sum_k rows[m][k] * Bp[k][v*W ..], A read in place through row pointers; LDO >=
// NV lets a tile of NV vectors fill part of a wider row (the passes of a forward-loop tile). With
// S > 1 the NV vectors of a k step come from S panels of NV/S vectors each, ldp floats apart
// (vector v of step k at Bp + (v / (NV/S)) * ldp + k * (NV/S) * W + (v % (NV/S)) * W).
// Not inlined on purpose: on its own the M*NV accumulators get registers of their own, while
// inlined into the time loop they compete with the hoisted constants of the pointwise pass. The
// GEMM calls it once per register tile where it reads A in place (multiply_blocks): a call and the
// accumulators' trip through memory per tile, against kc k steps of FMAs. (Inlined there instead,
// it measured the same for the in-place tiles but slowed the packed path's tiles of the same
// function by 3-6 % on AVX2: GCC then compiles multiply_blocks differently.)
template <int M, int NV, int LDO = NV, int S = 1>
__attribute__((noinline)) static void micro_rows(int64_t K, const float* const* rows,
                                                 const float* __restrict Bp, V* __restrict out,
                                                 int64_t ldp = 0) {
  static_assert(NV % S == 0, "micro_rows: S must divide NV");
  constexpr int VS = NV / S;
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
    for (int v = 0; v < NV; ++v) b[v] = Simd::load(Bp + (v / VS) * ldp + k * (VS * W) + (v % VS) * W);
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
    for (int v = 0; v < NV; ++v) out[i * LDO + v] = acc[i][v];
}

// The epilogue activation of CpuGemmArgs::act (0 none, 1 relu, 2 tanh, 3 sigmoid).
static inline V epilogue_act(V x, int act) {
  switch (act) {
    case 1: return Simd::relu(x);
    case 2: return vtanh(x);
    case 3: return vsigmoid(x);
    default: return x;
  }
}

static void act_row(float* p, int64_t n, int act) {
  if (!act) return;
  for (int64_t j = 0; j < n; j += W) {
    const int nv = (int)std::min<int64_t>(W, n - j);
    Simd::storen(p + j, epilogue_act(Simd::loadn(p + j, nv), act), nv);
  }
}

// C[m x n] = act(acc + C) (accumulate) or act(acc + bias) (bias may be nullptr), for the valid
// m <= MR rows and n <= NV*W columns; act 0 leaves the sum as it is.
template <int MR, int NV>
static inline void store_tile(V (&acc)[MR][NV], float* C, int64_t ldc, int m, int n, bool accumulate,
                              const float* bias, int act) {
  if (m == MR && n == NV * W) {
    V add[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) add[v] = (!accumulate && bias) ? Simd::load(bias + v * W) : Simd::zero();
    if (act == 0) {
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          float* p = C + i * ldc + v * W;
          Simd::store(p, Simd::add(accumulate ? Simd::load(p) : add[v], acc[i][v]));
        }
    } else {
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          float* p = C + i * ldc + v * W;
          Simd::store(p, epilogue_act(Simd::add(accumulate ? Simd::load(p) : add[v], acc[i][v]), act));
        }
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
    act_row(p, n, act);
  }
}

// The packed A block (mc x kc, at Ap) times the packed B block (kc x nc, at Bp) into C's block
// at (ic, jc): each A micro-panel (MR x KC) is reused from the L1 by every B micro-panel of the
// block, the B block from the L2 by every A micro-panel. With Ar the A block is read in place
// instead, its row i at Ar + i * lda (see gemm_a_in_place), and Ap is not read.
static void multiply_blocks(int64_t mc, int64_t nc, int64_t kc, const float* Ap, const float* Bp, float* C,
                            int64_t ldc, bool acc_c, const float* bias, int act_c, const float* Ar = nullptr,
                            int64_t lda = 0) {
  for (int64_t ir = 0; ir < mc; ir += GEMM_MR) {
    const int m = (int)std::min<int64_t>(GEMM_MR, mc - ir);
    for (int64_t jr = 0; jr < nc; jr += GEMM_NR) {
      const int n = (int)std::min<int64_t>(GEMM_NR, nc - jr);
      float* ct = C + ir * ldc + jr;
      // C's lines are fetched (for writing) while the k-loop runs: read back at the store when
      // accumulating, and owned before the store either way (a store that misses waits for the line)
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; j += 16) __builtin_prefetch(ct + i * ldc + j, 1);  // every 64-byte line
        __builtin_prefetch(ct + i * ldc + n - 1, 1);
      }
      const float* bt = bias ? bias + jr : nullptr;
      // the tile's rows: all GEMM_MR, or the m left at the end of the block (a one-row product, a
      // step call's x projection, runs one row's FMAs, not GEMM_MR rows')
      with_rows<1, GEMM_MR>(m, [&](auto mc) {
        constexpr int Mr = decltype(mc)::value;
        const float* rows[Mr];  // A in place (Ar): the tile's rows from column pc on
        if (Ar)
          for (int i = 0; i < Mr; ++i) rows[i] = Ar + (ir + i) * lda;
        const float* ap = Ar ? nullptr : Ap + ir * kc;  // the packed micro-panel otherwise
        if (panel_width(n) == GEMM_NR) {
          V acc[Mr][GEMM_NV];
          if (Ar)
            micro_rows<Mr, GEMM_NV>(kc, rows, Bp + jr * kc, &acc[0][0]);
          else
            micro_packed<Mr, GEMM_NV, GEMM_MR>(kc, ap, Bp + jr * kc, acc);
          store_tile<Mr, GEMM_NV>(acc, ct, ldc, m, n, acc_c, bt, act_c);
        } else {
          V acc[Mr][1];
#if defined(FASTRNN_ISA_AVX512)
          if (n <= 8) {  // half a vector of columns: 256-bit FMAs (see micro_half)
            if (Ar)
              micro_half<Mr>(kc, [&](int64_t k, int i) { return rows[i][k]; }, Bp + jr * kc, acc);
            else
              micro_half<Mr>(kc, [ap](int64_t k, int i) { return ap[k * GEMM_MR + i]; }, Bp + jr * kc, acc);
          } else
#endif
          if (Ar)
            micro_rows<Mr, 1>(kc, rows, Bp + jr * kc, &acc[0][0]);
          else
            micro_packed<Mr, 1, GEMM_MR>(kc, ap, Bp + jr * kc, acc);
          store_tile<Mr, 1>(acc, ct, ldc, m, n, acc_c, bt, act_c);
        }
      });
    }
  }
}

// C = A B (+ C or + bias, then act) for M <= FEW_ROWS_MAX rows of A and B's rows contiguous (csb = 1: a
// Dense layer's kernel, a recurrent layer's W_ih^T as the step calls keep it): B is read once, in
// place, few_rows_panels GEMM_NR-wide panels of each row at a time, instead of being packed (which
// reads and writes all of B, then reads it again, for a few rows of use: a decoder's step while
// sampling, a step call's x projection). The same depth blocks (KCb) and the same order of
// summation as the packed path (each element from 0, k ascending within a block, stored per
// panel as bias + sum or C + sum): bit-identical results.
// Up to 4 rows (measured on Zen 4: 2-3x the packed path at 1-4 rows, 0.7x at 8 rows of 18,328
// columns, where packing once serves every row).
constexpr int64_t FEW_ROWS_MAX = std::min(4, GEMM_MR);

template <int Mr>
constexpr int few_rows_panels() {  // accumulators within three quarters of the registers
  return std::max(1, (VREGS * 3 / 4) / (Mr * GEMM_NV));
}

static void gemm_few_rows(int64_t M, int64_t N, int64_t K, int64_t KCb, const float* A, int64_t rsa, int64_t csa,
                          const float* B, int64_t rsb, float* C, int64_t ldc, bool accumulate, const float* bias,
                          int act) {
  with_rows<1, (int)FEW_ROWS_MAX>((int)M, [&](auto mc) {
    constexpr int Mr = decltype(mc)::value, NW = few_rows_panels<Mr>() * GEMM_NV;  // vectors at once
    for (int64_t pc = 0; pc < K; pc += KCb) {
      const int64_t kc = std::min(KCb, K - pc);
      const int act_c = pc + kc >= K ? act : 0;  // the activation goes on the final sums only
      const bool acc_c = accumulate || pc > 0;
      for (int64_t j0 = 0; j0 < N; j0 += NW * W) {
        const int n = (int)std::min<int64_t>(NW * W, N - j0);
        int nl[NW];  // the columns of each vector within B (the last run of a row may be short)
        for (int v = 0; v < NW; ++v) nl[v] = std::max(0, std::min(W, n - v * W));
        V acc[Mr][NW];
#pragma GCC unroll 16
        for (int i = 0; i < Mr; ++i)
#pragma GCC unroll 32
          for (int v = 0; v < NW; ++v) acc[i][v] = Simd::zero();
        auto k_step = [&](int64_t k, auto full) {
          const float* ak = A + k * csa;
          const float* bk = B + k * rsb + j0;
#pragma GCC unroll 32
          for (int v = 0; v < NW; ++v) {
            const V b = decltype(full)::value ? Simd::load(bk + v * W) : Simd::loadn(bk + v * W, nl[v]);
#pragma GCC unroll 16
            for (int i = 0; i < Mr; ++i) acc[i][v] = Simd::fmadd(Simd::set1(ak[i * rsa]), b, acc[i][v]);
          }
        };
        if (n == NW * W)
          for (int64_t k = pc; k < pc + kc; ++k) k_step(k, std::true_type{});
        else
          for (int64_t k = pc; k < pc + kc; ++k) k_step(k, std::false_type{});
        for (int64_t jp = j0, p = 0; jp < std::min(N, j0 + NW * W); jp += GEMM_NR, ++p) {  // as the packed path stores
          V pacc[Mr][GEMM_NV];
#pragma GCC unroll 16
          for (int i = 0; i < Mr; ++i)
#pragma GCC unroll 8
            for (int v = 0; v < GEMM_NV; ++v) pacc[i][v] = acc[i][p * GEMM_NV + v];
          store_tile<Mr, GEMM_NV>(pacc, C + jp, ldc, (int)M, (int)std::min<int64_t>(GEMM_NR, N - jp), acc_c,
                                  bias ? bias + jp : nullptr, act_c);
        }
      }
    }
  });
}

// The most columns of a B block for an N x K product: bl.nc, grown by KC / kc where the depth K
// is shorter than KC (the B block keeps its size in bytes). The blocks themselves are balanced
// over N (balanced_block).
static int64_t column_block_max(const GemmBlocking& bl, int64_t K) {
  const int64_t KCb = balanced_block(K, bl.kc, 16);
  const int64_t nc_k = std::min(BLOCK_NC_MAX / GEMM_NR * GEMM_NR, bl.nc * bl.kc / KCb / GEMM_NR * GEMM_NR);
  return std::max<int64_t>(nc_k, bl.nc);
}

// Where B's columns fit one or two blocks (N <= 2 column_block_max: a Dense layer's input
// gradient dx = dz W^T, a recurrent layer's dx = dG W_ih, products with few columns), each packed
// A micro-panel serves only N / NR column panels, and packing it (a transpose of MR x 16 blocks,
// from memory) costs a share of the product that grows as N shrinks. A row-major A (csa = 1) is
// then read in place instead: the micro-kernels take the tile's MR rows through row pointers
// (micro_rows, micro_half), the same sums in the same order, so the bits do not change. Measured
// on Zen 4 against the packed A (C = A B^T; one block: the two ways in alternating processes,
// two blocks and the checks below: call by call in one process, medians; GFLOP/s, 2 threads):
//   one block, AVX-512: 700 x 200 x 18,328 (the word LM decoder's dx) 192 -> 209; 700 x 64 x
//     18,328 159 -> 210; 6,400 x 128 x 1,024 181 -> 216; 3,200 x 100 x 512 179 -> 211; AVX2:
//     700 x 16 x 200 147 -> 193; 1 thread, AVX-512, 700 x 16 x 200 79 -> 107; AVX2, 8,192 x 100
//     x 512 92 -> 91 (the one shape not faster);
//   two blocks, AVX2 (NC 192): 700 x 200 x 18,328 1.07x, 6,400 x 256 x 1,024 (an LSTM(256)'s dx)
//     1.12-1.14x, 3,200 x 384 x 512 1.09x, 3,200 x 256 x 4,096 1.00x;
//     AVX-512 (NC 256): 700 x 400 x 18,328 1.04x, 6,400 x 512 x 1,024 1.09x, 8,192 x 300 x 512
//     1.13x, 3,200 x 512 x 4,096 1.00x; at 1 thread 1.00-1.12x;
//   shallow products, where the per-tile call weighs most: 6,400 x 256 x {16, 32, 64, 128},
//     6,400 x 128 x 16, 6,400 x 64 x 32, 700 x 200 x 64: 1.00-1.06x on both paths (none slower).
// With three blocks and more, each A panel is read again by every block and the packed copy can
// be the better source (AVX2, 3,200 x 512 x 4,096: 0.90x in place), so A is packed there. And a
// packed panel that many column panels reuse over a short depth also stays the better source: the
// input projections x W_ih^T with few inputs measured 1.02-1.05x slower in place (8,192 x {400,
// 512} x 100 and 8,192 x 512 x 128, both paths), about even at 700 x 800 x 200 and 6,400 x 1,024 x
// 256: A is read in place only where the column panels N / NR are fewer than kc / 8 (kc: the
// depth block). Rows a multiple of 4 KiB apart (all MR rows in one L1 set) measured no slower
// (6,400 x 256 x 1,024 on AVX-512: 193 -> 219). On the AVX2 and AVX-512 paths, where it was
// measured; the scalar and NEON paths pack A as before.
#if defined(FASTRNN_ISA_AVX512) || defined(FASTRNN_ISA_AVX2)
constexpr bool GEMM_A_IN_PLACE = true;
#else
constexpr bool GEMM_A_IN_PLACE = false;
#endif

// Whether gemm_serial reads A in place for a block product of N columns and depth K, A's elements
// (i, k) at A[i * rsa + k * csa]. Decided per thread (a thread's columns where the team splits N)
// and after gemm_transposes has swapped the operands (A is then op(B)^T).
static bool gemm_a_in_place(const GemmBlocking& bl, int64_t N, int64_t K, int64_t rsa, int64_t csa) {
  return GEMM_A_IN_PLACE && csa == 1 && rsa >= 1 && N <= 2 * column_block_max(bl, K) &&
         8 * N < GEMM_NR * balanced_block(K, bl.kc, 16);
}

// gemm_a_in_place for a C-contiguous A and the blocks in use (the KernelTable's report).
static bool gemm_reads_a_in_place(int64_t N, int64_t K) {
  return N > 0 && K > 0 && gemm_a_in_place(gemm_blocking(), N, K, K, 1);
}

// C (m x n) = A B (+ C or + bias, then act) in the blocks of bl (cpu/blocking.h): the packed A
// block (MC x KC) is reused from the L3 by every column block of B (ic -> pc -> jc). When all
// of B fits one column block the B block is packed once per KC instead and reused by every A
// block, each of MC_L2 rows, packed just before use (pc -> ic) or read in place (Ar, below).
// Each element sums its KC-long partial products in k order.
// The operands come from the packers: pa(ic, pc, mc, kc, Ap) writes rows [ic, ic + mc) and depth
// [pc, pc + kc) of A in pack_a's layout, pb(ic, pc, jc, kc, nc, Bp) depth [pc, pc + kc) and columns
// [jc, jc + nc) of B in pack_b's (ic: the A block it is packed for; the loops pack the same B block
// again for every A block when they run ic -> pc -> jc). gemm_serial packs stored matrices, and
// its packer of B may also sum B's columns from the packed blocks. With Ar (A row-major, rows lda
// floats apart; see gemm_a_in_place) the products read A in place and pa is not called.
template <class PackA, class PackB>
static void gemm_serial_packed(const GemmBlocking& bl, int64_t M, int64_t N, int64_t K, PackA&& pa, PackB&& pb,
                               float* C, int64_t ldc, bool accumulate, const float* bias, int act,
                               const float* Ar = nullptr, int64_t lda = 0) {
  // A depth shorter than KC leaves room in the caches: the B and A blocks take as many more
  // columns and rows as keep them the same size in bytes.
  const int64_t KCb = balanced_block(K, bl.kc, 16);
  const int64_t NCb = balanced_block(N, column_block_max(bl, K), GEMM_NR);
  const bool one_jc = NCb >= N;
  const int64_t mc_bl = one_jc ? bl.mc_l2 : bl.mc;
  const int64_t mc_k = std::min(BLOCK_MC_MAX / GEMM_MR * GEMM_MR, mc_bl * bl.kc / KCb / GEMM_MR * GEMM_MR);
  const int64_t MCb = balanced_block(M, std::max<int64_t>(mc_k, mc_bl), GEMM_MR);
  float* Ap = scratch(0, Ar ? 0 : (size_t)(MCb * KCb));  // (unused when A is read in place)
  float* Bp = scratch(1, (size_t)(KCb * (NCb + GEMM_NR)));
  if (one_jc) {
    for (int64_t pc = 0; pc < K; pc += KCb) {
      const int64_t kc = std::min(KCb, K - pc);
      const int act_c = pc + kc >= K ? act : 0;  // the activation goes on the final sums only
      pb(int64_t(0), pc, int64_t(0), kc, N, Bp);
      for (int64_t ic = 0; ic < M; ic += MCb) {
        const int64_t mc = std::min(MCb, M - ic);
        if (!Ar) pa(ic, pc, mc, kc, Ap);
        multiply_blocks(mc, N, kc, Ap, Bp, C + ic * ldc, ldc, accumulate || pc > 0, bias, act_c,
                        Ar ? Ar + ic * lda + pc : nullptr, lda);
      }
    }
    return;
  }
  for (int64_t ic = 0; ic < M; ic += MCb) {
    const int64_t mc = std::min(MCb, M - ic);
    for (int64_t pc = 0; pc < K; pc += KCb) {
      const int64_t kc = std::min(KCb, K - pc);
      const int act_c = pc + kc >= K ? act : 0;
      if (!Ar) pa(ic, pc, mc, kc, Ap);
      for (int64_t jc = 0; jc < N; jc += NCb) {
        const int64_t nc = std::min(NCb, N - jc);
        pb(ic, pc, jc, kc, nc, Bp);
        multiply_blocks(mc, nc, kc, Ap, Bp, C + ic * ldc + jc, ldc, accumulate || pc > 0,
                        bias ? bias + jc : nullptr, act_c, Ar ? Ar + ic * lda + pc : nullptr, lda);
      }
    }
  }
}

// cs[j] += the rows of a packed B block (kc x nc, pack_b's layout) in column j, k ascending.
static void colsum_packed_b(const float* Bp, int64_t kc, int64_t nc, float* cs) {
  for (int64_t j0 = 0; j0 < nc; j0 += GEMM_NR) {
    const int n = (int)std::min<int64_t>(GEMM_NR, nc - j0), nr = panel_width(n);
    const float* p = Bp + j0 * kc;
    for (int c = 0; c < n; c += W) {
      const int nl = std::min(W, n - c);
      V acc = Simd::loadn(cs + j0 + c, nl);
      for (int64_t k = 0; k < kc; ++k) acc = Simd::add(acc, Simd::load(p + k * nr + c));
      Simd::storen(cs + j0 + c, acc, nl);
    }
  }
}

// With colsum (N floats, added to), also the column sums of B, from its packed blocks. A few rows
// of A with B's rows contiguous read B in place instead (gemm_few_rows: the same bits; not with
// colsum, which the packed blocks serve).
static void gemm_serial(const GemmBlocking& bl, int64_t M, int64_t N, int64_t K, const float* A, int64_t rsa,
                        int64_t csa, const float* B, int64_t rsb, int64_t csb, float* C, int64_t ldc,
                        bool accumulate, const float* bias, int act, float* colsum = nullptr) {
  if (M <= FEW_ROWS_MAX && csb == 1 && !colsum) {
    gemm_few_rows(M, N, K, balanced_block(K, bl.kc, 16), A, rsa, csa, B, rsb, C, ldc, accumulate, bias, act);
    return;
  }
  gemm_serial_packed(
      bl, M, N, K,
      [&](int64_t ic, int64_t pc, int64_t mc, int64_t kc, float* Ap) { pack_a(mc, kc, A + ic * rsa + pc * csa, rsa, csa, Ap); },
      [&](int64_t ic, int64_t pc, int64_t jc, int64_t kc, int64_t nc, float* Bp) {
        pack_b(kc, nc, B + pc * rsb + jc * csb, rsb, csb, Bp);
        if (colsum && ic == 0) colsum_packed_b(Bp, kc, nc, colsum + jc);  // each B block once
      },
      C, ldc, accumulate, bias, act, gemm_a_in_place(bl, N, K, rsa, csa) ? A : nullptr, rsa);
}

// out[j] += sum over k ascending of B[k * rsb + j * csb] (the colsum_b of the paths that do not pack B).
static void colsum_strided(const float* B, int64_t K, int64_t N, int64_t rsb, int64_t csb, float* out) {
  for (int64_t j = 0; j < N; ++j) {
    float s = 0.0f;
    for (int64_t k = 0; k < K; ++k) s += B[k * rsb + j * csb];
    out[j] += s;
  }
}

// How the threaded GEMM splits an M x N x K product over `threads` threads: the team size and
// whether it splits N (else M). Each thread packs all of the operand along the dimension that is
// not split, so splitting N costs nt*M*K packing and splitting M costs nt*K*N: the larger of M
// and N is split. Under 5e5 multiply-adds one thread does everything.
struct GemmSplit {
  int nt;
  bool split_n;
  int64_t parts;  // GEMM_NR-wide column panels or GEMM_MR-row panels to share
  // [lo, hi) of the split dimension for thread tid
  int64_t lo(int tid) const { return parts * tid / nt * (split_n ? GEMM_NR : GEMM_MR); }
  int64_t hi(int tid, int64_t dim) const {
    return std::min(dim, parts * (tid + 1) / nt * (split_n ? GEMM_NR : GEMM_MR));
  }
};

static GemmSplit gemm_split(int64_t M, int64_t N, int64_t K, int threads) {
  int nt = std::max(1, threads);
  if ((double)M * (double)N * (double)K < 5.0e5) nt = 1;  // not worth starting a team
  const int64_t pn = ceil_div(N, GEMM_NR), pm = ceil_div(M, GEMM_MR);
  const bool split_n = N > M ? pn >= nt : pm < nt;
  nt = (int)std::min<int64_t>(nt, split_n ? pn : pm);
  return GemmSplit{nt, split_n, split_n ? pn : pm};
}

// part(w) for w in [0, nt) on a team of nt threads (the runtime may give fewer threads than asked
// for: OMP_DYNAMIC, thread limits, nesting; the parts are then shared among those it gives).
template <class F>
static void run_parts(int nt, F&& part) {
  if (nt <= 1) {
    part(0);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    for (int w = omp_get_thread_num(); w < nt; w += omp_get_num_threads()) part(w);
  }
}

// C = A B (+ C or + bias) for N <= 4 without packing: dot products when A's rows are contiguous;
// when A's columns are, one sweep down A per block of SMALL_N_MB rows of C, scaling each column
// into N accumulator rows (at most 4 x SMALL_N_MB floats, in L1). Summation order fixed (k
// ascending per element).
static constexpr int64_t SMALL_N = 4;
static constexpr int64_t SMALL_N_MB = 1024;

static void gemm_small_n(const CpuGemmArgs& g) {
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
      act_row(g.C + i * g.ldc, N, g.act);
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
      for (int64_t i = 0; i < mb; ++i) {
        for (int64_t n = 0; n < N; ++n) g.C[(m0 + i) * g.ldc + n] = init(m0 + i, n) + acc[n * ldacc + i];
        act_row(g.C + (m0 + i) * g.ldc, N, g.act);
      }
    }
  }
}

// The register-tile work of an m x n product per k step, in row-columns: a last row tile costs
// its own rows (micro_packed or micro_rows with Mr < GEMM_MR), a last column panel that is not
// whole costs a whole GEMM_NR panel (its one-vector kernel keeps MR accumulator chains, too few to
// run faster per column), or a quarter of one where micro_half takes it (AVX-512, at most 8
// columns).
static double tile_work(int64_t m, int64_t n) {
  const int64_t rem = n % GEMM_NR;
  double cols = (double)(n - rem);
#if defined(FASTRNN_ISA_AVX512)
  if (rem > 0 && rem <= 8) cols += GEMM_NR / 4.0;
  else
#endif
  if (rem > 0) cols += GEMM_NR;
  return cols * (double)m;
}

// C^T needs a scratch buffer the size of C: at most this many floats (128 MiB), and one of more than
// GEMM_CT_KEEP floats (32 MiB) is freed after its call, so that one large product does not leave its
// size resident on the thread.
constexpr int64_t GEMM_CT_MAX = (int64_t)1 << 25, GEMM_CT_KEEP = (int64_t)1 << 23;

// Whether C = A B runs as C^T = B^T A^T into scratch, then transposed into C: where N leaves much
// of its last column panel empty and M would not (a recurrent layer's dW_ih = dG^T x and
// dx = dG W_ih with 100 inputs: N = 100 is 6 panels of 16 and one of 4 on AVX2; as C^T the 100
// are rows and the 512 or 8,192 columns whole panels), by enough to pay for the transposes: a
// pass over C (two when accumulating: C^T is read in first) measured about the time of 33 k steps
// of the product per element (Zen 4, C of 3 MiB, out of the L2), so the work saved per element,
// K times the fraction, must reach 48 k steps per pass. Measured on Zen 4, 1 thread, avx2:
// 512 x 8,192 x 100 (dW_ih) 77 -> 89 GFLOP/s, 8,192 x 512 x 100 (dx) 88 -> 89; 700 x 18,328 x 200
// (work 0.97 of the plain one) did not gain and is not transposed. Not with a bias, an activation
// or column sums (they act on C's columns), nor for few rows either way.
//
// Also, without accumulation, a deep product (K >= 2,048) whose C is at least 4 times taller than
// wide and has at least 2^19 elements: each packed A micro-panel then serves few column panels, and
// the product runs faster with the long side as columns. Measured on Zen 4 against the plain
// orientation (the transposed product alone; the transposes of C add 1-2 % at K = 3,200), avx2 /
// avx512: 4,096 x 3,200 x 512 (an LSTM(1024)'s dW_ih) 1.07 / 1.05x at 1 thread, 1.07 / 1.02x at 2;
// 4,096 x 3,200 x 1,024 (its dW_hh) 1.10 / 1.04x, 1.03 / 1.04x; 3,200 x 4,096 x 512 (its dx) 1.08 /
// 1.03x at 2; 2,048 x 3,200 x 256 1.10 / 1.03x at 2. Smaller or squarer ones were mixed at 2 threads
// (1,024 x 6,400 x 256: 0.96 / 1.00x; 1,024 x 6,400 x 512: 0.99x) and stay plain.
static bool gemm_transposes(const CpuGemmArgs& g) {
  if (g.bias || g.act || g.colsum_b || g.M * g.N > GEMM_CT_MAX) return false;
  if (g.M < 4 * GEMM_NR || g.N < 4 * GEMM_MR) return false;
  const double saved = 1.0 - tile_work(g.N, g.M) / tile_work(g.M, g.N);
  if (saved >= 0.05 && saved * (double)g.K >= 48.0 * (g.accumulate ? 2 : 1)) return true;
  return !g.accumulate && g.K >= 2048 && g.M >= 4 * g.N && g.M * g.N >= (int64_t)1 << 19;
}

// dst[j * ldd + i] = src[i * lds + j] for i < m, j < n: tiles of TT x TT (every line of either
// matrix touched in one tile, its 4 KiB each way in the L1), W x W blocks transposed in registers
// within a tile, the edges by element; the tile rows shared among `threads` threads.
static void transpose_matrix(const float* src, int64_t lds, int64_t m, int64_t n, float* dst, int64_t ldd,
                             int threads) {
  constexpr int64_t TT = 64;
  const int64_t tr = ceil_div(m, TT);
  const int nt = (int)std::max<int64_t>(1, std::min<int64_t>(threads, m * n < (1 << 16) ? 1 : tr));
  run_parts(nt, [&](int tid) {
    for (int64_t ti = tr * tid / nt; ti < tr * (tid + 1) / nt; ++ti)
      for (int64_t tj = 0; tj < n; tj += TT) {
        const int64_t i1 = std::min(m, ti * TT + TT), j1 = std::min(n, tj + TT);
        int64_t i = ti * TT;
        for (; i + W <= i1; i += W) {
          int64_t j = tj;
          for (; j + W <= j1; j += W) transpose_w(src + i * lds + j, lds, dst + j * ldd + i, ldd);
          for (; j < j1; ++j)
            for (int64_t r = i; r < i + W; ++r) dst[j * ldd + r] = src[r * lds + j];
        }
        for (; i < i1; ++i)
          for (int64_t j = tj; j < j1; ++j) dst[j * ldd + i] = src[i * lds + j];
      }
  });
}

static void gemm_direct(const CpuGemmArgs& g);

static void gemm(const CpuGemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (gemm_transposes(g)) {
    // C^T = op(B)^T op(A)^T: the operands swap, each read with its strides swapped
    float* ct = scratch(2, (size_t)(g.M * g.N));
    if (g.accumulate) transpose_matrix(g.C, g.ldc, g.M, g.N, ct, g.M, g.threads);  // the same sums, in order
    CpuGemmArgs t = g;
    t.M = g.N, t.N = g.M;
    t.A = g.B, t.rsa = g.csb, t.csa = g.rsb;
    t.B = g.A, t.rsb = g.csa, t.csb = g.rsa;
    t.C = ct, t.ldc = g.M;
    gemm_direct(t);
    transpose_matrix(ct, g.M, g.N, g.M, g.C, g.ldc, g.threads);
    if (g.M * g.N > GEMM_CT_KEEP) std::vector<float>().swap(g_scratch[2]);
    return;
  }
  gemm_direct(g);
}

// gemm without the choice of running transposed.
static void gemm_direct(const CpuGemmArgs& g) {
  if (g.K > 0 && g.N <= SMALL_N && (g.csa == 1 || g.rsa == 1)) {
    gemm_small_n(g);
    if (g.colsum_b) colsum_strided(g.B, g.K, g.N, g.rsb, g.csb, g.colsum_b);
    return;
  }
  if (g.K <= 0) {
    for (int64_t i = 0; i < g.M; ++i) {
      if (!g.accumulate) {
        if (g.bias)
          std::memcpy(g.C + i * g.ldc, g.bias, sizeof(float) * (size_t)g.N);
        else
          std::memset(g.C + i * g.ldc, 0, sizeof(float) * (size_t)g.N);
      }
      act_row(g.C + i * g.ldc, g.N, g.act);
    }
    return;
  }
  const GemmBlocking bl = gemm_blocking();  // one blocking for every thread of the call
  const GemmSplit sp = gemm_split(g.M, g.N, g.K, g.threads);
  // colsum_b: running sums of the columns a thread packs (all of them when M is split: thread 0's),
  // added to colsum_b at the end (the sum of each column first, as colsum does)
  thread_local std::vector<float> cs_buf;
  auto sums = [&](bool mine, int64_t n) -> float* {
    if (!g.colsum_b || !mine) return nullptr;
    if (cs_buf.size() < (size_t)n) cs_buf.resize((size_t)n);
    std::memset(cs_buf.data(), 0, sizeof(float) * (size_t)n);
    return cs_buf.data();
  };
  auto add_sums = [&](const float* cs, int64_t j0, int64_t n) {
    for (int64_t j = 0; cs && j < n; j += W) {
      const int nl = (int)std::min<int64_t>(W, n - j);
      float* o = g.colsum_b + j0 + j;
      Simd::storen(o, Simd::add(Simd::loadn(o, nl), Simd::loadn(cs + j, nl)), nl);
    }
  };
  run_parts(sp.nt, [&](int tid) {
    if (sp.split_n) {
      const int64_t j0 = sp.lo(tid), j1 = sp.hi(tid, g.N);
      if (j1 <= j0) return;
      float* cs = sums(true, j1 - j0);
      gemm_serial(bl, g.M, j1 - j0, g.K, g.A, g.rsa, g.csa, g.B + j0 * g.csb, g.rsb, g.csb, g.C + j0, g.ldc,
                  g.accumulate, g.bias ? g.bias + j0 : nullptr, g.act, cs);
      add_sums(cs, j0, j1 - j0);
    } else {
      const int64_t i0 = sp.lo(tid), i1 = sp.hi(tid, g.M);
      if (i1 <= i0) return;
      float* cs = sums(tid == 0, g.N);
      gemm_serial(bl, i1 - i0, g.N, g.K, g.A + i0 * g.rsa, g.rsa, g.csa, g.B, g.rsb, g.csb, g.C + i0 * g.ldc,
                  g.ldc, g.accumulate, g.bias, g.act, cs);
      add_sums(cs, 0, g.N);
    }
  });
}


