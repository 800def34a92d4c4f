// forward_loop.h — the CPU forward pass: input projection, then the time loop.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h, the standard headers and the tuning constants it defines.

// Gate vectors of a forward product tile (FNV) and its rows (forward_tile_rows). A tile keeps
// MR x FNV accumulators, the FNV weight vectors of a k step and a broadcast in registers, and
// computes G / FNV passes of FNV gates each over its rows, so that all G gates of its rows are
// complete at once for the pointwise pass. FNV = G (one pass) where the registers allow enough
// rows; AVX2's 16 registers hold only 2 rows x 4 LSTM gates, and with a weight vector used by 2
// rows GCC folds the weight loads into the FMAs (8 vector loads + 2 broadcasts per 8 FMAs: more
// than the 2 vector loads per cycle of the load ports), so the AVX2 LSTM runs 2 passes of 6 rows
// x 2 gates (2 loads + 6 broadcasts per 12 FMAs, 12 accumulator chains) and the AVX2 GRU one pass
// of 4 rows x 3 gates (3 + 4 loads per 12 FMAs). Tiles of 1 or 2 rows (B = 1, the last tile of a
// batch) still take all G gates in one pass, reading the passes' panels side by side: 1 row x 2
// gates would be 2 accumulator chains, bound by the FMA latency (4 cycles per k step).
template <int G>
constexpr int forward_tile_vectors() {
#if defined(FASTRNN_ISA_AVX2)
  return G == 4 ? 2 : G;
#else
  return G;
#endif
}

// Packs W_hh rows for the forward tiles: panel p holds, for every pass q < G/FNV (FNV, a divisor
// of G: forward_tile_vectors or G), for every k < H, the FNV gate vectors of hidden units [p*W,
// p*W+W): Wp[p][q][k][v][w] = w_hh[(q*FNV + v)*H + p*W + w][k] (0 past H). With FNV = G:
// Wp[p][k][g][w].
template <int G>
static void pack_whh_forward(const float* w_hh, int64_t H, int64_t p0, int64_t p1, float* Wp, int FNV) {
  auto at = [&](float* panel, int g) { return panel + (g / FNV) * H * FNV * W + (g % FNV) * W; };
  for (int64_t p = p0; p < p1; ++p) {
    float* dst = Wp + p * H * G * W;
    const int64_t j0 = p * W;
    const int nv = (int)std::min<int64_t>(W, H - j0);
    const int64_t k0 = nv == W ? H / W * W : 0;  // whole W x W blocks: transposed in registers, one
    for (int g = 0; g < G; ++g)                  // gate at a time (W source rows streamed at once)
      for (int64_t k = 0; k < k0; k += W) transpose_w(w_hh + (g * H + j0) * H + k, H, at(dst, g) + k * FNV * W, FNV * W);
    for (int g = 0; g < G; ++g) {  // the rest: contiguous writes; the source rows stay in L1 across k
      const float* src[W];           // the W source rows of this gate (nullptr: zero padding)
      for (int w = 0; w < W; ++w) src[w] = w < nv ? w_hh + (g * H + j0 + w) * H : nullptr;
      float* d = at(dst, g);
      for (int64_t k = k0; k < H; ++k)
        for (int w = 0; w < W; ++w) d[k * FNV * W + w] = src[w] ? src[w][k] : 0.0f;
    }
  }
}

// Rows of a forward tile: MR rows x FNV gate vectors of accumulators, plus FNV weight vectors and
// a broadcast, within the registers of the ISA (see forward_tile_vectors). On NEON each row's
// broadcast value takes a register of its own (see the tuning notes in kernels_impl.h): MR*G + G
// + MR <= VREGS.
template <int G>
constexpr int forward_tile_rows() {
#if defined(FASTRNN_ISA_NEON)
  return std::max(1, std::min(8, (VREGS - G) / (G + 1)));
#elif defined(FASTRNN_ISA_AVX2)
  constexpr int FNV = forward_tile_vectors<G>();
  return std::max(1, std::min(8, (VREGS - FNV - 1) / FNV));
#else
  return std::max(1, std::min(8, (VREGS - G - 2) / G));
#endif
}

// Whether the forward loop evens out its row tiles (see forward_impl): on AVX-512 only, where it
// was measured faster (Zen 4, LSTM(200) at 20 rows: 1.05-1.07x); AVX2 measured slower (0.97-0.98x);
// NEON not measured (no ARM machine), so it keeps the plain tiles.
#if defined(FASTRNN_ISA_AVX512)
constexpr bool FORWARD_EVEN_TILES = true;
#else
constexpr bool FORWARD_EVEN_TILES = false;
#endif

// The gate vectors per pass of W_hh's packing for a call of B rows: FNV (forward_tile_vectors),
// or G (one pass) where B is at most the rows of a one-pass tile, so that every tile reads the
// one-pass layout (B = 1: the latency shape). The layout id of forward_whh_layout.
template <int G>
static int forward_pass_vectors(int64_t B) {
  constexpr int FNV = forward_tile_vectors<G>();
  constexpr int MR1 = FNV < G ? std::max(1, (VREGS - G - 2) / G) : 0;  // rows of a one-pass tile
  return B <= MR1 ? G : FNV;
}

// The recurrent pre-activations of a tile of Mr rows, all G gates: acc[i][g] (i < Mr) = rows[i]
// times the panel wp, packed with passes of fnv gates (pack_whh_forward). A function of its own
// so that the tile's pointwise pass around it compiles as with a single product call.
template <int Mr, int G>
__attribute__((noinline)) static void forward_product(int64_t H, const float* const* rows, const float* wp, int fnv,
                                                      V* acc) {
  constexpr int FNV = forward_tile_vectors<G>();
  constexpr int MR1 = FNV < G ? std::max(1, (VREGS - G - 2) / G) : 0;  // rows of a one-pass tile
  if (fnv == G)  // W_hh packed for single passes (B <= MR1, or FNV == G)
    micro_rows<Mr, G>(H, rows, wp, acc);
  else if constexpr (Mr <= MR1)  // few rows: all G gates in one pass (more accumulator chains)
    micro_rows<Mr, G, G, G / FNV>(H, rows, wp, acc, H * FNV * W);
  else
    for (int q = 0; q < G / FNV; ++q)  // the passes, FNV gates each
      micro_rows<Mr, FNV, G>(H, rows, wp + q * H * FNV * W, acc + q * FNV);
}

// The valid positions of a masked call, counted.
static int64_t valid_positions(const Dims& d) {
  if (!d.mask) return d.T * d.B;
  int64_t n = 0;
  for (int64_t i = 0; i < d.T * d.B; ++i) n += d.mask[i] != 0;
  return n;
}

// Where a mask leaves at most 3/4 of the positions valid (a padded batch), the GEMMs over all
// positions (the forward x projection; the backward dx, dW_ih, dW_hh) run on the valid rows
// gathered into compact buffers: masked positions are never read (forward) or contribute 0
// (backward). The gathers copy a few floats per valid row against 2 G H I (or more) flops saved
// per masked row.
static bool compact_rows(const Dims& d, int64_t nvalid) { return d.mask && 4 * nvalid <= 3 * d.T * d.B; }

// The valid positions of a masked call in position order (rows of [T*B, *] arrays).
static void valid_rows(const Dims& d, std::vector<int64_t>& rows) {
  rows.clear();
  for (int64_t pos = 0; pos < d.T * d.B; ++pos) {
    const int64_t t = d.batch_first ? pos % d.T : pos / d.B, b = d.batch_first ? pos / d.T : pos % d.B;
    if (d.valid(t, b)) rows.push_back(pos);
  }
}

// The forward workspace, in order: packed W_hh, the x projection (inference only: when training
// it goes straight into the saved-gates buffer), the h ping-pong buffers, the LSTM cell state,
// and with recurrent dropout the ping-pong buffers of h * hmask (the product's input).
struct ForwardWorkspace {
  float* w_hh_packed;  // [P][H][G][W], P = ceil(H / W) unit panels
  float* xw;           // [T*B, G*H], or nullptr when training
  float* hbuf;         // [2][B][ldh]
  float* cstate;       // [B, H] (LSTM), else nullptr
  float* hmbuf;        // [2][B][ldh] (recurrent dropout), else nullptr
  float* cx;           // [NV, I]: x at the valid positions (compact_rows), else nullptr
  float* cxw;          // [NV, G*H]: their projection
  int64_t ldh;
  size_t floats;
};

static ForwardWorkspace forward_workspace(const Dims& d, bool training, float* base) {
  const int64_t G = d.G(), P = ceil_div(d.H, W);
  WorkspaceLayout ws(base);
  ForwardWorkspace w{};
  w.w_hh_packed = ws.take((size_t)(P * d.H * G * W));
  w.xw = training ? nullptr : ws.take((size_t)(d.T * d.B * G * d.H));
  w.ldh = padded_ld(d.H);
  w.hbuf = ws.take((size_t)(2 * d.B * w.ldh));
  w.cstate = d.cell == Cell::LSTM ? ws.take((size_t)(d.B * d.H)) : nullptr;
  w.hmbuf = d.hmask ? ws.take((size_t)(2 * d.B * w.ldh)) : nullptr;
  const int64_t nvalid = valid_positions(d);
  if (compact_rows(d, nvalid)) {
    w.cx = ws.take((size_t)(nvalid * d.I));
    w.cxw = ws.take((size_t)(nvalid * G * d.H));
  }
  w.floats = ws.floats();
  return w;
}

static size_t forward_ws(const Dims& d, bool training, int threads) {
  return forward_workspace(d, training, nullptr).floats;
}

template <Cell C>
static void forward_impl(const ForwardArgs& a) {
  using Math = CellMath<C>;
  constexpr int G = Math::G;
  constexpr int MR = forward_tile_rows<G>();
  const Dims& d = a.d;
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H, N = T * B;
  const int64_t P = ceil_div(H, W);
  const bool training = a.gates != nullptr;
  const int fnv = forward_pass_vectors<G>(B);  // the packing: passes of fnv gates

  const ForwardWorkspace ws = forward_workspace(d, training, a.workspace);
  const float* Wp = a.w_hh_packed ? a.w_hh_packed : ws.w_hh_packed;  // the caller's packed W_hh, if any
  float* xw = training ? a.gates : ws.xw;
  const int64_t ldh = ws.ldh;  // h ping-pong buffers: [2][B][ldh]
  float* hbuf = ws.hbuf;
  float* cstate = ws.cstate;
  const float* hmask = d.hmask;  // [B, H] or nullptr
  float* hmbuf = ws.hmbuf;       // [2][B][ldh]: h * hmask, what the recurrent product reads

  // 1. input projection for all steps: xw = x W_ih^T + b_ih (one GEMM, bias added at the store),
  // over the valid positions only for a padded batch (compact_rows; masked rows of xw are 0)
  std::vector<int64_t> rows;
  if (ws.cx) {
    valid_rows(d, rows);
    for (size_t r = 0; r < rows.size(); ++r)
      std::memcpy(ws.cx + (int64_t)r * I, a.x + rows[r] * I, sizeof(float) * (size_t)I);
  }
  CpuGemmArgs xproj{};
  xproj.M = ws.cx ? (int64_t)rows.size() : N, xproj.N = GH, xproj.K = I;
  xproj.A = ws.cx ? ws.cx : a.x, xproj.rsa = I, xproj.csa = 1;  // x [N, I]
  xproj.B = a.w_ih, xproj.rsb = 1, xproj.csb = I;               // W_ih^T
  if (a.w_ih_t) xproj.B = a.w_ih_t, xproj.rsb = GH, xproj.csb = 1;  // the caller's transposed copy
  xproj.C = ws.cx ? ws.cxw : xw, xproj.ldc = GH;
  xproj.accumulate = false, xproj.threads = a.threads, xproj.bias = a.b_ih;
  gemm(xproj);
  if (ws.cx)
    for (int64_t pos = 0, r = 0; pos < N; ++pos) {
      const bool valid = r < (int64_t)rows.size() && rows[(size_t)r] == pos;
      if (valid)
        std::memcpy(xw + pos * GH, ws.cxw + r++ * GH, sizeof(float) * (size_t)GH);
      else
        std::memset(xw + pos * GH, 0, sizeof(float) * (size_t)GH);
    }

  // 2. the time loop
  // by rows: any partition (the forward sums nothing over rows), at least a tile's rows per thread
  const LoopSplit split = loop_split(a.threads, P, B, 4.0 * (double)(P * H * G * W),
                                     2.0 * (double)B * (double)GH * (double)H, T, 1, MR);
#pragma omp parallel num_threads(split.threads)
  {
    // partition by the team actually granted (it may be smaller than asked for)
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    int64_t pp0, pp1;  // packing and initial state: by unit panels, whatever the split
    panel_range(P, tid, team, pp0, pp1);
    if (!a.w_hh_packed) pack_whh_forward<G>(a.w_hh, H, pp0, pp1, ws.w_hh_packed, fnv);
    for (int64_t b = 0; b < B; ++b) {
      float* hb = hbuf + b * ldh;
      for (int64_t j = std::min(H, pp0 * W); j < std::min(H, pp1 * W); ++j) {
        hb[j] = a.h0 ? a.h0[b * H + j] : 0.0f;
        if (hmask) hmbuf[b * ldh + j] = hb[j] * hmask[b * H + j];
        if (cstate) cstate[b * H + j] = a.c0 ? a.c0[b * H + j] : 0.0f;
      }
    }
    int64_t p0, p1, b_lo, b_hi;  // what this thread computes
    loop_part(split.by_rows, P, B, tid, team, p0, p1, b_lo, b_hi, 1);
    const int64_t j_lo = std::min(H, p0 * W), j_hi = std::min(H, p1 * W);
    std::vector<int64_t> act((size_t)B);
#pragma omp barrier
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = d.time_of_step(s);
      const float* hcur = hbuf + (s & 1) * B * ldh;
      float* hnext = hbuf + ((s + 1) & 1) * B * ldh;
      const float* hmcur = hmask ? hmbuf + (s & 1) * B * ldh : hcur;  // the product's input
      float* hmnext = hmask ? hmbuf + ((s + 1) & 1) * B * ldh : nullptr;
      int64_t nact = 0;
      for (int64_t b = b_lo; b < b_hi; ++b) {
        if (d.valid(t, b)) {
          act[(size_t)nact++] = b;
        } else if (j_hi > j_lo) {  // masked: carry the state, output 0
          const int64_t pos = d.pos(t, b);
          std::memcpy(hnext + b * ldh + j_lo, hcur + b * ldh + j_lo, sizeof(float) * (size_t)(j_hi - j_lo));
          if (hmask)
            std::memcpy(hmnext + b * ldh + j_lo, hmcur + b * ldh + j_lo, sizeof(float) * (size_t)(j_hi - j_lo));
          std::memset(a.y + pos * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
          if (training) std::memset(a.hprev + pos * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
          if (training && a.aux) std::memset(a.aux + pos * H + j_lo, 0, sizeof(float) * (size_t)(j_hi - j_lo));
        }
      }
      // The step's rows in tiles of MR rows and the rest, or, where the rest would be under half a
      // tile, in tiles as even as they go (20 rows, MR 6: 5 + 5 + 5 + 5, not 6 + 6 + 6 + 2: a tile of
      // few rows streams its W_hh panel for few FMAs; FORWARD_EVEN_TILES says where). The same
      // arithmetic per row either way.
      const int64_t tiles = ceil_div(nact, (int64_t)MR);
      const bool even = FORWARD_EVEN_TILES && 2 * (nact - (tiles - 1) * MR) < MR;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t j0 = p * W;
        const int nv = (int)std::min<int64_t>(W, H - j0);
        const float* wp = Wp + p * H * G * W;
        V bhh[3];
        if constexpr (Math::kHiddenBias)
          for (int g = 0; g < 3; ++g) bhh[g] = Simd::loadn(a.b_hh + g * H + j0, nv);
        for (int64_t r0 = 0, ti = 0; r0 < nact; ++ti) {
          const int m = even ? (int)(nact / tiles + (ti < nact % tiles ? 1 : 0))
                             : (int)std::min<int64_t>(MR, nact - r0);
          with_rows<1, MR>(m, [&](auto mc) {
            constexpr int Mr = decltype(mc)::value;
            const float* rows[Mr];
            for (int i = 0; i < Mr; ++i) rows[i] = hmcur + act[(size_t)(r0 + i)] * ldh;
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
            forward_product<Mr, G>(H, rows, wp, fnv, &acc[0][0]);
            for (int i = 0; i < Mr; ++i) {
              const int64_t b = act[(size_t)(r0 + i)];
              const int64_t pos = d.pos(t, b);
              Math::forward(acc[i], xw + pos * GH + j0, H, nv, hcur + b * ldh + j0, hnext + b * ldh + j0,
                            a.y + pos * H + j0, cstate ? cstate + b * H + j0 : nullptr,
                            training ? a.hprev + pos * H + j0 : nullptr,
                            (training && a.aux) ? a.aux + pos * H + j0 : nullptr, bhh, training);
              if (hmask)  // the next step's product input: one [nv] multiply per row
                Simd::storen(hmnext + b * ldh + j0,
                             Simd::mul(Simd::loadn(hnext + b * ldh + j0, nv), Simd::loadn(hmask + b * H + j0, nv)),
                             nv);
            }
          });
          r0 += m;
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
