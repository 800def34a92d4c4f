"""What a training forward of the compiled kernels saves for backward, and the gradient dictionary
that backward returns: shared by the C++ path (fastrnn.ops) and the CUDA path (fastrnn._cuda_ops)."""
from __future__ import annotations

__all__ = ["KernelCache", "grads_dict"]


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
