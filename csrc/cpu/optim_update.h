// optim_update.h — one fused optimizer step over all parameters (SGD with (Nesterov) momentum,
// RMSprop, Adam / AdamW, see OptimArgs in train_ops.h), with the gradient clipping of the step
// in the same call: a first pass over all gradients for the norms (when clipnorm or
// global_clipnorm is set), then the update pass, each split over the threads by blocks of
// OPTIM_BLOCK elements.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h, the standard headers and the tuning constants it defines.
//
// The update is element-wise float32 arithmetic in the order of the NumPy references; the
// compiler must not contract a product and a sum into one fused multiply-add (which rounds once
// instead of twice) here, or the results would drift from the references by an ulp now and then.

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

static inline V opt_sqrt(V x) {
#if defined(FASTRNN_ISA_AVX512)
  return _mm512_sqrt_ps(x);
#elif defined(FASTRNN_ISA_AVX2)
  return _mm256_sqrt_ps(x);
#elif defined(FASTRNN_ISA_NEON)
  return vsqrtq_f32(x);
#else
  return std::sqrt(x);
#endif
}

// sum of x[i]^2 in double (each square is exact in double), a fixed order for each ISA.
static double sumsq_f64(const float* x, int64_t n) {
  int64_t i = 0;
  double s = 0.0;
#if defined(FASTRNN_ISA_AVX512)
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
  for (; i + 16 <= n; i += 16) {
    const __m256 lo = _mm256_loadu_ps(x + i), hi = _mm256_loadu_ps(x + i + 8);
    const __m512d dl = _mm512_cvtps_pd(lo), dh = _mm512_cvtps_pd(hi);
    a0 = _mm512_fmadd_pd(dl, dl, a0);
    a1 = _mm512_fmadd_pd(dh, dh, a1);
  }
  s = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#elif defined(FASTRNN_ISA_AVX2)
  __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), a2 = _mm256_setzero_pd(), a3 = _mm256_setzero_pd();
  for (; i + 16 <= n; i += 16) {
    const __m256d d0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), d1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    const __m256d d2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)), d3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
    a2 = _mm256_fmadd_pd(d2, d2, a2);
    a3 = _mm256_fmadd_pd(d3, d3, a3);
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
  s = (t[0] + t[1]) + (t[2] + t[3]);
#else
  double a[4] = {0.0, 0.0, 0.0, 0.0};
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) a[j] += (double)x[i + j] * (double)x[i + j];
  s = (a[0] + a[1]) + (a[2] + a[3]);
#endif
  for (; i < n; ++i) s += (double)x[i] * (double)x[i];
  return s;
}

// Elements [i0, i1) of parameter p; sc multiplies the gradient (norm clipping: 1 when off).
static void optim_range(const OptimArgs& a, int64_t p, int64_t i0, int64_t i1, float sc) {
  float* w = a.w[p];
  const float* g = a.g[p];
  float* s0 = a.s0 ? a.s0[p] : nullptr;
  float* s1 = a.s1 ? a.s1[p] : nullptr;
  float* s2 = a.s2 ? a.s2[p] : nullptr;
  const bool by_value = a.clip == ClipKind::VALUE, by_norm = a.clip == ClipKind::NORM || a.clip == ClipKind::GLOBAL_NORM;
  const float cv = (float)a.clip_arg;
  const V hi = Simd::set1(cv), lo = Simd::set1(-cv), vsc = Simd::set1(sc);
  const V A = Simd::set1(a.a), Bv = Simd::set1(a.b), Cv = Simd::set1(a.c), Dv = Simd::set1(a.d), E = Simd::set1(a.e);
  const V F = Simd::set1(a.f), Hv = Simd::set1(a.h), DEC = Simd::set1(a.decay);
  const bool decay = a.decay_mask && a.decay_mask[p];
  for (int64_t i = i0; i < i1; i += W) {
    const int nv = (int)std::min<int64_t>(W, i1 - i);
    V gv = Simd::loadn(g + i, nv);
    if (by_value) gv = Simd::max(lo, Simd::min(hi, gv));
    else if (by_norm) gv = Simd::mul(gv, vsc);
    V wv = Simd::loadn(w + i, nv);
    switch (a.kind) {
      case OptimKind::SGD: {
        if (!a.momentum) {
          wv = Simd::sub(wv, Simd::mul(A, gv));
        } else {
          V v = Simd::sub(Simd::mul(Bv, Simd::loadn(s0 + i, nv)), Simd::mul(A, gv));
          Simd::storen(s0 + i, v, nv);
          wv = a.nesterov ? Simd::sub(Simd::add(wv, Simd::mul(Bv, v)), Simd::mul(A, gv)) : Simd::add(wv, v);
        }
        break;
      }
      case OptimKind::RMSPROP: {
        V s = Simd::add(Simd::mul(Bv, Simd::loadn(s0 + i, nv)), Simd::mul(Simd::mul(Cv, gv), gv));
        Simd::storen(s0 + i, s, nv);
        V d = s;
        if (a.centered) {
          V mg = Simd::add(Simd::mul(Bv, Simd::loadn(s1 + i, nv)), Simd::mul(Cv, gv));
          Simd::storen(s1 + i, mg, nv);
          d = Simd::sub(s, Simd::mul(mg, mg));
        }
        const V num = Simd::mul(A, gv);
        const V inc = a.torch_eps ? Simd::div(num, Simd::add(opt_sqrt(d), E)) : Simd::div(num, opt_sqrt(Simd::add(d, E)));
        if (a.momentum) {
          V m = Simd::add(Simd::mul(Dv, Simd::loadn(s2 + i, nv)), inc);
          Simd::storen(s2 + i, m, nv);
          wv = Simd::sub(wv, m);
        } else {
          wv = Simd::sub(wv, inc);
        }
        break;
      }
      case OptimKind::ADAM: {
        V m = Simd::loadn(s0 + i, nv);
        m = Simd::add(m, Simd::mul(Bv, Simd::sub(gv, m)));
        Simd::storen(s0 + i, m, nv);
        V v = Simd::loadn(s1 + i, nv);
        v = Simd::add(v, Simd::mul(Cv, Simd::sub(Simd::mul(gv, gv), v)));
        Simd::storen(s1 + i, v, nv);
        V vh = v;
        if (a.amsgrad) {
          vh = Simd::max(Simd::loadn(s2 + i, nv), v);  // a NaN v propagates
          Simd::storen(s2 + i, vh, nv);
        }
        if (decay) wv = Simd::sub(wv, Simd::mul(DEC, wv));
        if (a.torch_eps)
          wv = Simd::sub(wv, Simd::div(Simd::mul(A, Simd::div(m, F)), Simd::add(opt_sqrt(Simd::div(vh, Hv)), E)));
        else
          wv = Simd::sub(wv, Simd::div(Simd::mul(A, m), Simd::add(opt_sqrt(vh), E)));
        break;
      }
    }
    Simd::storen(w + i, wv, nv);
  }
}

static void optim_update(const OptimArgs& a) {
  if (a.P <= 0) return;
  // first[p]: index of parameter p's first block; blocks [first[p], first[p+1]) are p's.
  std::vector<int64_t> first((size_t)a.P + 1, 0);
  int64_t total = 0;
  for (int64_t p = 0; p < a.P; ++p) {
    first[(size_t)p + 1] = first[(size_t)p] + ceil_div(a.n[p], OPTIM_BLOCK);
    total += a.n[p];
  }
  const int64_t NB = first[(size_t)a.P];
  if (NB == 0) return;
  const bool need_norm = a.clip == ClipKind::NORM || a.clip == ClipKind::GLOBAL_NORM;
  // A thread for every 64 Ki elements at least: below that a team costs more than it saves.
  int nt = (int)std::min<int64_t>({(int64_t)std::max(1, a.threads), NB, std::max<int64_t>(1, total / 65536)});

  auto blocks = [&](int64_t b0, int64_t b1, bool norm_pass) {
    int64_t p = std::upper_bound(first.begin(), first.end(), b0) - first.begin() - 1;
    for (int64_t b = b0; b < b1; ++b) {
      while (b >= first[(size_t)p + 1]) ++p;
      const int64_t i0 = (b - first[(size_t)p]) * OPTIM_BLOCK, i1 = std::min(a.n[p], i0 + OPTIM_BLOCK);
      if (norm_pass)
        a.block_sums[b] = sumsq_f64(a.g[p] + i0, i1 - i0);
      else
        optim_range(a, p, i0, i1, need_norm ? a.scales[p] : 1.0f);
    }
  };
  auto scales = [&] {  // per-parameter sums in block order, then the references' scalar rules
    double all = 0.0;
    for (int64_t p = 0; p < a.P; ++p) {
      double s = 0.0;
      for (int64_t b = first[(size_t)p]; b < first[(size_t)p + 1]; ++b) s += a.block_sums[b];
      if (a.sumsq) a.sumsq[p] = s;
      all += s;
      if (a.clip == ClipKind::NORM) {
        const double nrm = std::sqrt(s);
        a.scales[p] = nrm > a.clip_arg ? (float)(a.clip_arg / std::max(nrm, a.clip_arg)) : 1.0f;
      }
    }
    if (a.clip == ClipKind::GLOBAL_NORM) {
      const double nrm = std::sqrt(all);
      const float sc = nrm > a.clip_arg ? (float)(a.clip_arg / nrm) : 1.0f;
      for (int64_t p = 0; p < a.P; ++p) a.scales[p] = sc;
    }
  };
  if (nt == 1) {
    if (need_norm) {
      blocks(0, NB, true);
      scales();
    }
    blocks(0, NB, false);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    const int64_t b0 = NB * tid / team, b1 = NB * (tid + 1) / team;
    if (need_norm) {
      blocks(b0, b1, true);
#pragma omp barrier
#pragma omp single
      scales();  // the implied barrier at its end publishes the scales
    }
    blocks(b0, b1, false);
  }
}

#pragma GCC pop_options
