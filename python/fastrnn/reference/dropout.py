"""Philox4x32-R and dropout masks in NumPy: the reference twin of the C++ dropout kernel.

Philox4x32-R (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC11; the Random123
distribution): a counter of 4 and a key of 2 uint32 words give 4 random uint32 words, with R
rounds (10: the standard Philox4x32-10) of

    (c0, c1, c2, c3) <- (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0))

and the key bumped by (W0, W1) before every round after the first. Here in uint64 arrays holding
uint32 values (their products are exact).

Dropout masks (``dropout_mask``): element e = 64 g + 16 w + l of a call is kept iff word w of the
Philox4x32-10 block of counter (16 g + l lo, hi, call, stream) under the 64-bit ``key`` is at
least floor(rate * 2^32); a kept element's mask value is ``scale`` (1/(1-rate) as the caller
rounds it), a dropped one's 0. The C++ kernel (fastrnn.backend.core().dropout) computes the same
masks bit for bit, for any thread count and instruction set.
"""
from __future__ import annotations

import numpy as np

__all__ = ["dropout_mask", "dropout_threshold", "philox4x32"]

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
_LO = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def philox4x32(ctr, key: int, rounds: int = 10) -> np.ndarray:
    """Philox4x32-``rounds`` of each row of ``ctr`` ([n, 4] uint32 words) under the 64-bit ``key``
    (words: key & 0xFFFFFFFF, key >> 32). Returns [n, 4] uint32."""
    c = np.asarray(ctr, dtype=np.uint64).reshape(-1, 4)
    c0, c1, c2, c3 = (c[:, i].copy() for i in range(4))
    k0, k1 = int(key) & 0xFFFFFFFF, (int(key) >> 32) & 0xFFFFFFFF
    m0, m1 = np.uint64(M0), np.uint64(M1)
    for r in range(int(rounds)):
        if r:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (p1 >> _S32) ^ c1 ^ np.uint64(k0), p1 & _LO, (p0 >> _S32) ^ c3 ^ np.uint64(k1), p0 & _LO
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def dropout_threshold(rate: float) -> int:
    """floor(rate * 2^32): a Philox word below it drops its element (rate in [0, 1))."""
    return min(int(float(rate) * 4294967296.0), 0xFFFFFFFF)


def dropout_mask(n: int, key: int, call: int, stream: int, rate: float, scale) -> np.ndarray:
    """The float32 mask [n] of one call: ``scale`` where kept, 0 where dropped (see the module)."""
    groups = -(-int(n) // 64)
    blocks = np.arange(groups * 16, dtype=np.uint64)
    ctr = np.stack([blocks & _LO, blocks >> _S32, np.full_like(blocks, int(call) & 0xFFFFFFFF),
                    np.full_like(blocks, int(stream) & 0xFFFFFFFF)], axis=1)
    words = philox4x32(ctr, key).reshape(groups, 16, 4).transpose(0, 2, 1).reshape(-1)[:n]  # e = 64g + 16w + l
    keep = words >= np.uint32(dropout_threshold(rate))
    return np.where(keep, np.float32(scale), np.float32(0.0)).astype(np.float32)
