// xent.h — fused softmax + cross-entropy: per-row loss and gradient with respect to the logits
// (or probabilities), threaded over rows, vectorised with `Simd`.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h and the tuning constants.
//
// From logits, a row is read once: per vector lane a running maximum m and the sum of
// exp(z - m) (online softmax, rescaled once per block of XENT_BLOCK vectors), with e = exp(z - m_b)
// written to the gradient row and each block's lane maxima m_b kept aside; the lanes are then
// combined in double precision into the row's maximum M and S = sum exp(z - M), and a second
// sweep, over the gradient row (in cache: a row of 20,000 classes is 80 KB), rescales it by
// exp(m_b - M) w / S. Sparse targets then get expm1(-loss) w at the target (softmax_t - 1
// without cancellation); dense targets get w (softmax sum(y) - y), and that sweep also sums
// y (z - M) for the loss -sum y log softmax = sum(y) log S - sum y (z - M).
// About 1 + 2 / XENT_BLOCK vector exps per vector of logits.
//
// Accuracy: the vector exp (simd.h, Cephes polynomial, ~2 ulp) sets the error of each softmax
// entry (a few 1e-7 relative; tests/test_xent_kernels.py measures it against float64); entries
// below e^-87 (~1.6e-38) are flushed to 0. The scalar path uses the C library's expf. The loss
// is formed in double from the float lane sums (relative error of S ~1e-7, so ~1e-7 absolute in
// the loss).
//
// Numerical safety: -inf logits give exactly 0 probability (and no NaN: products y (z - M) are
// taken only where y != 0); a row of one class (C = 1) gives loss 0 and gradient 0. A row whose
// logits hold NaN or +inf, or are all -inf, gets NaN loss and NaN gradient (as the NumPy
// reference). Masked rows get loss 0 and gradient 0 without reading z (NaN padding stays out).
//
// From probabilities (Keras's convention: normalised over the row, then clipped to [1e-7, 1 -
// 1e-7]) the per-row quantities are formed in double as in the NumPy reference; the sparse form
// writes one constant per row plus the target entry, the dense form computes in double throughout.
//
// grad_scale multiplies every gradient entry with the row's weight (the training step's 1 / count:
// the mean's gradient in the same pass, no division pass afterwards); the loss is not scaled.
//
// With sparse targets the gradient may overwrite z (grad == z: each row is read before its
// gradient is written, the target's logit first); dense targets need z in the second sweep.
//
// Every row is computed by the same arithmetic whoever computes it: results are identical for any
// thread count.

constexpr int XENT_BLOCK = 8;           // vectors per online-softmax block
constexpr double XENT_EPS = 1e-7;       // the probability clip (fastrnn._loss_base.EPSILON)
constexpr double XENT_MIN_WORK = 32768;  // elements below which one thread does everything

#if defined(FASTRNN_ISA_AVX512)
// The first n lanes from p, the others `fill`.
static inline V xl_loadn_fill(const float* p, int n, float fill) {
  return _mm512_mask_loadu_ps(Simd::set1(fill), Simd::mask(n), p);
}
// y * d where y != 0 (NaN y included), 0 where y == 0 (so that 0 * -inf gives 0, not NaN).
static inline V xl_nzmul(V y, V d) {
  return _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_NEQ_UQ), y, d);
}
#elif defined(FASTRNN_ISA_AVX2)
static inline V xl_loadn_fill(const float* p, int n, float fill) {
  const __m256i m = Simd::mask(n);
  return _mm256_blendv_ps(Simd::set1(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline V xl_nzmul(V y, V d) {
  return _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_NEQ_UQ), _mm256_mul_ps(y, d));
}
#elif defined(FASTRNN_ISA_NEON)
static inline V xl_loadn_fill(const float* p, int n, float fill) {
  const uint32_t idx[4] = {0, 1, 2, 3};
  const uint32x4_t m = vcltq_u32(vld1q_u32(idx), vdupq_n_u32((uint32_t)n));
  return vbslq_f32(m, Simd::loadn(p, n), Simd::set1(fill));
}
static inline V xl_nzmul(V y, V d) { return vbslq_f32(vceqq_f32(y, Simd::zero()), Simd::zero(), vmulq_f32(y, d)); }
#else
static inline V xl_loadn_fill(const float* p, int n, float fill) { return n > 0 ? *p : fill; }
static inline V xl_nzmul(V y, V d) { return y != 0.0f ? y * d : 0.0f; }
#endif

// e^x for x <= 0, flushed to 0 below -87 (and for x = -inf).
static inline V xl_exp(V x) {
#if defined(FASTRNN_ISA_AVX512) || defined(FASTRNN_ISA_AVX2) || defined(FASTRNN_ISA_NEON)
  return Simd::blend_small(x, vexp(x), Simd::zero(), 87.0f);
#else
  return std::exp(x);
#endif
}

static inline double xl_lanes_sum(V v) {
  alignas(64) float t[W];
  Simd::store(t, v);
  double s = 0.0;
  for (int l = 0; l < W; ++l) s += (double)t[l];
  return s;
}

// Sum of n floats in double, in a fixed order (8 interleaved partial sums, then in order).
static inline double xl_sum_f64(const float* p, int64_t n) {
  double a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) a[k] += (double)p[j + k];
  for (; j < n; ++j) a[j & 7] += (double)p[j];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// s = s r + e with a compensated (Kahan) sum, c carrying the lost low part (rescaled with s): the
// per-lane sums run over C / W terms, 18,000 on the scalar path, where plain float sums lose ~1e-6.
static inline void xl_kahan(V& s, V& c, V r, V e) {
  const V sr = Simd::mul(s, r);
  const V yk = Simd::sub(e, Simd::mul(c, r));
  const V t = Simd::add(sr, yk);
  c = Simd::sub(Simd::sub(t, sr), yk);
  s = t;
}

struct XentRowStats {
  float M;    // the row's maximum
  double S;   // sum exp(z - M)
  double sy;  // sum of the dense targets (0 without)
  bool bad;   // NaN or +inf among the logits, or all -inf
};

// The one sweep over a row of logits z (and of dense targets y, when given): per lane a running
// maximum and the sum of exp(z - maximum), rescaled once per block of XENT_BLOCK vectors. It
// leaves e = exp(z - m_b) in g, with m_b the lanes' maxima after block b, stored in bm (one
// vector per block): the gradient pass only rescales g, in cache.
static inline XentRowStats xl_row_stats(const float* z, const float* y, int64_t C, float* g, float* bm) {
  V m = Simd::set1(-3.402823466e38f), s = Simd::zero(), sc = Simd::zero(), sx = Simd::zero();
  double syd = 0.0;
  // sx: a scaled sum of the logits, NaN exactly when a logit is NaN or both infinities occur (the
  // scale keeps finite sums from overflowing)
  const V tiny = Simd::set1(1e-30f);
  int64_t j = 0;
  for (; j + XENT_BLOCK * W <= C; j += XENT_BLOCK * W, bm += W) {
    V x[XENT_BLOCK];
    V mx = Simd::load(z + j);
    for (int k = 0; k < XENT_BLOCK; ++k) {
      x[k] = Simd::load(z + j + k * W);
      sx = Simd::fmadd(x[k], tiny, sx);
      mx = Simd::max(mx, x[k]);
    }
    // max(m, .) returns its second operand where that is NaN: a NaN logit reaches m (and sx)
    const V mn = Simd::max(m, mx);
    V e = Simd::zero();
    for (int k = 0; k < XENT_BLOCK; ++k) {
      const V ek = xl_exp(Simd::sub(x[k], mn));
      Simd::store(g + j + k * W, ek);
      e = Simd::add(e, ek);
    }
    xl_kahan(s, sc, xl_exp(Simd::sub(m, mn)), e);
    m = mn;
    Simd::store(bm, m);
    if (y) {  // per block in float, across blocks in double
      V b = Simd::load(y + j);
      for (int k = 1; k < XENT_BLOCK; ++k) b = Simd::add(b, Simd::load(y + j + k * W));
      syd += xl_lanes_sum(b);
    }
  }
  for (; j < C; j += W, bm += W) {  // the rest one vector per block
    const int n = (int)std::min<int64_t>(W, C - j);
    const V x = xl_loadn_fill(z + j, n, -INFINITY);  // -inf lanes add exp(-inf) = 0
    sx = Simd::fmadd(Simd::loadn(z + j, n), tiny, sx);
    const V mn = Simd::max(m, x);
    const V ek = xl_exp(Simd::sub(x, mn));
    Simd::storen(g + j, ek, n);
    xl_kahan(s, sc, xl_exp(Simd::sub(m, mn)), ek);
    m = mn;
    Simd::store(bm, m);
    if (y) syd += xl_lanes_sum(Simd::loadn(y + j, n));
  }
  alignas(64) float lm[W], ls[W];
  Simd::store(lm, m);
  Simd::store(ls, s);
  XentRowStats r{};
  bool bad = false;
  float M = lm[0];
  for (int l = 0; l < W; ++l) {
    if (std::isnan(lm[l])) bad = true;
    M = lm[l] > M ? lm[l] : M;
  }
  double S = 0.0;
  for (int l = 0; l < W; ++l) S += (double)ls[l] * std::exp((double)lm[l] - (double)M);
  const double sxs = xl_lanes_sum(sx);
  r.M = M;
  r.S = S;
  r.sy = syd;
  r.bad = bad || std::isnan(sxs) || M == INFINITY || !(S > 0.0);
  return r;
}

// Vectors of block maxima that xl_row_stats stores for a row of C.
static inline int64_t xl_blocks(int64_t C) { return C / (XENT_BLOCK * W) + XENT_BLOCK + 1; }

static inline void xl_fill(float* g, int64_t C, float v) {
  const V vv = Simd::set1(v);
  int64_t j = 0;
  for (; j + W <= C; j += W) Simd::store(g + j, vv);
  if (j < C) Simd::storen(g + j, vv, (int)(C - j));
}

static void xent_row(const XentArgs& a, int64_t row) {
  const int64_t C = a.C;
  const float* z = a.z + row * C;
  float* g = a.grad + row * C;
  if (a.mask && !a.mask[row]) {
    std::memset(g, 0, sizeof(float) * (size_t)C);
    a.loss[row] = 0.0;
    return;
  }
  const double wl = a.weight ? a.weight[row] : 1.0;  // the loss's weight
  const double w = wl * a.grad_scale;                 // the gradient's
  const float* y = a.y ? a.y + row * C : nullptr;
  const float zt = a.ids ? z[a.ids[row]] : 0.0f;      // read first: g may be z (sparse targets)

  if (a.from_logits) {
    thread_local std::vector<float> bm_buf;
    if (bm_buf.size() < (size_t)(xl_blocks(C) * W)) bm_buf.resize((size_t)(xl_blocks(C) * W));
    float* bm = bm_buf.data();
    const XentRowStats st = xl_row_stats(z, y, C, g, bm);
    if (st.bad) {
      xl_fill(g, C, NAN);
      a.loss[row] = NAN;
      return;
    }
    const double logS = std::log(st.S);
    const V vM = Simd::set1(st.M);
    // g = e exp(m_b - M) times w / S (sparse) or w sum(y) / S (dense), block by block
    const V vsc = Simd::set1((float)(w * (a.ids ? 1.0 : st.sy) / st.S)), vw = Simd::set1((float)w);
    double acc = 0.0;  // dense: sum y (z - M), per block in float, across blocks in double
    int64_t j = 0;
    for (; j + XENT_BLOCK * W <= C; j += XENT_BLOCK * W, bm += W) {
      const V f = Simd::mul(xl_exp(Simd::sub(Simd::load(bm), vM)), vsc);
      V bacc = Simd::zero();
      for (int k = 0; k < XENT_BLOCK; ++k) {
        float* gk = g + j + k * W;
        if (y) {
          const V yy = Simd::load(y + j + k * W);
          bacc = Simd::add(bacc, xl_nzmul(yy, Simd::sub(Simd::load(z + j + k * W), vM)));
          Simd::store(gk, Simd::fnmadd(yy, vw, Simd::mul(Simd::load(gk), f)));
        } else {
          Simd::store(gk, Simd::mul(Simd::load(gk), f));
        }
      }
      if (y) acc += xl_lanes_sum(bacc);
    }
    for (; j < C; j += W, bm += W) {
      const int n = (int)std::min<int64_t>(W, C - j);
      const V f = Simd::mul(xl_exp(Simd::sub(Simd::load(bm), vM)), vsc);
      if (y) {
        const V yy = Simd::loadn(y + j, n);
        acc += xl_lanes_sum(xl_nzmul(yy, Simd::sub(Simd::loadn(z + j, n), vM)));
        Simd::storen(g + j, Simd::fnmadd(yy, vw, Simd::mul(Simd::loadn(g + j, n), f)), n);
      } else {
        Simd::storen(g + j, Simd::mul(Simd::loadn(g + j, n), f), n);
      }
    }
    if (a.ids) {
      const int64_t t = a.ids[row];
      const double per = logS + ((double)st.M - (double)zt);  // -log softmax(z)_t (M - z_t exact)
      g[t] = (float)(std::expm1(-per) * w);                   // softmax_t - 1, without cancellation
      a.loss[row] = per * wl;
    } else {  // -sum y log softmax = sum(y) log S - sum y (z - M)
      a.loss[row] = (st.sy * logS - acc) * wl;
    }
    return;
  }

  // probabilities: q = p / sum(p) (sum 0 counts as 1), clipped to [eps, 1 - eps]
  double s = xl_sum_f64(z, C);
  if (s == 0.0) s = 1.0;
  if (a.ids) {
    const int64_t t = a.ids[row];
    const double qt = (double)zt / s;
    const double qc = std::min(std::max(qt, XENT_EPS), 1.0 - XENT_EPS);
    // d(-log qc_t)/dp_j = (q_t / qc_t) / s for every j, and -1 / (qc_t s) more at the target
    xl_fill(g, C, (float)(qt / qc / s * w));
    g[t] = (float)((qt - 1.0) / qc / s * w);
    a.loss[row] = -std::log(qc) * wl;
    return;
  }
  // dense targets, in double as the reference: g_j = -y_j / qc_j, grad = (g - sum(g q)) / s
  double loss = 0.0, G = 0.0;
  for (int64_t j = 0; j < C; ++j) {
    const double q = (double)z[j] / s, qc = std::min(std::max(q, XENT_EPS), 1.0 - XENT_EPS);
    const double yj = (double)y[j];
    if (yj != 0.0 || std::isnan(yj)) {
      loss -= yj * std::log(qc);
      G += (-yj / qc) * q;
    }
  }
  for (int64_t j = 0; j < C; ++j) {
    const double q = (double)z[j] / s, qc = std::min(std::max(q, XENT_EPS), 1.0 - XENT_EPS);
    g[j] = (float)((-(double)y[j] / qc - G) / s * w);
  }
  a.loss[row] = loss * wl;
}

static void xent(const XentArgs& a) {
  int nt = (int)std::min<int64_t>(std::max(1, a.threads), a.N);
  if ((double)a.N * (double)a.C < XENT_MIN_WORK) nt = 1;
  if (nt <= 1) {
    for (int64_t r = 0; r < a.N; ++r) xent_row(a, r);
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < a.N; ++r) xent_row(a, r);
}
