// forward.cu — the forward pass of SimpleRNN (tanh, relu), LSTM and GRU.
//
//   1. xw = x W_ih^T + b_ih for all T*B positions: one GEMM (gemm.cu), bias in the epilogue,
//      written straight into the saved-gates buffer when training (else into the workspace).
//   2. per processing step s, each block computes h W_hh^T for its batch rows and ALL G gates of
//      its hidden units (tile_product), then applies the nonlinearities and the state update to
//      those registers: the recurrent pre-activations never touch memory. The loop is one launch
//      per step or, where the grid fits on the device, one cooperative launch with a grid barrier
//      between steps (step.cuh).
//      h is double-buffered in the workspace (step s reads buffer s&1, writes (s+1)&1); the LSTM
//      cell state is updated in place in c_n (each element belongs to one thread).
// When training, the step kernel overwrites xw with the activated gates and saves hprev (h before
// the step) and aux (LSTM: c before the step; GRU: W_hn h + b_hn), as the CPU kernels do; at
// masked positions hprev and aux are 0 and the gates are left as they are (backward ignores them).
#include "common/workspace.h"
#include "cuda/cells/cell.cuh"
#include "cuda/step.cuh"

namespace fastrnn_cuda {
namespace {

struct HRows {  // A(m, k) = h[b0 + m][k]
  const float* h;
  int H, B, b0;
  __device__ __forceinline__ const float* operator()(int m, int k) const {
    const int b = b0 + m;
    return b < B ? h + (long long)b * H + k : nullptr;
  }
};

template <int G, int UJ>
struct GateCols {  // B(k, n) = W_hh[g*H + j0 + u][k] for tile column n = g*UJ + u
  const float* w;
  int H, j0;
  __device__ __forceinline__ const float* operator()(int k, int n) const {
    const int g = n / UJ, j = j0 + n % UJ;
    return j < H ? w + ((long long)g * H + j) * H + k : nullptr;
  }
};

// One step for the block's tile. COHERENT: h was written by other blocks of this launch.
template <Cell C, class Cfg, bool COHERENT>
__device__ __forceinline__ void step_body(const FwdStep& p, float* smem) {
  using Math = CudaCell<C>;
  constexpr int G = Math::G;
  constexpr int RJ = Cfg::RN, UJ = Cfg::BN / G;
  static_assert(Cfg::NGN == G, "one column group per gate");
  const int H = p.H, B = p.seq.B;
  const int j0 = blockIdx.x * UJ, b0 = blockIdx.y * Cfg::BM;

  float acc[Cfg::TM][Cfg::TN];
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = 0.0f;
  const long long BH = (long long)B * H;
  const float* hin = p.hmask ? p.hmbuf + (p.s & 1) * BH : p.hcur;  // recurrent dropout: h * hmask
  float* hmnext = p.hmask ? p.hmbuf + ((p.s + 1) & 1) * BH : nullptr;
  tile_product<Cfg, true, true, COHERENT>(0, H, HRows{hin, H, B, b0}, GateCols<G, UJ>{p.w_hh, H, j0}, smem, acc);

  if (!Cfg::leader()) return;  // with K split inside the block, group 0 holds the tile
  const int tx = Cfg::tx(), ty = Cfg::ty();
  const int t = p.seq.time_of_step(p.s);
  const long long GH = (long long)G * H;
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i) {
    const int b = b0 + Cfg::row(i, ty);
    if (b >= B) continue;
    const bool valid = p.seq.valid(t, b);
    const long long pos = p.seq.pos(t, b);
#pragma unroll
    for (int r = 0; r < RJ; ++r) {
      const int j = j0 + tx * RJ + r;
      if (j >= H) continue;
      const long long hb = (long long)b * H + j, py = pos * H + j;
      const float hp = p.hcur[hb];  // written by this thread at the previous step (or before the launch)
      if (!valid) {  // masked: carry the state, output 0
        p.hnext[hb] = hp;
        if (hmnext) hmnext[hb] = hp * p.hmask[hb];
        p.y[py] = 0.0f;
        if (p.hprev) p.hprev[py] = 0.0f;
        if (p.aux) p.aux[py] = 0.0f;
        continue;
      }
      float* xg = p.xw + pos * GH + j;
      const bool training = p.hprev != nullptr;
      const float h = Math::template forward<RJ>(p, &acc[i][r], xg, H, j, hb, py, hp, training);
      p.hnext[hb] = h;
      if (hmnext) hmnext[hb] = h * p.hmask[hb];
      p.y[py] = h;
      if (training) p.hprev[py] = hp;
    }
  }
}

template <Cell C, class Cfg>
__global__ void __launch_bounds__(Cfg::NT) forward_step(FwdStep p) {
  __shared__ __align__(16) float smem[Cfg::SMEM_FLOATS];
  step_body<C, Cfg, false>(p, smem);
}

// The whole time loop in one cooperative launch; h in the ping-pong buffers hbuf[2][B][H].
template <Cell C, class Cfg>
__global__ void __launch_bounds__(Cfg::NT) forward_loop(FwdStep p, float* hbuf, int T, unsigned* barrier) {
  __shared__ __align__(16) float smem[Cfg::SMEM_FLOATS];
  const long long BH = (long long)p.seq.B * p.H;
  const unsigned nblocks = gridDim.x * gridDim.y;
  unsigned target = 0;
  for (int s = 0; s < T; ++s) {
    p.s = s;
    p.hcur = hbuf + (s & 1) * BH;
    p.hnext = hbuf + ((s + 1) & 1) * BH;
    step_body<C, Cfg, true>(p, smem);
    if (s + 1 < T) grid_barrier(barrier, nblocks, target);
  }
}

template <Cell C, class Cfg>
void run_steps(FwdStep p, int64_t T, int64_t B, int64_t H, float* hbuf, unsigned* barrier, cudaStream_t st) {
  constexpr int G = CudaCell<C>::G;
  const dim3 grid((unsigned)ceil_div(H, Cfg::BN / G), (unsigned)ceil_div(B, Cfg::BM));
  if (use_persistent(forward_loop<C, Cfg>, Cfg::NT, (int64_t)grid.x * grid.y, T)) {
    check(cudaMemsetAsync(barrier, 0, sizeof(unsigned), st), "zero the barrier");
    int steps = (int)T;
    void* args[] = {&p, &hbuf, &steps, &barrier};
    if (launch_cooperative((const void*)forward_loop<C, Cfg>, grid, dim3(Cfg::NT), args, st)) {
      count_time_loop(0, true);
      return;
    }
  }
  for (int64_t s = 0; s < T; ++s) {
    p.s = (int)s;
    p.hcur = hbuf + (s & 1) * B * H;
    p.hnext = hbuf + ((s + 1) & 1) * B * H;
    forward_step<C, Cfg><<<grid, Cfg::NT, 0, st>>>(p);
    check_launch("forward step");
  }
  count_time_loop(0, false);
}

template <Cell C>
void run_steps_for_cell(FwdStep p, const Dims& d, float* hbuf, unsigned* barrier, cudaStream_t st) {
  constexpr int G = CudaCell<C>::G;
  switch (pick_tiles(forward_tiles_override(), d.B, d.H, FwdL<G>::BM, FwdL<G>::BN / G)) {
    case 0: run_steps<C, FwdL<G>>(p, d.T, d.B, d.H, hbuf, barrier, st); break;
    default: run_steps<C, FwdS<G>>(p, d.T, d.B, d.H, hbuf, barrier, st); break;
  }
}

// The forward workspace, in order: the grid-barrier counter (16 bytes), the h ping-pong buffers,
// the x projection (inference only: when training it goes straight into the saved-gates buffer),
// the split-K partial sums of the input-projection GEMM (if any), and with recurrent dropout
// the ping-pong buffers of h * hmask.
struct ForwardWorkspace {
  unsigned* barrier;
  float* hbuf;  // [2][B][H]
  float* xw;    // [T*B, G*H], or nullptr when training
  float* gemm;  // the input projection's split-K sums
  float* hmbuf;  // [2][B][H] (recurrent dropout), else nullptr
  size_t floats;
};

ForwardWorkspace forward_workspace(const Dims& d, bool training, float* base) {
  const int64_t G = gate_count(d.cell), N = d.T * d.B;
  fastrnn::WorkspaceLayout ws(base);
  ForwardWorkspace w{};
  w.barrier = reinterpret_cast<unsigned*>(ws.take(4));
  w.hbuf = ws.take((size_t)(2 * d.B * d.H));
  w.xw = training ? nullptr : ws.take((size_t)(N * G * d.H));
  w.gemm = ws.take(gemm_workspace_floats(N, G * d.H, d.I));
  w.hmbuf = d.hmask ? ws.take((size_t)(2 * d.B * d.H)) : nullptr;
  w.floats = ws.floats();
  return w;
}

}  // namespace

cudaError_t forward_kernel_attributes(cudaFuncAttributes* attr) {
  return cudaFuncGetAttributes(attr, (const void*)forward_step<Cell::LSTM, FwdS<4>>);
}

size_t forward_workspace_floats(const Dims& d, bool training) { return forward_workspace(d, training, nullptr).floats; }

void forward(const ForwardArgs& a) {
  const Dims& d = a.d;
  const bool lstm = d.cell == Cell::LSTM, gru = d.cell == Cell::GRU;
  if ((int)d.cell < 0 || (int)d.cell > 3) throw std::invalid_argument("fastrnn CUDA forward: cell must be 0..3");
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1) throw std::invalid_argument("fastrnn CUDA forward: T, B, I, H must be >= 1");
  if (d.T > INT32_MAX || d.B > INT32_MAX || d.H > INT32_MAX || ceil_div(d.B, 8) > MAX_GRID_Y)
    throw std::invalid_argument("fastrnn CUDA forward: shape too large for the step kernels");
  if (!a.x || !a.w_ih || !a.w_hh || !a.b_ih || !a.y || !a.h_n || (gru && !a.b_hh) || (lstm && !a.c_n))
    throw std::invalid_argument("fastrnn CUDA forward: a required pointer is null");
  const bool training = a.gates != nullptr;
  if (training && (!a.hprev || ((lstm || gru) && !a.aux)))
    throw std::invalid_argument("fastrnn CUDA forward: training needs gates, hprev and aux");
  const ForwardWorkspace ws = forward_workspace(d, training, a.workspace);
  if (a.workspace_floats < ws.floats || !a.workspace)
    throw std::invalid_argument("fastrnn CUDA forward: workspace too small");

  cudaStream_t st = as_stream(a.stream);
  const int64_t G = gate_count(d.cell), GH = G * d.H, N = d.T * d.B, B = d.B, H = d.H;
  unsigned* barrier = ws.barrier;
  float* hbuf = ws.hbuf;
  float* xw = training ? a.gates : ws.xw;

  // 1. input projection: xw[N, GH] = x[N, I] W_ih^T + b_ih
  CudaGemmArgs xproj{};
  xproj.M = N, xproj.N = GH, xproj.K = d.I;
  xproj.A = a.x, xproj.rsa = d.I, xproj.csa = 1;     // x [N, I]
  xproj.B = a.w_ih, xproj.rsb = 1, xproj.csb = d.I;  // W_ih^T
  xproj.C = xw, xproj.ldc = GH;
  xproj.accumulate = false, xproj.bias = a.b_ih;
  xproj.workspace = ws.gemm, xproj.workspace_floats = gemm_workspace_floats(N, GH, d.I);
  xproj.stream = a.stream;
  gemm(xproj);

  // 2. initial state
  const size_t state_bytes = sizeof(float) * (size_t)(B * H);
  if (a.h0) check(cudaMemcpyAsync(hbuf, a.h0, state_bytes, cudaMemcpyDeviceToDevice, st), "copy h0");
  else check(cudaMemsetAsync(hbuf, 0, state_bytes, st), "zero h0");
  if (lstm) {
    if (a.c0) check(cudaMemcpyAsync(a.c_n, a.c0, state_bytes, cudaMemcpyDeviceToDevice, st), "copy c0");
    else check(cudaMemsetAsync(a.c_n, 0, state_bytes, st), "zero c0");
  }
  if (d.hmask) {  // the first product's input: h0 * hmask
    if (a.h0) scale_rows(a.h0, d.hmask, ws.hmbuf, B, H, 1, B, true, a.stream);
    else check(cudaMemsetAsync(ws.hmbuf, 0, state_bytes, st), "zero h0 * hmask");
  }

  // 3. the time loop
  FwdStep p{};
  p.seq = make_seq(d);
  p.H = (int)H;
  p.w_hh = a.w_hh;
  p.b_hh = a.b_hh;
  p.xw = xw;
  p.c = a.c_n;
  p.y = a.y;
  p.hprev = training ? a.hprev : nullptr;
  p.aux = training ? a.aux : nullptr;
  p.hmask = d.hmask;
  p.hmbuf = ws.hmbuf;
  switch (d.cell) {
    case Cell::RNN_TANH: run_steps_for_cell<Cell::RNN_TANH>(p, d, hbuf, barrier, st); break;
    case Cell::RNN_RELU: run_steps_for_cell<Cell::RNN_RELU>(p, d, hbuf, barrier, st); break;
    case Cell::LSTM: run_steps_for_cell<Cell::LSTM>(p, d, hbuf, barrier, st); break;
    default: run_steps_for_cell<Cell::GRU>(p, d, hbuf, barrier, st); break;
  }

  // 4. final state
  check(cudaMemcpyAsync(a.h_n, hbuf + (d.T & 1) * B * H, state_bytes, cudaMemcpyDeviceToDevice, st), "copy h_n");
}

}  // namespace fastrnn_cuda
