// gemm_pack.h — operand packing for the CPU GEMM: W x W transposes in registers and the
// BLIS-style A and B panels.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h, the standard headers and the tuning constants it defines.

#if defined(FASTRNN_ISA_AVX512)
// dst[k][i] = rows[i][k] for 8 rows and 16 values of k: an 8x16 -> 16x8 transpose in registers.
static inline void transpose_8x16(const float* A, int64_t rsa, float* dst) {
  __m512 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_ps(A + i * rsa);
  for (int i = 0; i < 8; i += 2) {  // per 128-bit lane l: (r_i[4l], r_i+1[4l], r_i[4l+1], r_i+1[4l+1]) ...
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {  // u[h+j], lane l: rows h..h+3 at k = 4l + j
    u[h + 0] = _mm512_shuffle_ps(t[h], t[h + 2], 0x44);
    u[h + 1] = _mm512_shuffle_ps(t[h], t[h + 2], 0xEE);
    u[h + 2] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    u[h + 3] = _mm512_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int half = 0; half < 2; ++half) {  // lanes {0,1} (k < 8), then lanes {2,3}
    for (int j = 0; j < 2; ++j) {         // the pairs k = 4l + 2j, 4l + 2j + 1
      const __m512 a = half ? _mm512_shuffle_f32x4(u[2 * j], u[4 + 2 * j], 0xEE)
                            : _mm512_shuffle_f32x4(u[2 * j], u[4 + 2 * j], 0x44);
      const __m512 b = half ? _mm512_shuffle_f32x4(u[2 * j + 1], u[5 + 2 * j], 0xEE)
                            : _mm512_shuffle_f32x4(u[2 * j + 1], u[5 + 2 * j], 0x44);
      const int k0 = 8 * half + 2 * j;
      _mm512_storeu_ps(dst + k0 * 8, _mm512_shuffle_f32x4(a, b, 0x88));        // k0, k0+1
      _mm512_storeu_ps(dst + (k0 + 4) * 8, _mm512_shuffle_f32x4(a, b, 0xDD));  // k0+4, k0+5
    }
  }
}
#endif

#if defined(FASTRNN_ISA_AVX2)
// r[j][i] = r[i][j] for i, j < 8: an 8 x 8 transpose in registers.
static inline void transpose_8x8(__m256 (&r)[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    r[h + 0] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
    t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
  }
  for (int j = 0; j < 8; ++j) r[j] = t[j];
}

// dst[k * 6 + i] = rows[i][k] for 6 rows and 8 values of k (a 6-row A panel, packed). Each k's 6
// values go out in one 8-wide store whose last 2 lanes land on the next k's slot, rewritten by the
// next store; the last k of the panel (`last`) is stored 6 wide, so nothing past the panel is written.
static inline void transpose_6x8(const float* A, int64_t rsa, float* dst, bool last) {
  __m256 r[8];
  for (int i = 0; i < 6; ++i) r[i] = _mm256_loadu_ps(A + i * rsa);
  r[6] = r[7] = _mm256_setzero_ps();
  transpose_8x8(r);
  for (int j = 0; j < 7; ++j) _mm256_storeu_ps(dst + j * 6, r[j]);
  if (last) {
    _mm_storeu_ps(dst + 42, _mm256_castps256_ps128(r[7]));
    _mm_storel_pi(reinterpret_cast<__m64*>(dst + 46), _mm256_extractf128_ps(r[7], 1));
  } else {
    _mm256_storeu_ps(dst + 42, r[7]);
  }
}
#endif

// dst[k * ldd + i] = src[i * lds + k] for i, k < W: one W x W block transposed in registers
// (16 x 16 on AVX-512, 8 x 8 on AVX2, 4 x 4 on NEON). Serves the packing of operands stored the other way round
// (W_hh for the forward tiles, W_ih^T for the input projection) without a scalar gather.
static inline void transpose_w(const float* src, int64_t lds, float* dst, int64_t ldd) {
#if defined(FASTRNN_ISA_AVX512)
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {  // per 128-bit lane l: (r_i[4l], r_i+1[4l], r_i[4l+1], r_i+1[4l+1]) ...
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 16; h += 4) {  // r[h+j], lane l: rows h..h+3 at k = 4l + j
    const __m512d a = _mm512_castps_pd(t[h]), b = _mm512_castps_pd(t[h + 1]);
    const __m512d c = _mm512_castps_pd(t[h + 2]), e = _mm512_castps_pd(t[h + 3]);
    r[h + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[h + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[h + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    r[h + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  for (int h = 0; h < 16; h += 8)  // t[h+j] lanes: rows h..h+3 at k = j, 8+j, then h+4..h+7 at k = j, 8+j
    for (int j = 0; j < 4; ++j) {  // (t[h+4+j]: the same rows at k = 4+j, 12+j)
      t[h + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0x88);
      t[h + 4 + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {  // rows 0..15 at k = j (lanes from t[j], t[8+j]) and at k = 8+j
    _mm512_storeu_ps(dst + j * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
    _mm512_storeu_ps(dst + (8 + j) * ldd, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD));
  }
#elif defined(FASTRNN_ISA_AVX2)
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  transpose_8x8(r);
  for (int j = 0; j < 8; ++j) _mm256_storeu_ps(dst + j * ldd, r[j]);
#elif defined(FASTRNN_ISA_NEON)
  const float32x4_t r0 = vld1q_f32(src), r1 = vld1q_f32(src + lds);
  const float32x4_t r2 = vld1q_f32(src + 2 * lds), r3 = vld1q_f32(src + 3 * lds);
  const float32x4x2_t a = vtrnq_f32(r0, r1);  // (r0[0] r1[0] r0[2] r1[2]), (r0[1] r1[1] r0[3] r1[3])
  const float32x4x2_t b = vtrnq_f32(r2, r3);  // the same for rows 2 and 3
  vst1q_f32(dst, vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0])));  // k = 0
  vst1q_f32(dst + ldd, vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1])));
  vst1q_f32(dst + 2 * ldd, vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0])));
  vst1q_f32(dst + 3 * ldd, vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1])));
#else
  for (int i = 0; i < W; ++i)
    for (int k = 0; k < W; ++k) dst[k * ldd + i] = src[i * lds + k];
#endif
}

// Packing walks an operand's rows (or columns) that lie far apart: each run of n floats is
// fetched by hand ahead of its copy: into the L1 (LOC 3) PACK_PF_K runs ahead (pack_a, columns),
// into the L2 (LOC 2) a chunk of PACK_KB runs ahead (pack_b) or the rows of the panel
// PACK_PF_PANELS ahead (pack_a, rows). pack_a copies PACK_GROUP panels at a time.
static constexpr int64_t PACK_KB = 16, PACK_PF_K = 8, PACK_GROUP = 4, PACK_PF_PANELS = 2;

template <int LOC>
static inline void prefetch_run(const float* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t b = 0; b < n * (int64_t)sizeof(float); b += 64) __builtin_prefetch(c + b, 0, LOC);
  __builtin_prefetch(c + n * (int64_t)sizeof(float) - 1, 0, LOC);
}

// A block (mc x kc) -> GEMM_MR-row panels, each stored k-major: Ap[panel][k][i]; pads with zeros.
static void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rsa, int64_t csa, float* Ap) {
  if (rsa == 1 && csa != 1) {
    // Column k of A is contiguous (A = X^T of a row-major X, as in the weight gradients). Walk
    // the panels in groups of PACK_GROUP and, per group, walk k and copy the group's rows of
    // column k into its panels: one read stream, PACK_GROUP write streams (a walk over all panels
    // per k would write to places kc * MR floats apart that share one L1 set: 32 panels of 8 rows
    // at kc 512 thrash an 8-way set). Columns lie csa floats apart, often a page or more, where
    // the hardware prefetchers stop: fetch the column PACK_PF_K ahead by hand.
    const int64_t np = ceil_div(mc, GEMM_MR);
    for (int64_t g0 = 0; g0 < np; g0 += PACK_GROUP) {
      const int64_t g1 = std::min(np, g0 + PACK_GROUP), r0 = g0 * GEMM_MR;
      const int64_t rows = std::min(mc, g1 * GEMM_MR) - r0;
      for (int64_t k = 0; k < kc; ++k) {
        if (k + PACK_PF_K < kc) prefetch_run<3>(A + (k + PACK_PF_K) * csa + r0, rows);
        const float* src = A + k * csa;
        for (int64_t p = g0; p < g1; ++p) {
          const int64_t i0 = p * GEMM_MR;
          const int m = (int)std::min<int64_t>(GEMM_MR, mc - i0);
          float* d = Ap + i0 * kc + k * GEMM_MR;
#if defined(FASTRNN_ISA_AVX2)
          // 6-row panels in 8-wide vectors: AVX2's masked loads and stores are slow (microcoded on
          // AMD). A whole vector is read where 8 rows are there (the 2 past the panel belong to the
          // next one) and written where its last 2 lanes land on the next k's slot of the panel,
          // which is written after this one (k ascends): all but the panel's last k.
          if (m == GEMM_MR && i0 + W <= mc && k + 1 < kc) {
            Simd::store(d, Simd::load(src + i0));
            continue;
          }
#endif
          for (int c = 0; c < GEMM_MR; c += W) {
            const int nv = std::min(W, GEMM_MR - c), nl = std::min(nv, m - c);
            Simd::storen(d + c, nl > 0 ? Simd::loadn(src + i0 + c, nl) : Simd::zero(), nv);
          }
        }
      }
    }
    return;
  }
  for (int64_t i0 = 0; i0 < mc; i0 += GEMM_MR) {
    const int m = (int)std::min<int64_t>(GEMM_MR, mc - i0);
    float* dst = Ap + i0 * kc;
    // rows lie rsa floats apart (a page or more for the decoder's input gradient, A = dZ with
    // 18,328 columns): the panel PACK_PF_PANELS ahead is fetched into the L2 while this one is copied
    if (csa == 1 && i0 + PACK_PF_PANELS * GEMM_MR < mc) {
      const int64_t r0 = i0 + PACK_PF_PANELS * GEMM_MR;
      for (int64_t r = r0; r < std::min(mc, r0 + GEMM_MR); ++r) prefetch_run<2>(A + r * rsa, kc);
    }
#if defined(FASTRNN_ISA_AVX512)
    static_assert(GEMM_MR == 8, "transpose_8x16 packs 8-row panels");
    if (csa == 1 && m == GEMM_MR) {
      const float* src = A + i0 * rsa;
      int64_t k = 0;
      for (; k + 16 <= kc; k += 16) transpose_8x16(src + k, rsa, dst + k * GEMM_MR);
      for (; k < kc; ++k)
        for (int i = 0; i < GEMM_MR; ++i) dst[k * GEMM_MR + i] = src[i * rsa + k];
      continue;
    }
#endif
#if defined(FASTRNN_ISA_AVX2)
    static_assert(GEMM_MR == 6, "transpose_6x8 packs 6-row panels");
    if (csa == 1 && m == GEMM_MR) {
      const float* src = A + i0 * rsa;
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) transpose_6x8(src + k, rsa, dst + k * GEMM_MR, k + 8 == kc);
      for (; k < kc; ++k)
        for (int i = 0; i < GEMM_MR; ++i) dst[k * GEMM_MR + i] = src[i * rsa + k];
      continue;
    }
#endif
    if (csa == 1) {
      for (int i = 0; i < m; ++i) {
        const float* src = A + (i0 + i) * rsa;
        for (int64_t k = 0; k < kc; ++k) dst[k * GEMM_MR + i] = src[k];
      }
      for (int i = m; i < GEMM_MR; ++i)
        for (int64_t k = 0; k < kc; ++k) dst[k * GEMM_MR + i] = 0.0f;
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A + i0 * rsa + k * csa;
        for (int i = 0; i < GEMM_MR; ++i) dst[k * GEMM_MR + i] = i < m ? src[i * rsa] : 0.0f;
      }
    }
  }
}

// Width of the packed B panel holding n <= GEMM_NR columns: a last panel of at most W columns is
// packed (and multiplied) one vector wide, so that a narrow N (say 100 = 3*32 + 4) does not pay
// for a whole GEMM_NR-wide panel of zeros.
static inline int panel_width(int n) { return (GEMM_NV > 1 && n <= W) ? W : GEMM_NR; }

// B block (kc x nc) -> column panels (GEMM_NR wide, the last one maybe W), each stored k-major:
// Bp[panel][k][j]; pads with zeros.
static void pack_b(int64_t kc, int64_t nc, const float* B, int64_t rsb, int64_t csb, float* Bp) {
  if (csb == 1) {
    // B's rows are contiguous: walk k in chunks of PACK_KB rows and copy each panel's columns of
    // the chunk, so that B is read row by row (PACK_KB streams, not one cache line per row and
    // panel) and every panel gets one contiguous run (see pack_a). Rows lie rsb floats apart,
    // often a page or more (the decoder's 18,328 columns), where the hardware prefetchers stop:
    // the next chunk's rows are fetched into the L2 by hand while this one is copied.
    for (int64_t k0 = 0; k0 < kc; k0 += PACK_KB) {
      const int64_t k1 = std::min(kc, k0 + PACK_KB);
      for (int64_t k = k1; k < std::min(kc, k1 + PACK_KB); ++k) prefetch_run<2>(B + k * rsb, nc);
      for (int64_t j0 = 0; j0 < nc; j0 += GEMM_NR) {
        const int n = (int)std::min<int64_t>(GEMM_NR, nc - j0), nr = panel_width(n);
        for (int64_t k = k0; k < k1; ++k) {
          const float* src = B + k * rsb + j0;
          float* d = Bp + j0 * kc + k * nr;
          if (n == GEMM_NR) {
#pragma GCC unroll 8
            for (int v = 0; v < GEMM_NV; ++v) Simd::store(d + v * W, Simd::load(src + v * W));
          } else {
            for (int c = 0; c < nr; c += W) {
              const int nl = std::min(W, n - c);
              Simd::store(d + c, nl > 0 ? Simd::loadn(src + c, nl) : Simd::zero());
            }
          }
        }
      }
    }
    return;
  }
  for (int64_t j0 = 0; j0 < nc; j0 += GEMM_NR) {
    const int n = (int)std::min<int64_t>(GEMM_NR, nc - j0), nr = panel_width(n);
    float* dst = Bp + j0 * kc;
    {
      int64_t k0 = 0;
      if (rsb == 1 && n == nr)  // B's columns are contiguous: whole W x W blocks transposed in registers
        for (; k0 + W <= kc; k0 += W)
          for (int v = 0; v < nr; v += W) transpose_w(B + (j0 + v) * csb + k0, csb, dst + k0 * nr + v, nr);
      // the rest (all of it for other strides or a partial panel): k outer, contiguous writes; the
      // n source rows stay in L1 across 16 values of k
      for (int64_t k = k0; k < kc; ++k) {
        const float* src = B + k * rsb + j0 * csb;
        float* d = dst + k * nr;
        for (int j = 0; j < n; ++j) d[j] = src[j * csb];
        for (int j = n; j < nr; ++j) d[j] = 0.0f;
      }
    }
  }
}

