// neon_vs_scalar.cpp — the vector kernel tables of this build against the scalar table, without
// Python: the reference twin of the NEON path (built for aarch64 and run under qemu-aarch64 by
// .ci/neon), and, built natively on x86, of the AVX2 / AVX-512 paths (a check of this driver).
//
// For every vector table the build and the CPU offer (neon; avx2, avx512), it compares with the
// scalar table, on round and awkward sizes:
//   * the activations (sigmoid, tanh, exp) over [-30, 30], [-1e-3, 1e-3], [-100, 100] and the
//     special values, against double precision with the bounds of
//     tests/test_kernels.py::test_activation_accuracy, on every length 0..67 (the partial vectors
//     of the tails, with guard values behind the end that must stay untouched);
//   * the GEMM with every transposition, overwrite / accumulate / bias, ldc > N (the padding
//     must stay untouched), 1 and 2 threads, against a double-precision loop
//     (max abs error <= 1e-5 sqrt(K) (1 + max |C|), as test_gemm_matches_numpy) and against the
//     scalar table (the same bound);
//   * forward (training and inference) and backward of all four cells on many (T, B, I, H), both
//     layouts, both directions, no mask / lengths / an arbitrary mask, and five backward variants
//     (full BPTT, bptt_steps 1, 2, 3, T; with and without dy, the final-state gradients and dx):
//     every output against the scalar table, and on the small problems (T*B*G*H*(I+H) <=
//     ANCHOR_WORK, a little over half of them) both tables against a double-precision loop, each with
//     the tolerance the Python tests apply to every ISA path (tests/test_kernels.py::_close:
//     max abs error <= 3e-5 (1 + max |reference|)); training and inference outputs must agree bit
//     for bit, and so must 1 and 2 threads (the kernels promise identical results for any thread
//     count) wherever a product or time loop is big enough to be split (THREAD_WORK);
//   * the fused cross-entropy (sparse / dense targets, logits / probabilities, mask, weights, -inf
//     logits) to 3e-6 of the scalar path, 1 and 2 threads bit for bit, and the Embedding gather
//     and scatter-add bit for bit.
// Exit status 0 when everything matched; otherwise the mismatches are printed (up to 6 per case)
// and the status is 1.
//
//   neon_vs_scalar            run all the checks
//   neon_vs_scalar --isa      print the path the dispatch picks (FASTRNN_ISA applies) and exit
//   neon_vs_scalar --quick    fewer shapes (a smoke test)
//   neon_vs_scalar --shard K/N  the K-th of N disjoint parts of the cases (0 <= K < N)
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <chrono>
#include <limits>
#include <string>
#include <vector>

#include "fastrnn.h"

using namespace fastrnn;

namespace {

constexpr double KERNEL_TOL = 3e-5;  // tests/test_kernels.py::_close
constexpr double GEMM_TOL = 1e-5;    // tests/test_kernels.py::test_gemm_matches_numpy, times sqrt(K)
constexpr float GUARD = 12345.678f;  // written behind outputs; must survive
// Layer cases with T*B*G*H*(I+H) up to this are also run through the double-precision loop (it
// costs more than both float paths together, and qemu runs it in software floating point).
constexpr int64_t ANCHOR_WORK = 20000;
// Layer cases with T*B*G*H*(I+H) from this on also run on 1 thread, to be compared bit for bit with
// 2 threads. Below it no GEMM (< 5e5 multiply-adds) and no time loop (< 1e6 flops in all) is
// split over threads (gemm.h, loop_split.h): every product involved is at most that work.
constexpr int64_t THREAD_WORK = 250000;

// --shard K/N: this process runs the GEMM shapes and layer problems whose index is K modulo N
// (the activations in shard 0 only), so that N processes share the cases.
int g_shard = 0, g_shards = 1;
bool mine(int64_t index) { return index % g_shards == g_shard; }

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {}
  uint64_t next() {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    return s;
  }
  float uni(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) * (1.0 / 16777216.0)); }
  int64_t below(int64_t n) { return (int64_t)(next() % (uint64_t)n); }
};

// ---- bookkeeping ------------------------------------------------------------------------------

struct Tally {
  int passed = 0, failed = 0, anchored = 0;  // anchored: layer cases also checked against double
};

struct Case {  // one comparison case: passes when none of its checks failed
  std::string name;
  bool ok = true;
  int printed = 0;
  void fail(const std::string& msg) {
    ok = false;
    if (printed++ < 6) std::printf("MISMATCH %s: %s\n", name.c_str(), msg.c_str());
  }
};

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// max |got - want| <= tol (1 + max |want|), no NaN or Inf in either (all inputs are finite).
template <class A, class B>
void close(Case& c, const char* what, const A& got, const B& want, double tol) {
  if (got.size() != want.size()) {
    c.fail(fmt("%s: sizes %zu and %zu", what, got.size(), want.size()));
    return;
  }
  double scale = 1.0, err = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double w = (double)want[i], g = (double)got[i];
    if (!std::isfinite(w) || !std::isfinite(g)) {
      c.fail(fmt("%s[%zu]: not finite (got %.9g, want %.9g)", what, i, g, w));
      return;
    }
    scale = std::max(scale, 1.0 + std::fabs(w));
    if (std::fabs(g - w) > err) err = std::fabs(g - w), at = i;
  }
  if (err > tol * scale)
    c.fail(fmt("%s: max abs error %.3g at [%zu] (got %.9g, want %.9g), allowed %.3g", what, err, at,
               (double)got[at], (double)want[at], tol * scale));
}

void identical(Case& c, const char* what, const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || (a.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0)) {
    size_t i = 0;
    while (i < a.size() && i < b.size() && std::memcmp(&a[i], &b[i], sizeof(float)) == 0) ++i;
    c.fail(fmt("%s: not bit-identical (first difference at [%zu]: %.9g vs %.9g)", what, i,
               i < a.size() ? (double)a[i] : 0.0, i < b.size() ? (double)b[i] : 0.0));
  }
}

// ---- activations --------------------------------------------------------------------------------

std::vector<float> act(const KernelTable& t, int kind, const std::vector<float>& x) {
  std::vector<float> y(x.size(), 0.0f);
  t.activation(kind, x.data(), y.data(), (int64_t)x.size());
  return y;
}

void check_activations(const KernelTable& vec, const KernelTable& sca, Tally& tally) {
  if (g_shard != 0) return;
  const double kSig = 2e-7, kTanh = 5e-7, kExpRel = 3e-7;  // test_activation_accuracy
  std::vector<float> x;
  for (int i = 0; i <= 200000; ++i) x.push_back((float)(-30.0 + 60.0 * i / 200000.0));
  for (int i = 0; i <= 2000; ++i) x.push_back((float)(-1e-3 + 2e-3 * i / 2000.0));
  std::vector<float> wide;
  for (int i = 0; i <= 400000; ++i) wide.push_back((float)(-100.0 + 200.0 * i / 400000.0));
  for (const KernelTable* t : {&vec, &sca}) {
    Case c{std::string(t->name) + " activations vs double"};
    const auto sig = act(*t, 0, x), th = act(*t, 1, x), thw = act(*t, 1, wide);
    double es = 0, et = 0, esmall = 0, ee = 0, tmax = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = x[i];
      es = std::max(es, std::fabs(sig[i] - 1.0 / (1.0 + std::exp(-v))));
      et = std::max(et, std::fabs(th[i] - std::tanh(v)));
      tmax = std::max(tmax, (double)std::fabs(th[i]));
      if (std::fabs(v) < 1e-3)
        esmall = std::max(esmall, std::fabs(th[i] - std::tanh(v)) / std::max(std::fabs(v), 1e-30));
    }
    for (float v : thw) tmax = std::max(tmax, (double)std::fabs(v));
    std::vector<float> e;
    for (float v : x)
      if (v < 85.0f) e.push_back(v);
    const auto ex = act(*t, 2, e);
    for (size_t i = 0; i < e.size(); ++i) ee = std::max(ee, std::fabs(ex[i] / std::exp((double)e[i]) - 1.0));
    if (!(es < kSig)) c.fail(fmt("sigmoid max abs error %.3g >= %.3g", es, kSig));
    if (!(et < kTanh)) c.fail(fmt("tanh max abs error %.3g >= %.3g", et, kTanh));
    if (!(tmax <= 1.0)) c.fail(fmt("|tanh| reaches %.9g > 1", tmax));
    if (!(esmall < 1e-6)) c.fail(fmt("tanh relative error near 0: %.3g", esmall));
    if (!(ee < kExpRel)) c.fail(fmt("exp max relative error %.3g >= %.3g", ee, kExpRel));
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> sp{std::nanf(""), inf, -inf, 0.0f};
    const auto s = act(*t, 0, sp), h = act(*t, 1, sp);
    if (!(std::isnan(s[0]) && s[1] == 1.0f && s[2] >= 0.0f && s[2] <= 1e-38f && s[3] == 0.5f))
      c.fail(fmt("sigmoid(nan, inf, -inf, 0) = %g %g %g %g", s[0], s[1], s[2], s[3]));
    if (!(std::isnan(h[0]) && h[1] == 1.0f && h[2] == -1.0f && h[3] == 0.0f))
      c.fail(fmt("tanh(nan, inf, -inf, 0) = %g %g %g %g", h[0], h[1], h[2], h[3]));
    (c.ok ? tally.passed : tally.failed)++;
  }
  // Every length 0..67: the vector table against the scalar one, and nothing written past n.
  Rng rng(5);
  for (int n = 0; n <= 67; ++n) {
    Case c{fmt("%s activations n=%d vs scalar", vec.name, n)};
    std::vector<float> in((size_t)n + 8);
    for (auto& v : in) v = rng.uni(-12.0f, 12.0f);
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<float> a((size_t)n + 8, GUARD), b((size_t)n + 8, GUARD);
      vec.activation(kind, in.data(), a.data(), n);
      sca.activation(kind, in.data(), b.data(), n);
      for (int i = n; i < n + 8; ++i)
        if (a[(size_t)i] != GUARD) c.fail(fmt("kind %d wrote past the end at %d", kind, i));
      a.resize((size_t)n), b.resize((size_t)n);
      close(c, kind == 0 ? "sigmoid" : kind == 1 ? "tanh" : "exp", a, b, 1e-6);  // both within ~3e-7 of exact
    }
    (c.ok ? tally.passed : tally.failed)++;
  }
}

// ---- GEMM ---------------------------------------------------------------------------------------

void check_gemm(const KernelTable& vec, const KernelTable& sca, Tally& tally, bool quick) {
  struct S {
    int64_t M, K, N;
  };
  // test_gemm_matches_numpy's shapes (two swapped, which evens the work of --shard 0/2 and 1/2), then
  // small and awkward ones (N of 1 to 7 for the small-N path and partial panels, K = 0), then two
  // that run as C^T (gemm_transposes: 64 x 450 x 25 on NEON and AVX2, 131 x 700 x 75 on AVX-512;
  // the padding of C past N checks the transposed write-back)
  std::vector<S> shapes{{1, 1, 1},   {37, 53, 29},  {7, 1000, 65}, {130, 300, 257}, {300, 2, 513}, {50, 70, 3},
                        {129, 300, 4}, {37, 53, 48}, {29, 70, 24},    {2100, 40, 3}, {251, 1030, 40},
                        {5, 7, 1},   {6, 9, 2},     {11, 5, 5},      {13, 17, 6},   {9, 3, 7},     {17, 33, 12},
                        {4, 16, 16}, {3, 1, 17},    {19, 31, 33},    {5, 0, 7},     {64, 64, 64},  {121, 45, 61},
                        {64, 450, 25}, {131, 700, 75}};
  if (quick) shapes.resize(12);
  for (size_t si = 0; si < shapes.size(); ++si) {
    if (!mine((int64_t)si)) continue;
    const S& s = shapes[si];
    Rng rng(11 + si);
    const int64_t M = s.M, K = s.K, N = s.N, ldc = N + 3;
    // op(A) [M x K] and op(B) [K x N] row-major, their product in double once per shape
    std::vector<float> a((size_t)(M * K)), b((size_t)(K * N)), C0((size_t)(M * ldc)), bias((size_t)N);
    for (auto& v : a) v = rng.uni(-1, 1);
    for (auto& v : b) v = rng.uni(-1, 1);
    for (auto& v : bias) v = rng.uni(-1, 1);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < ldc; ++j) C0[(size_t)(i * ldc + j)] = j < N ? rng.uni(-1, 1) : GUARD;
    std::vector<double> prod((size_t)(M * N), 0.0);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) {
        const double aik = a[(size_t)(i * K + k)];
        for (int64_t j = 0; j < N; ++j) prod[(size_t)(i * N + j)] += aik * (double)b[(size_t)(k * N + j)];
      }
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        // stored operands: A as K x M when transposed, B as N x K when transposed
        std::vector<float> A = a, B = b;
        if (ta)
          for (int64_t i = 0; i < M; ++i)
            for (int64_t k = 0; k < K; ++k) A[(size_t)(k * M + i)] = a[(size_t)(i * K + k)];
        if (tb)
          for (int64_t k = 0; k < K; ++k)
            for (int64_t j = 0; j < N; ++j) B[(size_t)(j * K + k)] = b[(size_t)(k * N + j)];
        for (int mode = 0; mode < 3; ++mode) {  // 0 overwrite, 1 accumulate, 2 bias
          Case c{fmt("%s gemm M=%lld K=%lld N=%lld ta=%d tb=%d %s", vec.name, (long long)M, (long long)K,
                     (long long)N, ta, tb, mode == 0 ? "overwrite" : mode == 1 ? "accumulate" : "bias")};
          CpuGemmArgs g{};
          g.M = M, g.N = N, g.K = K;
          g.A = A.data(), g.rsa = ta ? 1 : K, g.csa = ta ? M : 1;
          g.B = B.data(), g.rsb = tb ? 1 : N, g.csb = tb ? K : 1;
          g.ldc = ldc, g.accumulate = mode == 1, g.bias = mode == 2 ? bias.data() : nullptr;
          std::vector<double> want = prod;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j)
              want[(size_t)(i * N + j)] += mode == 1 ? C0[(size_t)(i * ldc + j)] : (mode == 2 ? bias[(size_t)j] : 0.0);
          auto run = [&](const KernelTable& t, int threads) {
            std::vector<float> C = C0;
            g.C = C.data(), g.threads = threads;
            t.gemm(g);
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = N; j < ldc; ++j)
                if (C[(size_t)(i * ldc + j)] != GUARD) c.fail(fmt("%s wrote into the padding of C", t.name));
            std::vector<float> out((size_t)(M * N));
            for (int64_t i = 0; i < M; ++i)
              for (int64_t j = 0; j < N; ++j) out[(size_t)(i * N + j)] = C[(size_t)(i * ldc + j)];
            return out;
          };
          const double tol = GEMM_TOL * std::sqrt((double)std::max<int64_t>(K, 1));
          const auto v1 = run(vec, 1), v2 = run(vec, 2), s1 = run(sca, 1);
          close(c, "vector vs double", v1, want, tol);
          close(c, "scalar vs double", s1, want, tol);
          close(c, "vector vs scalar", v1, s1, tol);
          identical(c, "vector 1 vs 2 threads", v1, v2);
          (c.ok ? tally.passed : tally.failed)++;
        }
      }
  }
}

// ---- recurrent layers ---------------------------------------------------------------------------

struct Problem {
  Dims d;
  std::vector<uint8_t> mask;
  std::vector<float> x, w_ih, w_hh, b_ih, b_hh, h0, c0, dy, dh_n, dc_n;
  std::vector<float> hm;  // recurrent dropout mask [B, H] (every other problem), or empty
};

Problem make_problem(Cell cell, int64_t T, int64_t B, int64_t I, int64_t H, bool batch_first, bool reverse,
                     int masking, uint64_t seed) {
  Rng rng(seed);
  Problem p;
  const int64_t G = gate_count(cell);
  auto u = [&](int64_t n, float s = 0.5f) {
    std::vector<float> v((size_t)n);
    for (auto& e : v) e = rng.uni(-s, s);
    return v;
  };
  p.x = u(T * B * I), p.w_ih = u(G * H * I), p.w_hh = u(G * H * H), p.b_ih = u(G * H);
  if (cell == Cell::GRU) p.b_hh = u(G * H);
  p.h0 = u(B * H);
  if (cell == Cell::LSTM) p.c0 = u(B * H);
  if (masking == 1) {  // lengths in [0, T], one of them T: right-padded
    p.mask.assign((size_t)(B * T), 0);
    const int64_t full = rng.below(B);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t len = b == full ? T : rng.below(T + 1);
      for (int64_t t = 0; t < len; ++t) p.mask[(size_t)(b * T + t)] = 1;
    }
  } else if (masking == 2) {  // an arbitrary mask
    p.mask.resize((size_t)(B * T));
    for (auto& m : p.mask) m = rng.uni(0, 1) < 0.7f;
  }
  p.dy = u(T * B * H, 1.0f), p.dh_n = u(B * H, 1.0f);
  if (cell == Cell::LSTM) p.dc_n = u(B * H, 1.0f);
  if (rng.below(2)) {  // recurrent dropout at rate 0.3
    p.hm.resize((size_t)(B * H));
    for (auto& m : p.hm) m = rng.uni(0, 1) < 0.3f ? 0.0f : 1.0f / 0.7f;
  }
  p.d = Dims{cell, T, B, I, H, batch_first, reverse, p.mask.empty() ? nullptr : p.mask.data()};
  p.d.hmask = p.hm.empty() ? nullptr : p.hm.data();
  return p;
}

struct Bwd {
  int64_t bptt;
  bool dy, state, dx;
};

struct Fwd {
  std::vector<float> y, h_n, c_n, gates, hprev, aux;
};
struct Grads {
  std::vector<float> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh;
};

bool has_aux(Cell c) { return c == Cell::LSTM || c == Cell::GRU; }

Fwd run_forward(const KernelTable& t, const Problem& p, bool training, int threads) {
  const Dims& d = p.d;
  const int64_t G = d.G(), N = d.T * d.B;
  Fwd o;
  const float nan = std::numeric_limits<float>::quiet_NaN();  // anything not written shows up
  o.y.assign((size_t)(N * d.H), nan), o.h_n.assign((size_t)(d.B * d.H), nan);
  if (d.cell == Cell::LSTM) o.c_n.assign((size_t)(d.B * d.H), nan);
  if (training) {
    o.gates.assign((size_t)(N * G * d.H), nan), o.hprev.assign((size_t)(N * d.H), nan);
    if (has_aux(d.cell)) o.aux.assign((size_t)(N * d.H), nan);
  }
  std::vector<float> ws(t.forward_workspace_floats(d, training, threads) + 1, nan);
  ForwardArgs a{};
  a.d = d, a.x = p.x.data(), a.w_ih = p.w_ih.data(), a.w_hh = p.w_hh.data(), a.b_ih = p.b_ih.data();
  a.b_hh = p.b_hh.empty() ? nullptr : p.b_hh.data();
  a.h0 = p.h0.data(), a.c0 = p.c0.empty() ? nullptr : p.c0.data();
  a.y = o.y.data(), a.h_n = o.h_n.data(), a.c_n = o.c_n.empty() ? nullptr : o.c_n.data();
  a.gates = training ? o.gates.data() : nullptr, a.hprev = training ? o.hprev.data() : nullptr;
  a.aux = training && !o.aux.empty() ? o.aux.data() : nullptr;
  a.workspace = ws.data(), a.threads = threads;
  t.forward(a);
  return o;
}

Grads run_backward(const KernelTable& t, const Problem& p, const Fwd& f, const Bwd& v, int threads) {
  const Dims& d = p.d;
  const int64_t G = d.G(), N = d.T * d.B;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Grads g;
  if (v.dx) g.dx.assign((size_t)(N * d.I), nan);
  g.dh0.assign((size_t)(d.B * d.H), nan), g.dw_ih.assign((size_t)(G * d.H * d.I), nan);
  g.dw_hh.assign((size_t)(G * d.H * d.H), nan), g.db_ih.assign((size_t)(G * d.H), nan);
  if (d.cell == Cell::LSTM) g.dc0.assign((size_t)(d.B * d.H), nan);
  if (d.cell == Cell::GRU) g.db_hh.assign((size_t)(G * d.H), nan);
  std::vector<float> ws(t.backward_workspace_floats(d, threads) + 1, nan);
  BackwardArgs a{};
  a.d = d, a.x = p.x.data(), a.w_ih = p.w_ih.data(), a.w_hh = p.w_hh.data();
  a.gates = f.gates.data(), a.hprev = f.hprev.data(), a.aux = f.aux.empty() ? nullptr : f.aux.data();
  a.dy = v.dy ? p.dy.data() : nullptr;
  a.dh_n = v.state ? p.dh_n.data() : nullptr;
  a.dc_n = v.state && !p.dc_n.empty() ? p.dc_n.data() : nullptr;
  a.bptt_steps = v.bptt;
  a.dx = v.dx ? g.dx.data() : nullptr, a.dh0 = g.dh0.data(), a.dc0 = g.dc0.empty() ? nullptr : g.dc0.data();
  a.dw_ih = g.dw_ih.data(), a.dw_hh = g.dw_hh.data(), a.db_ih = g.db_ih.data();
  a.db_hh = g.db_hh.empty() ? nullptr : g.db_hh.data();
  a.workspace = ws.data(), a.threads = threads;
  t.backward(a);
  return g;
}

// The double-precision reference: the equations of cpu/cells/*.h, one position at a time.
struct Ref {
  std::vector<double> y, h_n, c_n;
  std::vector<double> dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh;
};

double sigm(double v) { return 1.0 / (1.0 + std::exp(-v)); }

Ref reference(const Problem& p, const Bwd* v) {
  const Dims& d = p.d;
  const int64_t T = d.T, B = d.B, I = d.I, H = d.H, G = d.G(), GH = G * H, N = T * B;
  const Cell cell = d.cell;
  auto hmask = [&](int64_t b, int64_t j) { return p.hm.empty() ? 1.0 : (double)p.hm[(size_t)(b * H + j)]; };
  Ref r;
  r.y.assign((size_t)(N * H), 0.0);
  std::vector<double> h(p.h0.begin(), p.h0.end()), c(B * H, 0.0);
  if (cell == Cell::LSTM) c.assign(p.c0.begin(), p.c0.end());
  // saved per position: activated gates (RNN: h'), h before, c before (LSTM), hn (GRU), valid
  std::vector<double> gates((size_t)(N * GH), 0.0), hp((size_t)(N * H), 0.0), cp((size_t)(N * H), 0.0),
      hn((size_t)(N * H), 0.0);
  std::vector<double> a(GH), z(GH);
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = d.time_of_step(s);
    for (int64_t b = 0; b < B; ++b) {
      if (!d.valid(t, b)) continue;
      const int64_t pos = d.pos(t, b);
      for (int64_t k = 0; k < GH; ++k) {
        double sa = p.b_ih[(size_t)k], sz = cell == Cell::GRU ? p.b_hh[(size_t)k] : 0.0;
        for (int64_t i = 0; i < I; ++i) sa += (double)p.w_ih[(size_t)(k * I + i)] * p.x[(size_t)(pos * I + i)];
        for (int64_t j = 0; j < H; ++j)
          sz += (double)p.w_hh[(size_t)(k * H + j)] * (h[(size_t)(b * H + j)] * hmask(b, j));
        a[(size_t)k] = sa, z[(size_t)k] = sz;
      }
      for (int64_t j = 0; j < H; ++j) {
        const size_t bj = (size_t)(b * H + j), pj = (size_t)(pos * H + j), pg = (size_t)(pos * GH + j);
        hp[pj] = h[bj], cp[pj] = c[bj];
        double hnew;
        if (cell == Cell::RNN_TANH || cell == Cell::RNN_RELU) {
          const double pre = a[(size_t)j] + z[(size_t)j];
          hnew = cell == Cell::RNN_TANH ? std::tanh(pre) : std::max(0.0, pre);
          gates[pg] = hnew;
        } else if (cell == Cell::LSTM) {
          const double i_ = sigm(a[(size_t)j] + z[(size_t)j]), f_ = sigm(a[(size_t)(H + j)] + z[(size_t)(H + j)]);
          const double g_ = std::tanh(a[(size_t)(2 * H + j)] + z[(size_t)(2 * H + j)]);
          const double o_ = sigm(a[(size_t)(3 * H + j)] + z[(size_t)(3 * H + j)]);
          c[bj] = f_ * c[bj] + i_ * g_;
          hnew = o_ * std::tanh(c[bj]);
          gates[pg] = i_, gates[pg + H] = f_, gates[pg + 2 * H] = g_, gates[pg + 3 * H] = o_;
        } else {
          const double r_ = sigm(a[(size_t)j] + z[(size_t)j]), u_ = sigm(a[(size_t)(H + j)] + z[(size_t)(H + j)]);
          const double n_ = std::tanh(a[(size_t)(2 * H + j)] + r_ * z[(size_t)(2 * H + j)]);
          hn[pj] = z[(size_t)(2 * H + j)];
          hnew = (1.0 - u_) * n_ + u_ * h[bj];
          gates[pg] = r_, gates[pg + H] = u_, gates[pg + 2 * H] = n_;
        }
        r.y[pj] = hnew;
      }
      for (int64_t j = 0; j < H; ++j) h[(size_t)(b * H + j)] = r.y[(size_t)(pos * H + j)];
    }
  }
  r.h_n = h;
  if (cell == Cell::LSTM) r.c_n = c;
  if (!v) return r;

  // BPTT
  std::vector<double> dh((size_t)(B * H), 0.0), dc((size_t)(B * H), 0.0), dz(GH), dzh(GH);
  if (v->state) {
    dh.assign(p.dh_n.begin(), p.dh_n.end());
    if (cell == Cell::LSTM) dc.assign(p.dc_n.begin(), p.dc_n.end());
  }
  r.dx.assign((size_t)(N * I), 0.0), r.dw_ih.assign((size_t)(GH * I), 0.0), r.dw_hh.assign((size_t)(GH * H), 0.0);
  r.db_ih.assign((size_t)GH, 0.0), r.db_hh.assign((size_t)GH, 0.0);
  for (int64_t s = T - 1; s >= 0; --s) {
    const int64_t t = d.time_of_step(s);
    for (int64_t b = 0; b < B; ++b) {
      if (!d.valid(t, b)) continue;  // the carried gradients pass through; dy here is not used
      const int64_t pos = d.pos(t, b);
      std::vector<double> direct(H, 0.0);
      for (int64_t j = 0; j < H; ++j) {
        const size_t bj = (size_t)(b * H + j), pj = (size_t)(pos * H + j), pg = (size_t)(pos * GH + j);
        const double dht = dh[bj] + (v->dy ? (double)p.dy[pj] : 0.0);
        if (cell == Cell::RNN_TANH || cell == Cell::RNN_RELU) {
          const double hv = gates[pg];
          dz[(size_t)j] = dzh[(size_t)j] = dht * (cell == Cell::RNN_TANH ? 1.0 - hv * hv : (hv > 0.0 ? 1.0 : 0.0));
        } else if (cell == Cell::LSTM) {
          const double i_ = gates[pg], f_ = gates[pg + H], g_ = gates[pg + 2 * H], o_ = gates[pg + 3 * H];
          const double cn = f_ * cp[pj] + i_ * g_, tc = std::tanh(cn);
          const double dct = dc[bj] + dht * o_ * (1.0 - tc * tc);
          dz[(size_t)j] = dct * g_ * i_ * (1.0 - i_);
          dz[(size_t)(H + j)] = dct * cp[pj] * f_ * (1.0 - f_);
          dz[(size_t)(2 * H + j)] = dct * i_ * (1.0 - g_ * g_);
          dz[(size_t)(3 * H + j)] = dht * tc * o_ * (1.0 - o_);
          for (int gg = 0; gg < 4; ++gg) dzh[(size_t)(gg * H + j)] = dz[(size_t)(gg * H + j)];
          dc[bj] = dct * f_;
        } else {
          const double r_ = gates[pg], u_ = gates[pg + H], n_ = gates[pg + 2 * H];
          const double dan = dht * (1.0 - u_) * (1.0 - n_ * n_);
          const double dr = dan * hn[pj] * r_ * (1.0 - r_);
          const double du = dht * (hp[pj] - n_) * u_ * (1.0 - u_);
          dz[(size_t)j] = dzh[(size_t)j] = dr;
          dz[(size_t)(H + j)] = dzh[(size_t)(H + j)] = du;
          dz[(size_t)(2 * H + j)] = dan, dzh[(size_t)(2 * H + j)] = dan * r_;
          direct[(size_t)j] = dht * u_;
        }
      }
      for (int64_t k = 0; k < GH; ++k) {
        r.db_ih[(size_t)k] += dz[(size_t)k], r.db_hh[(size_t)k] += dzh[(size_t)k];
        for (int64_t i = 0; i < I; ++i) {
          r.dw_ih[(size_t)(k * I + i)] += dz[(size_t)k] * p.x[(size_t)(pos * I + i)];
          r.dx[(size_t)(pos * I + i)] += dz[(size_t)k] * p.w_ih[(size_t)(k * I + i)];
        }
        for (int64_t j = 0; j < H; ++j)
          r.dw_hh[(size_t)(k * H + j)] += dzh[(size_t)k] * (hp[(size_t)(pos * H + j)] * hmask(b, j));
      }
      for (int64_t j = 0; j < H; ++j) {
        double acc = 0.0;
        for (int64_t k = 0; k < GH; ++k) acc += dzh[(size_t)k] * p.w_hh[(size_t)(k * H + j)];
        dh[(size_t)(b * H + j)] = direct[(size_t)j] + acc * hmask(b, j);
      }
    }
    if (v->bptt > 0 && s > 0 && s % v->bptt == 0) {
      std::fill(dh.begin(), dh.end(), 0.0);
      std::fill(dc.begin(), dc.end(), 0.0);
    }
  }
  r.dh0 = dh;
  if (cell == Cell::LSTM) r.dc0 = dc;
  return r;
}

const char* cell_name(Cell c) {
  switch (c) {
    case Cell::RNN_TANH: return "rnn_tanh";
    case Cell::RNN_RELU: return "rnn_relu";
    case Cell::LSTM: return "lstm";
    case Cell::GRU: return "gru";
  }
  return "?";
}

// ---- dropout ---------------------------------------------------------------------------------

// Philox4x32-R against Random123's kat_vectors, and the dropout masks (and x * mask) of the vector
// table bit-identical to the scalar one's, for 1 and 2 threads, on lengths that end inside a group.
void check_dropout(const KernelTable& vec, const KernelTable& sca, Tally& tally) {
  struct Kat {
    int rounds;
    uint32_t ctr[4], key[2], out[4];
  };
  const Kat kats[] = {
      {7, {0, 0, 0, 0}, {0, 0}, {0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}},
      {10, {0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {10, {~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {10, {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}};
  for (const KernelTable* t : {&vec, &sca}) {
    Case c{fmt("%s philox4x32 known answers", t->name)};
    for (const Kat& k : kats) {
      uint32_t out[4];
      t->philox(k.ctr, out, 1, (uint64_t)k.key[0] | ((uint64_t)k.key[1] << 32), k.rounds);
      if (std::memcmp(out, k.out, sizeof out) != 0)
        c.fail(fmt("rounds %d ctr %08x: got %08x %08x %08x %08x", k.rounds, k.ctr[0], out[0], out[1], out[2], out[3]));
    }
    (c.ok ? tally.passed : tally.failed)++;
  }
  Rng rng(7);
  for (int64_t n : {1, 3, 63, 64, 65, 1000, 70001}) {
    Case c{fmt("%s dropout n=%lld", vec.name, (long long)n)};
    std::vector<float> x((size_t)n);
    for (auto& e : x) e = rng.uni(-2, 2);
    auto run = [&](const KernelTable& t, int threads, std::vector<float>& y, std::vector<float>& m) {
      y.assign((size_t)n, -1.0f), m.assign((size_t)n, -1.0f);
      DropoutArgs a{};
      a.x = x.data(), a.y = y.data(), a.mask = m.data(), a.n = n, a.key = 0x0123456789abcdefull, a.call = 5;
      a.stream = 1, a.threshold = 0x4ccccccdu, a.scale = 1.0f / 0.7f, a.threads = threads;
      t.dropout(a);
    };
    std::vector<float> ys, ms, yv, mv, yv1, mv1;
    run(sca, 1, ys, ms);
    run(vec, 2, yv, mv);
    run(vec, 1, yv1, mv1);
    identical(c, "mask vs scalar", mv, ms);
    identical(c, "y vs scalar", yv, ys);
    identical(c, "mask 1 vs 2 threads", mv1, mv);
    int64_t dropped = 0;
    for (float m : ms) dropped += m == 0.0f;
    if (n >= 1000 && std::fabs((double)dropped / n - 0.3) > 6 * std::sqrt(0.21 / n))
      c.fail(fmt("drop rate %.4f, expected 0.3", (double)dropped / n));
    (c.ok ? tally.passed : tally.failed)++;
  }
}

// The fused cross-entropy (sparse and dense targets, logits and probabilities, a mask and weights,
// -inf logits in one row) and the Embedding gather / scatter-add against the scalar path: the
// loss to 3e-6 relative, the gradient to 3e-6 of its largest entry (the vector exp against
// expf), the Embedding bit for bit; the vector path at 1 and 2 threads bit for bit.
void check_xent_embedding(const KernelTable& vec, const KernelTable& sca, Tally& tally) {
  Rng rng(11);
  const int64_t N = 7;
  for (int64_t C : {1, 3, 5, 17, 63, 64, 65, 1000, 5003}) {
    for (int mode = 0; mode < 4; ++mode) {  // bit 0: dense targets, bit 1: probabilities
      const bool dense = mode & 1, logits = !(mode & 2);
      Case c{fmt("%s xent C=%lld %s %s", vec.name, (long long)C, dense ? "dense" : "sparse",
                 logits ? "logits" : "probabilities")};
      std::vector<float> z((size_t)(N * C)), y(dense ? (size_t)(N * C) : 0);
      std::vector<int64_t> ids((size_t)N);
      std::vector<uint8_t> mask((size_t)N, 1);
      std::vector<double> w((size_t)N);
      for (auto& e : z) e = logits ? rng.uni(-12, 12) : rng.uni(0.0f, 1.0f);
      for (auto& e : y) e = rng.uni(0.0f, 1.0f);
      for (int64_t n = 0; n < N; ++n) ids[(size_t)n] = rng.below(C), w[(size_t)n] = rng.uni(0.0f, 2.0f);
      mask[3] = 0;
      if (logits && C > 2)  // -inf logits away from the target: probability exactly 0
        for (int64_t j = 0; j < C; ++j)
          if (j != ids[1] && j % 3 == 0) z[(size_t)(C + j)] = -INFINITY;
      if (dense && logits && C > 2)
        for (int64_t j = 0; j < C; ++j)
          if (j % 3 == 0) y[(size_t)(C + j)] = 0.0f;
      auto run = [&](const KernelTable& t, int threads, std::vector<float>& g, std::vector<double>& l) {
        g.assign((size_t)(N * C), -1.0f), l.assign((size_t)N, -1.0);
        XentArgs a{};
        a.N = N, a.C = C, a.z = z.data(), a.ids = dense ? nullptr : ids.data(), a.y = dense ? y.data() : nullptr;
        a.mask = mask.data(), a.weight = w.data(), a.from_logits = logits, a.grad = g.data(), a.loss = l.data();
        a.threads = threads;
        t.xent(a);
      };
      std::vector<float> gs, gv, gv2;
      std::vector<double> ls, lv, lv2;
      run(sca, 1, gs, ls);
      run(vec, 1, gv, lv);
      run(vec, 2, gv2, lv2);
      close(c, "loss vs scalar", lv, ls, 3e-6);
      close(c, "gradient vs scalar", gv, gs, 3e-6);
      identical(c, "gradient 1 vs 2 threads", gv, gv2);
      if (std::memcmp(lv.data(), lv2.data(), lv.size() * sizeof(double)) != 0) c.fail("loss 1 vs 2 threads differs");
      (c.ok ? tally.passed : tally.failed)++;
    }
  }
  for (int64_t D : {1, 5, 16, 17, 200, 1025}) {
    Case c{fmt("%s embedding D=%lld", vec.name, (long long)D)};
    const int64_t V = 50, N = 1200;
    std::vector<float> table((size_t)(V * D)), dy((size_t)(N * D));
    std::vector<int64_t> ids((size_t)N);
    for (auto& e : table) e = rng.uni(-1, 1);
    for (auto& e : dy) e = rng.uni(-1, 1);
    for (auto& e : ids) e = rng.below(V);
    auto run = [&](const KernelTable& t, int threads, std::vector<float>& out, std::vector<float>& grad) {
      out.assign((size_t)(N * D), -1.0f), grad.assign(table.begin(), table.end());
      EmbeddingArgs a{};
      a.N = N, a.V = V, a.D = D, a.ids = ids.data(), a.table = table.data(), a.out = out.data();
      a.dy = dy.data(), a.grad = grad.data(), a.threads = threads;
      t.embedding_forward(a);
      t.embedding_backward(a);
    };
    std::vector<float> os, gs, ov, gv;
    run(sca, 1, os, gs);
    run(vec, 2, ov, gv);
    identical(c, "gather vs scalar", ov, os);
    identical(c, "scatter-add vs scalar", gv, gs);
    (c.ok ? tally.passed : tally.failed)++;
  }
}

void check_layers(const KernelTable& vec, const KernelTable& sca, Tally& tally, bool quick) {
  struct S {
    int64_t T, B, I, H;
  };
  // tests/test_kernels.py's SHAPES ((2, 41, 8, 77) in place of its (2, 45, 8, 129), at a third of
  // the cost under emulation: also six row blocks, the last of 1 row, split over 2 threads), then
  // more awkward ones: H of 1 to 37 (not multiples of 4, 8 or 16) and round ones, batches that
  // leave partial row tiles (5, 7 and 8 rows) and row blocks.
  std::vector<S> shapes{{1, 1, 1, 1},  {4, 1, 3, 5},  {6, 5, 17, 33}, {3, 4, 16, 32}, {5, 13, 40, 70},
                        {2, 41, 8, 77},  {3, 6, 8, 200}, {7, 3, 5, 2},   {5, 9, 2, 3},   {4, 2, 9, 15},
                        {2, 11, 1, 4},  {3, 7, 12, 37}, {3, 16, 20, 48}, {2, 10, 33, 64}, {1, 23, 6, 17},
                        {8, 1, 4, 12},  {3, 17, 3, 7},  {2, 3, 2, 9},    {5, 2, 7, 6},    {2, 33, 4, 13}};
  if (quick) shapes.resize(8);
  const Cell cells[] = {Cell::RNN_TANH, Cell::RNN_RELU, Cell::LSTM, Cell::GRU};
  uint64_t seed = 100;
  for (const S& s : shapes)
    for (Cell cell : cells)
      for (int bf = 1; bf >= 0; --bf)
        for (int rev = 0; rev < 2; ++rev)
          for (int masking = 0; masking < 3; ++masking) {
            if (!mine((int64_t)(++seed))) continue;
            const Problem p = make_problem(cell, s.T, s.B, s.I, s.H, bf, rev, masking, seed);
            const std::string base =
                fmt("%s %s T=%lld B=%lld I=%lld H=%lld %s%s %s", vec.name, cell_name(cell), (long long)s.T,
                    (long long)s.B, (long long)s.I, (long long)s.H, bf ? "batch_first" : "time_major",
                    rev ? " reverse" : "", masking == 0 ? "nomask" : masking == 1 ? "lengths" : "mask") +
                (p.hm.empty() ? "" : " recurrent-dropout");
            // forward
            Case c{base + " forward"};
            const Fwd fv = run_forward(vec, p, true, 2), fs = run_forward(sca, p, true, 1);
            const int64_t work = s.T * s.B * p.d.G() * s.H * (s.I + s.H);
            const bool anchored = work <= ANCHOR_WORK;
            // Below THREAD_WORK no product or time loop is big enough to be split over threads.
            const bool threaded = work >= THREAD_WORK;
            const Fwd fv1 = threaded ? run_forward(vec, p, true, 1) : fv;
            const Fwd fvi = run_forward(vec, p, false, 2);
            const Ref rf = anchored ? reference(p, nullptr) : Ref{};
            close(c, "y", fv.y, fs.y, KERNEL_TOL);
            close(c, "h_n", fv.h_n, fs.h_n, KERNEL_TOL);
            close(c, "c_n", fv.c_n, fs.c_n, KERNEL_TOL);
            close(c, "gates", fv.gates, fs.gates, KERNEL_TOL);
            close(c, "hprev", fv.hprev, fs.hprev, KERNEL_TOL);
            close(c, "aux", fv.aux, fs.aux, KERNEL_TOL);
            if (anchored) {
              close(c, "y (vector vs double)", fv.y, rf.y, KERNEL_TOL);
              close(c, "y (scalar vs double)", fs.y, rf.y, KERNEL_TOL);
              close(c, "h_n (vector vs double)", fv.h_n, rf.h_n, KERNEL_TOL);
              close(c, "h_n (scalar vs double)", fs.h_n, rf.h_n, KERNEL_TOL);
              close(c, "c_n (vector vs double)", fv.c_n, rf.c_n, KERNEL_TOL);
              close(c, "c_n (scalar vs double)", fs.c_n, rf.c_n, KERNEL_TOL);
              ++tally.anchored;
            }
            identical(c, "y training vs inference", fv.y, fvi.y);
            identical(c, "h_n training vs inference", fv.h_n, fvi.h_n);
            identical(c, "y 1 vs 2 threads", fv.y, fv1.y);
            identical(c, "gates 1 vs 2 threads", fv.gates, fv1.gates);
            (c.ok ? tally.passed : tally.failed)++;
            // backward variants, as in test_kernels_match_reference (+ dx skipped once)
            const Bwd variants[] = {{0, true, true, true}, {1, true, false, true}, {2, false, true, true},
                                    {3, true, true, false}, {s.T, true, true, true}};
            for (const Bwd& v : variants) {
              Case cb{base + fmt(" backward bptt=%lld dy=%d state=%d dx=%d", (long long)v.bptt, v.dy, v.state, v.dx)};
              const Grads gv = run_backward(vec, p, fv, v, 2), gs = run_backward(sca, p, fs, v, 1);
              const Ref rb = anchored ? reference(p, &v) : Ref{};
              auto both = [&](const char* what, const std::vector<float>& a, const std::vector<float>& b,
                              const std::vector<double>& want) {
                close(cb, (std::string(what) + " vs scalar").c_str(), a, b, KERNEL_TOL);
                if (!anchored) return;
                close(cb, (std::string(what) + " (vector vs double)").c_str(), a, want, KERNEL_TOL);
                close(cb, (std::string(what) + " (scalar vs double)").c_str(), b, want, KERNEL_TOL);
              };
              if (anchored) ++tally.anchored;
              if (v.dx) both("dx", gv.dx, gs.dx, rb.dx);
              both("dh0", gv.dh0, gs.dh0, rb.dh0);
              if (cell == Cell::LSTM) both("dc0", gv.dc0, gs.dc0, rb.dc0);
              both("dw_ih", gv.dw_ih, gs.dw_ih, rb.dw_ih);
              both("dw_hh", gv.dw_hh, gs.dw_hh, rb.dw_hh);
              both("db_ih", gv.db_ih, gs.db_ih, rb.db_ih);
              if (cell == Cell::GRU) both("db_hh", gv.db_hh, gs.db_hh, rb.db_hh);
              if (v.bptt == 0 && threaded) {  // thread count: bit-identical results
                const Grads g1 = run_backward(vec, p, fv1, v, 1);
                identical(cb, "dw_hh 1 vs 2 threads", gv.dw_hh, g1.dw_hh);
                identical(cb, "dh0 1 vs 2 threads", gv.dh0, g1.dh0);
                identical(cb, "db_ih 1 vs 2 threads", gv.db_ih, g1.db_ih);
              }
              (cb.ok ? tally.passed : tally.failed)++;
            }
          }
}


// ---- int8 and bf16 inference ------------------------------------------------------------------
// The int8 product is exact integer arithmetic plus the same two float roundings on every path,
// the bf16 product the same float32 sums in the same order on every path: the vector path's
// qgemm / bgemm must equal the scalar one bit for bit (each packs for its own width). The forward
// passes agree within the float kernels' tolerance (the gate functions differ); in bf16 such a
// difference can move h across a rounding boundary of bf16, which moves the next products by one
// bf16 step of that h, hence the wider tolerance there.

template <class Packed>
void set_sizes(const KernelTable& t, Packed& q, int64_t N, int64_t K, int NV, int64_t Hg) {
  q.N = N, q.K = K, q.NV = NV, q.Hg = Hg;
  q.P = Hg ? (Hg + t.vector_width - 1) / t.vector_width
           : (N + (int64_t)NV * t.vector_width - 1) / ((int64_t)NV * t.vector_width);
}

struct Int8Mode {
  static constexpr const char* name = "int8";
  static constexpr double forward_tol = 3e-5;
  struct Weights {
    std::vector<int8_t> q;
    std::vector<float> scale;
  };
  struct Mat {
    std::vector<int8_t> w;
    std::vector<float> scale;
    std::vector<int32_t> comp;
    QPacked q{};
  };
  static Weights random(Rng& r, int64_t N, int64_t K) {
    Weights w;
    w.q.resize((size_t)(N * K)), w.scale.resize((size_t)N);
    for (auto& v : w.q) v = (int8_t)(r.below(255) - 127);
    for (auto& v : w.scale) v = r.uni(0.001f, 0.02f);
    return w;
  }
  static Mat pack(const KernelTable& t, const Weights& src, int64_t N, int64_t K, int NV, int64_t Hg) {
    Mat m;
    int64_t wbytes = 0, cols = 0;
    t.qpack_sizes(N, K, NV, Hg, &wbytes, &cols);
    m.w.resize((size_t)wbytes), m.scale.resize((size_t)cols), m.comp.resize((size_t)cols);
    t.qpack(src.q.data(), src.scale.data(), N, K, NV, Hg, m.w.data(), m.scale.data(), m.comp.data());
    m.q.w = m.w.data(), m.q.scale = m.scale.data(), m.q.comp = m.comp.data();
    m.q.K4 = (K + 3) / 4;
    set_sizes(t, m.q, N, K, NV, Hg);
    return m;
  }
  static auto gemm_ws(const KernelTable& t) { return t.qgemm_workspace_floats; }
  static auto gemm(const KernelTable& t) { return t.qgemm; }
  static auto forward_ws(const KernelTable& t) { return t.qforward_workspace_floats; }
  static auto forward(const KernelTable& t) { return t.qforward; }
};

struct Bf16Mode {
  static constexpr const char* name = "bf16";
  static constexpr double forward_tol = 2e-3;
  struct Weights {
    std::vector<uint16_t> b;
  };
  struct Mat {
    std::vector<uint32_t> w;
    BPacked q{};
  };
  static Weights random(Rng& r, int64_t N, int64_t K) {
    Weights w;
    w.b.resize((size_t)(N * K));
    for (auto& v : w.b) {
      const float f = r.uni(-0.5f, 0.5f);
      uint32_t u;
      std::memcpy(&u, &f, sizeof u);
      v = (uint16_t)(u >> 16);  // any bf16 value will do (truncated)
    }
    return w;
  }
  static Mat pack(const KernelTable& t, const Weights& src, int64_t N, int64_t K, int NV, int64_t Hg) {
    Mat m;
    int64_t words = 0;
    t.bpack_sizes(N, K, NV, Hg, &words);
    m.w.resize((size_t)words);
    t.bpack(src.b.data(), N, K, NV, Hg, m.w.data());
    m.q.w = m.w.data();
    m.q.K2 = (K + 1) / 2;
    set_sizes(t, m.q, N, K, NV, Hg);
    return m;
  }
  static auto gemm_ws(const KernelTable& t) { return t.bgemm_workspace_floats; }
  static auto gemm(const KernelTable& t) { return t.bgemm; }
  static auto forward_ws(const KernelTable& t) { return t.bforward_workspace_floats; }
  static auto forward(const KernelTable& t) { return t.bforward; }
};

template <class Mode>
void check_lowp(const KernelTable& vec, const KernelTable& sca, Tally& tally) {
  Rng r(77);
  const int64_t shapes[][3] = {{1, 1, 1}, {3, 17, 5}, {7, 33, 9}, {64, 40, 130}, {5, 3, 1000}, {130, 70, 64}};
  int64_t index = 0;
  for (const auto& sh : shapes)
    for (int threads : {1, 2}) {
      if (!mine(index++)) continue;
      const int64_t M = sh[0], N = sh[1], K = sh[2];
      const typename Mode::Weights w = Mode::random(r, N, K);
      std::vector<float> A((size_t)(M * K)), bias((size_t)N);
      for (auto& v : A) v = r.uni(-3.0f, 3.0f);
      for (auto& v : bias) v = r.uni(-1.0f, 1.0f);
      auto run = [&](const KernelTable& t) {
        const typename Mode::Mat m = Mode::pack(t, w, N, K, t.qgemm_nv, 0);
        std::vector<float> C((size_t)(M * N)), wsp(Mode::gemm_ws(t)(M, m.q) + 16);
        Mode::gemm(t)(A.data(), M, m.q, bias.data(), C.data(), wsp.data(), threads);
        return C;
      };
      Case c{fmt("%s gemm %s M=%lld N=%lld K=%lld threads=%d", Mode::name, vec.name, (long long)M, (long long)N,
                 (long long)K, threads)};
      identical(c, "C", run(vec), run(sca));
      (c.ok ? tally.passed : tally.failed)++;
    }
  if (mine(index++)) {  // the x-projection buffers: about one step in all, not one per thread
    Dims d{};
    d.cell = Cell::LSTM, d.T = 50, d.B = 64, d.I = 512, d.H = 1024, d.batch_first = true;
    Case c{fmt("%s forward workspace %s LSTM T=50 B=64 H=1024, 1 / 2 / 4 threads", Mode::name, vec.name)};
    const int64_t step = d.B * 4 * d.H;  // floats of one step's x projection
    const int64_t w1 = (int64_t)Mode::forward_ws(vec)(d, 1);
    for (int threads : {2, 4}) {  // each more thread adds its own h rows (B x H at most) and the
      // projection only what uneven parts round up to (a team of 3 of 4: 3 x 24 of 64 rows), where
      // it used to add a whole step per thread
      const int64_t wt = (int64_t)Mode::forward_ws(vec)(d, threads);
      if (w1 < step || wt - w1 > (threads - 1) * (d.B * d.H + d.B) + step / 2)
        c.fail(fmt("%d threads: %lld floats against %lld at 1 thread (a step: %lld)", threads, (long long)wt,
                   (long long)w1, (long long)step));
    }
    (c.ok ? tally.passed : tally.failed)++;
  }
  const Cell cells[] = {Cell::RNN_TANH, Cell::RNN_RELU, Cell::LSTM, Cell::GRU};
  // T, B, I, H; the last with an LSTM step's projection (12 x 2,816 floats) over the 128 KiB of a
  // chunk: each thread's buffer holds one step of its own part only
  const int64_t dims[][4] = {{1, 1, 1, 1}, {5, 3, 7, 17}, {9, 4, 33, 20}, {4, 11, 16, 64}, {2, 12, 4, 704}};
  for (Cell cell : cells)
    for (const auto& dm : dims)
      for (int masked : {0, 1}) {
        if (!mine(index++)) continue;
        const int64_t T = dm[0], B = dm[1], I = dm[2], H = dm[3];
        const int G = gate_count(cell);
        const typename Mode::Weights wi = Mode::random(r, G * H, I), wh = Mode::random(r, G * H, H);
        std::vector<float> x((size_t)(B * T * I)), bi((size_t)(G * H)), bh((size_t)(G * H)), h0((size_t)(B * H));
        for (auto& v : x) v = r.uni(-1.0f, 1.0f);
        for (auto& v : bi) v = r.uni(-0.5f, 0.5f);
        for (auto& v : bh) v = r.uni(-0.5f, 0.5f);
        for (auto& v : h0) v = r.uni(-0.5f, 0.5f);
        std::vector<uint8_t> mask((size_t)(B * T), 1);
        if (masked)
          for (auto& v : mask) v = r.below(4) != 0;
        auto run = [&](const KernelTable& t) {
          const typename Mode::Mat pi = Mode::pack(t, wi, G * H, I, G, H), ph = Mode::pack(t, wh, G * H, H, G, H);
          Dims d{};
          d.cell = cell, d.T = T, d.B = B, d.I = I, d.H = H, d.batch_first = true, d.reverse = masked != 0;
          d.mask = masked ? mask.data() : nullptr;
          std::vector<float> y((size_t)(B * T * H)), hn((size_t)(B * H)), cn((size_t)(B * H));
          std::vector<float> wsp(Mode::forward_ws(t)(d, 2) + 16);
          LowpForwardArgs<decltype(pi.q)> a{};
          a.d = d, a.x = x.data(), a.wih = pi.q, a.whh = ph.q, a.b_ih = bi.data();
          a.b_hh = cell == Cell::GRU ? bh.data() : nullptr;
          a.h0 = h0.data(), a.c0 = cell == Cell::LSTM ? h0.data() : nullptr;
          a.y = y.data(), a.h_n = hn.data(), a.c_n = cell == Cell::LSTM ? cn.data() : nullptr;
          a.workspace = wsp.data(), a.threads = 2;
          Mode::forward(t)(a);
          y.insert(y.end(), hn.begin(), hn.end());
          return y;
        };
        Case c{fmt("%s forward %s cell=%d T=%lld B=%lld I=%lld H=%lld masked=%d", Mode::name, vec.name, (int)cell,
                   (long long)T, (long long)B, (long long)I, (long long)H, masked)};
        close(c, "y+h_n", run(vec), run(sca), Mode::forward_tol);
        (c.ok ? tally.passed : tally.failed)++;
      }
}
}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--isa")) {
      std::printf("%s\n", active_isa());
      return 0;
    }
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--shard") && i + 1 < argc) {
      if (std::sscanf(argv[++i], "%d/%d", &g_shard, &g_shards) != 2 || g_shards < 1 || g_shard < 0 ||
          g_shard >= g_shards) {
        std::printf("--shard K/N with 0 <= K < N\n");
        return 2;
      }
    }
  }
  std::vector<std::string> want;  // the vector paths this build must offer on this CPU
#if defined(FASTRNN_BUILD_NEON)
  want.push_back("neon");
#endif
#if defined(FASTRNN_BUILD_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) want.push_back("avx2");
#endif
#if defined(FASTRNN_BUILD_AVX512)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    want.push_back("avx512");
#endif
  const KernelTable& sca = kernels_scalar();
  bool all_ok = true;
  if (want.empty()) {
    std::printf("no vector path in this build: nothing to compare\n");
    return 1;
  }
  for (const std::string& name : want) {
    if (!isa_supported(name.c_str())) {
      std::printf("MISMATCH %s: built but not offered by the dispatch\n", name.c_str());
      all_ok = false;
      continue;
    }
    set_isa(name.c_str());
    const KernelTable& vec = active_kernels();
    if (name != vec.name) {
      std::printf("MISMATCH set_isa(%s) selected %s\n", name.c_str(), vec.name);
      all_ok = false;
      continue;
    }
    Tally tally;
    auto t0 = std::chrono::steady_clock::now();
    auto lap = [&](const char* what) {
      const auto t1 = std::chrono::steady_clock::now();
      std::printf("  %s %s: %.1f s\n", vec.name, what, std::chrono::duration<double>(t1 - t0).count());
      t0 = t1;
    };
    check_activations(vec, sca, tally);
    lap("activations");
    check_gemm(vec, sca, tally, quick);
    lap("gemm");
    check_layers(vec, sca, tally, quick);
    lap("layers");
    check_lowp<Int8Mode>(vec, sca, tally);
    lap("int8");
    check_lowp<Bf16Mode>(vec, sca, tally);
    lap("bf16");
    if (g_shard == 0) check_dropout(vec, sca, tally);
    lap("dropout");
    if (g_shard == 0) check_xent_embedding(vec, sca, tally);
    lap("cross-entropy and Embedding");
    std::printf("%s vs scalar: %d cases passed, %d failed (%d layer cases also against double precision)\n",
                vec.name, tally.passed, tally.failed, tally.anchored);
    all_ok = all_ok && tally.failed == 0;
  }
  return all_ok ? 0 : 1;
}
