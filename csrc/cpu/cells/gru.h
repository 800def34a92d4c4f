// gru.h — the GRU cell on the CPU (gates r, z, n; linear-before-reset; biases b_ih and b_hh).
//
// Forward, per hidden unit (a = x W_ih^T + b_ih in xg, z_* = h W_hh^T):
//   r = sigmoid(a_r + (z_r + b_hr))   u = sigmoid(a_z + (z_z + b_hz))   (u is the update gate z)
//   hn = z_n + b_hn                   n = tanh(a_n + r * hn)
//   h = u * (h_prev - n) + n          ( = (1 - u) n + u h_prev )
// Saved: gates = (r, u, n), hprev = h_prev, aux = hn (W_hn h + b_hn).
// Backward:
//   dz = dh * (h_prev - n)   dn = dh (1 - u)   da_n = dn * (1 - n^2)
//   dz_r = da_n * hn * r(1-r)   dz_z = dz * u(1-u)
//   x side (dgi): (dz_r, dz_z, da_n); h side (dgh, dgs): (dz_r, dz_z, da_n * r)
//   carried: dh_prev = dh * u + dgs W_hh (the product is added by the loop)
#pragma once

template <>
struct CellMath<Cell::GRU> {
  static constexpr int G = 3;
  static constexpr bool kCellState = false;
  static constexpr bool kHiddenBias = true;

  static inline void forward(const V* z, float* xg, int64_t H, int nv, const float* hp_row, float* hnext,
                             float* yrow, float* cstate, float* hprev_out, float* aux_out, const V* bhh,
                             bool training) {
    const V r = vsigmoid(Simd::add(Simd::loadn(xg, nv), Simd::add(z[0], bhh[0])));
    const V u = vsigmoid(Simd::add(Simd::loadn(xg + H, nv), Simd::add(z[1], bhh[1])));
    const V hn = Simd::add(z[2], bhh[2]);
    const V n = vtanh(Simd::fmadd(r, hn, Simd::loadn(xg + 2 * H, nv)));
    const V hp = Simd::loadn(hp_row, nv);
    const V h = Simd::fmadd(u, Simd::sub(hp, n), n);  // (1-z) n + z h
    Simd::storen(hnext, h, nv);
    Simd::storen(yrow, h, nv);
    if (training) {
      Simd::storen(xg, r, nv);
      Simd::storen(xg + H, u, nv);
      Simd::storen(xg + 2 * H, n, nv);
      Simd::storen(aux_out, hn, nv);
      Simd::storen(hprev_out, hp, nv);
    }
  }

  static inline void backward(int64_t H, int nv, const float* gates, const float* aux, const float* hp,
                              const float* dyrow, float* dhc, float* dcc, float* dgi, float* dgh, float* dgs,
                              V* dbi, V* dbh) {
    const V dh = incoming_dh(dhc, dyrow, nv);
    const V one = Simd::set1(1.0f);
    const V r = Simd::loadn(gates, nv), z = Simd::loadn(gates + H, nv), n = Simd::loadn(gates + 2 * H, nv);
    const V hn = Simd::loadn(aux, nv);
    const V h0 = Simd::loadn(hp, nv);
    const V dz = Simd::mul(dh, Simd::sub(h0, n));
    const V dn = Simd::fnmadd(dh, z, dh);          // dh (1 - z)
    const V dan = Simd::mul(dn, Simd::fnmadd(n, n, one));
    const V dzr = Simd::mul(Simd::mul(dan, hn), Simd::mul(r, Simd::sub(one, r)));
    const V dzz = Simd::mul(dz, Simd::mul(z, Simd::sub(one, z)));
    put_grad(dgi, dbi[0], dzr, nv);
    put_grad(dgi + H, dbi[1], dzz, nv);
    put_grad(dgi + 2 * H, dbi[2], dan, nv);
    const V dhn = Simd::mul(dan, r);
    put_grad(dgh, dbh[0], dzr, nv);
    put_grad(dgh + H, dbh[1], dzz, nv);
    put_grad(dgh + 2 * H, dbh[2], dhn, nv);
    Simd::storen(dgs, dzr, nv);
    Simd::storen(dgs + H, dzz, nv);
    Simd::storen(dgs + 2 * H, dhn, nv);
    Simd::storen(dhc, Simd::mul(dh, z), nv);
  }
};
