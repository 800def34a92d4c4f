"""What a training forward of the compiled kernels saves for backward, and the gradient dictionary
that backward returns: shared by the C++ path (fastrnn.ops) and the CUDA path (fastrnn._cuda_ops)."""
from __future__ import annotations

import math
import sys
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from . import _cells, backend
from ._cache import Cache
from .reference import _common as C

__all__ = ["POOL", "BufferPool", "Cache", "KernelCache", "grads_dict"]


class BufferPool:
    """Float32 NumPy buffers of training caches, kept for the next forward of the same shapes.

    A training step allocates the same large arrays every time (the saved gates and states, the
    private copies of x and the weights): fresh memory from the OS costs a page fault and the
    kernel's zeroing per page, a visible part of a training step at large shapes. When a cache is
    dropped, the arrays nobody else refers to come here and the next forward of that shape takes
    them. At most ``max_arrays`` per shape and ``max_bytes`` in all are kept: a buffer that would
    go over ``max_bytes`` first evicts those of the shapes least recently taken or given (so
    training on varying shapes keeps the recent ones, not every shape ever seen).
    ``fastrnn.ops.set_workspace_limit`` sets ``max_bytes`` (default 256 MiB); ``clear()`` (or
    fastrnn.ops.release_workspace()) gives everything back. Arrays under ``min_bytes`` are not
    pooled: the C library's allocator serves those from memory it keeps, and the bookkeeping would
    cost more than it saves.
    """

    def __init__(self, max_bytes=256 << 20, max_arrays=16, min_bytes=1 << 20):
        self.max_bytes, self.max_arrays, self.min_bytes = int(max_bytes), int(max_arrays), int(min_bytes)
        self._free = OrderedDict()  # shape -> [arrays], least recently used shape first
        self._lock = threading.Lock()  # forwards and dropped caches may come from several threads
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
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
        (the kernels then allocate it themselves, which is cheaper for such sizes)."""
        if 4 * math.prod(shape) < self.min_bytes:
            return None
        shape = tuple(int(n) for n in shape)
        with self._lock:
            free = self._free.get(shape)
            if free is not None:
                self._free.move_to_end(shape)
            if free:
                a = free.pop()
                self.bytes -= a.nbytes
                self.hits += 1
                return a
            self.misses += 1
        return np.empty(shape, np.float32)

    def copy(self, a):
        """A pooled float32 copy of ``a``."""
        if 4 * a.size < self.min_bytes:  # what take() would refuse, without its bookkeeping
            return a.copy()
        out = self.take(a.shape)
        if out is None:
            return a.copy()
        np.copyto(out, a)
        return out

    def give(self, a):
        """Keep ``a`` for reuse if it is a writeable float32 NumPy array that owns its memory and
        that nothing but the caller refers to (no view, no user reference), within the limits
        (evicting the least recently used shapes' buffers to stay within ``max_bytes``)."""
        if (type(a) is not np.ndarray or a.nbytes < self.min_bytes or a.dtype != np.float32 or a.base is not None
                or not a.flags.writeable or not a.flags.c_contiguous or self._refs(a) > self._unshared):
            return
        evicted = []  # freed after the lock is let go
        with self._lock:
            if a.nbytes > self.max_bytes:
                return
            free = self._free.setdefault(a.shape, [])
            self._free.move_to_end(a.shape)
            if len(free) >= self.max_arrays:
                return
            self._evict(self.max_bytes - a.nbytes, evicted, keep=a.shape)
            if self.bytes + a.nbytes > self.max_bytes:
                if not free:
                    del self._free[a.shape]
                return
            free.append(a)
            self.bytes += a.nbytes
        del evicted

    def _evict(self, target, out, keep=None):
        """Drop buffers, least recently used shapes first (not those of ``keep``), until at most
        ``target`` bytes are held; the dropped arrays go to ``out``. Called with the lock held."""
        for shape in list(self._free):
            if self.bytes <= target:
                break
            if shape == keep:
                continue
            free = self._free[shape]
            while free and self.bytes > target:
                a = free.pop()
                self.bytes -= a.nbytes
                self.evictions += 1
                out.append(a)
            if not free:
                del self._free[shape]

    def set_max_bytes(self, max_bytes):
        """Set the budget, evicting the least recently used buffers down to it."""
        evicted = []
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict(self.max_bytes, evicted)
        del evicted

    def clear(self):
        with self._lock:
            self._free.clear()
            self.bytes = 0


POOL = BufferPool()
_RECYCLED = ("gates", "hprev", "aux", "x", "w_ih", "w_hh")


def check_f32(fn: str, name: str, a: Any, shape: tuple[int, ...], what: str = "float32") -> np.ndarray:
    """A NumPy float32 array of the given shape (TypeError / ValueError otherwise)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{fn}: {name} must have dtype {what}, got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {C._shape_str(shape)}, got {C._shape_str(a.shape)}")
    return a


def grad_array(fn: str, name: str, a: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """None, or a C-contiguous NumPy float32 gradient of the given shape."""
    if a is None:
        return None
    return np.ascontiguousarray(check_f32(fn, name, a, shape, "float32 (the dtype of y)"))


class KernelCache(Cache):
    """What a training forward of the C++ kernels saves for backward (opaque to users).

    Private copies of x (zero at masked positions) and the weights, the mask (uint8 [B, T] or None),
    and the activations the kernels saved (gates, h_prev, aux) in x's row order, and the recurrent
    dropout mask [B, H] (or None). ``hprev`` is ``h_prev``'s name in the kernels' arguments (both
    work).
    """

    __slots__ = (
        "B",
        "H",
        "I",
        "T",
        "aux",
        "batch_first",
        "cell",
        "cell_id",
        "gates",
        "hprev",
        "mask",
        "recurrent_mask",
        "reverse",
        "spec",
        "w_hh",
        "w_ih",
        "x",
    )

    LAYOUT = ("x's layout: x [B, T, I] if batch_first else [T, B, I], mask uint8 [B, T]; "
              "h_prev / aux [T*B, H], gates [T*B, G*H] with rows in x's order")

    def __init__(self, spec: _cells.CellSpec, x, w_ih, w_hh, mask, reverse: bool, batch_first: bool, gates,
                 hprev, aux, T: int, B: int, I: int, H: int, recurrent_mask=None):
        self.spec, self.cell, self.cell_id = spec, spec.base, spec.kernel_id
        self.x, self.w_ih, self.w_hh, self.mask = x, w_ih, w_hh, mask
        self.reverse, self.batch_first = bool(reverse), bool(batch_first)
        self.gates, self.hprev, self.aux = gates, hprev, aux
        self.T, self.B, self.I, self.H = T, B, I, H
        self.recurrent_mask = recurrent_mask

    @property
    def h_prev(self):
        return self.hprev

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

    def backward(self, dy, dstate=None, bptt_steps=None, need_dx: bool = True) -> dict[str, Any]:
        """Check dy, dstate and bptt_steps (the messages of ``{cell}_backward``), then run the C++
        backward over this cache."""
        cell = self.cell
        fn = f"{cell}_backward"
        k = C.check_bptt_steps(bptt_steps, fn)
        T, B, H = self.T, self.B, self.H
        dy = grad_array(fn, "dy", dy, (B, T, H) if self.batch_first else (T, B, H))
        dh_n, dc_n, dh_name = C.split_dstate(fn, cell, dstate)
        dh_n = grad_array(fn, dh_name, dh_n, (B, H))
        dc_n = grad_array(fn, "dstate[1] (dc_n)", dc_n, (B, H))
        return self.run_backward(dy, dh_n, dc_n, 0 if k is None else k, need_dx)

    def run_backward(self, dy, dh_n, dc_n, bptt_steps: int, need_dx: bool = True) -> dict[str, Any]:
        """The C++ backward without checks: dy None or [B, T, H] / [T, B, H] in the forward's layout,
        dh_n / dc_n None or [B, H], all float32 C-contiguous NumPy arrays (the bindings refuse
        others); bptt_steps an int, 0 for full BPTT (as is any bptt_steps >= T: no chunk border
        falls inside the sequence; this also keeps ints beyond int64 out of the binding)."""
        if bptt_steps >= self.T:
            bptt_steps = 0
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = backend.core().backward(
            cell=self.cell_id, x=self.x, w_ih=self.w_ih, w_hh=self.w_hh, mask=self.mask, reverse=self.reverse,
            batch_first=self.batch_first, gates=self.gates, hprev=self.hprev, aux=self.aux, dy=dy, dh_n=dh_n,
            dc_n=dc_n, bptt_steps=bptt_steps, need_dx=bool(need_dx), hmask=self.recurrent_mask)
        return grads_dict(self.spec, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)

    def _extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(cell={self.cell!r}, T={self.T}, B={self.B}, I={self.I}, H={self.H}, "
                f"reverse={self.reverse}, batch_first={self.batch_first}{self._extra()})")


def grads_dict(spec: _cells.CellSpec, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh) -> dict:
    """``{cell}_backward``'s result for the cell of ``spec``: keys x, h0, (c0 for LSTM, the cell
    with two states), w_ih, w_hh, then its bias names (b; GRU's b_ih, b_hh), as the references
    return them."""
    grads = {"x": dx, "h0": dh0}
    if spec.n_states == 2:
        grads["c0"] = dc0
    grads["w_ih"], grads["w_hh"] = dw_ih, dw_hh
    grads.update(zip(spec.bias_names, (db_ih, db_hh)))
    return grads
