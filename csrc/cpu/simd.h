// simd.h — one vector type per instruction set, chosen by the macro the including
// translation unit defines: FASTRNN_ISA_AVX512, FASTRNN_ISA_AVX2, FASTRNN_ISA_NEON (aarch64), or
// none of them (scalar).
//
// Every kernel in kernels_impl.h is written once against `Simd`; kernels_<isa>.cpp compiles it
// with that ISA's flags. The scalar path uses the C library's expf/tanhf and is the most
// accurate; the vector paths use the polynomial approximations below:
//   exp:  Cephes degree-6 polynomial after range reduction by ln2 (max rel. error ~2 ulp)
//   tanh: odd 13/6 rational approximation on [-9, 9], +-1 beyond (max abs. error 3.3e-7 — see
//         tests/test_kernels.py::test_activation_accuracy, which measures it)
//   sigmoid: 1 / (1 + exp(-x)). The divisions (here and tanh's p/q) are exact on AVX2 and NEON
//            and a 14-bit reciprocal estimate plus one Newton step on AVX-512 (error ~1e-7
//            relative).
// The NEON path runs AVX2's sequence of operations (the same polynomials, range reduction, clamps,
// fused multiply-adds and exact divisions), 4 lanes at a time.
// NaN propagates through all three (clamps are written min(hi, x) / max(lo, .), whose x86
// semantics return the NaN operand; NEON's FMIN/FMAX return NaN if either operand is NaN).
#pragma once
#include <cmath>
#include <cstdint>

#if defined(FASTRNN_ISA_AVX512) || defined(FASTRNN_ISA_AVX2)
// GCC 12's AVX-512 header builds its "undefined" vectors by self-initialisation (__Y = __Y), which
// -Wuninitialized reports wherever such an intrinsic (the unpack and shuffle transposes) is
// inlined. Diagnostics only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#elif defined(FASTRNN_ISA_NEON)
#include <arm_neon.h>
#endif

namespace fastrnn_simd {

#if defined(FASTRNN_ISA_AVX512)

struct Simd {
  using V = __m512;
  static constexpr int W = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static __mmask16 mask(int n) { return (__mmask16)((1u << n) - 1u); }
  // First n lanes (0 <= n <= W); the others read as 0 and are never touched in memory.
  static V loadn(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void storen(float* p, V v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }    // a*b + c
  static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a*b
  static V min(V a, V b) { return _mm512_min_ps(a, b); }  // returns b if either is NaN
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V abs(V a) { return _mm512_abs_ps(a); }
  static V relu(V a) { return _mm512_max_ps(_mm512_setzero_ps(), a); }  // NaN stays NaN
  // 1 where a > 0, else 0.
  static V step(V a) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ), set1(1.0f));
  }
  static V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2n(V n) {  // 2^n for integral n in [-126, 127]
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_castsi512_ps(e);
  }
  static V blend_small(V x, V small_result, V big_result, float thresh) {
    __mmask16 m = _mm512_cmp_ps_mask(abs(x), set1(thresh), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(m, big_result, small_result);
  }
  // +-1 (the sign of x) where |x| >= thresh, else r; NaN x keeps r.
  static V saturate(V x, V r, float thresh) {
    __mmask16 m = _mm512_cmp_ps_mask(abs(x), set1(thresh), _CMP_GE_OQ);
    const V one = _mm512_or_ps(_mm512_and_ps(x, set1(-0.0f)), set1(1.0f));
    return _mm512_mask_blend_ps(m, r, one);
  }
  static V scalef(V p, V n) { return _mm512_scalef_ps(p, n); }  // p * 2^n (n integral here)
  static float hsum(V a) { return _mm512_reduce_add_ps(a); }
  // a/b as a times 1/b, with 1/b a 14-bit estimate refined by one Newton step (relative error
  // ~1e-7 for normal b): it keeps the gate nonlinearities off the divider, their slowest unit.
  static V fdiv(V a, V b) {
    const V r = _mm512_rcp14_ps(b);
    const V e = _mm512_fnmadd_ps(b, r, _mm512_set1_ps(1.0f));  // 1 - b r, exact with the FMA
    return _mm512_mul_ps(a, _mm512_fmadd_ps(r, e, r));         // r + r e (exact 1/1 = 1)
  }
  static V frcp(V b) {  // 1/b as in fdiv, without the multiplication by a = 1
    const V r = _mm512_rcp14_ps(b);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(b, r, _mm512_set1_ps(1.0f)), r);
  }
};

#elif defined(FASTRNN_ISA_AVX2)

struct Simd {
  using V = __m256;
  static constexpr int W = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // First n lanes (0 <= n <= W); the others read as 0 and are never touched in memory. A whole
  // vector goes by the plain load / store: the masked forms are microcoded on AMD cores (a masked
  // store costs about ten times a plain one on Zen 3 / Zen 4), and the kernels' loadn / storen are
  // whole vectors but for the last one of a row.
  static V loadn(const float* p, int n) { return n >= W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(n)); }
  static void storen(float* p, V v, int n) {
    if (n >= W)
      _mm256_storeu_ps(p, v);
    else
      _mm256_maskstore_ps(p, mask(n), v);
  }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static V relu(V a) { return _mm256_max_ps(_mm256_setzero_ps(), a); }  // NaN stays NaN
  static V step(V a) { return _mm256_and_ps(_mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_GT_OQ), set1(1.0f)); }
  static V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2n(V n) {
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_castsi256_ps(e);
  }
  static V blend_small(V x, V small_result, V big_result, float thresh) {
    V m = _mm256_cmp_ps(abs(x), set1(thresh), _CMP_LT_OQ);
    return _mm256_blendv_ps(big_result, small_result, m);
  }
  static V saturate(V x, V r, float thresh) {
    V m = _mm256_cmp_ps(abs(x), set1(thresh), _CMP_GE_OQ);
    const V one = _mm256_or_ps(_mm256_and_ps(x, set1(-0.0f)), set1(1.0f));
    return _mm256_blendv_ps(r, one, m);
  }
  static float hsum(V a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static V fdiv(V a, V b) { return _mm256_div_ps(a, b); }  // rcpps has only 12 bits
  static V frcp(V b) { return _mm256_div_ps(_mm256_set1_ps(1.0f), b); }
};

#elif defined(FASTRNN_ISA_NEON)

// AdvSIMD (baseline on every ARMv8-A core): 128-bit vectors of 4 floats, 32 registers, fused
// multiply-add. It has no masked loads or stores: the partial ones below go by lanes and touch
// only the first n floats in memory, as the AVX masked forms do.
struct Simd {
  using V = float32x4_t;
  static constexpr int W = 4;
  static V zero() { return vdupq_n_f32(0.0f); }
  static V set1(float a) { return vdupq_n_f32(a); }
  static V load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, V v) { vst1q_f32(p, v); }
  // First n lanes (0 <= n <= W); the others read as 0 and are never touched in memory.
  static V loadn(const float* p, int n) {
    if (n >= 4) return vld1q_f32(p);
    if (n <= 0) return zero();
    if (n == 1) return vld1q_lane_f32(p, zero(), 0);
    const V lo = vcombine_f32(vld1_f32(p), vdup_n_f32(0.0f));
    return n == 2 ? lo : vld1q_lane_f32(p + 2, lo, 2);
  }
  static void storen(float* p, V v, int n) {
    if (n >= 4) {
      vst1q_f32(p, v);
    } else if (n == 1) {
      vst1q_lane_f32(p, v, 0);
    } else if (n >= 2) {
      vst1_f32(p, vget_low_f32(v));
      if (n == 3) vst1q_lane_f32(p + 2, v, 2);
    }
  }
  static V add(V a, V b) { return vaddq_f32(a, b); }
  static V sub(V a, V b) { return vsubq_f32(a, b); }
  static V mul(V a, V b) { return vmulq_f32(a, b); }
  static V div(V a, V b) { return vdivq_f32(a, b); }
  static V fmadd(V a, V b, V c) { return vfmaq_f32(c, a, b); }   // a*b + c, one rounding
  static V fnmadd(V a, V b, V c) { return vfmsq_f32(c, a, b); }  // c - a*b, one rounding
  static V min(V a, V b) { return vminq_f32(a, b); }  // NaN if either is NaN
  static V max(V a, V b) { return vmaxq_f32(a, b); }
  static V abs(V a) { return vabsq_f32(a); }
  static V relu(V a) { return vmaxq_f32(zero(), a); }  // NaN stays NaN
  static V step(V a) {  // 1 where a > 0, else 0 (NaN: 0)
    return vreinterpretq_f32_u32(vandq_u32(vcgtq_f32(a, zero()), vreinterpretq_u32_f32(set1(1.0f))));
  }
  static V round(V a) { return vrndnq_f32(a); }  // to nearest, ties to even, as on x86
  static V pow2n(V n) {  // 2^n for integral n in [-126, 127]
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_s32(e);
  }
  static V blend_small(V x, V small_result, V big_result, float thresh) {
    return vbslq_f32(vcltq_f32(abs(x), set1(thresh)), small_result, big_result);  // NaN: big
  }
  // +-1 (the sign of x) where |x| >= thresh, else r; NaN x keeps r.
  static V saturate(V x, V r, float thresh) {
    const uint32x4_t sign = vandq_u32(vreinterpretq_u32_f32(x), vdupq_n_u32(0x80000000u));
    const V one = vreinterpretq_f32_u32(vorrq_u32(sign, vreinterpretq_u32_f32(set1(1.0f))));
    return vbslq_f32(vcgeq_f32(abs(x), set1(thresh)), one, r);
  }
  static float hsum(V a) { return vaddvq_f32(a); }
  // Exact division, as on AVX2: FRECPE gives only 8 bits (two Newton steps would be needed).
  static V fdiv(V a, V b) { return vdivq_f32(a, b); }
  static V frcp(V b) { return vdivq_f32(vdupq_n_f32(1.0f), b); }
};

#else

struct Simd {
  using V = float;
  static constexpr int W = 1;
  static V zero() { return 0.0f; }
  static V set1(float a) { return a; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V loadn(const float* p, int n) { return n > 0 ? *p : 0.0f; }
  static void storen(float* p, V v, int n) { if (n > 0) *p = v; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  // Plain multiply-add: the portable path must not call the C library's fmaf per operation.
  static V fmadd(V a, V b, V c) { return a * b + c; }
  static V fnmadd(V a, V b, V c) { return c - a * b; }
  static V min(V a, V b) { return (a < b) ? a : b; }
  static V max(V a, V b) { return (a > b) ? a : b; }
  static V abs(V a) { return std::fabs(a); }
  static V relu(V a) { return a > 0.0f ? a : (a == a ? 0.0f : a); }
  static V step(V a) { return a > 0.0f ? 1.0f : 0.0f; }
  static float hsum(V a) { return a; }
};

#endif

// ---- activations ---------------------------------------------------------------------------

#if defined(FASTRNN_ISA_AVX512) || defined(FASTRNN_ISA_AVX2) || defined(FASTRNN_ISA_NEON)
using V = Simd::V;

// e^x for x in [-87, 88]; inputs outside are clamped to that range (so exp(+inf) = e^88 and
// exp(-inf) = e^-87): it serves sigmoid, where that changes results by < 1e-38. NaN propagates.
static inline V vexp(V x) {
  x = Simd::max(Simd::set1(-87.0f), Simd::min(Simd::set1(88.0f), x));
  const V n = Simd::round(Simd::mul(x, Simd::set1(1.44269504088896341f)));
  V r = Simd::fnmadd(n, Simd::set1(0.693359375f), x);
  r = Simd::fnmadd(n, Simd::set1(-2.12194440e-4f), r);
  V p = Simd::set1(1.9875691500e-4f);
  p = Simd::fmadd(p, r, Simd::set1(1.3981999507e-3f));
  p = Simd::fmadd(p, r, Simd::set1(8.3334519073e-3f));
  p = Simd::fmadd(p, r, Simd::set1(4.1665795894e-2f));
  p = Simd::fmadd(p, r, Simd::set1(1.6666665459e-1f));
  p = Simd::fmadd(p, r, Simd::set1(5.0000001201e-1f));
  p = Simd::fmadd(p, Simd::mul(r, r), Simd::add(r, Simd::set1(1.0f)));
#if defined(FASTRNN_ISA_AVX512)
  return Simd::scalef(p, n);  // one instruction for the exponent insertion and the product
#else
  return Simd::mul(p, Simd::pow2n(n));
#endif
}

static inline V vsigmoid(V x) {
  const V e = vexp(Simd::sub(Simd::zero(), x));
  return Simd::frcp(Simd::add(Simd::set1(1.0f), e));
}

static inline V vtanh(V x0) {
  const V x = Simd::max(Simd::set1(-9.0f), Simd::min(Simd::set1(9.0f), x0));
  const V x2 = Simd::mul(x, x);
  V p = Simd::set1(-2.76076847742355e-16f);
  p = Simd::fmadd(p, x2, Simd::set1(2.00018790482477e-13f));
  p = Simd::fmadd(p, x2, Simd::set1(-8.60467152213735e-11f));
  p = Simd::fmadd(p, x2, Simd::set1(5.12229709037114e-08f));
  p = Simd::fmadd(p, x2, Simd::set1(1.48572235717979e-05f));
  p = Simd::fmadd(p, x2, Simd::set1(6.37261928875436e-04f));
  p = Simd::fmadd(p, x2, Simd::set1(4.89352455891786e-03f));
  p = Simd::mul(p, x);
  V q = Simd::set1(1.19825839466702e-06f);
  q = Simd::fmadd(q, x2, Simd::set1(1.18534705686654e-04f));
  q = Simd::fmadd(q, x2, Simd::set1(2.26843463243900e-03f));
  q = Simd::fmadd(q, x2, Simd::set1(4.89352518554385e-03f));
  // The rational function slightly exceeds 1 in magnitude on [8.2, 9]: clamp the result so that
  // |tanh| <= 1 and derivatives 1 - tanh^2 never turn negative (NaN still propagates).
  V r = Simd::max(Simd::set1(-1.0f), Simd::min(Simd::set1(1.0f), Simd::fdiv(p, q)));
  r = Simd::saturate(x0, r, 9.0f);  // tanh rounds to +-1 in float from |x| = 9 on
  return Simd::blend_small(x0, x0, r, 0.0004f);
}
#else
static inline float vexp(float x) { return std::exp(x); }
static inline float vsigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
static inline float vtanh(float x) { return std::tanh(x); }
#endif

}  // namespace fastrnn_simd
