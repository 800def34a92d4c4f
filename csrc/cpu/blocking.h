// blocking.h — the CPU GEMM's blocks, derived from the cache sizes and the register tile.
//
// Part of the per-ISA kernels: included by kernels_impl.h inside namespace fastrnn::FASTRNN_NS,
// after the tuning constants (GEMM_MR, GEMM_NR) and before gemm.h.
//
// The micro-kernel (gemm.h: micro_packed) keeps an MR x NR tile of C in registers and, per k,
// loads NR/W vectors of packed B and broadcasts MR values of packed A: the row-major mirror of
// BLIS's column-major kernels (which load vectors of A and broadcast B; Van Zee & van de Geijn
// 2015, Low et al. 2016 "Analytical modeling is enough for high-performance BLIS"). The
// broadcast operand's micro-panel is the one reused from the L1, the vector operand's
// micro-panels stream past it from the L2 (as in BLIS's Skylake-X / Zen 4 sgemm). The loops of
// gemm_serial, outermost first:
//   ic: MC rows of A       the packed A block, MC x KC, lives in this core's share of the L3
//   pc: KC of the depth
//   jc: NC columns of B    the packed B block, KC x NC, lives in the L2
//   ir: MR rows            one A micro-panel, MR x KC, lives in the L1 ...
//   jr: NR columns         ... while the B micro-panels (KC x NR) of the block stream past it
// so the sizes follow from the caches:
//   KC: the A micro-panel (MR x KC floats) fills about half of the L1d (the other half: the B
//       micro-panel's lines streaming through, the C tile);
//   NC: the B block (KC x NC) fills about half of the L2 (the rest: the A micro-panels coming
//       in from the L3, the C tiles);
//   MC: the A block (MC x KC) fills about half of this core's share of the L3 (the L3 divided
//       by the cores sharing it; the other half: the B blocks on their way to the L2, C).
// MC_L2: the A block is kept in the L3 to be reused by every column block of B. When all of B's
// columns fit one block (N <= NC: the weight gradients dW = dG^T X with few input features, the
// decoder's input gradient), it is used once: the loops run pc -> ic instead, the B block is
// packed once per KC, and A is cut into blocks that fill a quarter of the L2 (MC_L2 x KC; the
// rest holds the B block, C's rows and the source of A flowing through while it is packed),
// each packed just before the kernels read it back from there. (Where A is row-major and B has
// at most two column blocks, A is not packed at all: cpu/gemm.h, gemm_a_in_place.)
// A GEMM whose depth K is shorter than KC (the input projections: K = the input features) uses
// kc = K, and its B and A blocks grow by KC / kc in columns and rows (gemm_serial), so that they
// keep the bytes the caches were sized for: fewer, wider column blocks, C written in longer rows.
// KC is rounded down to a multiple of 16 (the packing transposes 16-k blocks of A and W x W
// blocks of B), MC to a multiple of MR, NC of NR. Unknown sizes (0) fall back to 32 KiB L1d,
// 512 KiB L2, 2 MiB of L3 per core; an unknown number of cores sharing the L3 counts as 1.
// The same caches set the time loops' row-split limit (rowsplit_max_bytes: half the L3).
// Zen 4 (32 KiB L1d, 1 MiB L2, 32 MiB L3 for 2 cores here): AVX-512 (8 x 32) KC 512, NC 256,
// MC 4096, MC_L2 128; AVX2 (6 x 16) KC 672, NC 192, MC 3120, MC_L2 96. Zen 3 (32 KiB, 512 KiB,
// 32 MiB for 8 cores): AVX2 KC 672, NC 96, MC 780, MC_L2 48.
//
// KC fixes the summation order (each element of C adds its KC-long partial sums in k order), so
// it depends on the cache sizes and the ISA but never on the thread count: results are identical
// for any number of threads. MC and NC change which thread packs what, never an element's sums.

static constexpr int64_t BLOCK_L1_DEFAULT = 32 << 10, BLOCK_L2_DEFAULT = 512 << 10, BLOCK_L3_CORE_DEFAULT = 2 << 20;
static constexpr int64_t BLOCK_KC_MAX = 1024, BLOCK_MC_MAX = 16384, BLOCK_NC_MAX = 16384;
static constexpr int64_t BLOCK_ROWSPLIT_DEFAULT = 16 << 20;

static inline int64_t round_down_to(int64_t v, int64_t q, int64_t lo) { return std::max(lo, v / q * q); }

// The blocks for the caches c (any sizes, fake ones included: tests run tiny caches).
static GemmBlocking derive_blocking(const GemmCaches& c) {
  const int64_t f = (int64_t)sizeof(float);
  const int64_t l1 = c.l1d > 0 ? c.l1d : BLOCK_L1_DEFAULT;
  const int64_t l2 = c.l2 > 0 ? c.l2 : BLOCK_L2_DEFAULT;
  const int64_t l3 = c.l3 > 0 ? c.l3 / std::max(1, c.l3_cores) : BLOCK_L3_CORE_DEFAULT;
  GemmBlocking b{};
  b.mr = GEMM_MR;
  b.nr = GEMM_NR;
  b.kc = std::min(BLOCK_KC_MAX, round_down_to(l1 / 2 / (GEMM_MR * f), 16, 16));
  b.nc = std::min(BLOCK_NC_MAX / GEMM_NR * GEMM_NR, round_down_to(l2 / 2 / (b.kc * f), GEMM_NR, GEMM_NR));
  b.mc = std::min(BLOCK_MC_MAX / GEMM_MR * GEMM_MR, round_down_to(l3 / 2 / (b.kc * f), GEMM_MR, GEMM_MR));
  b.mc_l2 = std::min(b.mc, round_down_to(l2 / 4 / (b.kc * f), GEMM_MR, GEMM_MR));
  // The time loops' row split (cpu/loop_split.h) has every thread stream all of the packed W_hh
  // at every step: it must stay in the L3 the threads share, so at most half of it (the other
  // half: the activations, the gates, other tenants), 16 MiB where the L3 is unknown.
  b.rowsplit_max_bytes = c.l3 > 0 ? c.l3 / 2 : BLOCK_ROWSPLIT_DEFAULT;
  return b;
}

// The blocks the GEMM uses now: derive_blocking of gemm_caches() (the machine's caches, read
// once per process, or the override of FASTRNN_CACHE_SIZES / set_gemm_caches).
static GemmBlocking gemm_blocking() { return derive_blocking(gemm_caches()); }

// Splits n into ceil(n / block) parts of equal size rounded up to a multiple of q (block is
// one): the size of each part but the last, which takes the rest (> 0).
static inline int64_t balanced_block(int64_t n, int64_t block, int64_t q) {
  const int64_t parts = (n + block - 1) / block;
  return std::min(block, ((n + parts - 1) / parts + q - 1) / q * q);
}
