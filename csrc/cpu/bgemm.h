// bgemm.h — bf16 inference: the bf16 matrix products of the bf16 mode (fastrnn.quantize(m, "bf16")).
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after qgemm.h.
//
// The scheme (python/fastrnn/reference/quantized.py is its NumPy twin, bit for bit):
//   weights     bf16, rounded to nearest even once (in Python); zero for values below 2^-126
//   activations each row rounded to bf16 the same way at run time (as oneDNN's bf16 RNN does)
//   product     acc[m, n] = 0; for each pair k = 2j, 2j+1: acc += a[2j+1] w[2j+1]; acc += a[2j] w[2j]
//               in float32, each product exact (8-bit by 8-bit significands) and each sum rounded
//               to nearest even: the order and the roundings of AVX512-BF16's VDPBF16PS (odd
//               element first, measured on Zen 4 to match it on every lane)
//   result      acc (+ bias, one more rounding), into the float32 gate maths
// Every path makes the same roundings in the same order, so their products are identical, bar
// sums or products below 2^-126, which VDPBF16PS flushes to zero and the other paths keep.
//
// The products per ISA:
//   AVX-512 with BF16  VDPBF16PS: W columns x 2 k per instruction (the pair as one 32-bit lane)
//   AVX-512, AVX2,     the weights widened in registers (a bf16 is the high half of its float32:
//   NEON, scalar       the even k by a 16-bit shift, the odd k by masking the low half) and two
//                      fused multiply-adds per pair against the row's broadcast values, already
//                      rounded (an FMA of an exact product rounds once, as the plain sum does)
//
// Packed weights: panel p holds NV vectors of W columns; per pair of k (K2 = ceil(K / 2)):
//   Wp[p][k2][v][l] = bf16 w[col(p, v, l)][2 k2] | bf16 w[col(p, v, l)][2 k2 + 1] << 16
// with col() and the panels of the int8 layout (qcol, qpanels: gate-grouped or plain), 0 past K
// and for padding columns.
//
// Prepared rows: the fallback reads 2 K2 floats (the rounded values, 0 past K), VDPBF16PS the
// first K2 words as packed pairs; a row takes 2 K2 words either way (bf16_row_words).


static void bpack_sizes(int64_t N, int64_t K, int NV, int64_t Hg, int64_t* words) {
  *words = qpanels(N, NV, Hg) * ceil_div(K, 2) * NV * W;
}

static void bpack(const uint16_t* wb, int64_t N, int64_t K, int NV, int64_t Hg, uint32_t* out) {
  const int64_t P = qpanels(N, NV, Hg), K2 = ceil_div(K, 2);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t k2 = 0; k2 < K2; ++k2)
      for (int v = 0; v < NV; ++v)
        for (int l = 0; l < W; ++l) {
          const int64_t c = qcol(N, NV, Hg, p, v, l), k = 2 * k2;
          const uint32_t lo = c >= 0 ? wb[c * K + k] : 0u, hi = (c >= 0 && k + 1 < K) ? wb[c * K + k + 1] : 0u;
          out[((p * K2 + k2) * NV + v) * W + l] = lo | (hi << 16);
        }
}

// ---- the CPU's AVX512-BF16 ----------------------------------------------------------------------
static bool cpu_has_bf16dot() {
#if defined(FASTRNN_ISA_AVX512)
  static const bool has = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
    return ((a >> 5) & 1u) != 0;  // CPUID.(EAX=7,ECX=1):EAX[5] AVX512_BF16
  }();
  return has && bf16dot_allowed();
#else
  return false;
#endif
}

// ---- rounding activation rows -----------------------------------------------------------------
// float -> bf16 bits: round to nearest even; NaN stays a (quiet) NaN, values below 2^-126 (zero,
// denormals) become a zero of their sign, overflow rounds to infinity.
static inline uint32_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  if ((u & 0x7f800000u) == 0) return (u >> 16) & 0x8000u;
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

static inline int64_t bf16_row_words(int64_t K) { return 2 * ceil_div(K, 2); }

#if defined(FASTRNN_ISA_AVX512)
// bf16_bits of 16 floats, in the low halves of the 32-bit lanes.
static inline __m512i bf16_bits16(const float* x) {
  const __m512i u = _mm512_loadu_si512(x);
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i r = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(hi, _mm512_set1_epi32(1))), 16);
  const __m512i mag = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7f800000));
  const __mmask16 tiny = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7f800000));
  __m512i out = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
  return _mm512_mask_and_epi32(out, tiny, hi, _mm512_set1_epi32(0x8000));
}
#elif defined(FASTRNN_ISA_AVX2)
static inline __m256i bf16_bits8(const float* x) {
  const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(hi, _mm256_set1_epi32(1))), 16);
  const __m256i mag = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7f800000));
  const __m256i tiny = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7f800000)), _mm256_setzero_si256());
  __m256i out = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
  return _mm256_blendv_epi8(out, _mm256_and_si256(hi, _mm256_set1_epi32(0x8000)), tiny);
}
#endif

// Row x[0, K) -> `out` (bf16_row_words(K) words): packed pairs for VDPBF16PS (`pairs`), else the
// rounded values as floats.
static void brow(const float* x, int64_t K, int32_t* out, bool pairs) {
  const int64_t K2 = ceil_div(K, 2);
  uint32_t* o = reinterpret_cast<uint32_t*>(out);
  int64_t k = 0;
  if (pairs) {
#if defined(FASTRNN_ISA_AVX512)
    for (; k + 16 <= K; k += 16)  // 16 floats -> 8 pairs, the even one in the low half
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k / 2), _mm512_cvtepi32_epi16(bf16_bits16(x + k)));
#endif
    for (int64_t j = k / 2; j < K2; ++j)
      o[j] = bf16_bits(x[2 * j]) | (2 * j + 1 < K ? bf16_bits(x[2 * j + 1]) << 16 : 0u);
  } else {
#if defined(FASTRNN_ISA_AVX512)
    for (; k + 16 <= K; k += 16) _mm512_storeu_si512(o + k, _mm512_slli_epi32(bf16_bits16(x + k), 16));
#elif defined(FASTRNN_ISA_AVX2)
    for (; k + 8 <= K; k += 8)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k), _mm256_slli_epi32(bf16_bits8(x + k), 16));
#endif
    for (; k < K; ++k) o[k] = bf16_bits(x[k]) << 16;
    for (; k < 2 * K2; ++k) o[k] = 0u;
  }
}

// ---- the micro-kernel: MR rows x NV vectors of W columns ----------------------------------------
// W packed pairs -> the even-k and the odd-k weights as floats.
static inline void bwiden(const uint32_t* p, V& even, V& odd) {
#if defined(FASTRNN_ISA_AVX512)
  const __m512i w = _mm512_loadu_si512(p);
  even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xffff0000u)));
#elif defined(FASTRNN_ISA_AVX2)
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  odd = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32((int)0xffff0000u)));
#elif defined(FASTRNN_ISA_NEON)
  const uint32x4_t w = vld1q_u32(p);
  even = vreinterpretq_f32_u32(vshlq_n_u32(w, 16));
  odd = vreinterpretq_f32_u32(vandq_u32(w, vdupq_n_u32(0xffff0000u)));
#else
  const uint32_t e = *p << 16, o = *p & 0xffff0000u;
  std::memcpy(&even, &e, sizeof e);
  std::memcpy(&odd, &o, sizeof o);
#endif
}

static inline float bword_float(const int32_t* p) {
  float f;
  std::memcpy(&f, p, sizeof f);
  return f;
}

#if defined(FASTRNN_ISA_AVX512)
// acc + VDPBF16PS(a, w). Written as an instruction rather than the intrinsic so that this
// translation unit needs no -mavx512bf16 (which would let the compiler use BF16 instructions
// anywhere); it runs only where cpu_has_bf16dot().
static inline __m512 dpbf16(__m512 acc, __m512i a, __m512i w) {
  asm("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
  return acc;
}
#endif

// out[i * NV + v] = the products of the MR prepared rows `rows` with the panel `wp` (K2 pairs).
template <int MR, int NV, bool kDot>
static inline void bmicro_body(int64_t K2, const int32_t* const* rows, const uint32_t* __restrict wp, V* out) {
#if defined(FASTRNN_ISA_AVX512)
  if constexpr (kDot) {
    __m512 acc[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
    for (int64_t k2 = 0; k2 < K2; ++k2) {
      __m512i w[NV];
      for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_si512(wp + (k2 * NV + v) * W);
      for (int i = 0; i < MR; ++i) {
        const __m512i a = _mm512_set1_epi32(rows[i][k2]);
        for (int v = 0; v < NV; ++v) acc[i][v] = dpbf16(acc[i][v], a, w[v]);
      }
    }
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) out[i * NV + v] = acc[i][v];
    return;
  }
#else
  static_assert(!kDot, "VDPBF16PS exists only on the AVX-512 path");
#endif
  V acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = Simd::zero();
  for (int64_t k2 = 0; k2 < K2; ++k2) {
    V ae[MR], ao[MR];
    for (int i = 0; i < MR; ++i) {
      ae[i] = Simd::set1(bword_float(rows[i] + 2 * k2));
      ao[i] = Simd::set1(bword_float(rows[i] + 2 * k2 + 1));
    }
    for (int v = 0; v < NV; ++v) {
      V we, wo;
      bwiden(wp + (k2 * NV + v) * W, we, wo);
      for (int i = 0; i < MR; ++i) acc[i][v] = Simd::fmadd(ae[i], we, Simd::fmadd(ao[i], wo, acc[i][v]));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) out[i * NV + v] = acc[i][v];
}

template <int MR, int NV, bool kDot>
__attribute__((noinline)) static void bmicro_n(int64_t K2, const int32_t* const* rows, const uint32_t* wp, V* out) {
  bmicro_body<MR, NV, kDot>(K2, rows, wp, out);
}

// Rows of a tile: MR x NV accumulators + 2 MR broadcasts + the two widened halves of a weight vector.
template <int NV>
constexpr int btile_rows() {
  return std::max(1, std::min(8, (VREGS - 2) / (NV + 2)));
}

// The bf16 scheme for the low-precision drivers (lowp_gemm, lowp_forward_impl in qforward_loop.h).
struct Bf16Scheme {
  using Packed = BPacked;
  static bool fast() { return cpu_has_bf16dot(); }
  static int64_t row_words(int64_t K) { return bf16_row_words(K); }
  static int64_t groups(const BPacked& pw) { return pw.K2; }
  static float row(const float* x, int64_t K, int32_t* out, bool fast) {
    brow(x, K, out, fast);
    return 0.0f;
  }
  template <int NV>
  static constexpr int tile_rows() { return btile_rows<NV>(); }
  template <int MR, int NV>
  static void micro(bool fast, const BPacked& pw, int64_t p, const int32_t* const* rows, const float*, V* out) {
    const uint32_t* wp = pw.w + p * pw.K2 * NV * W;
#if defined(FASTRNN_ISA_AVX512)
    if (fast) return bmicro_n<MR, NV, true>(pw.K2, rows, wp, out);
#endif
    bmicro_n<MR, NV, false>(pw.K2, rows, wp, out);
  }
};
