// embedding.h — the Embedding layer's gather (forward) and scatter-add (backward).
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h and the tuning constants.
//
// Forward: out[n] = table[ids[n]], threaded over blocks of rows (a copy: no arithmetic).
// Backward: grad[ids[n]] += dy[n] for n ascending. The threads split the D columns (in whole
// 16-float lines) and each runs over all N rows in order on its columns, so every entry of grad
// receives its additions in the same order (n ascending) for any thread count: the result is the
// same bits as one thread (and as NumPy's np.add.at, which adds in that order too), and repeated
// ids need no atomics.

// Floats below which one thread does everything: the copy and the additions run at memory speed
// (~100 us for a million floats), and a parallel region costs more than it saves below that (far
// more on a loaded machine, where the second thread may wait for a time slice).
constexpr double EMB_MIN_WORK = 1 << 20;

static void embedding_forward(const EmbeddingArgs& a) {
  const int64_t N = a.N, D = a.D;
  int nt = (int)std::min<int64_t>(std::max(1, a.threads), N);
  if ((double)N * (double)D < EMB_MIN_WORK) nt = 1;
  auto rows = [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      std::memcpy(a.out + n * D, a.table + a.ids[n] * D, sizeof(float) * (size_t)D);
  };
  if (nt <= 1) {
    rows(0, N);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    rows(N * tid / team, N * (tid + 1) / team);
  }
}

static void embedding_backward(const EmbeddingArgs& a) {
  const int64_t N = a.N, D = a.D, lines = ceil_div(D, 16);
  int nt = (int)std::min<int64_t>(std::max(1, a.threads), lines);
  if ((double)N * (double)D < EMB_MIN_WORK) nt = 1;
  auto cols = [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      float* g = a.grad + a.ids[n] * D;
      const float* d = a.dy + n * D;
      int64_t c = c0;
      for (; c + W <= c1; c += W) Simd::store(g + c, Simd::add(Simd::load(g + c), Simd::load(d + c)));
      if (c < c1) {
        const int k = (int)(c1 - c);
        Simd::storen(g + c, Simd::add(Simd::loadn(g + c, k), Simd::loadn(d + c, k)), k);
      }
    }
  };
  if (nt <= 1) {
    cols(0, D);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), team = omp_get_num_threads();
    cols(std::min(D, lines * tid / team * 16), std::min(D, lines * (tid + 1) / team * 16));
  }
}
