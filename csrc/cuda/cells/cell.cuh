// cell.cuh — the per-cell pointwise maths of the CUDA step kernels: CudaCell<C>, specialised once
// per cell in rnn.cuh, lstm.cuh and gru.cuh (the same equations as the CPU's cpu/cells/*.h). The
// step kernels (forward.cu, backward.cu) are generic; all they need of a cell is here:
//
//   G             gates per hidden unit
//   kCellState    an LSTM-style cell state c is carried beside h (p.c forward, p.dc backward)
//   kHiddenBias   b_hh is applied inside the gates (GRU); backward keeps the h-side gate
//                 gradients (p.dgh) apart from the x side (p.dgi)
//   forward<ZS>(p, z, xg, H, j, hb, py, hp, training) -> h
//                 one valid (row, unit): z[g * ZS] = the recurrent pre-activation of gate g
//                 (registers), xg = the x projection of gate 0 at this position (gate g at
//                 xg[g * H]; overwritten with the activated gates when training), j = the unit,
//                 hb = b * H + j (state buffers), py = pos * H + j (per-position buffers),
//                 hp = h before the step. Updates the cell state and writes aux; the caller
//                 writes h, y and hprev.
//   backward(p, gt, dh, dc, dgi, dgh, dgs, H, hb, py)
//                 one valid (row, unit): gt = the saved gates, dh = the incoming state gradient
//                 (dy included), dc = the carried dc (kCellState). Writes the gate gradients
//                 (dgi x side, dgh h side when kHiddenBias, dgs the compact row of the recurrent
//                 product), the carried dc and p.pass_out (the part of dh_prev that bypasses W_hh).
#pragma once
#include "cuda/step_params.cuh"

namespace fastrnn_cuda {

template <Cell C>
struct CudaCell;

}  // namespace fastrnn_cuda

#include "cuda/cells/gru.cuh"
#include "cuda/cells/lstm.cuh"
#include "cuda/cells/rnn.cuh"
