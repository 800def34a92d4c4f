// lstm.h — the LSTM cell on the CPU (gates i, f, g, o; one bias b = b_ih).
//
// Forward, per hidden unit (z = h W_hh^T, xg = x W_ih^T + b):
//   i = sigmoid(z_i + xg_i)   f = sigmoid(z_f + xg_f)   g = tanh(z_g + xg_g)   o = sigmoid(z_o + xg_o)
//   c = f * c_prev + i * g    h = o * tanh(c)
// Saved: gates = (i, f, g, o), hprev = h_prev, aux = c_prev.
// Backward (c recomputed from the saved gates and c_prev, as in the forward pass):
//   dc  += dh * o * (1 - tanh(c)^2)
//   dz_i = dc * g * i(1-i)   dz_f = dc * c_prev * f(1-f)   dz_g = dc * i * (1-g^2)
//   dz_o = dh * tanh(c) * o(1-o)
//   carried: dc_prev = dc * f; dh_prev = dz W_hh only (no direct part)
// x-side and h-side gate gradients are the same (dgi; dgs for the recurrent product).
#pragma once

template <>
struct CellMath<Cell::LSTM> {
  static constexpr int G = 4;
  static constexpr bool kCellState = true;
  static constexpr bool kHiddenBias = false;

  static inline void forward(const V* z, float* xg, int64_t H, int nv, const float* hp_row, float* hnext,
                             float* yrow, float* cstate, float* hprev_out, float* aux_out, const V* bhh,
                             bool training) {
    const V i = vsigmoid(Simd::add(z[0], Simd::loadn(xg, nv)));
    const V f = vsigmoid(Simd::add(z[1], Simd::loadn(xg + H, nv)));
    const V g = vtanh(Simd::add(z[2], Simd::loadn(xg + 2 * H, nv)));
    const V o = vsigmoid(Simd::add(z[3], Simd::loadn(xg + 3 * H, nv)));
    const V cprev = Simd::loadn(cstate, nv);
    const V c = Simd::fmadd(f, cprev, Simd::mul(i, g));
    const V h = Simd::mul(o, vtanh(c));
    Simd::storen(cstate, c, nv);
    Simd::storen(hnext, h, nv);
    Simd::storen(yrow, h, nv);
    if (training) {
      Simd::storen(xg, i, nv);
      Simd::storen(xg + H, f, nv);
      Simd::storen(xg + 2 * H, g, nv);
      Simd::storen(xg + 3 * H, o, nv);
      Simd::storen(aux_out, cprev, nv);
      Simd::storen(hprev_out, Simd::loadn(hp_row, nv), nv);
    }
  }

  static inline void backward(int64_t H, int nv, const float* gates, const float* aux, const float* hp,
                              const float* dyrow, float* dhc, float* dcc, float* dgi, float* dgh, float* dgs,
                              V* dbi, V* dbh) {
    const V dh = incoming_dh(dhc, dyrow, nv);
    const V one = Simd::set1(1.0f);
    const V i = Simd::loadn(gates, nv), f = Simd::loadn(gates + H, nv);
    const V g = Simd::loadn(gates + 2 * H, nv), o = Simd::loadn(gates + 3 * H, nv);
    const V cprev = Simd::loadn(aux, nv);
    const V c = Simd::fmadd(f, cprev, Simd::mul(i, g));  // as in the forward pass
    const V tc = vtanh(c);
    V dc = Simd::loadn(dcc, nv);
    dc = Simd::fmadd(Simd::mul(dh, o), Simd::fnmadd(tc, tc, one), dc);
    const V dzi = Simd::mul(Simd::mul(dc, g), Simd::mul(i, Simd::sub(one, i)));
    const V dzf = Simd::mul(Simd::mul(dc, cprev), Simd::mul(f, Simd::sub(one, f)));
    const V dzg = Simd::mul(Simd::mul(dc, i), Simd::fnmadd(g, g, one));
    const V dzo = Simd::mul(Simd::mul(dh, tc), Simd::mul(o, Simd::sub(one, o)));
    put_grad(dgi, dbi[0], dzi, nv);
    put_grad(dgi + H, dbi[1], dzf, nv);
    put_grad(dgi + 2 * H, dbi[2], dzg, nv);
    put_grad(dgi + 3 * H, dbi[3], dzo, nv);
    Simd::storen(dgs, dzi, nv);
    Simd::storen(dgs + H, dzf, nv);
    Simd::storen(dgs + 2 * H, dzg, nv);
    Simd::storen(dgs + 3 * H, dzo, nv);
    Simd::storen(dcc, Simd::mul(dc, f), nv);
    Simd::storen(dhc, Simd::zero(), nv);
  }
};
