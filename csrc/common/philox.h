// philox.h — Philox4x32-R, the counter-based generator of Salmon, Moraes, Dror and Shaw,
// "Parallel Random Numbers: As Easy as 1, 2, 3" (SC11), as in the Random123 distribution:
// a 128-bit counter (4 words) and a 64-bit key (2 words) give 4 random 32-bit words; R rounds
// (10 is the standard Philox4x32-10; tests also check 7 against Random123's kat_vectors).
// Plain C++ (host and device), no state: any output is a pure function of (counter, key).
//
// fastrnn's dropout streams (fastrnn/_dropout.py and reference/philox.py are the twins):
//   key     = the layer's 64-bit dropout key (lo, hi words), drawn once from its seed
//   counter = (block lo, block hi, call, stream): `call` counts the layer's training calls,
//             `stream` tells the masks of one call apart
//   element e = 64 g + 16 w + l keeps its value iff word w of block 16 g + l is >= threshold =
//   floor(rate * 2^32) (groups of 64 elements: see cpu/dropout.h).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FASTRNN_HD __host__ __device__ __forceinline__
#else
#define FASTRNN_HD inline
#endif

namespace fastrnn {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;  // the round multipliers
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;  // the key schedule's bumps

// One round on (c0, c1, c2, c3) with key (k0, k1).
FASTRNN_HD void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = (uint64_t)kPhiloxM0 * c0, p1 = (uint64_t)kPhiloxM1 * c2;
  const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
  c1 = (uint32_t)p1;
  c3 = (uint32_t)p0;
  c0 = n0;
  c2 = n2;
}

// Philox4x32-R of counter c[4] with key (k0, k1), in place: the key is bumped before every round
// after the first.
FASTRNN_HD void philox4x32(uint32_t c[4], uint32_t k0, uint32_t k1, int rounds = 10) {
  for (int r = 0; r < rounds; ++r) {
    if (r) k0 += kPhiloxW0, k1 += kPhiloxW1;
    philox_round(c[0], c[1], c[2], c[3], k0, k1);
  }
}

}  // namespace fastrnn
