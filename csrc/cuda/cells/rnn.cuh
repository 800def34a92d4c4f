// rnn.cuh — the SimpleRNN cells in the CUDA step kernels (one gate; tanh or relu; bias b = b_ih).
//
// Forward:  h = act(z + xg)   with z = h_prev W_hh^T, xg = x W_ih^T + b
// Saved: gates = h, hprev = h_prev; aux is unused.
// Backward: dz = dh * (1 - h^2) (tanh) or dh * [h > 0] (relu); x side = h side = dz; pass = 0.
#pragma once

namespace fastrnn_cuda {

template <Cell C>
struct CudaSimpleRnn {
  static_assert(C == Cell::RNN_TANH || C == Cell::RNN_RELU, "SimpleRNN cells only");
  static constexpr int G = 1;
  static constexpr bool kCellState = false;
  static constexpr bool kHiddenBias = false;

  template <int ZS>
  __device__ __forceinline__ static float forward(const FwdStep& p, const float* z, float* xg, int H, int j,
                                                  long long hb, long long py, float hp, bool training) {
    const float pre = z[0] + xg[0];
    const float h = C == Cell::RNN_RELU ? reluf_(pre) : tanhf(pre);
    if (training) xg[0] = h;
    return h;
  }

  __device__ __forceinline__ static void backward(const BwdStep& p, const float* gt, float dh, float dc, float* dgi,
                                                  float* dgh, float* dgs, int H, long long hb, long long py) {
    const float h = gt[0];
    const float dz = C == Cell::RNN_RELU ? dh * (h > 0.0f ? 1.0f : 0.0f) : dh * (1.0f - h * h);
    dgi[0] = dgs[0] = dz;
    p.pass_out[hb] = 0.0f;
  }
};

template <>
struct CudaCell<Cell::RNN_TANH> : CudaSimpleRnn<Cell::RNN_TANH> {};
template <>
struct CudaCell<Cell::RNN_RELU> : CudaSimpleRnn<Cell::RNN_RELU> {};

}  // namespace fastrnn_cuda
