// peak.h — the fused multiply-add throughput this instruction set reaches on this machine, the
// "physical limit" the benchmark states each figure's share of (python -m fastrnn bench).
//
// Each of `threads` threads runs `iters` rounds of kChains independent FMA chains on registers
// (acc = acc * a + b: no loads, no stores, values converge to b / (1 - a) and stay normal).
// kChains must cover FMA latency x FMA pipes: Zen 3/4 4 x 2 = 8, Intel cores 4 x 2 = 8, Neoverse
// V1/V2 4 x 4 = 16. x86 has 16 (AVX2) or 32 (AVX-512) vector registers: 12 chains + 2 constants
// fit AVX2's 16; NEON has 32 and takes 16. On the scalar path the compiler may vectorise the
// chains with SSE2, so its figure is an upper bound, not the scalar kernels' limit.
#pragma once

namespace peak_detail {
#if defined(FASTRNN_ISA_NEON)
constexpr int kChains = 16;
#else
constexpr int kChains = 12;
#endif
}  // namespace peak_detail

// Returns floating-point operations per second (2 per lane per FMA) over the parallel region.
static double fma_peak(int64_t iters, int threads) {
  using peak_detail::kChains;
  if (iters < 1) iters = 1;
  if (threads < 1) threads = 1;
  float sink = 0.0f;
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    V acc[kChains];
    for (int j = 0; j < kChains; ++j) acc[j] = Simd::set1(1e-3f * (float)(j + 1 + omp_get_thread_num()));
    const V a = Simd::set1(0.99999f), b = Simd::set1(1e-5f);
    for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
      for (int j = 0; j < kChains; ++j) acc[j] = Simd::fmadd(acc[j], a, b);
    }
    V s = acc[0];
    for (int j = 1; j < kChains; ++j) s = Simd::add(s, acc[j]);
    float lanes[W];
    Simd::store(lanes, s);
    for (int l = 0; l < W; ++l) sink += lanes[l];
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!(sink > 0.0f)) return 0.0;  // keeps the loop observable; a positive sum always
  return 2.0 * W * kChains * (double)iters * threads / seconds;
}
