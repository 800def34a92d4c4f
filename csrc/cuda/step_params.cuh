// step_params.cuh — the parameters of the per-step kernels (forward.cu, backward.cu), which the
// cells' pointwise maths (cells/*.cuh) read and write.
#pragma once
#include "cuda/common.cuh"

namespace fastrnn_cuda {

// One forward step (or, in the persistent loop, all of them; s, hcur and hnext change per step).
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
  const float* hmask;  // [B, H] recurrent dropout, or nullptr: the product reads h * hmask ...
  float* hmbuf;        // [2][B][H] ... kept beside h (step s reads buffer s&1, writes (s+1)&1)
  int s;              // processing step
};

// One launch of the backward time loop: product(s) for the block's tile, then pointwise(s_point)
// (see backward.cu).
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
  const float* hmask;    // [B, H] recurrent dropout, or nullptr: dh = pass_in + (dgs_in W_hh) * hmask
  int product;           // 1: dh = pass_in + dgs_in W_hh; 0: dh = dh_in (or 0)
  int zero_dc;           // chunk border: the carried dc is 0
  int s_point;           // the step whose pointwise pass runs here, or -1 (write dh0/dc0)
};

}  // namespace fastrnn_cuda
