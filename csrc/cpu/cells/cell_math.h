// cell_math.h — the per-cell pointwise maths of the CPU kernels: CellMath<C>, specialised once
// per cell in rnn.h, lstm.h and gru.h. The time loops (forward_loop.h, backward_loop.h) are
// generic; all they need of a cell is here:
//
//   G                 gates per hidden unit (the gate order of the weights, PyTorch's)
//   kCellState        an LSTM-style cell state c is carried beside h (c0, c_n, dc0, dc_n)
//   kHiddenBias       b_hh is applied inside the gates (GRU: n = tanh(a_n + r * (W_hn h + b_hn)));
//                     the forward pass hands it to forward(), and the backward pass keeps the
//                     h-side gate gradients (dW_hh, db_hh) apart from the x side
//   forward(...)      one row, nv <= W hidden units: gates -> state update; the saved buffers
//   backward(...)     one row, nv <= W hidden units: the derivative of forward
//
// Arguments of forward (pointers at the row's position and first hidden unit; H = gate stride):
//   z          the recurrent pre-activations h W_hh^T of the G gates (registers)
//   xg         the x projection x W_ih^T + b_ih of the G gates; overwritten with the activated
//              gates when training (the saved `gates` buffer)
//   hp_row     h before the step;  hnext, yrow: h after the step (state buffer, output y)
//   cstate     the cell state, updated in place (kCellState), else nullptr
//   hprev_out, aux_out: the saved hprev / aux rows (training only)
//   bhh        the G vectors of b_hh for these units (kHiddenBias)
// Arguments of backward:
//   gates, aux, hp   the saved gates / aux / hprev rows;  dyrow: dy or nullptr
//   dhc, dcc   the carried dh (in: dh from step s+1; out: the part of dh_prev that bypasses W_hh)
//              and dc (kCellState)
//   dgi        x-side gate gradients at the position (for dx, dW_ih, db_ih)
//   dgh        h-side gate gradients at the position (kHiddenBias only; for dW_hh, db_hh)
//   dgs        h-side gate gradients in the step's compact row (for dh_prev = dgs W_hh)
//   dbi, dbh   the G running bias-gradient sums of the current row block (registers)
#pragma once

template <Cell C>
struct CellMath;

// Stores one gate gradient and adds it to its bias-gradient sum (registers).
static inline void put_grad(float* dg, V& db, V v, int nv) {
  Simd::storen(dg, v, nv);
  db = Simd::add(db, v);  // the bias-gradient sums of a column block live in registers
}

// dh of the row at this step: the carried gradient plus dy (when given).
static inline V incoming_dh(const float* dhc, const float* dyrow, int nv) {
  V dh = Simd::loadn(dhc, nv);
  if (dyrow) dh = Simd::add(dh, Simd::loadn(dyrow, nv));
  return dh;
}

#include "cpu/cells/gru.h"
#include "cpu/cells/lstm.h"
#include "cpu/cells/rnn.h"
