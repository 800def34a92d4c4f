// qforward_loop.h — the low-precision inference drivers (fastrnn.quantize): the matrix product
// and the recurrent cells' forward pass, written once for the int8 scheme (qgemm.h) and the bf16
// scheme (bgemm.h).
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after qgemm.h, bgemm.h and forward_loop.h.
//
// A scheme S (Int8Scheme, Bf16Scheme) gives: S::row (prepare a float row for its product:
// quantized, or rounded to bf16, into S::row_words(K) 32-bit words; returns the row's scale),
// S::micro<MR, NV> (the products of MR prepared rows with panel p of a packed matrix, as floats),
// S::tile_rows<NV> and S::fast() (the special instruction of the CPU: VNNI, VDPBF16PS).
//
// The float forward pass (forward_loop.h) with both weight products in the scheme:
//   1. the rows of x prepared once, all positions (split over the team): xq, xs;
//   2. the time loop, split over threads as the float loop is (loop_split). At the first step of
//      each chunk of steps, each thread computes the x projection xw = x . W_ih^T + b_ih of the
//      chunk's steps for exactly the rows and unit panels it computes itself (so no barrier), into
//      a buffer of its own of at most QX_CHUNK_FLOATS floats; then, step by step, it prepares the
//      rows of h it reads (every row of its block; all rows when split by units, which costs B*H
//      per thread and step and saves a barrier), and per tile of rows and panel of W hidden units
//      takes the G gate vectors of h . W_hh^T from S::micro into the cell's pointwise maths
//      (CellMath<C>::forward, inference), exactly where the float loop takes its own product.
// Why chunks: the float loop projects all steps up front, but [T*B, G*H] floats (16 MiB for the
// text shape) are written once and read back once from far away, which cost the int8 loop more
// than its products; per step (tiles of the step's rows only) a small batch would re-read W_ih
// for a tile of one row. A chunk's projection stays in L2 and its tiles span several steps. The
// arithmetic is lowp_gemm's (same sums, same order, the bias added last), so the results do not
// depend on the chunking. Masked positions carry the state and output 0, as in the float loop;
// their x projection is never computed.

// ---- C[M, N] = A . W^T (+ bias): the x projection and Dense ------------------------------------
// A [M, K] float rows (lda), prepared here into `qa` (M * S::row_words(K) words) and `sa` (M
// floats) by the team; C rows of ldc floats, columns by qcol; bias [N] or nullptr.
template <class S>
static void lowp_gemm(const float* A, int64_t M, int64_t lda, const typename S::Packed& pw, const float* bias,
                      float* C, int64_t ldc, int32_t* qa, float* sa, int threads) {
  const bool fast = S::fast();
  const int64_t RW = S::row_words(pw.K), P = pw.P, NV = pw.NV;
  const double flops = 2.0 * (double)M * (double)pw.N * (double)pw.K;
  const int nt = flops < 2.0e5 ? 1 : std::max(1, threads);
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t m0, m1;
    panel_range(M, tid, team, m0, m1);
    for (int64_t m = m0; m < m1; ++m) sa[m] = S::row(A + m * lda, pw.K, qa + m * RW, fast);
#pragma omp barrier
    // work items: (panel, block of 64 rows), dealt round robin
    const int64_t RB = 64, nb = ceil_div(M, RB);
    for (int64_t item = tid; item < P * nb; item += team) {
      const int64_t p = item % P, r0b = item / P * RB, r1b = std::min(M, r0b + RB);
      auto tile = [&](auto nvc) {
        constexpr int NVc = decltype(nvc)::value;
        constexpr int MR = S::template tile_rows<NVc>();
        for (int64_t r0 = r0b; r0 < r1b; r0 += MR) {
          const int m = (int)std::min<int64_t>(MR, r1b - r0);
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int Mr = decltype(mc)::value;
            const int32_t* rows[Mr];
            for (int i = 0; i < Mr; ++i) rows[i] = qa + (r0 + i) * RW;
            V z[Mr * NVc];
            S::template micro<Mr, NVc>(fast, pw, p, rows, sa + r0, z);
            for (int v = 0; v < NVc; ++v) {
              const int64_t c0 = qcol(pw.N, NVc, pw.Hg, p, v, 0);
              if (c0 < 0) continue;
              const int nv = (int)std::min<int64_t>(W, (pw.Hg ? pw.Hg - p * W : pw.N - c0));
              const V b = bias ? Simd::loadn(bias + c0, nv) : Simd::zero();
              for (int i = 0; i < Mr; ++i) Simd::storen(C + (r0 + i) * ldc + c0, Simd::add(z[i * NVc + v], b), nv);
            }
          });
        }
      };
      switch (NV) {
        case 1: tile(std::integral_constant<int, 1>{}); break;
        case 2: tile(std::integral_constant<int, 2>{}); break;
        case 3: tile(std::integral_constant<int, 3>{}); break;
        case 4: tile(std::integral_constant<int, 4>{}); break;
        default: break;  // NV is checked by the caller
      }
    }
  }
}

// A thread's x-projection buffer: at most this many floats (128 KiB), at least one step's.
constexpr int64_t QX_CHUNK_FLOATS = 32 * 1024;

struct QForwardWorkspace {
  int32_t* xq;    // [T*B, I4]: the prepared x rows (I4 = S::row_words(I); H4 likewise)
  float* xs;      // [T*B]
  float* hbuf;    // [2][B][ldh]
  float* cstate;  // [B, H] (LSTM)
  int32_t* hq;    // [threads][B][H4]
  float* hs;      // [threads][B]
  float* xw;      // [xw_pool]: each thread's chunk of the x projection (qx_pool_floats)
  int64_t ldh, xw_pool;
  size_t floats;
};

// Steps of a chunk whose every step takes `step_floats` of the buffer: as many as QX_CHUNK_FLOATS
// hold, at least 1, at most T.
static int64_t qx_chunk_steps(int64_t T, int64_t step_floats) {
  return std::max<int64_t>(1, std::min<int64_t>(T, QX_CHUNK_FLOATS / std::max<int64_t>(1, step_floats)));
}

// The x-projection buffers of a team of up to `threads` threads, in floats: thread tid of a team
// of t gets floats / t of them from tid * (floats / t) on, which holds a chunk of its part of a
// step (loop_part's, by unit panels or by row blocks), whichever split the loop takes and however
// many threads the runtime grants, and a gap of a page to the next thread's (so that a core's prefetchers running
// past the end of its buffer do not fetch lines the neighbour is writing). Sized for the largest
// such team total, not t times a whole step.
constexpr int64_t QX_GAP_FLOATS = 1024;
static int64_t qx_pool_floats(const Dims& d, int threads) {
  const int64_t P = ceil_div(d.H, W), gw = d.G() * W;
  int64_t pool = 0;
  for (int t = 1; t <= threads; ++t) {
    int64_t part = 0;  // the largest part of a step any thread of t computes, either split (loop_part)
    for (bool by_rows : {false, true})
      for (int tid = 0; tid < t; ++tid) {
        int64_t p0, p1, b_lo, b_hi;
        loop_part(by_rows, P, d.B, tid, t, p0, p1, b_lo, b_hi);
        part = std::max(part, (p1 - p0) * (b_hi - b_lo) * gw);
      }
    pool = std::max(pool, t * (qx_chunk_steps(d.T, std::max<int64_t>(1, part)) * part + QX_GAP_FLOATS));
  }
  return pool;
}

template <class S>
static QForwardWorkspace qforward_workspace(const Dims& d, int threads, float* base) {
  WorkspaceLayout ws(base);
  QForwardWorkspace w{};
  const int64_t N = d.T * d.B, I4 = S::row_words(d.I), H4 = S::row_words(d.H);
  w.xq = reinterpret_cast<int32_t*>(ws.take((size_t)(N * I4)));
  w.xs = ws.take((size_t)N);
  w.ldh = padded_ld(d.H);
  w.hbuf = ws.take((size_t)(2 * d.B * w.ldh));
  w.cstate = d.cell == Cell::LSTM ? ws.take((size_t)(d.B * d.H)) : nullptr;
  w.hq = reinterpret_cast<int32_t*>(ws.take((size_t)(threads * d.B * H4)));
  w.hs = ws.take((size_t)(threads * d.B));
  w.xw_pool = qx_pool_floats(d, threads);
  w.xw = ws.take((size_t)w.xw_pool);
  w.floats = ws.floats();
  return w;
}

template <class S>
static size_t lowp_forward_ws(const Dims& d, int threads) {  // sized for the team the loop runs
  return qforward_workspace<S>(d, std::max(1, threads), nullptr).floats;
}

template <Cell C, class S>
static void lowp_forward_impl(const LowpForwardArgs<typename S::Packed>& a) {
  using Math = CellMath<C>;
  constexpr int G = Math::G;
  constexpr int MR = S::template tile_rows<G>();
  const Dims& d = a.d;
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, N = T * B;
  const int64_t P = ceil_div(H, W), H4 = S::row_words(H), I4 = S::row_words(I);
  const bool fast = S::fast();
  const QForwardWorkspace ws = qforward_workspace<S>(d, std::max(1, a.threads), a.workspace);
  const int64_t ldh = ws.ldh;

  // per step both products (the x projection is in the loop), over the packed weights: 4 bytes
  // per 4 int8 or 2 bf16 weights
  const double w_bytes = (double)(P * (S::groups(a.whh) + S::groups(a.wih)) * G * W * 4);
  const LoopSplit split = loop_split(a.threads, P, B, w_bytes,
                                     2.0 * (double)B * (double)(G * H) * (double)(H + I), T);
#pragma omp parallel num_threads(split.threads)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t n0, n1;  // the rows of x this thread prepares
    panel_range(N, tid, team, n0, n1);
    for (int64_t n = n0; n < n1; ++n) ws.xs[n] = S::row(a.x + n * I, I, ws.xq + n * I4, fast);
    int64_t pp0, pp1;
    panel_range(P, tid, team, pp0, pp1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = std::min(H, pp0 * W); j < std::min(H, pp1 * W); ++j) {
        ws.hbuf[b * ldh + j] = a.h0 ? a.h0[b * H + j] : 0.0f;
        if (ws.cstate) ws.cstate[b * H + j] = a.c0 ? a.c0[b * H + j] : 0.0f;
      }
    int64_t p0, p1, b_lo, b_hi;
    loop_part(split.by_rows, P, B, tid, team, p0, p1, b_lo, b_hi);
    const int64_t j_lo = std::min(H, p0 * W), j_hi = std::min(H, p1 * W);
    int32_t* hq = ws.hq + (int64_t)tid * B * H4;
    float* hs = ws.hs + (int64_t)tid * B;
    // this thread's share of the pool (a multiple of W floats: the buffers start as aligned as the
    // pool), its last page the gap to the next thread's: at least a chunk of its part (qx_pool_floats)
    const int64_t xw_stride = ws.xw_pool / team / W * W, xw_cap = xw_stride - QX_GAP_FLOATS;
    float* xw = ws.xw + (int64_t)tid * xw_stride;  // [Tc][Bt][Pt][G][W]
    const int64_t Bt = b_hi - b_lo, Pt = p1 - p0, step_floats = std::max<int64_t>(1, Bt * Pt * G * W);
    const int64_t Tc = std::min(qx_chunk_steps(T, step_floats), std::max<int64_t>(1, xw_cap / step_floats));
    std::vector<int64_t> act((size_t)B), slot((size_t)(Tc * Bt)), spos((size_t)(Tc * Bt));
#pragma omp barrier
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = d.time_of_step(s);
      const int64_t sc0 = s - s % Tc;  // the chunk's first step
      if (s == sc0 && Pt > 0) {        // the x projection of steps [sc0, sc0 + Tc): this thread's rows and panels
        int64_t nr = 0;
        for (int64_t s2 = sc0; s2 < std::min(T, sc0 + Tc); ++s2) {
          const int64_t t2 = d.time_of_step(s2);
          for (int64_t b = b_lo; b < b_hi; ++b)
            if (d.valid(t2, b)) {
              slot[(size_t)nr] = (s2 - sc0) * Bt + (b - b_lo);
              spos[(size_t)nr++] = d.pos(t2, b);
            }
        }
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t j0 = p * W;
          const int nv = (int)std::min<int64_t>(W, H - j0);
          V bih[G];
          for (int g = 0; g < G; ++g) bih[g] = Simd::loadn(a.b_ih + g * H + j0, nv);
          for (int64_t r0 = 0; r0 < nr; r0 += MR) {
            with_rows<1, MR>((int)std::min<int64_t>(MR, nr - r0), [&](auto mc) {
              constexpr int Mr = decltype(mc)::value;
              const int32_t* rows[Mr];
              float sx[Mr];
              for (int i = 0; i < Mr; ++i) {
                rows[i] = ws.xq + spos[(size_t)(r0 + i)] * I4;
                sx[i] = ws.xs[spos[(size_t)(r0 + i)]];
              }
              V z[Mr * G];
              S::template micro<Mr, G>(fast, a.wih, p, rows, sx, z);
              for (int i = 0; i < Mr; ++i) {
                float* dst = xw + (slot[(size_t)(r0 + i)] * Pt + (p - p0)) * G * W;
                for (int g = 0; g < G; ++g) Simd::store(dst + g * W, Simd::add(z[i * G + g], bih[g]));
              }
            });
          }
        }
      }
      const float* hcur = ws.hbuf + (s & 1) * B * ldh;
      float* hnext = ws.hbuf + ((s + 1) & 1) * B * ldh;
      int64_t nact = 0;
      for (int64_t b = b_lo; b < b_hi; ++b) {
        if (d.valid(t, b)) {
          act[(size_t)nact] = b;
          hs[nact] = S::row(hcur + b * ldh, H, hq + nact * H4, fast);
          ++nact;
        } else if (j_hi > j_lo) {  // masked: carry the state, output 0
          std::memcpy(hnext + b * ldh + j_lo, hcur + b * ldh + j_lo, sizeof(float) * (size_t)(j_hi - j_lo));
          std::memset(a.y + d.pos(t, b) * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
        }
      }
      float* xws = xw + (s - sc0) * Bt * Pt * G * W;  // this step's x projection
      // The panels in alternating order, forwards on even steps and backwards on odd ones: a step
      // starts with the panels of W_hh the previous one read last, still in the cache where W_hh
      // (and the rest) exceeds it (an LSTM with H = 512 holds 1 MiB of int8 W_hh, the L2 of a
      // Zen 4 core), instead of streaming all of it from the next level every step.
      for (int64_t pi = 0; pi < Pt; ++pi) {
        const int64_t p = (s & 1) ? p1 - 1 - pi : p0 + pi;
        const int64_t j0 = p * W;
        const int nv = (int)std::min<int64_t>(W, H - j0);
        V bhh[3];
        if constexpr (Math::kHiddenBias)
          for (int g = 0; g < 3; ++g) bhh[g] = Simd::loadn(a.b_hh + g * H + j0, nv);
        for (int64_t r0 = 0; r0 < nact; r0 += MR) {
          const int m = (int)std::min<int64_t>(MR, nact - r0);
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int Mr = decltype(mc)::value;
            const int32_t* rows[Mr];
            for (int i = 0; i < Mr; ++i) rows[i] = hq + (r0 + i) * H4;
            // the outputs of this tile, far apart in memory: asked for now, they arrive during the
            // product (the x projection is in this thread's chunk buffer, in L2)
            for (int i = 0; i < Mr; ++i) __builtin_prefetch(a.y + d.pos(t, act[(size_t)(r0 + i)]) * H + j0, 1);
            V z[Mr * G];
            S::template micro<Mr, G>(fast, a.whh, p, rows, hs + r0, z);
            for (int i = 0; i < Mr; ++i) {
              const int64_t b = act[(size_t)(r0 + i)];
              const int64_t pos = d.pos(t, b);
              // the x projection with stride W between gates (CellMath's H is xg's gate stride)
              float* xg = xws + ((b - b_lo) * Pt + (p - p0)) * G * W;
              Math::forward(z + i * G, xg, W, nv, hcur + b * ldh + j0, hnext + b * ldh + j0, a.y + pos * H + j0,
                            ws.cstate ? ws.cstate + b * H + j0 : nullptr, nullptr, nullptr, bhh, false);
            }
          });
        }
      }
      if (!split.by_rows) {
#pragma omp barrier
      }
    }
    const float* hfin = ws.hbuf + (T & 1) * B * ldh;
    for (int64_t b = b_lo; b < b_hi; ++b) {
      for (int64_t j = j_lo; j < j_hi; ++j) a.h_n[b * H + j] = hfin[b * ldh + j];
      if (ws.cstate && a.c_n)
        for (int64_t j = j_lo; j < j_hi; ++j) a.c_n[b * H + j] = ws.cstate[b * H + j];
    }
  }
}

template <class S>
static void lowp_forward(const LowpForwardArgs<typename S::Packed>& a) {
  switch (a.d.cell) {
    case Cell::RNN_TANH: lowp_forward_impl<Cell::RNN_TANH, S>(a); break;
    case Cell::RNN_RELU: lowp_forward_impl<Cell::RNN_RELU, S>(a); break;
    case Cell::LSTM: lowp_forward_impl<Cell::LSTM, S>(a); break;
    case Cell::GRU: lowp_forward_impl<Cell::GRU, S>(a); break;
  }
}
static size_t qforward_ws(const Dims& d, int threads) { return lowp_forward_ws<Int8Scheme>(d, threads); }
static void qforward(const QForwardArgs& a) { lowp_forward<Int8Scheme>(a); }
static size_t bforward_ws(const Dims& d, int threads) { return lowp_forward_ws<Bf16Scheme>(d, threads); }
static void bforward(const BForwardArgs& a) { lowp_forward<Bf16Scheme>(a); }

// The KernelTable entries: sizes and packing for this ISA's W, the products.
static void qpack_entry(const int8_t* wq, const float* wscale, int64_t N, int64_t K, int NV, int64_t Hg, int8_t* out,
                        float* scale_out, int32_t* comp_out) {
  qpack(wq, wscale, N, K, NV, Hg, out, scale_out, comp_out);
}

template <class S>
static size_t lowp_gemm_ws(int64_t M, const typename S::Packed& pw) { return (size_t)(M * S::row_words(pw.K) + M); }

template <class S>
static void lowp_gemm_entry(const float* A, int64_t M, const typename S::Packed& pw, const float* bias, float* C,
                            float* workspace, int threads) {
  int32_t* qa = reinterpret_cast<int32_t*>(workspace);
  float* sa = workspace + M * S::row_words(pw.K);
  lowp_gemm<S>(A, M, pw.K, pw, bias, C, pw.N, qa, sa, threads);
}
static size_t qgemm_ws(int64_t M, const QPacked& pw) { return lowp_gemm_ws<Int8Scheme>(M, pw); }
static void qgemm_entry(const float* A, int64_t M, const QPacked& pw, const float* bias, float* C, float* workspace,
                        int threads) {
  lowp_gemm_entry<Int8Scheme>(A, M, pw, bias, C, workspace, threads);
}
static size_t bgemm_ws(int64_t M, const BPacked& pw) { return lowp_gemm_ws<Bf16Scheme>(M, pw); }
static void bgemm_entry(const float* A, int64_t M, const BPacked& pw, const float* bias, float* C, float* workspace,
                        int threads) {
  lowp_gemm_entry<Bf16Scheme>(A, M, pw, bias, C, workspace, threads);
}

static const char* qpath() {
#if defined(FASTRNN_ISA_AVX512)
  return cpu_has_vnni() ? "avx512-vnni" : "avx512bw";
#else
  return FASTRNN_ISA_NAME;
#endif
}

static const char* bpath() {
#if defined(FASTRNN_ISA_AVX512)
  return cpu_has_bf16dot() ? "avx512-bf16" : "avx512";
#else
  return FASTRNN_ISA_NAME;
#endif
}
