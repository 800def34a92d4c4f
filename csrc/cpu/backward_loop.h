// backward_loop.h — the CPU backward pass (BPTT): the time loop, then the weight GEMMs.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h, the standard headers and the tuning constants it defines.

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

// The backward workspace, in order: the gate gradients at every position (x side; GRU also the h
// side), packed W_hh columns, the carried dh and dc, the compact h-side gate gradients of a step
// (ping-pong), the bias-gradient sums per block of ROW_BLOCK batch rows, and with recurrent
// dropout h_prev * hmask at every position (the operand of dW_hh).
struct BackwardWorkspace {
  float* dgi;          // [T*B, G*H] x-side dG
  float* dgh;          // [T*B, G*H] h-side dG (GRU), else == dgi
  float* w_hh_packed;  // [Q][G*H][BWD_NR], Q = ceil(H / BWD_NR) column panels
  float* dhc;          // [B, H] carried dh
  float* dcc;          // [B, H] carried dc (LSTM; zeros otherwise)
  float* dgs;          // [2][B][ldg]
  float* sum_i;        // [NBLK][G*H]: per row block, the bias gradients of the x side ...
  float* sum_h;        // [NBLK][G*H]: ... and (GRU) of the h side
  float* hpm;          // [T*B, H]: h_prev * hmask (recurrent dropout), else nullptr
  // Gathered rows of the valid positions (compact_rows): dG x side, dG h side (GRU), x, the
  // h_prev operand, dx; nullptr when every position is computed in place.
  float* cdgi;         // [NV, G*H]
  float* cdgh;         // [NV, G*H] (GRU), else == cdgi
  float* cx;           // [NV, I]
  float* ch;           // [NV, H]
  float* cdx;          // [NV, I]
  int64_t nvalid;      // NV: the valid positions (T*B without a mask)
  int64_t ldg;
  size_t floats;
};


static BackwardWorkspace backward_workspace(const Dims& d, float* base) {
  const int64_t GH = d.G() * d.H, N = d.T * d.B;
  const int64_t Q = ceil_div(d.H, BWD_NR), NBLK = ceil_div(d.B, ROW_BLOCK);
  WorkspaceLayout ws(base);
  BackwardWorkspace w{};
  w.dgi = ws.take((size_t)(N * GH));
  w.dgh = d.cell == Cell::GRU ? ws.take((size_t)(N * GH)) : w.dgi;
  w.w_hh_packed = ws.take((size_t)(Q * BWD_NR * GH));
  w.dhc = ws.take((size_t)(d.B * d.H));
  w.dcc = ws.take((size_t)(d.B * d.H));
  w.ldg = padded_ld(GH);
  w.dgs = ws.take((size_t)(2 * d.B * w.ldg));
  w.sum_i = ws.take((size_t)(NBLK * GH));
  w.sum_h = ws.take((size_t)(NBLK * GH));
  w.hpm = d.hmask ? ws.take((size_t)(N * d.H)) : nullptr;
  w.nvalid = valid_positions(d);
  if (compact_rows(d, w.nvalid)) {
    const int64_t NV = w.nvalid;
    w.cdgi = ws.take((size_t)(NV * GH));
    w.cdgh = d.cell == Cell::GRU ? ws.take((size_t)(NV * GH)) : w.cdgi;
    w.cx = ws.take((size_t)(NV * d.I));
    w.ch = ws.take((size_t)(NV * d.H));
    w.cdx = ws.take((size_t)(NV * d.I));
  }
  w.floats = ws.floats();
  return w;
}

static size_t backward_ws(const Dims& d, int threads) { return backward_workspace(d, nullptr).floats; }

template <Cell C>
static void backward_impl(const BackwardArgs& a) {
  using Math = CellMath<C>;
  constexpr int G = Math::G;
  const Dims& d = a.d;
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, GH = G * H, N = T * B;
  const int64_t Q = ceil_div(H, BWD_NR);
  const int64_t NBLK = ceil_div(B, ROW_BLOCK);

  const BackwardWorkspace ws = backward_workspace(d, a.workspace);
  float* dgi = ws.dgi;
  float* dgh = ws.dgh;
  float* Wb = ws.w_hh_packed;
  float* dhc = ws.dhc;
  float* dcc = ws.dcc;
  const int64_t ldg = ws.ldg;  // compact step rows of the h-side dG: [2][B][ldg]
  float* dgs = ws.dgs;
  float* sum_i = ws.sum_i;
  float* sum_h = ws.sum_h;
  const float* hmask = d.hmask;  // [B, H] or nullptr

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
          if (Math::kHiddenBias)
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
            Math::backward(H, nv, a.gates + pos * GH + j, a.aux ? a.aux + pos * H + j : nullptr,
                           a.hprev + pos * H + j, a.dy ? a.dy + pos * H + j : nullptr, dhc + b * H + j,
                           dcc + b * H + j, dgi + pos * GH + j, dgh + pos * GH + j,
                           dgs + ((s & 1) * B + b) * ldg + j, sbi, sbh);
          }
          for (int g = 0; g < G; ++g) {
            float* pi = sum_i + blk * GH + g * H + j;
            Simd::storen(pi, Simd::add(Simd::loadn(pi, nv), sbi[g]), nv);
            if (Math::kHiddenBias) {
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
            if (Math::kHiddenBias) fetch(dgh + pos * GH + g * H, true);
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
              const float* mrow = hmask ? hmask + act[(size_t)(r0 + i)] * H + j0 : nullptr;
              for (int v = 0; v < BWD_NV; ++v) {
                const int nv = std::max(0, std::min(W, n - v * W));
                if (nv == 0) break;
                const V o = Simd::loadn(out + v * W, nv);
                // recurrent dropout: the product saw h * hmask, so its gradient is masked too. One
                // explicit FMA: a multiply and an add could be contracted differently in the
                // tile-size instantiations, and results must not depend on the thread split.
                Simd::storen(out + v * W,
                             mrow ? Simd::fmadd(acc[i][v], Simd::loadn(mrow + v * W, nv), o) : Simd::add(o, acc[i][v]),
                             nv);
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
        if (Math::kCellState && a.dc0) a.dc0[b * H + j] = dcc[b * H + j];
      }
    if (hmask)  // dW_hh's operand: h_prev * hmask, this thread's rows and columns at every step
      for (int64_t t = 0; t < T; ++t)
        for (int64_t b = b_lo; b < b_hi; ++b) {
          const int64_t pos = d.pos(t, b);
          for (int64_t j = j_lo; j < j_hi; j += W) {
            const int nv = (int)std::min<int64_t>(W, j_hi - j);
            Simd::storen(ws.hpm + pos * H + j,
                         Simd::mul(Simd::loadn(a.hprev + pos * H + j, nv), Simd::loadn(hmask + b * H + j, nv)), nv);
          }
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
        if (Math::kHiddenBias) a.db_hh[g * H + j] = sh;
      }
  }

  // Weight and input gradients: single GEMMs over all T*B positions, or over the valid ones
  // gathered in position order (compact_rows).
  const float* hop = hmask ? ws.hpm : a.hprev;  // dW_hh's operand: h_prev (* hmask)
  const float* gx = a.x;
  int64_t M = N;
  std::vector<int64_t> rows;
  if (ws.cdgi) {
    M = ws.nvalid;
    valid_rows(d, rows);
#pragma omp parallel for num_threads(a.threads) schedule(static)
    for (int64_t r = 0; r < M; ++r) {
      const int64_t pos = rows[(size_t)r];
      std::memcpy(ws.cdgi + r * GH, dgi + pos * GH, sizeof(float) * (size_t)GH);
      if (Math::kHiddenBias) std::memcpy(ws.cdgh + r * GH, dgh + pos * GH, sizeof(float) * (size_t)GH);
      std::memcpy(ws.cx + r * I, a.x + pos * I, sizeof(float) * (size_t)I);
      std::memcpy(ws.ch + r * H, hop + pos * H, sizeof(float) * (size_t)H);
    }
    dgi = ws.cdgi, dgh = ws.cdgh, gx = ws.cx, hop = ws.ch;
  }
  CpuGemmArgs g{};
  g.accumulate = false, g.threads = a.threads;
  if (a.dx) {  // dx = dG W_ih (0 at masked positions)
    g.M = M, g.N = I, g.K = GH;
    g.A = dgi, g.rsa = GH, g.csa = 1;
    g.B = a.w_ih, g.rsb = I, g.csb = 1;
    g.C = ws.cdgi ? ws.cdx : a.dx, g.ldc = I;
    gemm(g);
    if (ws.cdgi) {
      std::memset(a.dx, 0, sizeof(float) * (size_t)(N * I));
      for (int64_t r = 0; r < M; ++r)
        std::memcpy(a.dx + rows[(size_t)r] * I, ws.cdx + r * I, sizeof(float) * (size_t)I);
    }
  }
  // dW_ih = dG^T x
  g.M = GH, g.N = I, g.K = M;
  g.A = dgi, g.rsa = 1, g.csa = GH;
  g.B = gx, g.rsb = I, g.csb = 1;
  g.C = a.dw_ih, g.ldc = I;
  gemm(g);
  // dW_hh = dG_h^T hprev (h_prev * hmask with recurrent dropout)
  g.M = GH, g.N = H, g.K = M;
  g.A = dgh, g.rsa = 1, g.csa = GH;
  g.B = hop, g.rsb = H, g.csb = 1;
  g.C = a.dw_hh, g.ldc = H;
  gemm(g);
}
