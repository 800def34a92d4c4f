"""The int8 and bf16 schemes in NumPy: the reference twins of the int8 kernels (csrc/cpu/qgemm.h,
csrc/cpu/qforward_loop.h) and of the bf16 kernels (csrc/cpu/bgemm.h), and the quantizers the
int8 and bf16 layers use for their weights.

int8:

Weights are quantized per output column (a row of W [N, K]) and activations per row at run time,
both symmetric: ``scale = max|row| / 127``, ``q = rint(row * (127 / max|row|))`` in [-127, 127]
(float32 arithmetic, rounding half to even), a zero row has scale 0 and q 0, a row with a NaN or
an infinity has scale NaN (its results are NaN). A product is ``float32(sum_k a_q w_q) *
(s_a * s_w)``, the integer sum exact. The kernels compute the same integers and the same two
float32 roundings, so their products equal :func:`qmatmul` bit for bit on every ISA path; the
cells' gate functions differ within the float kernels' tolerance.

bf16: weights and activations are rounded to bfloat16 (the high 16 bits of a float32: 8 exponent
bits, 8 significant bits) to nearest even (:func:`round_bf16`; values below 2^-126 become zeros of
their sign, NaN stays NaN, overflow rounds to infinity). A product is accumulated in float32 over
k in pairs, the odd element of each pair first: ``acc += a[2j+1] w[2j+1]; acc += a[2j] w[2j]``,
each product exact and each sum rounded to nearest even, the order of AVX512-BF16's VDPBF16PS;
the kernels make the same roundings in the same order on every ISA path (VDPBF16PS where the CPU
has it, bf16 weights widened to float32 and fused multiply-adds elsewhere), so their products
equal :func:`bmatmul` bit for bit (bar sums below 2^-126, which VDPBF16PS flushes to zero).
"""
from __future__ import annotations

import numpy as np

from . import _common

__all__ = ["bf16_to_float32", "bforward", "bmatmul", "qforward", "qmatmul", "quantize_rows", "round_bf16"]


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
    return _forward(cell, x, lambda a: qmatmul(a, wq_ih, s_ih, b_ih), lambda h: qmatmul(h, wq_hh, s_hh),
                    wq_hh.shape[1], b_hh, h0, c0, mask, reverse)


def round_bf16(a: np.ndarray) -> np.ndarray:
    """bfloat16 bits of ``a`` (float32): round to nearest even, values below 2^-126 to zeros of
    their sign, NaN to a quiet NaN, overflow to infinity.

    Args:
        a (np.ndarray): float32 values, any shape.

    Returns:
        np.ndarray: uint16, the same shape.
    """
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    mag = u & np.uint32(0x7FFFFFFF)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    out = np.where(mag > np.uint32(0x7F800000), (u >> np.uint32(16)) | np.uint32(0x40), rounded)
    out = np.where((u & np.uint32(0x7F800000)) == 0, (u >> np.uint32(16)) & np.uint32(0x8000), out)
    return out.astype(np.uint16)


def bf16_to_float32(b: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 bits (exact).

    Args:
        b (np.ndarray): uint16 bits, any shape.

    Returns:
        np.ndarray: float32, the same shape.
    """
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bmatmul(a: np.ndarray, wb: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``bf16(a) . bf16(w)^T + bias`` accumulated in float32 as the bf16 kernels do.

    Args:
        a (np.ndarray): float32 [M, K] activations (rounded to bf16 here).
        wb (np.ndarray): uint16 [N, K] bf16 weights.
        bias (np.ndarray | None): float32 [N] or None.

    Returns:
        np.ndarray: float32 [M, N].
    """
    av = bf16_to_float32(round_bf16(np.asarray(a, np.float32)))
    wv = bf16_to_float32(wb)
    M, K = av.shape
    acc = np.zeros((M, wv.shape[0]), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(0, K, 2):  # the pair (k, k + 1), its odd element first
            if k + 1 < K:
                acc = acc + av[:, k + 1, None] * wv[None, :, k + 1]
            acc = acc + av[:, k, None] * wv[None, :, k]
        if bias is not None:
            acc = acc + np.asarray(bias, np.float32)
    return acc


def bforward(cell: str, x: np.ndarray, wb_ih: np.ndarray, wb_hh: np.ndarray, b_ih: np.ndarray,
             b_hh: np.ndarray | None = None, h0: np.ndarray | None = None, c0: np.ndarray | None = None,
             mask: np.ndarray | None = None, reverse: bool = False
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The bf16 forward pass of a recurrent cell (inference), batch-first; as :func:`qforward`
    with both products by :func:`bmatmul`.

    Args:
        cell (str): 'rnn_tanh', 'rnn_relu', 'lstm' or 'gru' (PyTorch's gate orders).
        x (np.ndarray): float32 [B, T, I].
        wb_ih (np.ndarray): uint16 [G*H, I] bf16 weights.
        wb_hh (np.ndarray): uint16 [G*H, H] bf16 weights.
        b_ih (np.ndarray): float32 [G*H] (the one bias of SimpleRNN / LSTM, GRU's b_ih).
        b_hh (np.ndarray | None): float32 [3H] for GRU, else None.
        h0 (np.ndarray | None): float32 [B, H] or None (zeros).
        c0 (np.ndarray | None): float32 [B, H] (LSTM) or None (zeros).
        mask (np.ndarray | None): bool [B, T] of valid steps, or None.
        reverse (bool): Run t = T-1 .. 0.

    Returns:
        tuple: (y [B, T, H] with 0 at masked steps, h_n [B, H], c_n [B, H] or None).
    """
    return _forward(cell, x, lambda a: bmatmul(a, wb_ih, b_ih), lambda h: bmatmul(h, wb_hh),
                    wb_hh.shape[1], b_hh, h0, c0, mask, reverse)


def _forward(cell, x, prod_ih, prod_hh, H, b_hh, h0, c0, mask, reverse):
    """The forward pass of a cell whose products are ``prod_ih(x rows)`` (with b_ih) and ``prod_hh(h)``."""
    x = np.asarray(x, np.float32)
    B, T, I = x.shape
    xw = prod_ih(x.reshape(B * T, I)).reshape(B, T, -1)
    h = np.zeros((B, H), np.float32) if h0 is None else np.array(h0, np.float32)
    c = (np.zeros((B, H), np.float32) if c0 is None else np.array(c0, np.float32)) if cell == "lstm" else None
    y = np.zeros((B, T, H), np.float32)
    sig = _common.sigmoid
    for t in _common.step_times(T, reverse):
        valid = None if mask is None else mask[:, t][:, None]
        z = prod_hh(h)
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
