// dense_xent.h — the fused backward of a Dense decoder under sparse softmax cross-entropy from
// logits: dW += x^T g, db += column sums of g, dx = g W^T, where g (the loss gradient with
// respect to the logits z, times a scale) is formed block by block inside the GEMMs' packing and
// never written out whole.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after gemm.h and xent.h.
//
// The unfused path writes g ([N, C], 51 MB for the word-level LM's 700 x 18,328 logits) in the
// loss, divides it by the count, reads it for the column sums and twice more for the two GEMMs.
// Here the loss pass only gathers per-row statistics (xent.h, XentArgs without grad: the row
// maximum M, r = w / sum exp(z - M) and t = expm1(-loss) w), and each GEMM makes the block of g
// it is about to multiply from the logits, in its packed layout:
//   g[i][j] = exp(z[i][j] - M_i) * f_i   (j not the target), t'_i at the target,
//   f_i = (float)(r_i scale), t'_i = (float)(t_i scale);
// rows with f_i = 0 (masked, or weight 0) are 0 without reading z. The exponential is xent.h's
// (flushed to 0 below e^-87), so each entry is the unfused one to a few ulp.
//   dW: the GEMM (H x C, depth N) of x^T and g; its B packer makes g's block (rows = the depth,
//       pack_b's layout) and adds its columns into the bias gradient's running sums (rows in
//       ascending order, as colsum: the sum then goes into db).
//   dx: the GEMM (N x H, depth C) of g and W^T; its A packer makes MR rows of g for the depth
//       block in a row buffer and packs them with pack_a.
// Both run in gemm_serial_packed's blocks with the split of the threaded GEMM (gemm_split):
// every element sums its KC-long partial products in k order, so results are identical for any
// thread count, and each equals the unfused GEMM on the same g.

// exp(z - M) f for a vector of logits.
static inline V dxent_grad(V z, V vM, V vf) { return Simd::mul(xl_exp(Simd::sub(z, vM)), vf); }

// One row of g for columns [j0, j0 + n) into out[0, n): f == 0 gives zeros.
static inline void dxent_row(const float* zr, float vmax, float f, float* out, int64_t n) {
  if (f == 0.0f) {
    std::memset(out, 0, sizeof(float) * (size_t)n);
    return;
  }
  const V vM = Simd::set1(vmax), vf = Simd::set1(f);
  int64_t j = 0;
  for (; j + W <= n; j += W) Simd::store(out + j, dxent_grad(Simd::load(zr + j), vM, vf));
  if (j < n) {
    const int nl = (int)(n - j);
    Simd::storen(out + j, dxent_grad(Simd::loadn(zr + j, nl), vM, vf), nl);
  }
}

struct DxentRows {
  const DenseXentArgs* a;
  const float* f;  // [N] f_i
  const float* t;  // [N] t'_i
};

// B packer of the dW product: rows [pc, pc + kc) of g (the depth: rows of z) and columns
// [j0, j0 + nc) in pack_b's layout (GEMM_NR-wide panels, the last one maybe W, k-major, zero
// padded); with cs, each column's values are added to cs[j - j0] row after row.
static void dxent_pack_b(const DxentRows& r, int64_t pc, int64_t kc, int64_t j0, int64_t nc, float* Bp, float* cs) {
  const DenseXentArgs& a = *r.a;
  constexpr int64_t PF = 4;  // rows fetched ahead: rows of z lie C floats apart
  for (int64_t k = 0; k < std::min<int64_t>(PF, kc); ++k) prefetch_run<2>(a.z + (pc + k) * a.C + j0, nc);
  for (int64_t k = 0; k < kc; ++k) {
    const int64_t i = pc + k;
    if (k + PF < kc) prefetch_run<2>(a.z + (i + PF) * a.C + j0, nc);
    const float* zr = a.z + i * a.C + j0;
    const float f = r.f[i];
    const V vM = Simd::set1(a.row_max[i]), vf = Simd::set1(f);
    const int64_t t = a.ids[i] - j0;
    for (int64_t jj = 0; jj < nc; jj += GEMM_NR) {
      const int n = (int)std::min<int64_t>(GEMM_NR, nc - jj), nr = panel_width(n);
      float* d = Bp + jj * kc + k * nr;
      for (int c = 0; c < nr; c += W) {
        const int nl = std::max(0, std::min(W, n - c));
        V g = Simd::zero();
        if (f != 0.0f && nl == W)
          g = dxent_grad(Simd::load(zr + jj + c), vM, vf);
        else if (f != 0.0f && nl > 0)
          g = dxent_grad(Simd::loadn(zr + jj + c, nl), vM, vf);
        Simd::store(d + c, g);
        if (nl > 0 && nl < W) Simd::storen(d + c + nl, Simd::zero(), W - nl);  // the padding stays 0
      }
      if (f != 0.0f && t >= jj && t < jj + n) d[t - jj] = r.t[i];
      if (cs) {
        for (int c = 0; c < n; c += W) {
          const int nl = std::min(W, n - c);
          float* p = cs + jj + c;
          Simd::storen(p, Simd::add(Simd::loadn(p, nl), Simd::loadn(d + c, nl)), nl);
        }
      }
    }
  }
}

// A packer of the dx product: rows [i0, i0 + mc) of g and depth (classes) [pc, pc + kc), made
// GEMM_MR rows at a time in the row buffer tmp (GEMM_MR x ldt) and packed by pack_a.
static void dxent_pack_a(const DxentRows& r, int64_t i0, int64_t mc, int64_t pc, int64_t kc, float* Ap, float* tmp,
                         int64_t ldt) {
  const DenseXentArgs& a = *r.a;
  for (int64_t p = 0; p < mc; p += GEMM_MR) {
    const int m = (int)std::min<int64_t>(GEMM_MR, mc - p);
    for (int q = 0; q < m; ++q) {
      const int64_t i = i0 + p + q;
      if (p + GEMM_MR < mc && r.f[i + GEMM_MR] != 0.0f) prefetch_run<2>(a.z + (i + GEMM_MR) * a.C + pc, kc);
      float* row = tmp + q * ldt;
      dxent_row(a.z + i * a.C + pc, a.row_max[i], r.f[i], row, kc);
      const int64_t t = a.ids[i] - pc;
      if (r.f[i] != 0.0f && t >= 0 && t < kc) row[t] = r.t[i];
    }
    pack_a(m, kc, tmp, ldt, 1, Ap + p * kc);
  }
}

// Columns (classes) per chunk of the fused backward: the logits of a chunk (N rows) fill about
// half of the L3, so that the dx product finds in the L3 what the dW product has just read from
// memory. A multiple of the depth block KC (the dx product's summation blocks stay whole).
static int64_t dxent_chunk(int64_t N, int64_t C, const GemmBlocking& bl) {
  const GemmCaches c = gemm_caches();
  const int64_t l3 = c.l3 > 0 ? c.l3 : BLOCK_L3_CORE_DEFAULT;
  const int64_t cols = l3 / 2 / (std::max<int64_t>(N, 1) * (int64_t)sizeof(float));
  return std::min(C, std::max<int64_t>(bl.kc, cols / bl.kc * bl.kc));
}

static void dense_xent_backward(const DenseXentArgs& a) {
  const int64_t N = a.N, H = a.H, C = a.C;
  if (C <= 0 || H <= 0 || N <= 0) return;  // no rows: dx is empty, dW and db get nothing
  std::vector<float> f((size_t)N), t((size_t)N);
  for (int64_t i = 0; i < N; ++i) {
    f[(size_t)i] = (float)(a.row_scale[i] * a.scale);
    t[(size_t)i] = (float)(a.row_target[i] * a.scale);
  }
  const DxentRows rows{&a, f.data(), t.data()};
  const GemmBlocking bl = gemm_blocking();
  const int64_t chunk = dxent_chunk(N, C, bl);
  for (int64_t v0 = 0; v0 < C; v0 += chunk) {
    const int64_t nv = std::min(chunk, C - v0);
    // dW[:, v0 : v0 + nv] += x^T g: A = x^T (column k of A is row k of x), B = g (depth N)
    const GemmSplit sp = gemm_split(H, nv, N, a.threads);
    run_parts(sp.nt, [&](int tid) {
      const int64_t lo = sp.lo(tid), hi = sp.hi(tid, sp.split_n ? nv : H);
      if (hi <= lo) return;
      const int64_t h0 = sp.split_n ? 0 : lo, m = sp.split_n ? H : hi - lo;
      const int64_t j0 = v0 + (sp.split_n ? lo : 0), n = sp.split_n ? hi - lo : nv;
      // the bias gradient's running sums: the thread that owns the columns (split N), or thread 0
      thread_local std::vector<float> cs_buf;
      float* cs = nullptr;
      if (a.db && (sp.split_n || tid == 0)) {
        if (cs_buf.size() < (size_t)n) cs_buf.resize((size_t)n);
        cs = cs_buf.data();
        std::memset(cs, 0, sizeof(float) * (size_t)n);
      }
      gemm_serial_packed(
          bl, m, n, N,
          [&](int64_t ic, int64_t pc, int64_t mc, int64_t kc, float* Ap) {
            pack_a(mc, kc, a.x + (h0 + ic) + pc * H, 1, H, Ap);
          },
          [&](int64_t ic, int64_t pc, int64_t jc, int64_t kc, int64_t nc, float* Bp) {
            dxent_pack_b(rows, pc, kc, j0 + jc, nc, Bp, ic == 0 && cs ? cs + jc : nullptr);
          },
          a.dw + h0 * C + j0, C, true, nullptr, 0);
      if (cs) {
        float* o = a.db + j0;
        for (int64_t j = 0; j < n; j += W) {
          const int nl = (int)std::min<int64_t>(W, n - j);
          Simd::storen(o + j, Simd::add(Simd::loadn(o + j, nl), Simd::loadn(cs + j, nl)), nl);
        }
      }
    });
    if (!a.dx) continue;
    // dx (+)= g[:, v0 : v0 + nv] W[:, v0 : v0 + nv]^T: A = g (depth nv), B[k][h] = W[h][v0 + k]
    const GemmSplit sx = gemm_split(N, H, nv, a.threads);
    run_parts(sx.nt, [&](int tid) {
      const int64_t lo = sx.lo(tid), hi = sx.hi(tid, sx.split_n ? H : N);
      if (hi <= lo) return;
      const int64_t i0 = sx.split_n ? 0 : lo, m = sx.split_n ? N : hi - lo;
      const int64_t c0 = sx.split_n ? lo : 0, n = sx.split_n ? hi - lo : H;
      thread_local std::vector<float> tmp_buf;
      const int64_t ldt = ceil_div(std::min<int64_t>(nv, BLOCK_KC_MAX), 16) * 16 + 16;
      if (tmp_buf.size() < (size_t)(GEMM_MR * ldt)) tmp_buf.resize((size_t)(GEMM_MR * ldt));
      float* tmp = tmp_buf.data();
      gemm_serial_packed(
          bl, m, n, nv,
          [&](int64_t ic, int64_t pc, int64_t mc, int64_t kc, float* Ap) {
            dxent_pack_a(rows, i0 + ic, mc, v0 + pc, kc, Ap, tmp, ldt);
          },
          [&](int64_t, int64_t pc, int64_t jc, int64_t kc, int64_t nc, float* Bp) {
            pack_b(kc, nc, a.w + (c0 + jc) * C + v0 + pc, 1, C, Bp);
          },
          a.dx + i0 * H + c0, H, v0 > 0, nullptr, 0);
    });
  }
}
