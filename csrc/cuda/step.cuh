// step.cuh — block tiles of the per-step kernels and how one is chosen.
//
// A step kernel's block owns BM batch rows x UJ hidden units. Forward: the tile columns are the G
// gates of those units (column group g = gate g), K = H. Backward: the tile columns are the units
// themselves, K = G*H. Three sizes: large tiles do more work per shared-memory load, small tiles
// give more blocks; with B and H small a step is latency-bound and more blocks win.
#pragma once
#include "cuda/common.cuh"
#include "cuda/tile.cuh"

namespace fastrnn_cuda {

//                                BM  BN      BK NGM RM NGN RN ST      threads  UJ
template <int G> using FwdL = TileCfg<64, G * 32, 16, 1, 4, G, 2, 3>;  // 256      32
template <int G> using FwdM = TileCfg<32, G * 16, 16, 1, 4, G, 2, 4>;  //  64      16
template <int G> using FwdS = TileCfg<8, G * 16, 16, 1, 2, G, 1, 6>;   //  64      16
using BwdL = TileCfg<64, 64, 16, 1, 4, 1, 4, 3>;                       // 256      64
using BwdM = TileCfg<32, 32, 16, 1, 4, 1, 4, 4>;                       //  64      32
using BwdS = TileCfg<8, 32, 16, 1, 2, 1, 2, 6>;                        //  64      32

// 0 (large), 1 (medium) or 2 (small): the override when set, else the largest tile that still
// gives every multiprocessor a block, else the small one.
inline int pick_tiles(int override_, int64_t B, int64_t H, const int (&bm)[3], const int (&uj)[3]) {
  if (override_ >= 0 && override_ <= 2) return override_;
  const int64_t sms = sm_count();
  for (int c = 0; c < 2; ++c)
    if (ceil_div(B, bm[c]) * ceil_div(H, uj[c]) >= sms) return c;
  return 2;
}

}  // namespace fastrnn_cuda
