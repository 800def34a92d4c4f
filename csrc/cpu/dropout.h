// dropout.h — dropout masks from Philox4x32-10 (common/philox.h), generated and applied in one
// pass: y = x * m with m = scale where the element is kept, else 0.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS.
// Elements go in groups of 64: element e = 64 g + 16 w + l is decided by word w of Philox block
// 16 g + l (counter (block lo, block hi, call, stream), the caller's key), so the mask depends on
// nothing but (key, call, stream, rate, e): the same for any thread count, any split and any
// instruction set (the integer arithmetic is exact everywhere). The layout lets a vector of 16
// blocks' word w store 16 consecutive elements, with no transpose.

constexpr int DROP_L = 16;  // Philox blocks per group: a group covers 4 * DROP_L = 64 elements

// The mask values of group g: m[16 w + l] = scale if word w of block 16 g + l is >= threshold,
// else 0 (element 64 g + 16 w + l). One vector of 16 (AVX-512) or two of 8 (AVX2) lanes per
// Philox word; 32x32 -> 64-bit products of the even and the odd lanes (vpmuludq), blended into
// the high and low halves. The scalar and NEON paths run the same arithmetic lane by lane.
#if defined(FASTRNN_ISA_AVX512)
static inline void philox_mulhilo(__m512i m, __m512i c, __m512i& hi, __m512i& lo) {
  const __m512i pe = _mm512_mul_epu32(m, c), po = _mm512_mul_epu32(m, _mm512_srli_epi64(c, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
  lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
}

static inline void dropout_group(const DropoutArgs& a, uint64_t g, float* m) {
  const uint64_t b0 = g * DROP_L;  // 16 consecutive blocks never straddle a 2^32 boundary of the low word
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)b0), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                                         10, 11, 12, 13, 14, 15));
  __m512i c1 = _mm512_set1_epi32((int)(uint32_t)(b0 >> 32)), c2 = _mm512_set1_epi32((int)a.call);
  __m512i c3 = _mm512_set1_epi32((int)a.stream);
  const __m512i m0 = _mm512_set1_epi32((int)kPhiloxM0), m1 = _mm512_set1_epi32((int)kPhiloxM1);
  uint32_t k0 = (uint32_t)a.key, k1 = (uint32_t)(a.key >> 32);
  for (int r = 0; r < 10; ++r) {
    if (r) k0 += kPhiloxW0, k1 += kPhiloxW1;
    __m512i hi0, lo0, hi1, lo1;
    philox_mulhilo(m0, c0, hi0, lo0);
    philox_mulhilo(m1, c2, hi1, lo1);
    c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
    c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
    c1 = lo1, c3 = lo0;
  }
  const __m512i t = _mm512_set1_epi32((int)a.threshold);
  const __m512 sc = _mm512_set1_ps(a.scale);
  _mm512_storeu_ps(m + 0, _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(c0, t), sc));
  _mm512_storeu_ps(m + 16, _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(c1, t), sc));
  _mm512_storeu_ps(m + 32, _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(c2, t), sc));
  _mm512_storeu_ps(m + 48, _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(c3, t), sc));
}
#elif defined(FASTRNN_ISA_AVX2)
static inline void philox_mulhilo(__m256i m, __m256i c, __m256i& hi, __m256i& lo) {
  const __m256i pe = _mm256_mul_epu32(m, c), po = _mm256_mul_epu32(m, _mm256_srli_epi64(c, 32));
  hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
  lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
}

static inline void dropout_group(const DropoutArgs& a, uint64_t g, float* m) {
  const uint64_t b0 = g * DROP_L;
  __m256i c0[2], c1[2], c2[2], c3[2];
  for (int h = 0; h < 2; ++h) {
    c0[h] = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)b0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    c0[h] = _mm256_add_epi32(c0[h], _mm256_set1_epi32(8 * h));
    c1[h] = _mm256_set1_epi32((int)(uint32_t)(b0 >> 32));
    c2[h] = _mm256_set1_epi32((int)a.call);
    c3[h] = _mm256_set1_epi32((int)a.stream);
  }
  const __m256i m0 = _mm256_set1_epi32((int)kPhiloxM0), m1 = _mm256_set1_epi32((int)kPhiloxM1);
  uint32_t k0 = (uint32_t)a.key, k1 = (uint32_t)(a.key >> 32);
  for (int r = 0; r < 10; ++r) {
    if (r) k0 += kPhiloxW0, k1 += kPhiloxW1;
    const __m256i vk0 = _mm256_set1_epi32((int)k0), vk1 = _mm256_set1_epi32((int)k1);
    for (int h = 0; h < 2; ++h) {
      __m256i hi0, lo0, hi1, lo1;
      philox_mulhilo(m0, c0[h], hi0, lo0);
      philox_mulhilo(m1, c2[h], hi1, lo1);
      c0[h] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[h]), vk0);
      c2[h] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[h]), vk1);
      c1[h] = lo1, c3[h] = lo0;
    }
  }
  const __m256i t = _mm256_set1_epi32((int)a.threshold);
  const __m256 sc = _mm256_set1_ps(a.scale);
  auto put = [&](float* dst, __m256i c) {  // c >= t (unsigned) iff max(c, t) == c
    const __m256i ge = _mm256_cmpeq_epi32(_mm256_max_epu32(c, t), c);
    _mm256_storeu_ps(dst, _mm256_and_ps(_mm256_castsi256_ps(ge), sc));
  };
  for (int h = 0; h < 2; ++h) {
    put(m + 0 + 8 * h, c0[h]);
    put(m + 16 + 8 * h, c1[h]);
    put(m + 32 + 8 * h, c2[h]);
    put(m + 48 + 8 * h, c3[h]);
  }
}
#else
static inline void dropout_group(const DropoutArgs& a, uint64_t g, float* m) {
  const uint32_t key0 = (uint32_t)a.key, key1 = (uint32_t)(a.key >> 32);
  for (int l = 0; l < DROP_L; ++l) {
    const uint64_t blk = g * DROP_L + (uint64_t)l;
    uint32_t c[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), a.call, a.stream};
    philox4x32(c, key0, key1, 10);
    for (int w = 0; w < 4; ++w) m[DROP_L * w + l] = c[w] >= a.threshold ? a.scale : 0.0f;
  }
}
#endif

static void dropout_range(const DropoutArgs& a, int64_t g_lo, int64_t g_hi) {
  alignas(64) float m[4 * DROP_L];
  for (int64_t g = g_lo; g < g_hi; ++g) {
    dropout_group(a, (uint64_t)g, m);
    const int64_t e0 = g * 4 * DROP_L;
    const int n = (int)std::min<int64_t>(4 * DROP_L, a.n - e0);
    if (a.mask) std::memcpy(a.mask + e0, m, sizeof(float) * (size_t)n);
    if (a.y)
      for (int i = 0; i < n; i += W) {
        const int nv = std::min(W, n - i);
        Simd::storen(a.y + e0 + i, Simd::mul(Simd::loadn(a.x + e0 + i, nv), Simd::loadn(m + i, nv)), nv);
      }
  }
}

static void dropout(const DropoutArgs& a) {
  const int64_t ngroup = ceil_div(a.n, 4 * DROP_L);
  // a team costs a few µs: only from 1024 groups (64 Ki elements) on
  const int threads = (int)std::max<int64_t>(1, std::min<int64_t>(a.threads, ngroup / 1024));
  if (threads == 1) {
    dropout_range(a, 0, ngroup);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    dropout_range(a, ngroup * tid / team, ngroup * (tid + 1) / team);
  }
}

// Philox4x32-R of n counters (for the known-answer tests): ctr [n][4] in, out [n][4].
static void philox_blocks(const uint32_t* ctr, uint32_t* out, int64_t n, uint64_t key, int rounds) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t c[4] = {ctr[4 * i], ctr[4 * i + 1], ctr[4 * i + 2], ctr[4 * i + 3]};
    philox4x32(c, (uint32_t)key, (uint32_t)(key >> 32), rounds);
    for (int w = 0; w < 4; ++w) out[4 * i + w] = c[w];
  }
}
