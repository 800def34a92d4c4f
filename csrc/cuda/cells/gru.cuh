// gru.cuh — the GRU cell in the CUDA step kernels (gates r, z, n; linear-before-reset; b_ih, b_hh).
//
// Forward (a = x W_ih^T + b_ih in xg, z_* = h W_hh^T):
//   r = sigmoid(a_r + (z_r + b_hr))   u = sigmoid(a_z + (z_z + b_hz))   (u is the update gate z)
//   hn = z_n + b_hn                   n = tanh(a_n + r * hn)
//   h = u * (h_prev - n) + n          ( = (1 - u) n + u h_prev )
// Saved: gates = (r, u, n), hprev = h_prev, aux = hn (W_hn h + b_hn).
// Backward:
//   dz = dh * (h_prev - n)   dn = dh (1 - u)   da_n = dn * (1 - n^2)
//   dz_r = da_n * hn * r(1-r)   dz_z = dz * u(1-u)
//   x side (dgi): (dz_r, dz_z, da_n); h side (dgh, dgs): (dz_r, dz_z, da_n * r)
//   pass = dh * u (dh_prev = pass + dgs W_hh)
#pragma once

namespace fastrnn_cuda {

template <>
struct CudaCell<Cell::GRU> {
  static constexpr int G = 3;
  static constexpr bool kCellState = false;
  static constexpr bool kHiddenBias = true;

  template <int ZS>
  __device__ __forceinline__ static float forward(const FwdStep& p, const float* z, float* xg, int H, int j,
                                                  long long hb, long long py, float hp, bool training) {
    const float rg = sigmoidf_(xg[0] + (z[0 * ZS] + p.b_hh[j]));
    const float zg = sigmoidf_(xg[H] + (z[1 * ZS] + p.b_hh[H + j]));
    const float hn = z[2 * ZS] + p.b_hh[2 * H + j];
    const float ng = tanhf(fmaf(rg, hn, xg[2 * H]));
    const float h = fmaf(zg, hp - ng, ng);  // (1 - z) n + z h
    if (training) {
      xg[0] = rg, xg[H] = zg, xg[2 * H] = ng;
      p.aux[py] = hn;
    }
    return h;
  }

  __device__ __forceinline__ static void backward(const BwdStep& p, const float* gt, float dh, float dc, float* dgi,
                                                  float* dgh, float* dgs, int H, long long hb, long long py) {
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
  }
};

}  // namespace fastrnn_cuda
