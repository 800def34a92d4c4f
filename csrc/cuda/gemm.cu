// gemm.cu — float32 GEMM with general strides (transposes are strides), bias or accumulate in
// the epilogue, deterministic split-K for the long-K / small-output products of backward
// (dW = dG^T x), and column sums (bias gradients).
//
// Two block tiles: 128x128 (8x8 per thread, two 4-wide groups each way) when the output has at
// least one tile per multiprocessor, else 64x64 (4x4 per thread), split over K when even that
// leaves multiprocessors idle. Split-K writes S partial products to the workspace and a second
// kernel sums them in a fixed order (z = 0..S-1), so results do not depend on scheduling.
#include <algorithm>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/tile.cuh"

namespace fastrnn_cuda {
namespace {

using Big = TileCfg<128, 128, 8, 2, 4, 2, 4, 3>;    // 256 threads, 8x8 per thread
using Small = TileCfg<64, 64, 16, 1, 4, 1, 4, 3>;   // 256 threads, 4x4 per thread

struct Strided {  // element (r, c) of a matrix with strides (rs, cs), rows r0 + r < R
  const float* p;
  long long rs, cs;
  long long R, r0;
  __device__ __forceinline__ const float* at(int r, int k) const {
    const long long rr = r0 + r;
    return rr < R ? p + rr * rs + (long long)k * cs : nullptr;
  }
};

struct LoadA {  // A(m, k)
  Strided s;
  __device__ __forceinline__ const float* operator()(int m, int k) const { return s.at(m, k); }
};
struct LoadB {  // B(k, n) = B^T(n, k)
  Strided s;
  __device__ __forceinline__ const float* operator()(int k, int n) const { return s.at(n, k); }
};

struct GemmParams {
  long long M, N, K;
  const float* A; long long rsa, csa;
  const float* B; long long rsb, csb;
  float* C; long long ldc;
  bool accumulate;
  const float* bias;
  float* partial;    // split-K: [S][M][N] partial products, or nullptr
  long long kchunk;  // K range of one split
};

template <class Cfg, bool A_KC, bool B_KC>
__global__ void __launch_bounds__(Cfg::NT) gemm_kernel(GemmParams p) {
  __shared__ __align__(16) float smem[Cfg::SMEM_FLOATS];
  const long long m0 = (long long)blockIdx.x * Cfg::BM, n0 = (long long)blockIdx.y * Cfg::BN;
  const long long kb = (long long)blockIdx.z * p.kchunk, ke = min(p.K, kb + p.kchunk);
  float acc[Cfg::TM][Cfg::TN];
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = 0.0f;
  const LoadA la{Strided{p.A, p.rsa, p.csa, p.M, m0}};
  const LoadB lb{Strided{p.B, p.csb, p.rsb, p.N, n0}};
  tile_product<Cfg, A_KC, B_KC>((int)kb, (int)ke, la, lb, smem, acc);

  if (!Cfg::leader()) return;  // with K split inside the block, group 0 holds the tile
  const int tx = Cfg::tx(), ty = Cfg::ty();
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i) {
    const long long r = m0 + Cfg::row(i, ty);
    if (r >= p.M) continue;
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) {
      const long long c = n0 + Cfg::col(j, tx);
      if (c >= p.N) continue;
      if (p.partial) {
        p.partial[((long long)blockIdx.z * p.M + r) * p.N + c] = acc[i][j];
      } else {
        float* out = p.C + r * p.ldc + c;
        *out = p.accumulate ? *out + acc[i][j] : (p.bias ? p.bias[c] + acc[i][j] : acc[i][j]);
      }
    }
  }
}

// C[r, c] = (C or bias or 0) + sum_z partial[z][r][c], z ascending.
__global__ void splitk_reduce(const float* partial, int S, long long M, long long N, float* C, long long ldc,
                              bool accumulate, const float* bias) {
  const long long total = M * N;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
    const long long r = e / N, c = e % N;
    float s = 0.0f;
    for (int z = 0; z < S; ++z) s += partial[z * total + e];
    float* out = C + r * ldc + c;
    *out = accumulate ? *out + s : (bias ? bias[c] + s : s);
  }
}

// out[c] = sum_r A[r, c] for a row-major [R, Ncols] matrix; 32 columns x 16 row lanes per block,
// each lane sums every 16th row, then the lanes are added in a fixed order.
__global__ void __launch_bounds__(512) column_sums_kernel(const float* A, long long R, long long Ncols, float* out) {
  __shared__ float part[16][33];
  const long long c = (long long)blockIdx.x * 32 + threadIdx.x;
  float s = 0.0f;
  if (c < Ncols)
    for (long long r = threadIdx.y; r < R; r += 16) s += A[r * Ncols + c];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < Ncols) {
    float t = 0.0f;
    for (int y = 0; y < 16; ++y) t += part[y][threadIdx.x];
    out[c] = t;
  }
}

struct Plan {
  bool big;
  int splits;
  long long kchunk;
};

Plan plan_gemm(int64_t M, int64_t N, int64_t K) {
  const int64_t sms = sm_count();
  const int64_t big_tiles = ceil_div(M, 128) * ceil_div(N, 128);
  if (big_tiles >= sms) return Plan{true, 1, K};
  const int64_t tiles = ceil_div(M, 64) * ceil_div(N, 64);
  int64_t S = 1;
  if (tiles < sms) S = std::max<int64_t>(1, std::min(ceil_div(sms, tiles), K / 256));  // >= 256 of K per split
  const int64_t kchunk = ceil_div(ceil_div(K, S), 16) * 16;  // whole k-tiles per split
  S = ceil_div(K, kchunk);
  return Plan{false, (int)S, kchunk};
}

template <class Cfg>
void launch_gemm(const GemmParams& p, int splits, cudaStream_t st) {
  const dim3 grid((unsigned)ceil_div(p.M, Cfg::BM), (unsigned)ceil_div(p.N, Cfg::BN), (unsigned)splits);
  const bool akc = p.csa == 1, bkc = p.rsb == 1;
  if (akc && bkc) gemm_kernel<Cfg, true, true><<<grid, Cfg::NT, 0, st>>>(p);
  else if (akc) gemm_kernel<Cfg, true, false><<<grid, Cfg::NT, 0, st>>>(p);
  else if (bkc) gemm_kernel<Cfg, false, true><<<grid, Cfg::NT, 0, st>>>(p);
  else gemm_kernel<Cfg, false, false><<<grid, Cfg::NT, 0, st>>>(p);
  check_launch("gemm");
}

}  // namespace

cudaError_t gemm_kernel_attributes(cudaFuncAttributes* attr) {
  return cudaFuncGetAttributes(attr, (const void*)gemm_kernel<Big, true, true>);
}

size_t gemm_workspace_floats(int64_t M, int64_t N, int64_t K) {
  if (M <= 0 || N <= 0 || K <= 0) return 0;
  const Plan pl = plan_gemm(M, N, K);
  return pl.splits > 1 ? (size_t)pl.splits * (size_t)M * (size_t)N : 0;
}

void gemm(const CudaGemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  cudaStream_t st = as_stream(g.stream);
  if (g.K <= 0) {  // C = bias or 0 (or unchanged when accumulating)
    if (!g.accumulate) {
      splitk_reduce<<<(unsigned)std::min<int64_t>(ceil_div(g.M * g.N, 256), 4096), 256, 0, st>>>(
          nullptr, 0, g.M, g.N, g.C, g.ldc, false, g.bias);
      check_launch("gemm (K = 0)");
    }
    return;
  }
  if (g.K > INT32_MAX) throw std::invalid_argument("fastrnn CUDA gemm: K must be below 2^31");
  Plan pl = plan_gemm(g.M, g.N, g.K);
  if (pl.splits > 1 && g.workspace_floats < (size_t)pl.splits * (size_t)g.M * (size_t)g.N)
    pl = Plan{false, 1, g.K};  // not enough workspace: no split
  GemmParams p{};
  p.M = g.M, p.N = g.N, p.K = g.K;
  p.A = g.A, p.rsa = g.rsa, p.csa = g.csa;
  p.B = g.B, p.rsb = g.rsb, p.csb = g.csb;
  p.C = g.C, p.ldc = g.ldc;
  p.accumulate = g.accumulate, p.bias = g.bias;
  p.partial = pl.splits > 1 ? g.workspace : nullptr, p.kchunk = pl.kchunk;
  if (pl.big) launch_gemm<Big>(p, 1, st);
  else launch_gemm<Small>(p, pl.splits, st);
  if (pl.splits > 1) {
    splitk_reduce<<<(unsigned)std::min<int64_t>(ceil_div(g.M * g.N, 256), 4096), 256, 0, st>>>(
        g.workspace, pl.splits, g.M, g.N, g.C, g.ldc, g.accumulate, g.bias);
    check_launch("gemm split-K reduction");
  }
}

__global__ void scale_rows_kernel(const float* a, const float* m, float* out, long long rows, long long H, long long T,
                                  long long B, bool batch_first) {
  const long long n = rows * H;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / H, j = i % H;
    const long long b = batch_first ? r / T : r % B;
    out[i] = a[i] * m[b * H + j];
  }
}

void scale_rows(const float* a, const float* m, float* out, int64_t rows, int64_t H, int64_t T, int64_t B,
                bool batch_first, void* stream) {
  const int64_t n = rows * H;
  if (n <= 0) return;
  const unsigned blocks = (unsigned)std::min<int64_t>(ceil_div(n, 256), 65535);
  scale_rows_kernel<<<blocks, 256, 0, as_stream(stream)>>>(a, m, out, rows, H, T, B, batch_first);
  check_launch("scale rows");
}

void column_sums(const float* A, int64_t R, int64_t Ncols, float* out, void* stream) {
  if (Ncols <= 0) return;
  column_sums_kernel<<<(unsigned)ceil_div(Ncols, 32), dim3(32, 16), 0, as_stream(stream)>>>(A, R, Ncols, out);
  check_launch("column sums");
}

}  // namespace fastrnn_cuda
