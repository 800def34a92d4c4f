"""The one interface of the caches that a training forward returns for backward, whichever backend
made it: the NumPy/CuPy reference (``fastrnn.reference._common.ReferenceCache``), the C++ kernels
(``fastrnn._kernel_cache.KernelCache``) or the CUDA kernels (``fastrnn._cuda_ops.CudaKernelCache``).

Every cache has the fields of :attr:`Cache.FIELDS` under the same names and runs its own backward
(:meth:`Cache.backward`), so ``fastrnn.ops.{cell}_backward`` only checks that the cache belongs to
the cell and hands over. Caches are opaque to users: the layout of the saved arrays is the
backend's own (:attr:`Cache.LAYOUT`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["Cache"]


class Cache:
    """Base of the training caches.

    Fields (the same names on every backend):

    spec: the cell's CellSpec (fastrnn._cells); cell: its base name ("rnn", "lstm", "gru").
    T, B, I, H: steps, batch, input features, hidden units.
    batch_first, reverse: the forward's options.
    x, w_ih, w_hh: the input (masked steps zeroed) and the weights backward reads.
    mask: the valid steps, or None when all are valid.
    h_prev: the state h before each step.
    gates: the activated gates of each step (LSTM i, f, g, o; GRU r, z, n; SimpleRNN its new
        candidate state).
    aux: the cell's other saved value per step (spec.aux: LSTM "c_prev", the cell state before
        the step; GRU "u_n", W_hn h + b_hn), None for SimpleRNN.
    recurrent_mask: the recurrent dropout mask [B, H] the forward applied to h before the
        recurrent product (h_prev holds the unmasked state), or None.
    """

    __slots__ = ()

    #: The fields every cache has.
    FIELDS: tuple[str, ...] = ("spec", "cell", "T", "B", "I", "H", "batch_first", "reverse", "x", "w_ih",
                               "w_hh", "mask", "h_prev", "gates", "aux", "recurrent_mask")
    #: The layout of x, mask and the saved arrays in this backend's caches.
    LAYOUT: str = ""

    def backward(self, dy: Any, dstate: Any = None, bptt_steps: int | None = None,
                 need_dx: bool = True) -> dict[str, Any]:
        """The gradients of the forward that made this cache, as ``{cell}_backward`` returns them
        (dy, dstate and bptt_steps are checked here). need_dx=False may skip dx (then "x" is None)."""
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """{name: value} for every name of FIELDS."""
        return {name: getattr(self, name) for name in self.FIELDS}
