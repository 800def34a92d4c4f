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
#include "cuda/step.cuh"

namespace fastrnn_cuda {
namespace {

struct FwdStep {
  Seq seq;
  int H;
  const float* w_hh;  // [G*H, H]
  const float* b_hh;  // [G*H] (GRU)
  float* xw;          // [T*B, G*H]: x projection in, activated gates out when training
  const float* hcur;  // [B, H]
  float* hnext;       // [B, H]
  float* c;           // [B, H] LSTM cell state, updated in place
  float* y;           // [T*B, H]
  float* hprev;       // [T*B, H] or nullptr (inference)
  float* aux;         // [T*B, H] or nullptr
  int s;              // processing step
};

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
template <int C, class Cfg, bool COHERENT>
__device__ __forceinline__ void step_body(const FwdStep& p, float* smem) {
  constexpr int G = C == LSTM ? 4 : (C == GRU ? 3 : 1);
  constexpr int RJ = Cfg::RN, UJ = Cfg::BN / G;
  static_assert(Cfg::NGN == G, "one column group per gate");
  const int H = p.H, B = p.seq.B;
  const int j0 = blockIdx.x * UJ, b0 = blockIdx.y * Cfg::BM;

  float acc[Cfg::TM][Cfg::TN];
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = 0.0f;
  tile_product<Cfg, true, true, COHERENT>(0, H, HRows{p.hcur, H, B, b0}, GateCols<G, UJ>{p.w_hh, H, j0}, smem, acc);

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
        p.y[py] = 0.0f;
        if (p.hprev) p.hprev[py] = 0.0f;
        if (p.aux) p.aux[py] = 0.0f;
        continue;
      }
      float* xg = p.xw + pos * GH + j;
      const bool training = p.hprev != nullptr;
      float h;
      if constexpr (C == LSTM) {
        const float ig = sigmoidf_(acc[i][0 * RJ + r] + xg[0]);
        const float fg = sigmoidf_(acc[i][1 * RJ + r] + xg[H]);
        const float gg = tanhf(acc[i][2 * RJ + r] + xg[2 * H]);
        const float og = sigmoidf_(acc[i][3 * RJ + r] + xg[3 * H]);
        const float cprev = p.c[hb];
        const float c = fmaf(fg, cprev, ig * gg);
        h = og * tanhf(c);
        p.c[hb] = c;
        if (training) {
          xg[0] = ig, xg[H] = fg, xg[2 * H] = gg, xg[3 * H] = og;
          p.aux[py] = cprev;
        }
      } else if constexpr (C == GRU) {
        const float rg = sigmoidf_(xg[0] + (acc[i][0 * RJ + r] + p.b_hh[j]));
        const float zg = sigmoidf_(xg[H] + (acc[i][1 * RJ + r] + p.b_hh[H + j]));
        const float hn = acc[i][2 * RJ + r] + p.b_hh[2 * H + j];
        const float ng = tanhf(fmaf(rg, hn, xg[2 * H]));
        h = fmaf(zg, hp - ng, ng);  // (1 - z) n + z h
        if (training) {
          xg[0] = rg, xg[H] = zg, xg[2 * H] = ng;
          p.aux[py] = hn;
        }
      } else {
        const float pre = acc[i][r] + xg[0];
        h = C == RNN_RELU ? reluf_(pre) : tanhf(pre);
        if (training) xg[0] = h;
      }
      p.hnext[hb] = h;
      p.y[py] = h;
      if (training) p.hprev[py] = hp;
    }
  }
}

template <int C, class Cfg>
__global__ void __launch_bounds__(Cfg::NT) forward_step(FwdStep p) {
  __shared__ __align__(16) float smem[Cfg::SMEM_FLOATS];
  step_body<C, Cfg, false>(p, smem);
}

// The whole time loop in one cooperative launch; h in the ping-pong buffers hbuf[2][B][H].
template <int C, class Cfg>
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

template <int C, class Cfg>
void run_steps(FwdStep p, int64_t T, int64_t B, int64_t H, float* hbuf, unsigned* barrier, cudaStream_t st) {
  constexpr int G = C == LSTM ? 4 : (C == GRU ? 3 : 1);
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

template <int C>
void run_steps_for_cell(FwdStep p, const Shape& d, float* hbuf, unsigned* barrier, cudaStream_t st) {
  constexpr int G = C == LSTM ? 4 : (C == GRU ? 3 : 1);
  switch (pick_tiles(forward_tiles_override(), d.B, d.H, FwdL<G>::BM, FwdL<G>::BN / G)) {
    case 0: run_steps<C, FwdL<G>>(p, d.T, d.B, d.H, hbuf, barrier, st); break;
    default: run_steps<C, FwdS<G>>(p, d.T, d.B, d.H, hbuf, barrier, st); break;
  }
}

}  // namespace

cudaError_t forward_kernel_attributes(cudaFuncAttributes* attr) {
  return cudaFuncGetAttributes(attr, (const void*)forward_step<LSTM, FwdS<4>>);
}

size_t forward_workspace_floats(const Shape& d, bool training) {
  const int64_t G = gate_count(d.cell), N = d.T * d.B;
  size_t n = 4 + (size_t)(2 * d.B * d.H);               // grid-barrier counter (16 bytes), h ping-pong
  if (!training) n += (size_t)(N * G * d.H);             // x projection
  n += gemm_workspace_floats(N, G * d.H, d.I);           // its split-K partials, if any
  return n;
}

void forward(const ForwardArgs& a) {
  const Shape& d = a.d;
  if (d.cell < 0 || d.cell > 3) throw std::invalid_argument("fastrnn CUDA forward: cell must be 0..3");
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1) throw std::invalid_argument("fastrnn CUDA forward: T, B, I, H must be >= 1");
  if (d.T > INT32_MAX || d.B > INT32_MAX || d.H > INT32_MAX || ceil_div(d.B, 8) > MAX_GRID_Y)
    throw std::invalid_argument("fastrnn CUDA forward: shape too large for the step kernels");
  if (!a.x || !a.w_ih || !a.w_hh || !a.b_ih || !a.y || !a.h_n || (d.cell == GRU && !a.b_hh) || (d.cell == LSTM && !a.c_n))
    throw std::invalid_argument("fastrnn CUDA forward: a required pointer is null");
  const bool training = a.gates != nullptr;
  if (training && (!a.hprev || ((d.cell == LSTM || d.cell == GRU) && !a.aux)))
    throw std::invalid_argument("fastrnn CUDA forward: training needs gates, hprev and aux");
  if (a.workspace_floats < forward_workspace_floats(d, training) || !a.workspace)
    throw std::invalid_argument("fastrnn CUDA forward: workspace too small");

  cudaStream_t st = as_stream(a.stream);
  const int64_t G = gate_count(d.cell), GH = G * d.H, N = d.T * d.B, B = d.B, H = d.H;
  float* ws = a.workspace;
  unsigned* barrier = reinterpret_cast<unsigned*>(ws);
  ws += 4;
  float* hbuf = ws;
  ws += 2 * B * H;
  float* xw = training ? a.gates : ws;
  if (!training) ws += N * GH;
  const size_t gemm_ws = a.workspace_floats - (size_t)(ws - a.workspace);

  // 1. input projection: xw[N, GH] = x[N, I] W_ih^T + b_ih
  gemm(GemmArgs{N, GH, d.I, a.x, d.I, 1, a.w_ih, 1, d.I, xw, GH, false, a.b_ih, ws, gemm_ws, a.stream});

  // 2. initial state
  const size_t state_bytes = sizeof(float) * (size_t)(B * H);
  if (a.h0) check(cudaMemcpyAsync(hbuf, a.h0, state_bytes, cudaMemcpyDeviceToDevice, st), "copy h0");
  else check(cudaMemsetAsync(hbuf, 0, state_bytes, st), "zero h0");
  if (d.cell == LSTM) {
    if (a.c0) check(cudaMemcpyAsync(a.c_n, a.c0, state_bytes, cudaMemcpyDeviceToDevice, st), "copy c0");
    else check(cudaMemsetAsync(a.c_n, 0, state_bytes, st), "zero c0");
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
  switch (d.cell) {
    case RNN_TANH: run_steps_for_cell<RNN_TANH>(p, d, hbuf, barrier, st); break;
    case RNN_RELU: run_steps_for_cell<RNN_RELU>(p, d, hbuf, barrier, st); break;
    case LSTM: run_steps_for_cell<LSTM>(p, d, hbuf, barrier, st); break;
    default: run_steps_for_cell<GRU>(p, d, hbuf, barrier, st); break;
  }

  // 4. final state
  check(cudaMemcpyAsync(a.h_n, hbuf + (d.T & 1) * B * H, state_bytes, cudaMemcpyDeviceToDevice, st), "copy h_n");
}

}  // namespace fastrnn_cuda
