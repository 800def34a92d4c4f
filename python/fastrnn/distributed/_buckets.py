"""Gradient buckets: the parameters' gradients packed into a few large contiguous buffers that are
all-reduced in place, each one started as soon as the backward pass has finished its layers.

Layout: the trainable parameters are taken in backward order (the reverse of ``parameters()``:
the last layer's gradients are ready first) and packed greedily into buckets of at most
``bucket_bytes`` (a parameter larger than that gets a bucket of its own). Bucket 0 carries one
extra slot: the rank's weight (its number of loss entries), summed with the gradients.

Weighting: each rank packs ``weight * grad`` (its gradient SUM, since ``grad`` is a mean over
``weight`` entries); after the reduction every gradient is divided by the summed weights. So the
result is the gradient of the mean loss over the union of the ranks' batches, also when the ranks
hold different numbers of samples, and a rank with nothing to contribute (weight 0) adds nothing.
With weight 1 everywhere this is the plain average over the ranks (Horovod's).

Order: buckets are started strictly in index order on every rank (MPI requires the same order of
collectives everywhere), whatever order the readiness signals arrive in; ``finish`` starts any
bucket not started yet, waits for all, and unpacks. The communicator is duck-typed
(``iallreduce(buf) -> handle``, ``wait(handle)``, ``progress(handles)``), so the same logic runs on
MPI with NumPy buffers and on NCCL with CuPy buffers (``xp``).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _is_trainable(p):
    return getattr(p, "trainable", True) and p.grad is not None


class BucketReducer:
    """Packs, reduces (in place, overlapped) and unpacks the gradients of a fixed list of parameters.

    Args:
        params (list[Parameter]): The parameters, in ``model.parameters()`` order; the
            non-trainable ones are left out.
        comm (object): The communicator (see the module docstring).
        bucket_bytes (int): The largest bucket, in bytes of the wire dtype.
        wire_dtype (numpy dtype | None): The dtype the gradients travel in; None: their own
            (which must then be the same for every parameter).
        xp (module): numpy, or cupy for device gradients.
    """

    def __init__(self, params: list, comm: Any, bucket_bytes: int, wire_dtype: Any = np.float32,
                 xp: Any = np) -> None:
        self.params = [p for p in params if _is_trainable(p)]
        self.comm = comm
        self.xp = xp
        dtypes = {np.dtype(p.grad.dtype) for p in self.params}
        if wire_dtype is None:
            if len(dtypes) > 1:
                raise ValueError(f"wire_dtype: the gradients have several dtypes {sorted(map(str, dtypes))}; "
                                 "give one to send them in")
            wire_dtype = dtypes.pop() if dtypes else np.float32
        self.dtype = np.dtype(wire_dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"wire_dtype: expected a floating dtype, got {self.dtype}")
        self.key = self.layout_key(params)
        cap = max(1, int(bucket_bytes) // self.dtype.itemsize)
        order = list(range(len(self.params)))[::-1]  # backward order
        groups, cur, cur_n = [], [], 1  # bucket 0 starts with the weight slot
        for i in order:
            n = self.params[i].grad.size
            if cur and cur_n + n > cap:
                groups.append(cur)
                cur, cur_n = [], 0
            cur.append(i)
            cur_n += n
        if cur or not groups:
            groups.append(cur)
        self.buckets = []  # per bucket: (param indices, offsets, buffer)
        self.bucket_of = [0] * len(self.params)
        for b, members in enumerate(groups):
            offs, off = [], 0
            for i in members:
                offs.append(off)
                off += self.params[i].grad.size
                self.bucket_of[i] = b
            extra = 1 if b == 0 else 0
            self.buckets.append((members, offs, xp.zeros(off + extra, dtype=self.dtype)))
        self._pos = {id(p): i for i, p in enumerate(self.params)}
        self._armed = False
        self._weight = 1.0
        self._handles: list = []
        self._reset()

    @staticmethod
    def layout_key(params: list) -> tuple:
        """What the layout depends on: the trainable parameters' identities, shapes and dtypes."""
        return tuple((id(p), tuple(p.grad.shape), str(p.grad.dtype)) for p in params if _is_trainable(p))

    @property
    def nbytes(self) -> int:
        """Bytes on the wire per step (all buckets)."""
        return int(sum(buf.nbytes for _, _, buf in self.buckets))

    def _reset(self):
        self._ready = [False] * len(self.params)
        self._pending = [len(m) for m, _, _ in self.buckets]
        self._next = 0
        self._handles = []

    def start(self, weight: float) -> None:
        """Arm the reducer for one step whose gradients are a mean over ``weight`` loss entries.

        Args:
            weight: This rank's weight (>= 0), known before its backward pass.
        """
        weight = float(weight)
        if not weight >= 0:
            raise ValueError(f"weight: expected a number >= 0, got {weight}")
        self._reset()
        self._weight = weight
        self._armed = True

    def grads_ready(self, params: list) -> None:
        """The backward pass has finished these parameters' gradients: start every bucket, in
        order, whose parameters are all finished. Ignored unless armed by :meth:`start`.

        Args:
            params: Parameters whose gradients are complete (unknown ones are ignored).
        """
        if not self._armed:
            return
        for p in params:
            i = self._pos.get(id(p))
            if i is None or self._ready[i]:
                continue
            self._ready[i] = True
            self._pending[self.bucket_of[i]] -= 1
        while self._next < len(self.buckets) and self._pending[self._next] == 0:
            self._launch(self._next)
        self.comm.progress(self._handles)

    def _launch(self, b):
        members, offs, buf = self.buckets[b]
        w = self._weight
        for i, off in zip(members, offs):
            g = self.params[i].grad
            dst = buf[off:off + g.size]
            if w == 0.0:
                dst[...] = 0
            else:
                self.xp.multiply(g.reshape(-1), w, out=dst, casting="unsafe")
        if b == 0:
            buf[-1] = w
        self._handles.append(self.comm.iallreduce(buf))
        self._next = b + 1

    def finish(self) -> float:
        """Start the remaining buckets, wait for all, and write the weighted-mean gradients back.

        Returns:
            The summed weight of all ranks (0: every gradient is set to zero).
        """
        if not self._armed:  # step() without start(): every rank weighs 1 (the plain average)
            self._reset()
            self._weight = 1.0
        while self._next < len(self.buckets):
            self._launch(self._next)
        for h in self._handles:
            self.comm.wait(h)
        self._armed = False
        total = float(self.buckets[0][2][-1])
        for members, offs, buf in self.buckets:
            for i, off in zip(members, offs):
                g = self.params[i].grad
                if total > 0:  # one rounding: the division itself
                    g[...] = (buf[off:off + g.size] / buf.dtype.type(total)).reshape(g.shape)
                else:
                    g[...] = 0
        self._handles = []
        return total
