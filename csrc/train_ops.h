// train_ops.h — arguments of the training-step kernels beside the recurrent ones: the fused
// optimizer update (cpu/optim_update.h) and the column sum of a matrix (a Dense layer's bias
// gradient). Included by fastrnn.h; the kernels sit in the per-ISA KernelTable.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fastrnn {

enum class OptimKind : int { SGD = 0, RMSPROP = 1, ADAM = 2 };
enum class ClipKind : int { NONE = 0, VALUE = 1, NORM = 2, GLOBAL_NORM = 3 };

// One optimizer step over P parameters (float32, dense), every update element-wise in float32
// with the operations and their order of the NumPy references in fastrnn/optim.py (no fused
// multiply-adds), so that the results equal them to rounding (bit for bit where no clipping
// norm is involved). The float scalars are the references' Python floats rounded to float32,
// computed by the caller in double exactly as the references compute them.
//
// Slots (nullptr where the option is off), per parameter p, each n[p] floats:
//   SGD      s0 = momentum buffer v (momentum > 0)
//   RMSprop  s0 = velocity s, s1 = average_gradient mg (centered), s2 = momentum m (momentum > 0)
//   Adam     s0 = m, s1 = v, s2 = vhat (amsgrad); AdamW: decay_mask[p] != 0 decays parameter p
// Scalars:
//   SGD      a = lr, b = momentum
//   RMSprop  a = lr, b = rho, c = 1 - rho, d = momentum, e = epsilon
//   Adam     keras epsilon: a = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
//            torch epsilon: a = lr, f = 1 - beta_1^t, h = 1 - beta_2^t
//            b = 1 - beta_1, c = 1 - beta_2, e = epsilon, decay = lr * weight_decay (AdamW)
// Clipping, applied to the gradient as read (the gradient arrays are not written):
//   VALUE        g -> min(max(g, -clip), clip) (clip rounded to float32)
//   NORM         per parameter: g -> g * float(clip / max(|g|, clip)) where |g| > clip
//   GLOBAL_NORM  all together: g -> g * float(clip / N) where N = sqrt(sum of |g|^2) > clip
// The norms are accumulated in double over fixed blocks of OPTIM_BLOCK elements whose partial
// sums are then added in order: the same result for any thread count.
struct OptimArgs {
  OptimKind kind;
  int64_t P;
  float* const* w;        // [P] values, updated in place
  const float* const* g;  // [P] gradients (may alias nothing else but their own value)
  float* const* s0;       // [P] or nullptr
  float* const* s1;
  float* const* s2;
  const int64_t* n;       // [P] element counts (>= 0)
  const uint8_t* decay_mask;  // [P] (Adam with weight decay) or nullptr
  bool nesterov, momentum, centered, torch_eps, amsgrad;
  ClipKind clip;
  double clip_arg;
  float a, b, c, d, e, f, h, decay;
  double* sumsq;          // [P] out: sum of squares of each (unclipped) gradient when a norm
                          // clipping ran (NORM, GLOBAL_NORM), else untouched
  double* block_sums;     // workspace: optim_blocks(n, P) doubles (norm clipping only)
  float* scales;          // workspace: [P] floats
  int threads;
};

constexpr int64_t OPTIM_BLOCK = 16384;

// Blocks of OPTIM_BLOCK elements (the last one of each parameter shorter) over all parameters.
inline int64_t optim_blocks(const int64_t* n, int64_t P) {
  int64_t b = 0;
  for (int64_t p = 0; p < P; ++p) b += (n[p] + OPTIM_BLOCK - 1) / OPTIM_BLOCK;
  return b;
}

}  // namespace fastrnn
