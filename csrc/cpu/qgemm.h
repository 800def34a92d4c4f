// qgemm.h — int8 inference: the quantized matrix products of the int8 mode (fastrnn.quantize).
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS.
//
// The scheme (python/fastrnn/reference/quantized.py is its NumPy twin, bit for bit):
//   weights    per output column n (a row of W [N, K]): s_w[n] = max|W[n,:]| / 127,
//              q = rint(W[n,:] * (127 / max|W[n,:]|)) in [-127, 127] (done once, in Python)
//   activations per row m of A [M, K], at run time, the same rule: s_a[m], a_q in [-127, 127]
//   product    acc[m, n] = sum_k a_q[m, k] * w_q[n, k], exact in int32 (|acc| <= K * 127^2)
//   result     float(acc) * (s_a[m] * s_w[n])   (two roundings, the same on every path)
// The integer sums are exact on every path, so the scalar, AVX2, AVX-512 and AVX-512 VNNI paths
// give identical int8 products.
//
// The dot product of 4 consecutive k per int32 lane, per ISA:
//   AVX-512 VNNI  VPDPBUSD (u8 x s8): activations stored as u8 = a_q + 128; the extra
//                 128 * sum_k w_q[n, k] is subtracted before the conversion ("comp" per column)
//   AVX-512 BW    VPMADDUBSW(|a|, w * sign(a)) then VPMADDWD with ones: |a| <= 127 keeps every
//   AVX2          pair sum within int16 (2 * 127 * 127 = 32258), so nothing saturates
//   NEON          widening multiplies (int8 x int8 -> int16) and pairwise adds
//   scalar        int32 arithmetic
//
// Packed weights: panel p holds NV vectors of W columns; per group of 4 k (K4 = ceil(K / 4)):
//   Wp[p][k4][v][l][kk] = w_q[col(p, v, l)][4 * k4 + kk]   (0 past K and for padding columns)
// col(p, v, l) = v * Hg + p * W + l for the gate-grouped layout of the recurrent cells (Hg = H:
// the G gate vectors of the same W hidden units side by side, as the float forward tiles hold
// them), and (p * NV + v) * W + l for a plain matrix (Hg = 0). One vector load is W columns x 4 k.



static inline int64_t qpanels(int64_t N, int NV, int64_t Hg) { return Hg ? ceil_div(Hg, W) : ceil_div(N, (int64_t)NV * W); }

// The logical column of packed column (p, v, l), or -1 for padding.
static inline int64_t qcol(int64_t N, int NV, int64_t Hg, int64_t p, int v, int l) {
  if (Hg) return p * W + l < Hg ? v * Hg + p * W + l : -1;
  const int64_t c = (p * NV + v) * W + l;
  return c < N ? c : -1;
}

// Bytes of the packed weights and floats of the scale / comp arrays.
static void qpack_sizes(int64_t N, int64_t K, int NV, int64_t Hg, int64_t* wbytes, int64_t* cols) {
  const int64_t P = qpanels(N, NV, Hg);
  *wbytes = P * ceil_div(K, 4) * NV * W * 4;
  *cols = P * NV * W;
}

static void qpack(const int8_t* wq, const float* wscale, int64_t N, int64_t K, int NV, int64_t Hg, int8_t* out,
                  float* scale_out, int32_t* comp_out) {
  const int64_t P = qpanels(N, NV, Hg), K4 = ceil_div(K, 4);
  for (int64_t p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v)
      for (int l = 0; l < W; ++l) {
        const int64_t c = qcol(N, NV, Hg, p, v, l);
        const int64_t pc = (p * NV + v) * W + l;
        int32_t sum = 0;
        for (int64_t k4 = 0; k4 < K4; ++k4)
          for (int kk = 0; kk < 4; ++kk) {
            const int64_t k = 4 * k4 + kk;
            const int8_t q = (c >= 0 && k < K) ? wq[c * K + k] : 0;
            out[(((p * K4 + k4) * NV + v) * W + l) * 4 + kk] = q;
            sum += q;
          }
        scale_out[pc] = c >= 0 ? wscale[c] : 0.0f;
        comp_out[pc] = 128 * sum;
      }
}

// ---- the CPU's VNNI ----------------------------------------------------------------------------
static bool cpu_has_vnni() {
#if defined(FASTRNN_ISA_AVX512)
  static const bool has = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return ((c >> 11) & 1u) != 0;  // CPUID.(EAX=7,ECX=0):ECX[11] AVX512_VNNI
  }();
  return has && qvnni_allowed();
#else
  return false;
#endif
}

// ---- quantizing activation rows -----------------------------------------------------------------
// Row x[0, K) -> q (K4 int32 groups of 4 int8, zero padded; with `offset` each byte + 128 as u8),
// returns the row's scale max|x| / 127 (0 for a zero row: q all 0).
static float qrow(const float* x, int64_t K, int32_t* q, bool offset) {
  // max |x| and a NaN detector (x * 0 is NaN for a NaN or an infinity), W lanes at a time
  V vmx = Simd::zero(), vbad = Simd::zero();
  int64_t k = 0;
  for (; k < K; k += W) {
    const int nv = (int)std::min<int64_t>(W, K - k);
    const V v = nv == W ? Simd::load(x + k) : Simd::loadn(x + k, nv);
    vmx = Simd::max(vmx, Simd::abs(v));
    vbad = Simd::fmadd(v, Simd::zero(), vbad);
  }
  float lanes[W], bad[W];
  Simd::store(lanes, vmx);
  Simd::store(bad, vbad);
  float mx = 0.0f;
  bool finite = true;
  for (int l = 0; l < W; ++l) {
    mx = std::max(mx, lanes[l]);
    finite &= bad[l] == 0.0f;
  }
  int8_t* qb = reinterpret_cast<int8_t*>(q);
  const int64_t K4 = ceil_div(K, 4);
  const int8_t off = offset ? (int8_t)-128 : 0;  // +128 as u8 == -128 wrapped in int8 (two's complement)
  if (!finite || mx == 0.0f) {  // a zero row: scale 0; a non-finite one: scale NaN, so its results are NaN
    for (k = 0; k < 4 * K4; ++k) qb[k] = off;
    return finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
  }
  const float inv = 127.0f / mx;
  k = 0;
  // round to nearest even (the MXCSR default), as std::nearbyint below and NumPy's rint
#if defined(FASTRNN_ISA_AVX512)
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m128i voff = _mm_set1_epi8(off);
  for (; k + 16 <= K; k += 16) {
    const __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + k), _mm_add_epi8(_mm512_cvtsepi32_epi8(r), voff));
  }
#elif defined(FASTRNN_ISA_AVX2)
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m128i voff = _mm_set1_epi8(off);
  for (; k + 8 <= K; k += 8) {
    const __m256i r = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv));
    const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(qb + k), _mm_add_epi8(_mm_packs_epi16(p16, p16), voff));
  }
#endif
  for (; k < K; ++k) qb[k] = (int8_t)((int)std::nearbyint(x[k] * inv) + off);
  for (; k < 4 * K4; ++k) qb[k] = off;
  return mx / 127.0f;
}

// ---- the micro-kernel: MR rows x NV vectors of W columns ----------------------------------------
#if defined(FASTRNN_ISA_AVX512)
// acc + VPDPBUSD(a as u8, w as s8). Written as an instruction rather than the intrinsic so that
// this translation unit needs no -mavx512vnni (which would let the compiler use VNNI anywhere);
// it runs only where cpu_has_vnni().
static inline __m512i dpbusd(__m512i acc, __m512i a, __m512i w) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
  return acc;
}
#endif

#if defined(FASTRNN_ISA_AVX512)
using QI = __m512i;
#elif defined(FASTRNN_ISA_AVX2)
using QI = __m256i;
#elif defined(FASTRNN_ISA_NEON)
using QI = int32x4_t;
#else
using QI = int32_t;
#endif

// out[i][v] (floats, W lanes) = float(acc - comp) * (srow[i] * scale[v]) for the MR rows `rows`
// (quantized, K4 groups each) against the panel `wp`.
template <int MR, int NV, bool kVnni>
static inline void qmicro_body(int64_t K4, const int32_t* const* rows, const int8_t* __restrict wp,
                               const float* srow, const float* scale, const int32_t* comp, V* out) {
  QI acc[MR][NV];
#if defined(FASTRNN_ISA_AVX512)
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_si512();
  const __m512i ones16 = _mm512_set1_epi16(1);
  int64_t k4 = 0;
  if constexpr (kVnni && MR * NV <= 4) {
    // A small tile (one row: a batch of 1) has too few independent sums to hide VPDPBUSD's
    // latency: a second set of accumulators takes the odd groups of k (integer sums: the same
    // result in any order).
    QI acc2[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc2[i][v] = _mm512_setzero_si512();
    for (; k4 + 2 <= K4; k4 += 2) {
      for (int v = 0; v < NV; ++v) {
        const __m512i w0 = _mm512_loadu_si512(wp + (k4 * NV + v) * (W * 4));
        const __m512i w1 = _mm512_loadu_si512(wp + ((k4 + 1) * NV + v) * (W * 4));
        for (int i = 0; i < MR; ++i) {
          acc[i][v] = dpbusd(acc[i][v], _mm512_set1_epi32(rows[i][k4]), w0);
          acc2[i][v] = dpbusd(acc2[i][v], _mm512_set1_epi32(rows[i][k4 + 1]), w1);
        }
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_add_epi32(acc[i][v], acc2[i][v]);
  }
  for (; k4 < K4; ++k4) {
    __m512i w[NV];
    for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_si512(wp + (k4 * NV + v) * (W * 4));
    for (int i = 0; i < MR; ++i) {
      const __m512i a = _mm512_set1_epi32(rows[i][k4]);
      if constexpr (kVnni) {
        for (int v = 0; v < NV; ++v) acc[i][v] = dpbusd(acc[i][v], a, w[v]);
      } else {
        const __m512i aa = _mm512_abs_epi8(a);
        const __mmask64 neg = _mm512_movepi8_mask(a);
        for (int v = 0; v < NV; ++v) {
          const __m512i ws = _mm512_mask_sub_epi8(w[v], neg, _mm512_setzero_si512(), w[v]);
          acc[i][v] = _mm512_add_epi32(acc[i][v], _mm512_madd_epi16(_mm512_maddubs_epi16(aa, ws), ones16));
        }
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    const __m512 sc = _mm512_loadu_ps(scale + v * W);
    const __m512i cp = kVnni ? _mm512_loadu_si512(comp + v * W) : _mm512_setzero_si512();
    for (int i = 0; i < MR; ++i)
      out[i * NV + v] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][v], cp)),
                                      _mm512_mul_ps(_mm512_set1_ps(srow[i]), sc));
  }
#elif defined(FASTRNN_ISA_AVX2)
  static_assert(!kVnni, "no VNNI on the AVX2 path");
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_si256();
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    __m256i w[NV];
    for (int v = 0; v < NV; ++v) w[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + (k4 * NV + v) * (W * 4)));
    for (int i = 0; i < MR; ++i) {
      const __m256i a = _mm256_set1_epi32(rows[i][k4]);
      const __m256i aa = _mm256_abs_epi8(a);
      for (int v = 0; v < NV; ++v)
        acc[i][v] = _mm256_add_epi32(acc[i][v],
                                     _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(w[v], a)), ones16));
    }
  }
  for (int v = 0; v < NV; ++v) {
    const __m256 sc = _mm256_loadu_ps(scale + v * W);
    for (int i = 0; i < MR; ++i)
      out[i * NV + v] = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][v]), _mm256_mul_ps(_mm256_set1_ps(srow[i]), sc));
  }
#elif defined(FASTRNN_ISA_NEON)
  static_assert(!kVnni, "no VNNI on the NEON path");
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = vdupq_n_s32(0);
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    int8x16_t w[NV];
    for (int v = 0; v < NV; ++v) w[v] = vld1q_s8(wp + (k4 * NV + v) * (W * 4));
    for (int i = 0; i < MR; ++i) {
      const int8x16_t a = vreinterpretq_s8_s32(vdupq_n_s32(rows[i][k4]));
      for (int v = 0; v < NV; ++v) {
        const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(w[v]));    // columns 0, 1
        const int16x8_t hi = vmull_s8(vget_high_s8(a), vget_high_s8(w[v]));  // columns 2, 3
        acc[i][v] = vaddq_s32(acc[i][v], vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    const float32x4_t sc = vld1q_f32(scale + v * W);
    for (int i = 0; i < MR; ++i)
      out[i * NV + v] = vmulq_f32(vcvtq_f32_s32(acc[i][v]), vmulq_f32(vdupq_n_f32(srow[i]), sc));
  }
#else
  static_assert(!kVnni, "no VNNI on the scalar path");
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = 0;
  for (int64_t k4 = 0; k4 < K4; ++k4)
    for (int i = 0; i < MR; ++i) {
      const int8_t* a = reinterpret_cast<const int8_t*>(rows[i] + k4);
      for (int v = 0; v < NV; ++v) {
        const int8_t* w = wp + (k4 * NV + v) * 4;
        acc[i][v] += a[0] * w[0] + a[1] * w[1] + a[2] * w[2] + a[3] * w[3];
      }
    }
  for (int v = 0; v < NV; ++v)
    for (int i = 0; i < MR; ++i) out[i * NV + v] = (float)acc[i][v] * (srow[i] * scale[v]);
#endif
}

template <int MR, int NV, bool kVnni>
__attribute__((noinline)) static void qmicro_n(int64_t K4, const int32_t* const* rows, const int8_t* wp,
                                               const float* srow, const float* scale, const int32_t* comp, V* out) {
  qmicro_body<MR, NV, kVnni>(K4, rows, wp, srow, scale, comp, out);
}

template <int MR, int NV>
static inline void qmicro(bool vnni, int64_t K4, const int32_t* const* rows, const int8_t* wp, const float* srow,
                          const float* scale, const int32_t* comp, V* out) {
#if defined(FASTRNN_ISA_AVX512)
  if (vnni) return qmicro_n<MR, NV, true>(K4, rows, wp, srow, scale, comp, out);
#endif
  qmicro_n<MR, NV, false>(K4, rows, wp, srow, scale, comp, out);
}

// Rows of a tile: MR x NV int32 accumulators + NV weight vectors + the broadcast (+ its absolute
// value) within the registers.
template <int NV>
constexpr int qtile_rows() {
  return std::max(1, std::min(8, (VREGS - NV - 3) / NV));
}

#if defined(FASTRNN_ISA_AVX512)
constexpr int QGEMM_NV = 4;
#else
constexpr int QGEMM_NV = 2;
#endif

// The int8 scheme for the low-precision drivers (lowp_gemm, lowp_forward_impl in qforward_loop.h).
struct Int8Scheme {
  using Packed = QPacked;
  static bool fast() { return cpu_has_vnni(); }
  static int64_t row_words(int64_t K) { return ceil_div(K, 4); }
  static int64_t groups(const QPacked& pw) { return pw.K4; }
  static float row(const float* x, int64_t K, int32_t* q, bool fast) { return qrow(x, K, q, fast); }
  template <int NV>
  static constexpr int tile_rows() { return qtile_rows<NV>(); }
  template <int MR, int NV>
  static void micro(bool fast, const QPacked& pw, int64_t p, const int32_t* const* rows, const float* srow, V* out) {
    qmicro<MR, NV>(fast, pw.K4, rows, pw.w + p * pw.K4 * NV * W * 4, srow, pw.scale + p * NV * W,
                   pw.comp + p * NV * W, out);
  }
};
