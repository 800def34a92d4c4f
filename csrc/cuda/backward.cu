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
#include "cuda/step.cuh"

namespace fastrnn_cuda {
namespace {

struct BwdStep {
  Seq seq;
  int H;
  const float* w_hh;     // [G*H, H]
  const float* gates;    // [T*B, G*H]
  const float* hprev;    // [T*B, H]
  const float* aux;      // [T*B, H] or nullptr
  const float* dy;       // [T*B, H] or nullptr
  float* dgi;            // [T*B, G*H] x-side gate gradients
  float* dgh;            // [T*B, G*H] h-side (GRU), == dgi otherwise
  const float* dgs_in;   // [B, G*H] compact h-side dG of the step whose product runs
  const float* pass_in;  // [B, H]
  float* dgs_out;        // [B, G*H] of step s_point
  float* pass_out;       // [B, H]
  float* dc;             // [B, H] carried dc (LSTM), in place
  const float* dh_in;    // carried dh when there is no product (first launch), or nullptr (zeros)
  float* dh_out;         // dh0 (last launch)
  float* dc_out;         // dc0 (last launch, LSTM)
  int product;           // 1: dh = pass_in + dgs_in W_hh; 0: dh = dh_in (or 0)
  int zero_dc;           // chunk border: the carried dc is 0
  int s_point;           // the step whose pointwise pass runs here, or -1 (write dh0/dc0)
};

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
template <int C, class Cfg, bool COHERENT>
__device__ __forceinline__ void step_body(const BwdStep& p, float* smem) {
  constexpr int G = C == LSTM ? 4 : (C == GRU ? 3 : 1);
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
      float dh = p.product ? p.pass_in[hb] + acc[i][r] : (p.dh_in ? p.dh_in[hb] : 0.0f);
      float dc = (C == LSTM && !p.zero_dc) ? p.dc[hb] : 0.0f;
      if (p.s_point < 0) {  // after step 0: the gradients of the initial state
        p.dh_out[hb] = dh;
        if (C == LSTM) p.dc_out[hb] = dc;
        continue;
      }
      float* dgs = p.dgs_out + (long long)b * GH + j;
      float* dgi = p.dgi + pos * GH + j;
      float* dgh = p.dgh + pos * GH + j;
      if (!valid) {  // masked: the state gradients pass through unchanged, this position's dG is 0
#pragma unroll
        for (int g = 0; g < G; ++g) {
          dgi[g * H] = 0.0f;
          if (C == GRU) dgh[g * H] = 0.0f;
          dgs[g * H] = 0.0f;
        }
        p.pass_out[hb] = dh;
        if (C == LSTM) p.dc[hb] = dc;
        continue;
      }
      const long long py = pos * H + j;
      if (p.dy) dh += p.dy[py];
      const float* gt = p.gates + pos * GH + j;
      if constexpr (C == LSTM) {
        const float ig = gt[0], fg = gt[H], gg = gt[2 * H], og = gt[3 * H];
        const float cprev = p.aux[py];
        const float c = fmaf(fg, cprev, ig * gg);  // as in the forward pass
        const float tc = tanhf(c);
        dc = fmaf(dh * og, 1.0f - tc * tc, dc);
        const float dzi = (dc * gg) * (ig * (1.0f - ig));
        const float dzf = (dc * cprev) * (fg * (1.0f - fg));
        const float dzg = (dc * ig) * (1.0f - gg * gg);
        const float dzo = (dh * tc) * (og * (1.0f - og));
        dgi[0] = dgs[0] = dzi;
        dgi[H] = dgs[H] = dzf;
        dgi[2 * H] = dgs[2 * H] = dzg;
        dgi[3 * H] = dgs[3 * H] = dzo;
        p.dc[hb] = dc * fg;
        p.pass_out[hb] = 0.0f;
      } else if constexpr (C == GRU) {
        const float rg = gt[0], zg = gt[H], ng = gt[2 * H];
        const float hn = p.aux[py], h0 = p.hprev[py];
        const float dz = dh * (h0 - ng);
        const float dn = dh - dh * zg;  // dh (1 - z)
        const float dan = dn * (1.0f - ng * ng);
        const float dzr = (dan * hn) * (rg * (1.0f - rg));
        const float dzz = dz * (zg * (1.0f - zg));
        const float dhn = dan * rg;
        dgi[0] = dgh[0] = dgs[0] = dzr;
        dgi[H] = dgh[H] = dgs[H] = dzz;
        dgi[2 * H] = dan;
        dgh[2 * H] = dgs[2 * H] = dhn;
        p.pass_out[hb] = dh * zg;
      } else {
        const float h = gt[0];
        const float dz = C == RNN_RELU ? dh * (h > 0.0f ? 1.0f : 0.0f) : dh * (1.0f - h * h);
        dgi[0] = dgs[0] = dz;
        p.pass_out[hb] = 0.0f;
      }
    }
  }
}

template <int C, class Cfg>
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
template <int C, class Cfg>
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

template <int C, class Cfg>
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

template <int C>
void run_steps_for_cell(BwdStep p, const Shape& d, const BwdLoop& L, unsigned* barrier, cudaStream_t st) {
  switch (pick_tiles(backward_tiles_override(), d.B, d.H, BwdL::BM, BwdL::BN)) {
    case 0: run_steps<C, BwdL>(p, L, d.B, d.H, barrier, st); break;
    default: run_steps<C, BwdS>(p, L, d.B, d.H, barrier, st); break;
  }
}

size_t gemm_ws_max(const Shape& d) {
  const int64_t GH = gate_count(d.cell) * d.H, N = d.T * d.B;
  return std::max({gemm_workspace_floats(N, d.I, GH), gemm_workspace_floats(GH, d.I, N),
                   gemm_workspace_floats(GH, d.H, N)});
}

}  // namespace

cudaError_t backward_kernel_attributes(cudaFuncAttributes* attr) {
  return cudaFuncGetAttributes(attr, (const void*)backward_step<LSTM, BwdS>);
}

size_t backward_workspace_floats(const Shape& d) {
  const int64_t GH = gate_count(d.cell) * d.H, N = d.T * d.B;
  size_t n = (size_t)(N * GH);                        // dG, x side
  if (d.cell == GRU) n += (size_t)(N * GH);           // dG, h side
  n += (size_t)(2 * d.B * GH + 2 * d.B * d.H);        // dgs, pass (ping-pong)
  n += (size_t)(d.B * d.H);                           // carried dc
  n += 4;                                             // grid-barrier counter (16 bytes)
  return n + gemm_ws_max(d);
}

void backward(const BackwardArgs& a) {
  const Shape& d = a.d;
  if (d.cell < 0 || d.cell > 3) throw std::invalid_argument("fastrnn CUDA backward: cell must be 0..3");
  if (d.T < 1 || d.B < 1 || d.I < 1 || d.H < 1) throw std::invalid_argument("fastrnn CUDA backward: T, B, I, H must be >= 1");
  if (d.T > INT32_MAX || d.B > INT32_MAX || gate_count(d.cell) * d.H > INT32_MAX || ceil_div(d.B, 8) > MAX_GRID_Y)
    throw std::invalid_argument("fastrnn CUDA backward: shape too large for the step kernels");
  if (a.bptt_steps < 0) throw std::invalid_argument("fastrnn CUDA backward: bptt_steps must be >= 0");
  const bool lstm = d.cell == LSTM, gru = d.cell == GRU;
  if (!a.x || !a.w_ih || !a.w_hh || !a.gates || !a.hprev || ((lstm || gru) && !a.aux) || !a.dh0 ||
      (lstm && !a.dc0) || !a.dw_ih || !a.dw_hh || !a.db_ih || (gru && !a.db_hh))
    throw std::invalid_argument("fastrnn CUDA backward: a required pointer is null");
  if (a.workspace_floats < backward_workspace_floats(d) || !a.workspace)
    throw std::invalid_argument("fastrnn CUDA backward: workspace too small");

  cudaStream_t st = as_stream(a.stream);
  const int64_t G = gate_count(d.cell), GH = G * d.H, N = d.T * d.B, B = d.B, H = d.H;
  float* ws = a.workspace;
  float* dgi = ws;
  ws += N * GH;
  float* dgh = dgi;
  if (gru) {
    dgh = ws;
    ws += N * GH;
  }
  float* dgs = ws;
  ws += 2 * B * GH;
  float* pass = ws;
  ws += 2 * B * H;
  float* dc = ws;
  ws += B * H;
  unsigned* barrier = reinterpret_cast<unsigned*>(ws);
  ws += 4;
  const size_t gemm_ws = a.workspace_floats - (size_t)(ws - a.workspace);

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
  const BwdLoop L{dgs, pass, B * GH, B * H, (int)d.T, a.bptt_steps, a.dh0, a.dc0, a.dh_n};
  switch (d.cell) {
    case RNN_TANH: run_steps_for_cell<RNN_TANH>(p, d, L, barrier, st); break;
    case RNN_RELU: run_steps_for_cell<RNN_RELU>(p, d, L, barrier, st); break;
    case LSTM: run_steps_for_cell<LSTM>(p, d, L, barrier, st); break;
    default: run_steps_for_cell<GRU>(p, d, L, barrier, st); break;
  }

  // Bias gradients, then the weight and input gradients as single GEMMs over all T*B positions.
  column_sums(dgi, N, GH, a.db_ih, a.stream);
  if (gru) column_sums(dgh, N, GH, a.db_hh, a.stream);
  if (a.dx) gemm(GemmArgs{N, d.I, GH, dgi, GH, 1, a.w_ih, d.I, 1, a.dx, d.I, false, nullptr, ws, gemm_ws, a.stream});
  gemm(GemmArgs{GH, d.I, N, dgi, 1, GH, a.x, d.I, 1, a.dw_ih, d.I, false, nullptr, ws, gemm_ws, a.stream});
  gemm(GemmArgs{GH, H, N, dgh, 1, GH, a.hprev, H, 1, a.dw_hh, H, false, nullptr, ws, gemm_ws, a.stream});
}

}  // namespace fastrnn_cuda
