"""The int8 scheme in NumPy: the reference twin of the int8 kernels (csrc/cpu/qgemm.h,
csrc/cpu/qforward_loop.h) and the quantizer the int8 layers use for their weights.

Weights are quantized per output column (a row of W [N, K]) and activations per row at run time,
both symmetric: ``scale = max|row| / 127``, ``q = rint(row * (127 / max|row|))`` in [-127, 127]
(float32 arithmetic, rounding half to even), a zero row has scale 0 and q 0, a row with a NaN or
an infinity has scale NaN (its results are NaN). A product is ``float32(sum_k a_q w_q) *
(s_a * s_w)``, the integer sum exact. The kernels compute the same integers and the same two
float32 roundings, so their products equal :func:`qmatmul` bit for bit on every ISA path; the
cells' gate functions differ within the float kernels' tolerance.
"""
from __future__ import annotations

import numpy as np

from . import _common

__all__ = ["qforward", "qmatmul", "quantize_rows"]


def quantize_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of each row of ``a`` (float32, 2-D).

    Args:
        a (np.ndarray): float32 [M, K].

    Returns:
        tuple: (q int8 [M, K], scale float32 [M]); ``a ~= q * scale[:, None]``.
    """
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"quantize_rows: a must be 2-D, got shape {a.shape}")
    finite = np.isfinite(a).all(axis=1)
    mx = np.where(finite, np.abs(np.where(np.isfinite(a), a, 0)).max(axis=1, initial=0.0), 0).astype(np.float32)
    safe = np.where(mx > 0, mx, np.float32(1))
    inv = (np.float32(127) / safe).astype(np.float32)
    q = np.rint(np.where(np.isfinite(a), a, 0) * inv[:, None]).astype(np.int8)
    q[mx == 0] = 0
    q[~finite] = 0
    scale = (mx / np.float32(127)).astype(np.float32)
    scale[~finite] = np.nan
    return q, scale


def qmatmul(a: np.ndarray, wq: np.ndarray, wscale: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``deq(quant(a) . wq^T) + bias``, as the int8 kernels compute it.

    Args:
        a (np.ndarray): float32 [M, K] activations (quantized per row here).
        wq (np.ndarray): int8 [N, K] weights.
        wscale (np.ndarray): float32 [N] weight scales.
        bias (np.ndarray | None): float32 [N] or None.

    Returns:
        np.ndarray: float32 [M, N].
    """
    aq, sa = quantize_rows(a)
    acc = (aq.astype(np.int64) @ wq.astype(np.int64).T).astype(np.int32)  # exact, as in int32
    with np.errstate(invalid="ignore"):  # NaN scales of non-finite rows
        out = acc.astype(np.float32) * (sa[:, None] * wscale[None, :].astype(np.float32))
    if bias is not None:
        out = out + bias.astype(np.float32)
    return out


def qforward(cell: str, x: np.ndarray, wq_ih: np.ndarray, s_ih: np.ndarray, wq_hh: np.ndarray, s_hh: np.ndarray,
             b_ih: np.ndarray, b_hh: np.ndarray | None = None, h0: np.ndarray | None = None,
             c0: np.ndarray | None = None, mask: np.ndarray | None = None, reverse: bool = False
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The int8 forward pass of a recurrent cell (inference), batch-first.

    Args:
        cell (str): 'rnn_tanh', 'rnn_relu', 'lstm' or 'gru' (PyTorch's gate orders).
        x (np.ndarray): float32 [B, T, I].
        wq_ih (np.ndarray): int8 [G*H, I] and s_ih float32 [G*H].
        s_ih (np.ndarray): see wq_ih.
        wq_hh (np.ndarray): int8 [G*H, H] and s_hh float32 [G*H].
        s_hh (np.ndarray): see wq_hh.
        b_ih (np.ndarray): float32 [G*H] (the one bias of SimpleRNN / LSTM, GRU's b_ih).
        b_hh (np.ndarray | None): float32 [3H] for GRU, else None.
        h0 (np.ndarray | None): float32 [B, H] or None (zeros).
        c0 (np.ndarray | None): float32 [B, H] (LSTM) or None (zeros).
        mask (np.ndarray | None): bool [B, T] of valid steps, or None.
        reverse (bool): Run t = T-1 .. 0.

    Returns:
        tuple: (y [B, T, H] with 0 at masked steps, h_n [B, H], c_n [B, H] or None).
    """
    x = np.asarray(x, np.float32)
    B, T, I = x.shape
    H = wq_hh.shape[1]
    xw = qmatmul(x.reshape(B * T, I), wq_ih, s_ih, b_ih).reshape(B, T, -1)
    h = np.zeros((B, H), np.float32) if h0 is None else np.array(h0, np.float32)
    c = (np.zeros((B, H), np.float32) if c0 is None else np.array(c0, np.float32)) if cell == "lstm" else None
    y = np.zeros((B, T, H), np.float32)
    sig = _common.sigmoid
    for t in _common.step_times(T, reverse):
        valid = None if mask is None else mask[:, t][:, None]
        z = qmatmul(h, wq_hh, s_hh)
        a = xw[:, t]
        c_new = None
        if cell == "lstm":
            i, f = sig(np, a[:, :H] + z[:, :H]), sig(np, a[:, H:2 * H] + z[:, H:2 * H])
            g, o = np.tanh(a[:, 2 * H:3 * H] + z[:, 2 * H:3 * H]), sig(np, a[:, 3 * H:] + z[:, 3 * H:])
            c_new = f * c + i * g
            h_new = o * np.tanh(c_new)
        elif cell == "gru":
            u = z + b_hh
            r, zz = sig(np, a[:, :H] + u[:, :H]), sig(np, a[:, H:2 * H] + u[:, H:2 * H])
            n = np.tanh(a[:, 2 * H:] + r * u[:, 2 * H:])
            h_new = (1 - zz) * n + zz * h
        else:
            pre = a + z
            h_new = np.tanh(pre) if cell == "rnn_tanh" else np.maximum(pre, 0)
        h = _common.select(np, valid, h_new, h)
        if c_new is not None:
            c = _common.select(np, valid, c_new, c)
        y[:, t] = _common.select(np, valid, h, 0)
    return y, h, c
