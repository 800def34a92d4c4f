// step.cuh — block tiles of the per-step kernels and how one is chosen.
//
// A step kernel's block owns BM batch rows x UJ hidden units. Forward: the tile columns are the G
// gates of those units (column group g = gate g), K = H. Backward: the tile columns are the units
// themselves, K = G*H. Two sizes: large tiles do more work per shared-memory load, small tiles
// give more blocks and split K inside the block; with B and H small a step is latency-bound and
// more blocks win. Each size is a template instantiation per cell and per kernel, so the list is
// kept short for the build time (bench/RESULTS.md tells which sizes were tried).
// The time loop is either one launch per step or, where the whole grid fits on the device at
// once, one cooperative launch that loops over the steps with a grid barrier between them
// (saves the launch latency of every step).
#pragma once
#include "cuda/common.cuh"
#include "cuda/tile.cuh"

namespace fastrnn_cuda {

//                                    BM  BN      BK NGM RM NGN RN ST KS   threads  UJ
template <int G> using FwdL = TileCfg<64, G * 32, 16, 1, 4, G, 2, 3>;     // 256      32
template <int G> using FwdS = TileCfg<8, G * 16, 16, 1, 2, G, 1, 3, 2>;   // 128      16
using BwdL = TileCfg<64, 64, 16, 1, 4, 1, 4, 3>;                          // 256      64
using BwdS = TileCfg<8, 32, 16, 1, 2, 1, 2, 3, 4>;                        // 256      32

// 0 (large) or 1 (small): the override when set, else the large tile when it still gives every
// multiprocessor a block, else the small one (measurements: bench/RESULTS_GPU.md, tile table).
inline int pick_tiles(int override_, int64_t B, int64_t H, int bm_large, int uj_large) {
  if (override_ == 0 || override_ == 1) return override_;
  return ceil_div(B, bm_large) * ceil_div(H, uj_large) >= sm_count() ? 0 : 1;
}

// Whether to try the time loop as ONE cooperative launch (all blocks resident at once, a grid
// barrier between steps) instead of one launch per step: by default wherever the grid fits.
// The barrier counter adds one per block and step, so steps * blocks must stay below 2^31.
// Override 2 skips the fit check (tests of the fallback when the launch is refused).
template <class Kernel>
bool use_persistent(Kernel kernel, int threads, int64_t blocks, int64_t steps) {
  const int mode = persistent_override();
  if (mode == 0 || blocks * steps >= (int64_t(1) << 31)) return false;
  int dev = 0, coop = 0, per_sm = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev) != cudaSuccess || !coop ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return mode == 2 || (int64_t)per_sm * sm_count() >= blocks;
}

// The cooperative launch of a time loop. The runtime may refuse it even where the occupancy
// query said the grid fits (MPS limits on the multiprocessors, other work on the device, stream
// capture, a device without support): then the error is cleared and false returned, and the
// caller runs the loop as one launch per step. A real fault shows up again in those launches.
inline bool launch_cooperative(const void* kernel, dim3 grid, dim3 block, void** args, cudaStream_t st) {
  if (cudaLaunchCooperativeKernel(kernel, grid, block, args, 0, st) == cudaSuccess) return true;
  cudaGetLastError();
  return false;
}

}  // namespace fastrnn_cuda
