// lstm.cuh — the LSTM cell in the CUDA step kernels (gates i, f, g, o; one bias b = b_ih).
//
// Forward (z = h W_hh^T, xg = x W_ih^T + b):
//   i = sigmoid(z_i + xg_i)   f = sigmoid(z_f + xg_f)   g = tanh(z_g + xg_g)   o = sigmoid(z_o + xg_o)
//   c = f * c_prev + i * g    h = o * tanh(c)
// Saved: gates = (i, f, g, o), hprev = h_prev, aux = c_prev. c is updated in place in p.c.
// Backward (c recomputed from the saved gates and c_prev, as in the forward pass):
//   dc  += dh * o * (1 - tanh(c)^2)
//   dz_i = dc * g * i(1-i)   dz_f = dc * c_prev * f(1-f)   dz_g = dc * i * (1-g^2)
//   dz_o = dh * tanh(c) * o(1-o)
//   carried: dc_prev = dc * f; pass = 0 (dh_prev = dz W_hh only)
#pragma once

namespace fastrnn_cuda {

template <>
struct CudaCell<Cell::LSTM> {
  static constexpr int G = 4;
  static constexpr bool kCellState = true;
  static constexpr bool kHiddenBias = false;

  template <int ZS>
  __device__ __forceinline__ static float forward(const FwdStep& p, const float* z, float* xg, int H, int j,
                                                  long long hb, long long py, float hp, bool training) {
    const float ig = sigmoidf_(z[0 * ZS] + xg[0]);
    const float fg = sigmoidf_(z[1 * ZS] + xg[H]);
    const float gg = tanhf(z[2 * ZS] + xg[2 * H]);
    const float og = sigmoidf_(z[3 * ZS] + xg[3 * H]);
    const float cprev = p.c[hb];
    const float c = fmaf(fg, cprev, ig * gg);
    const float h = og * tanhf(c);
    p.c[hb] = c;
    if (training) {
      xg[0] = ig, xg[H] = fg, xg[2 * H] = gg, xg[3 * H] = og;
      p.aux[py] = cprev;
    }
    return h;
  }

  __device__ __forceinline__ static void backward(const BwdStep& p, const float* gt, float dh, float dc, float* dgi,
                                                  float* dgh, float* dgs, int H, long long hb, long long py) {
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
  }
};

}  // namespace fastrnn_cuda
