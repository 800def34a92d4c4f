// loop_split.h — how the forward and backward time loops are split over threads (by hidden-unit
// panels or by blocks of batch rows), and which part each thread computes.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after simd.h, the standard headers and the tuning constants it defines.

// Thread tid of nt owns items [p0, p1) of P (unit panels, column panels or row blocks).
static inline void panel_range(int64_t P, int tid, int nt, int64_t& p0, int64_t& p1) {
  p0 = P * tid / nt;
  p1 = P * (tid + 1) / nt;
}

// Threads worth using for a time loop whose per-step work is `flops` over `panels` panels.
static int loop_threads(int requested, int64_t panels, double flops_per_step) {
  int nt = (int)std::min<int64_t>(std::max(1, requested), panels);
  if (flops_per_step < 1.0e6) nt = 1;  // under ~10 us of work per step a barrier per step does not pay
  return std::max(1, nt);
}

// How a time loop is split over threads. Two ways:
//  * by hidden units (the default): each thread owns a slice of the hidden units and keeps its
//    slice of W_hh in its own L2; every step needs all of h from every thread, so one barrier
//    per step;
//  * by batch rows: each thread runs whole sequences (blocks of ROW_BLOCK rows in the backward,
//    any rows in the forward) through every step on its own, with no barrier at all, but reads all
//    of W_hh every step. Chosen when
//    more than one thread is asked for, the loop has >= 1 MFLOP in all, the packed W_hh is at
//    most half the L3 (GemmBlocking::rowsplit_max_bytes, from the cache sizes of cpu/blocking.h:
//    every thread streams all of it at every step, so it must stay in the L3 they share; 16 MiB
//    where the L3 is unknown), and the row blocks give as many threads as the unit split would,
//    with no thread more than 15 % above the average number of rows.
//    Both splits stream W_hh once per tile of rows per step, so the cache traffic is about the
//    same; the row split saves the barriers and the exchange of h between cores, which pays most
//    where a step is short (small H). Measurements: bench/RESULTS.md.
// Results do not depend on the split or on the thread count: every output row is computed by the
// same arithmetic in the same order whoever computes it, and the bias gradients are summed per
// row block (rows ascending, steps descending) and then over the blocks in a fixed order.
constexpr int64_t ROW_BLOCK = 8;

struct LoopSplit {
  int threads;
  bool by_rows;
};

// Rows are split in blocks of row_unit: ROW_BLOCK where the blocks carry sums of their own (the
// backward's bias gradients), 1 where nothing is summed over rows (the forward: any partition of
// the rows gives the same bits), with at least min_rows rows per thread (a forward tile's rows:
// fewer rows per thread stream all of W_hh for too few FMAs).
static LoopSplit loop_split(int requested, int64_t panels, int64_t B, double weight_bytes, double flops_per_step,
                            int64_t T, int64_t row_unit = ROW_BLOCK, int64_t min_rows = 1) {
  const LoopSplit by_units{loop_threads(requested, panels, flops_per_step), false};
  const int64_t blocks = ceil_div(B, row_unit);
  const int nt = (int)std::min<int64_t>({std::max(1, requested), blocks, B / std::max<int64_t>(1, min_rows)});
  if (nt < 2 || nt < by_units.threads || weight_bytes > (double)gemm_blocking().rowsplit_max_bytes ||
      flops_per_step * (double)T < 1.0e6)
    return by_units;
  const double most_rows = (double)std::min(B, ceil_div(blocks, nt) * row_unit);  // rows of the busiest thread
  if (most_rows > 1.15 * (double)B / nt) return by_units;
  return {nt, true};
}

// The rows [b_lo, b_hi) and unit panels [p0, p1) (of P) that thread tid of team computes (rows in
// blocks of row_unit, as loop_split was given).
static void loop_part(bool by_rows, int64_t P, int64_t B, int tid, int team, int64_t& p0, int64_t& p1,
                      int64_t& b_lo, int64_t& b_hi, int64_t row_unit = ROW_BLOCK) {
  if (by_rows) {
    int64_t k0, k1;
    panel_range(ceil_div(B, row_unit), tid, team, k0, k1);
    p0 = 0, p1 = P, b_lo = std::min(B, k0 * row_unit), b_hi = std::min(B, k1 * row_unit);
  } else {
    panel_range(P, tid, team, p0, p1);
    b_lo = 0, b_hi = B;
  }
}
