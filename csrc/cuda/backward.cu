// backward.cu — backpropagation through time (full or truncated) for SimpleRNN, LSTM and GRU.
//
// Per processing step, from s = T-1 down to 0, the state gradient goes through two stages:
//   pointwise(s): dh = dh_carried + dy[pos]; gate gradients dG (written at the position for the
//                 weight GEMMs, and as a compact row dgs[b] for the recurrent product), the
//                 carried dc (LSTM) and the part of dh_prev that bypasses W_hh ("pass": GRU dh*z,
//                 the whole dh at a masked step, else 0);
//   product(s):   dh_prev[b, j] = pass[b, j] + sum_k dgs[b, k] W_hh[k, j]  (k < G*H).
// Pointwise work is elementwise in (b, j), so ONE kernel per step does product(s) for a tile of
// (rows, units) and then, in its epilogue, pointwise(s-1) for the same (rows, units): T+1 launches
// (the first is pointwise(T-1) alone, the last product(0) alone, writing dh0/dc0), or one
// cooperative launch with a grid barrier between them where the grid fits (step.cuh). dgs and pass are
// double-buffered (the product of step s reads every column of dgs[s&1] while other blocks write
// dgs[(s-1)&1]); dc is updated in place (each element belongs to one thread).
// Truncation: at a chunk border s (s > 0, s % bptt_steps == 0) the product is skipped and the
// carried dh and dc are zero.
// After the loop: bias gradients as column sums of dG, then dx = dG W_ih, dW_ih = dG^T x and
// dW_hh = dG_h^T hprev as single GEMMs over all T*B positions (GRU's h-side dG differs from the
// x side in the n gate: r * dn; the others share one buffer).
#include "common/workspace.h"
#include "cuda/cells/cell.cuh"
#include "cuda/step.cuh"

namespace fastrnn_cuda {
namespace {

struct GRows {  // A(m, k) = dgs[b0 + m][k]
  const float* g;
  int K, B, b0;
  __device__ __forceinline__ const float* operator()(int m, int k) const {
    const int b = b0 + m;
    return b < B ? g + (long long)b * K + k : nullptr;
  }
};

struct WCols {  // B(k, n) = W_hh[k][j0 + n]
  const float* w;
  int H, j0;
  __device__ __forceinline__ const float* operator()(int k, int n) const {
    const int j = j0 + n;
    return j < H ? w + (long long)k * H + j : nullptr;
  }
};

// One launch's work for the block's tile. COHERENT: dgs_in was written by other blocks of this launch.
template <Cell C, class Cfg, bool COHERENT>
__device__ __forceinline__ void step_body(const BwdStep& p, float* smem) {
  using Math = CudaCell<C>;
  constexpr int G = Math::G;
  constexpr int RJ = Cfg::RN, UJ = Cfg::BN;
  static_assert(Cfg::NGN == 1, "backward tiles have one column group");
  const int H = p.H, B = p.seq.B, GH = G * H;
  const int j0 = blockIdx.x * UJ, b0 = blockIdx.y * Cfg::BM;

  float acc[Cfg::TM][Cfg::TN];
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = 0.0f;
  if (p.product)  // uniform over the grid
    tile_product<Cfg, true, false, COHERENT>(0, GH, GRows{p.dgs_in, GH, B, b0}, WCols{p.w_hh, H, j0}, smem, acc);

  if (!Cfg::leader()) return;  // with K split inside the block, group 0 holds the tile
  const int tx = Cfg::tx(), ty = Cfg::ty();
  const int t = p.s_point >= 0 ? p.seq.time_of_step(p.s_point) : 0;
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i) {
    const int b = b0 + Cfg::row(i, ty);
    if (b >= B) continue;
    const bool valid = p.s_point >= 0 && p.seq.valid(t, b);
    const long long pos = p.seq.pos(t, b);
#pragma unroll
    for (int r = 0; r < RJ; ++r) {
      const int j = j0 + tx * RJ + r;
      if (j >= H) continue;
      const long long hb = (long long)b * H + j;
      // recurrent dropout: the product saw h * hmask, its gradient is masked too (one FMA)
      float dh = p.product ? (p.hmask ? fmaf(acc[i][r], p.hmask[hb], p.pass_in[hb]) : p.pass_in[hb] + acc[i][r])
                           : (p.dh_in ? p.dh_in[hb] : 0.0f);
      float dc = (Math::kCellState && !p.zero_dc) ? p.dc[hb] : 0.0f;
      if (p.s_point < 0) {  // after step 0: the gradients of the initial state
        p.dh_out[hb] = dh;
        if (Math::kCellState) p.dc_out[hb] = dc;
        continue;
      }
      float* dgs = p.dgs_out + (long long)b * GH + j;
      float* dgi = p.dgi + pos * GH + j;
      float* dgh = p.dgh + pos * GH + j;
      if (!valid) {  // masked: the state gradients pass through unchanged, this position's dG is 0
#pragma unroll
        for (int g = 0; g < G; ++g) {
          dgi[g * H] = 0.0f;
          if (Math::kHiddenBias) dgh[g * H] = 0.0f;
          dgs[g * H] = 0.0f;
        }
        p.pass_out[hb] = dh;
        if (Math::kCellState) p.dc[hb] = dc;
        continue;
      }
      const long long py = pos * H + j;
      if (p.dy) dh += p.dy[py];
      const float* gt = p.gates + pos * GH + j;
      Math::backward(p, gt, dh, dc, dgi, dgh, dgs, H, hb, py);
    }
  }
}

template <Cell C, class Cfg>
__global__ void __launch_bounds__(Cfg::NT) backward_step(BwdStep p) {
  __shared__ __align__(16) float smem[Cfg::SMEM_FLOATS];
  step_body<C, Cfg, false>(p, smem);
}

// The launches of the time loop (see run_steps): set p for launch number `phase` (0 .. T):
// 0 = pointwise(T-1) from dh_n; 1 .. T-1 = product(s) + pointwise(s-1) for s = T - phase;
// T = product(0) -> dh0, dc0.
struct BwdLoop {
  float* dgs;           // [2][B][G*H]
  float* pass;          // [2][B][H]
  long long bgh, bh;    // B*G*H, B*H
  int T;
  long long k;          // bptt_steps (0 = full)
  float* dh0;
  float* dc0;
  const float* dh_n;
  __host__ __device__ void set(BwdStep& p, int phase) const {
    if (phase == 0) {
      p.product = 0;
      p.dh_in = dh_n;
      p.zero_dc = 0;
      p.s_point = T - 1;
      p.dgs_out = dgs + ((T - 1) & 1) * bgh;
      p.pass_out = pass + ((T - 1) & 1) * bh;
    } else if (phase < T) {
      const int s = T - phase;
      const bool border = k > 0 && s % k == 0;
      p.product = border ? 0 : 1;
      p.zero_dc = border ? 1 : 0;
      p.dh_in = nullptr;
      p.dgs_in = dgs + (s & 1) * bgh;
      p.pass_in = pass + (s & 1) * bh;
      p.s_point = s - 1;
      p.dgs_out = dgs + ((s - 1) & 1) * bgh;
      p.pass_out = pass + ((s - 1) & 1) * bh;
    } else {
      p.product = 1;
      p.zero_dc = 0;
      p.dh_in = nullptr;
      p.dgs_in = dgs;
      p.pass_in = pass;
      p.s_point = -1;
      p.dh_out = dh0;
      p.dc_out = dc0;
    }
  }
};

// The whole time loop in one cooperative launch.
template <Cell C, class Cfg>
__global__ void __launch_bounds__(Cfg::NT) backward_loop(BwdStep p, BwdLoop L, unsigned* barrier) {
  __shared__ __align__(16) float smem[Cfg::SMEM_FLOATS];
  const unsigned nblocks = gridDim.x * gridDim.y;
  unsigned target = 0;
  for (int phase = 0; phase <= L.T; ++phase) {
    if (phase > 0) grid_barrier(barrier, nblocks, target);
    L.set(p, phase);
    step_body<C, Cfg, true>(p, smem);
  }
}

template <Cell C, class Cfg>
void run_steps(BwdStep p, const BwdLoop& L, int64_t B, int64_t H, unsigned* barrier, cudaStream_t st) {
  const dim3 grid((unsigned)ceil_div(H, Cfg::BN), (unsigned)ceil_div(B, Cfg::BM));
  if (use_persistent(backward_loop<C, Cfg>, Cfg::NT, (int64_t)grid.x * grid.y, (int64_t)L.T + 1)) {
    check(cudaMemsetAsync(barrier, 0, sizeof(unsigned), st), "zero the barrier");
    BwdLoop loop = L;
    void* args[] = {&p, &loop, &barrier};
    if (launch_cooperative((const void*)backward_loop<C, Cfg>, grid, dim3(Cfg::NT), args, st)) {
      count_time_loop(1, true);
      return;
    }
  }
  for (int phase = 0; phase <= L.T; ++phase) {
    L.set(p, phase);
    backward_step<C, Cfg><<<grid, Cfg::NT, 0, st>>>(p);
    check_launch("backward step");
  }
  count_time_loop(1, false);
}

template <Cell C>
void run_steps_for_cell(BwdStep p, const Dims& d, const BwdLoop& L, unsigned* barrier, cudaStream_t st) {
  switch (pick_tiles(backward_tiles_override(), d.B, d.H, BwdL::BM, BwdL::BN)) {
    case 0: run_steps<C, BwdL>(p, L, d.B, d.H, barrier, st); break;
    default: run_steps<C, BwdS>(p, L, d.B, d.H, barrier, st); break;
  }
}

size_t gemm_ws_max(const Dims& d) {
  const int64_t GH = gate_count(d.cell) * d.H, N = d.T * d.B;
  return std::max({gemm_workspace_floats(N, d.I, GH), gemm_workspace_floats(GH, d.I, N),
                   gemm_workspace_floats(GH, d.H, N)});
}

// The backward workspace, in order: the gate gradients at every position (x side; GRU also the h
// side), the compact h-side gate gradients of a step and the pass-through part of dh (both
// ping-pong), the carried dc, the grid-barrier counter (16 bytes), the split-K partial sums of
// the largest of the three weight/input GEMMs, and with recurrent dropout h_prev * hmask at every
// position (dW_hh's operand).
struct BackwardWorkspace {
  float* dgi;   // [T*B, G*H]
  float* dgh;   // [T*B, G*H] (GRU), else == dgi
  float* dgs;   // [2][B][G*H]
  float* pass;  // [2][B][H]
  float* dc;    // [B, H]
  unsigned* barrier;
  float* gemm;  // the weight GEMMs' split-K sums
  float* hpm;   // [T*B, H] (recurrent dropout), else nullptr
  size_t floats;
};

BackwardWorkspace backward_workspace(const Dims& d, float* base) {
  const int64_t GH = gate_count(d.cell) * d.H, N = d.T * d.B;
  fastrnn::WorkspaceLayout ws(base);
  BackwardWorkspace w{};
  w.dgi = ws.take((size_t)(N * GH));
  w.dgh = d.cell == Cell::GRU ? ws.take((size_t)(N * GH)) : w.dgi;
  w.dgs = ws.take((size_t)(2 * d.B * GH));
  w.pass = ws.take((size_t)(2 * d.B * d.H));
  w.dc = ws.take((size_t)(d.B * d.H));
  w.barrier = reinterpret_cast<unsigned*>(ws.take(4));
  w.gemm = ws.take(gemm_ws_max(d));
  w.hpm = d.hmask ? ws.take((size_t)(N * d.H)) : nullptr;
  w.floats = ws.floats();
  return w;
}

}  // namespace

cudaError_t backward_kernel_attributes(cudaFuncAttributes* attr) {
  return cudaFuncGetAttributes(attr, (const void*)backward_step<Cell::LSTM, BwdS>);
}

size_t backward_workspace_floats(const Dims& d) { return backward_workspace(d, nullptr).floats; }

void backward(const BackwardArgs& a) {
  const Dims& d = a.d;
  if ((int)d.cell < 0 || (int)d.cell > 3) throw std::invalid_argument("fastrnn CUDA backward: cell must be 0..3");
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1) throw std::invalid_argument("fastrnn CUDA backward: T, B, I, H must be >= 1");
  if (d.T > INT32_MAX || d.B > INT32_MAX || gate_count(d.cell) * d.H > INT32_MAX || ceil_div(d.B, 8) > MAX_GRID_Y)
    throw std::invalid_argument("fastrnn CUDA backward: shape too large for the step kernels");
  if (a.bptt_steps < 0) throw std::invalid_argument("fastrnn CUDA backward: bptt_steps must be >= 0");
  const bool lstm = d.cell == Cell::LSTM, gru = d.cell == Cell::GRU;
  if (!a.x || !a.w_ih || !a.w_hh || !a.gates || !a.hprev || ((lstm || gru) && !a.aux) || !a.dh0 ||
      (lstm && !a.dc0) || !a.dw_ih || !a.dw_hh || !a.db_ih || (gru && !a.db_hh))
    throw std::invalid_argument("fastrnn CUDA backward: a required pointer is null");
  const BackwardWorkspace ws = backward_workspace(d, a.workspace);
  if (a.workspace_floats < ws.floats || !a.workspace)
    throw std::invalid_argument("fastrnn CUDA backward: workspace too small");

  cudaStream_t st = as_stream(a.stream);
  const int64_t G = gate_count(d.cell), GH = G * d.H, N = d.T * d.B, B = d.B, H = d.H;
  float* dgi = ws.dgi;
  float* dgh = ws.dgh;
  float* dgs = ws.dgs;
  float* pass = ws.pass;
  float* dc = ws.dc;
  unsigned* barrier = ws.barrier;
  const size_t gemm_ws = gemm_ws_max(d);

  if (lstm) {
    const size_t bytes = sizeof(float) * (size_t)(B * H);
    if (a.dc_n) check(cudaMemcpyAsync(dc, a.dc_n, bytes, cudaMemcpyDeviceToDevice, st), "copy dc_n");
    else check(cudaMemsetAsync(dc, 0, bytes, st), "zero dc_n");
  }

  BwdStep p{};
  p.seq = make_seq(d);
  p.H = (int)H;
  p.w_hh = a.w_hh;
  p.gates = a.gates;
  p.hprev = a.hprev;
  p.aux = a.aux;
  p.dy = a.dy;
  p.dgi = dgi;
  p.dgh = dgh;
  p.dc = dc;
  p.hmask = d.hmask;
  const BwdLoop L{dgs, pass, B * GH, B * H, (int)d.T, a.bptt_steps, a.dh0, a.dc0, a.dh_n};
  switch (d.cell) {
    case Cell::RNN_TANH: run_steps_for_cell<Cell::RNN_TANH>(p, d, L, barrier, st); break;
    case Cell::RNN_RELU: run_steps_for_cell<Cell::RNN_RELU>(p, d, L, barrier, st); break;
    case Cell::LSTM: run_steps_for_cell<Cell::LSTM>(p, d, L, barrier, st); break;
    default: run_steps_for_cell<Cell::GRU>(p, d, L, barrier, st); break;
  }

  // Bias gradients, then the weight and input gradients as single GEMMs over all T*B positions.
  column_sums(dgi, N, GH, a.db_ih, a.stream);
  if (gru) column_sums(dgh, N, GH, a.db_hh, a.stream);
  CudaGemmArgs g{};
  g.accumulate = false, g.bias = nullptr;
  g.workspace = ws.gemm, g.workspace_floats = gemm_ws, g.stream = a.stream;
  if (a.dx) {  // dx = dG W_ih
    g.M = N, g.N = d.I, g.K = GH;
    g.A = dgi, g.rsa = GH, g.csa = 1;
    g.B = a.w_ih, g.rsb = d.I, g.csb = 1;
    g.C = a.dx, g.ldc = d.I;
    gemm(g);
  }
  // dW_ih = dG^T x
  g.M = GH, g.N = d.I, g.K = N;
  g.A = dgi, g.rsa = 1, g.csa = GH;
  g.B = a.x, g.rsb = d.I, g.csb = 1;
  g.C = a.dw_ih, g.ldc = d.I;
  gemm(g);
  // dW_hh = dG_h^T hprev (h_prev * hmask with recurrent dropout)
  if (d.hmask) scale_rows(a.hprev, d.hmask, ws.hpm, N, H, d.T, B, d.batch_first, a.stream);
  g.M = GH, g.N = H, g.K = N;
  g.A = dgh, g.rsa = 1, g.csa = GH;
  g.B = d.hmask ? ws.hpm : a.hprev, g.rsb = H, g.csb = 1;
  g.C = a.dw_hh, g.ldc = H;
  gemm(g);
}

}  // namespace fastrnn_cuda
