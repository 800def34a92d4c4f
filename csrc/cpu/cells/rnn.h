// rnn.h — the SimpleRNN cells on the CPU (one gate; tanh or relu; one bias b = b_ih).
//
// Forward, per hidden unit:  h = act(z + xg)   with z = h_prev W_hh^T, xg = x W_ih^T + b
// Saved: gates = h (the activated output), hprev = h_prev; aux is unused.
// Backward:  dz = dh * act'(h) = dh * (1 - h^2) (tanh) or dh * [h > 0] (relu);
//            x side = h side = dz; carried: dh_prev = dz W_hh only.
#pragma once

template <Cell C>
struct SimpleRnnMath {
  static_assert(C == Cell::RNN_TANH || C == Cell::RNN_RELU, "SimpleRNN cells only");
  static constexpr int G = 1;
  static constexpr bool kCellState = false;
  static constexpr bool kHiddenBias = false;

  static inline void forward(const V* z, float* xg, int64_t H, int nv, const float* hp_row, float* hnext,
                             float* yrow, float* cstate, float* hprev_out, float* aux_out, const V* bhh,
                             bool training) {
    const V pre = Simd::add(z[0], Simd::loadn(xg, nv));
    const V h = (C == Cell::RNN_RELU) ? Simd::relu(pre) : vtanh(pre);
    Simd::storen(hnext, h, nv);
    Simd::storen(yrow, h, nv);
    if (training) {
      Simd::storen(xg, h, nv);
      Simd::storen(hprev_out, Simd::loadn(hp_row, nv), nv);
    }
  }

  static inline void backward(int64_t H, int nv, const float* gates, const float* aux, const float* hp,
                              const float* dyrow, float* dhc, float* dcc, float* dgi, float* dgh, float* dgs,
                              V* dbi, V* dbh) {
    const V dh = incoming_dh(dhc, dyrow, nv);
    const V one = Simd::set1(1.0f);
    const V h = Simd::loadn(gates, nv);
    const V dz = (C == Cell::RNN_RELU) ? Simd::mul(dh, Simd::step(h)) : Simd::mul(dh, Simd::fnmadd(h, h, one));
    put_grad(dgi, dbi[0], dz, nv);
    Simd::storen(dgs, dz, nv);
    Simd::storen(dhc, Simd::zero(), nv);
  }
};

template <>
struct CellMath<Cell::RNN_TANH> : SimpleRnnMath<Cell::RNN_TANH> {};
template <>
struct CellMath<Cell::RNN_RELU> : SimpleRnnMath<Cell::RNN_RELU> {};
