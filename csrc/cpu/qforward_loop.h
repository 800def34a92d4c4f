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
//   1. the x projection for all steps, xw = x . W_ih^T + b_ih, one lowp_gemm;
//   2. the time loop, split over threads as the float loop is (loop_split), where each thread
//      prepares the rows of h it reads (every row of its block; all rows when split by units,
//      which costs B*H per thread and step and saves a barrier), and per tile of rows and panel of
//      W hidden units takes the G gate vectors of h . W_hh^T from S::micro into the cell's
//      pointwise maths (CellMath<C>::forward, inference), exactly where the float loop takes
//      its own product.
// Masked positions carry the state and output 0, as in the float loop.

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

struct QForwardWorkspace {
  float* xw;      // [T*B, G*H]
  int32_t* xq;    // [T*B, I4]: the prepared x rows (I4 = S::row_words(I); H4 likewise)
  float* xs;      // [T*B]
  float* hbuf;    // [2][B][ldh]
  float* cstate;  // [B, H] (LSTM)
  int32_t* hq;    // [threads][B][H4]
  float* hs;      // [threads][B]
  int64_t ldh;
  size_t floats;
};

template <class S>
static QForwardWorkspace qforward_workspace(const Dims& d, int threads, float* base) {
  WorkspaceLayout ws(base);
  QForwardWorkspace w{};
  const int64_t N = d.T * d.B, I4 = S::row_words(d.I), H4 = S::row_words(d.H);
  w.xw = ws.take((size_t)(N * d.G() * d.H));
  w.xq = reinterpret_cast<int32_t*>(ws.take((size_t)(N * I4)));
  w.xs = ws.take((size_t)N);
  w.ldh = padded_ld(d.H);
  w.hbuf = ws.take((size_t)(2 * d.B * w.ldh));
  w.cstate = d.cell == Cell::LSTM ? ws.take((size_t)(d.B * d.H)) : nullptr;
  w.hq = reinterpret_cast<int32_t*>(ws.take((size_t)(threads * d.B * H4)));
  w.hs = ws.take((size_t)(threads * d.B));
  w.floats = ws.floats();
  return w;
}

template <class S>
static size_t lowp_forward_ws(const Dims& d, int threads) {
  return qforward_workspace<S>(d, threads, nullptr).floats;
}

template <Cell C, class S>
static void lowp_forward_impl(const LowpForwardArgs<typename S::Packed>& a) {
  using Math = CellMath<C>;
  constexpr int G = Math::G;
  constexpr int MR = S::template tile_rows<G>();
  const Dims& d = a.d;
  const int64_t T = d.T, B = d.B, H = d.H, GH = G * H, N = T * B;
  const int64_t P = ceil_div(H, W), H4 = S::row_words(H);
  const bool fast = S::fast();
  const QForwardWorkspace ws = qforward_workspace<S>(d, std::max(1, a.threads), a.workspace);
  const int64_t ldh = ws.ldh;

  lowp_gemm<S>(a.x, N, d.I, a.wih, a.b_ih, ws.xw, GH, ws.xq, ws.xs, a.threads);

  // the bytes of packed W_hh: 4 bytes per 4 int8 or 2 bf16 weights
  const double whh_bytes = (double)(P * S::groups(a.whh) * G * W * 4);
  const LoopSplit split = loop_split(a.threads, P, B, whh_bytes,
                                     2.0 * (double)B * (double)GH * (double)H, T);
#pragma omp parallel num_threads(split.threads)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
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
    std::vector<int64_t> act((size_t)B);
#pragma omp barrier
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = d.time_of_step(s);
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
      for (int64_t p = p0; p < p1; ++p) {
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
            // the x-projection rows and the outputs of this tile, far apart in memory: asked for
            // now, they arrive during the product (as in the float loop)
            for (int i = 0; i < Mr; ++i) {
              const int64_t pos = d.pos(t, act[(size_t)(r0 + i)]);
              for (int g = 0; g < G; ++g) {
                const float* q = ws.xw + pos * GH + g * H + j0;
                __builtin_prefetch(q, 1);
                __builtin_prefetch(q + nv - 1, 1);
              }
              __builtin_prefetch(a.y + pos * H + j0, 1);
            }
            V z[Mr * G];
            S::template micro<Mr, G>(fast, a.whh, p, rows, hs + r0, z);
            for (int i = 0; i < Mr; ++i) {
              const int64_t b = act[(size_t)(r0 + i)];
              const int64_t pos = d.pos(t, b);
              Math::forward(z + i * G, ws.xw + pos * GH + j0, H, nv, hcur + b * ldh + j0, hnext + b * ldh + j0,
                            a.y + pos * H + j0, ws.cstate ? ws.cstate + b * H + j0 : nullptr, nullptr, nullptr,
                            bhh, false);
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
