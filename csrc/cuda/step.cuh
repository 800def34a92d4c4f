// step.cuh — block tiles of the per-step kernels and how one is chosen.
//
// A step kernel's block owns BM batch rows x UJ hidden units. Forward: the tile columns are the G
// gates of those units (column group g = gate g), K = H. Backward: the tile columns are the units
// themselves, K = G*H. Three sizes: large tiles do more work per shared-memory load, small tiles
// give more blocks; with B and H small a step is latency-bound and more blocks win.
// The time loop is either one launch per step or, where the whole grid fits on the device at
// once, one cooperative launch that loops over the steps with a grid barrier between them
// (saves the launch latency of every step).
#pragma once
#include "cuda/common.cuh"
#include "cuda/tile.cuh"

namespace fastrnn_cuda {

//                                    BM  BN      BK NGM RM NGN RN ST KS   threads  UJ
template <int G> using FwdL = TileCfg<64, G * 32, 16, 1, 4, G, 2, 3>;     // 256      32
template <int G> using FwdM = TileCfg<32, G * 16, 16, 1, 4, G, 2, 4>;     //  64      16
template <int G> using FwdS = TileCfg<8, G * 16, 16, 1, 2, G, 1, 3, 2>;   // 128      16
using BwdL = TileCfg<64, 64, 16, 1, 4, 1, 4, 3>;                          // 256      64
using BwdM = TileCfg<32, 32, 16, 1, 4, 1, 4, 3, 2>;                       // 128      32
using BwdS = TileCfg<8, 32, 16, 1, 2, 1, 2, 3, 4>;                        // 256      32

// 0 (large), 1 (medium) or 2 (small): the override when set, else the largest tile that still
// gives every multiprocessor a block, else the small one. On an H100 (132 SMs) this picks the
// small tiles for every shape of the benchmark, and they were the fastest (or within 2 %) for
// each of them, forward and backward (bench/RESULTS_GPU.md, tile table).
inline int pick_tiles(int override_, int64_t B, int64_t H, const int (&bm)[3], const int (&uj)[3]) {
  if (override_ >= 0 && override_ <= 2) return override_;
  const int64_t sms = sm_count();
  for (int c = 0; c < 2; ++c)
    if (ceil_div(B, bm[c]) * ceil_div(H, uj[c]) >= sms) return c;
  return 2;
}

// Whether the time loop runs as ONE cooperative launch (all blocks resident at once, a grid
// barrier between steps) instead of one launch per step: by default wherever the grid fits.
// The barrier counter adds one per block and step, so steps * blocks must stay below 2^31.
template <class Kernel>
bool use_persistent(Kernel kernel, int threads, int64_t blocks, int64_t steps) {
  if (persistent_override() == 0 || blocks * steps >= (int64_t(1) << 31)) return false;
  int dev = 0, coop = 0, per_sm = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess || !coop ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return (int64_t)per_sm * sm_count() >= blocks;
}

}  // namespace fastrnn_cuda
