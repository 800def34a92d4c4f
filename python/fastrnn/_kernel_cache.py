"""What a training forward of the compiled kernels saves for backward, and the gradient dictionary
that backward returns: shared by the C++ path (fastrnn.ops) and the CUDA path (fastrnn._cuda_ops)."""
from __future__ import annotations

import math
import sys
import threading

import numpy as np

__all__ = ["POOL", "BufferPool", "KernelCache", "grads_dict"]


class BufferPool:
    """Float32 NumPy buffers of training caches, kept for the next forward of the same shapes.

    A training step allocates the same large arrays every time (the saved gates and states, the
    private copies of x and the weights): fresh memory from the OS costs a page fault and the
    kernel's zeroing per page, measured at 6 % of an LSTM training step on (T, B, I, H) =
    (100, 64, 256, 256). When a cache is dropped, the arrays nobody else refers to come here and
    the next forward of that shape takes them. At most ``max_arrays`` per shape and ``max_bytes``
    in all are kept; ``clear()`` (or fastrnn.ops.release_workspace()) gives them back. Arrays under
    ``min_bytes`` are not pooled: the C library's allocator serves those from memory it keeps, and
    the bookkeeping would cost more than it saves.
    """

    def __init__(self, max_bytes=1 << 30, max_arrays=16, min_bytes=1 << 20):
        self.max_bytes, self.max_arrays, self.min_bytes = int(max_bytes), int(max_arrays), int(min_bytes)
        self._free = {}
        self._lock = threading.Lock()  # forwards and dropped caches may come from several threads
        self.bytes = 0
        self.hits = self.misses = 0
        self._unshared = self._calibrate()

    @staticmethod
    def _refs(a):
        return sys.getrefcount(a)

    def _probe(self, a):  # the same call depth as give() -> _refs()
        return self._refs(a)

    def _calibrate(self):
        """The reference count give() sees for an array its caller holds in one local name only."""
        a = np.empty(0, np.float32)
        return self._probe(a)

    def take(self, shape):
        """A float32 C-contiguous array of ``shape`` (contents undefined), or None under min_bytes
        (the kernels then allocate it themselves, which measured faster for such sizes)."""
        shape = tuple(int(n) for n in shape)
        if 4 * math.prod(shape) < self.min_bytes:
            return None
        with self._lock:
            free = self._free.get(shape)
            if free:
                a = free.pop()
                self.bytes -= a.nbytes
                self.hits += 1
                return a
            self.misses += 1
        return np.empty(shape, np.float32)

    def copy(self, a):
        """A pooled float32 copy of ``a``."""
        out = self.take(a.shape)
        if out is None:
            return a.copy()
        np.copyto(out, a)
        return out

    def give(self, a):
        """Keep ``a`` for reuse if it is a writeable float32 NumPy array that owns its memory and
        that nothing but the caller refers to (no view, no user reference), within the limits."""
        if (type(a) is not np.ndarray or a.nbytes < self.min_bytes or a.dtype != np.float32 or a.base is not None
                or not a.flags.writeable or not a.flags.c_contiguous or self._refs(a) > self._unshared):
            return
        with self._lock:
            free = self._free.setdefault(a.shape, [])
            if len(free) >= self.max_arrays or self.bytes + a.nbytes > self.max_bytes:
                return
            free.append(a)
            self.bytes += a.nbytes

    def clear(self):
        with self._lock:
            self._free.clear()
            self.bytes = 0


POOL = BufferPool()
_RECYCLED = ("gates", "hprev", "aux", "x", "w_ih", "w_hh")


class KernelCache:
    """What a training forward of the C++ kernels saves for backward (opaque to users).

    Private copies of x (zero at masked positions) and the weights, the mask (uint8 [T, B] or None),
    and the activations the kernels saved (gates, hprev, aux) in x's row order.
    """

    __slots__ = ("cell", "cell_id", "x", "w_ih", "w_hh", "mask", "reverse", "batch_first",
                 "gates", "hprev", "aux", "T", "B", "I", "H")

    def __init__(self, cell, cell_id, x, w_ih, w_hh, mask, reverse, batch_first, gates, hprev, aux, T, B, I, H):
        self.cell, self.cell_id = cell, cell_id
        self.x, self.w_ih, self.w_hh, self.mask = x, w_ih, w_hh, mask
        self.reverse, self.batch_first = bool(reverse), bool(batch_first)
        self.gates, self.hprev, self.aux = gates, hprev, aux
        self.T, self.B, self.I, self.H = T, B, I, H

    def __del__(self):
        # the C++ path's buffers go back to the pool unless someone else still holds them
        g = getattr(self, "gates", None)  # the largest: when it is too small to pool, all are
        if type(g) is not np.ndarray or g.nbytes < POOL.min_bytes:
            return
        del g
        for name in _RECYCLED:
            a = getattr(self, name, None)
            if a is not None:
                setattr(self, name, None)
                POOL.give(a)

    def _extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(cell={self.cell!r}, T={self.T}, B={self.B}, I={self.I}, H={self.H}, "
                f"reverse={self.reverse}, batch_first={self.batch_first}{self._extra()})")


def grads_dict(cell, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh) -> dict:
    """``{cell}_backward``'s result: keys x, h0, (c0 for lstm), w_ih, w_hh, then b (rnn, lstm) or
    b_ih, b_hh (gru), as the references return them."""
    grads = {"x": dx, "h0": dh0}
    if cell == "lstm":
        grads["c0"] = dc0
    grads["w_ih"], grads["w_hh"] = dw_ih, dw_hh
    if cell == "gru":
        grads["b_ih"], grads["b_hh"] = db_ih, db_hh
    else:
        grads["b"] = db_ih
    return grads
