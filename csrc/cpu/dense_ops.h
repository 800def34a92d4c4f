// dense_ops.h — the column sum of a matrix (a Dense layer's bias gradient, sum over the rows of
// dZ), one vectorised pass over the rows.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h, the standard headers and the tuning constants it defines.
//
// Each column is summed over the rows in ascending order (row 0, then + row 1, ...), and that sum
// is then added to out[j] when accumulating: NumPy's `out += X.sum(axis=0)` does the same
// operations, and the result does not depend on the thread count (threads own whole columns).

constexpr int64_t COLSUM_CB = 1024;  // columns per block: 4 KiB of running sums, held in L1

static void colsum_block(const float* X, int64_t M, int64_t ld, int64_t j0, int64_t n, float* out, bool accumulate) {
  alignas(64) float acc[COLSUM_CB];
  if (M > 0) {
    std::memcpy(acc, X + j0, sizeof(float) * (size_t)n);
  } else {
    std::memset(acc, 0, sizeof(float) * (size_t)n);
  }
  for (int64_t i = 1; i < M; ++i) {
    const float* r = X + i * ld + j0;
    int64_t j = 0;
    for (; j + W <= n; j += W) Simd::store(acc + j, Simd::add(Simd::load(acc + j), Simd::load(r + j)));
    if (j < n) {
      const int nv = (int)(n - j);
      Simd::storen(acc + j, Simd::add(Simd::loadn(acc + j, nv), Simd::loadn(r + j, nv)), nv);
    }
  }
  float* o = out + j0;
  if (accumulate) {
    for (int64_t j = 0; j < n; j += W) {
      const int nv = (int)std::min<int64_t>(W, n - j);
      Simd::storen(o + j, Simd::add(Simd::loadn(o + j, nv), Simd::loadn(acc + j, nv)), nv);
    }
  } else {
    std::memcpy(o, acc, sizeof(float) * (size_t)n);
  }
}

static void colsum(const float* X, int64_t M, int64_t N, int64_t ld, float* out, bool accumulate, int threads) {
  if (N <= 0) return;
  const int64_t nb = ceil_div(N, COLSUM_CB);
  int nt = (int)std::min<int64_t>(std::max(1, threads), nb);
  if ((double)M * (double)N < 2.0e5) nt = 1;  // under ~50 us of streaming a team does not pay
  auto part = [&](int tid, int team) {
    const int64_t b0 = nb * tid / team, b1 = nb * (tid + 1) / team;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t j0 = b * COLSUM_CB;
      colsum_block(X, M, ld, j0, std::min(COLSUM_CB, N - j0), out, accumulate);
    }
  };
  if (nt == 1) {
    part(0, 1);
    return;
  }
#pragma omp parallel num_threads(nt)
  part(omp_get_thread_num(), omp_get_num_threads());
}
