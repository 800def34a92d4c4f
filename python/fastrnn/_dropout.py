"""Dropout masks from Philox4x32-10 (a counter-based generator): the layers' one source of them.

A layer holds a :class:`DropoutStream`: a 64-bit key drawn once from its seed (or, without one,
from fastrnn's global generator, so ``fastrnn.set_seed(s)`` before building a model makes every
mask reproducible) and a counter of its training calls. Mask element e of call c, stream s (the
masks of one call, e.g. an RNN layer's input mask 0 and recurrent mask 1) is a pure function of
(key, c, s, e): the same for any thread count and instruction set, and no NumPy generator is
touched on the hot path. The C++ kernel (``backend.core().dropout``) makes float32 masks and
applies them in the same pass; :mod:`fastrnn.reference.dropout` is its NumPy twin (and serves
other dtypes and the CuPy arrays, whose masks are made on the host).
"""
from __future__ import annotations

import numpy as np

from . import _random, backend
from .reference import dropout as _ref

__all__ = ["DropoutStream", "apply", "mask", "scale"]


def scale(rate: float, dtype) -> np.generic:
    """1 / (1 - rate) rounded in ``dtype`` (as ``dtype(1) / dtype(1 - rate)``)."""
    t = np.dtype(dtype).type
    return t(1.0) / t(1.0 - rate)


class DropoutStream:
    """A layer's dropout key and training-call counter.

    Args:
        seed: None (the key is drawn from fastrnn's global generator), an int, or a
            ``numpy.random.Generator`` to draw the key from.
    """

    __slots__ = ("calls", "key")

    def __init__(self, seed=None) -> None:
        rng = seed if isinstance(seed, np.random.Generator) else _random.new_rng(seed)
        self.key = int(rng.integers(0, 2**63 - 1))
        self.calls = 0

    def next_call(self) -> int:
        """The counter of a new training call (0, 1, 2, ...; it wraps at 2**32)."""
        c = self.calls
        self.calls = (c + 1) & 0xFFFFFFFF
        return c


def _native(dtype) -> bool:
    return np.dtype(dtype) == np.float32


def mask(shape, key: int, call: int, stream: int, rate: float, dtype=np.float32) -> np.ndarray:
    """The mask of ``shape`` ([*shape], ``dtype``): 1/(1-rate) where kept, 0 where dropped."""
    shape = tuple(int(n) for n in shape)
    n = int(np.prod(shape, dtype=np.int64))
    sc = scale(rate, dtype)
    thr = _ref.dropout_threshold(rate)
    if _native(dtype):
        _, m = backend.core().dropout(None, n, key, call, stream, thr, float(sc), False, True)
        return m.reshape(shape)
    m32 = _ref.dropout_mask(n, key, call, stream, rate, np.float32(1.0))
    return (m32.astype(dtype) * sc).reshape(shape)


def apply(x: np.ndarray, key: int, call: int, stream: int, rate: float) -> np.ndarray:
    """``x * mask(x.shape, ...)``: for a float32 NumPy ``x`` mask and product in one pass of the C++
    kernel (the mask is not kept; running it again on the gradient gives ``dy * mask``)."""
    if type(x) is np.ndarray and _native(x.dtype):
        x = np.ascontiguousarray(x)
        y, _ = backend.core().dropout(x, x.size, key, call, stream, _ref.dropout_threshold(rate),
                                      float(scale(rate, np.float32)), True, False)
        return y
    m = mask(x.shape, key, call, stream, rate, x.dtype)
    if type(x) is not np.ndarray:  # CuPy: the mask made on the host, the product on x's device
        m = backend.array_module(x).asarray(m)
    return x * m
