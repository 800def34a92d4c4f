"""The crossentropy losses of :mod:`fastrnn.losses` (binary, categorical, sparse categorical) and the
stable ``log_softmax`` they use on logits. Probabilities are clipped to ``[EPSILON, 1 - EPSILON]``
as Keras does; the conventions are described in ``fastrnn.losses``' docstring, and the classes are
importable from there.

The categorical crossentropies take float32 NumPy predictions through the fused C++ kernel
(``fastrnn._core.xent``, csrc/cpu/xent.h: loss and gradient in one sweep over each row, threaded
over rows, the same bits for any thread count); float64, CuPy and other inputs take the NumPy
forms below, which are the kernel's reference twins (tests/test_xent_kernels.py)."""
from __future__ import annotations

import weakref

import numpy as np
from numpy.typing import ArrayLike

from . import backend
from ._kernel_cache import POOL
from ._loss_base import EPSILON, Loss, _as_float_array, _check_mask, _grad_dtype, _sample_weights

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "log_softmax",
]


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, as Keras's ``BinaryCrossentropy`` (``"binary_crossentropy"``).

    The per-sample loss is ``-(y log p + (1-y) log(1-p))`` averaged over the last axis, with p
    clipped to [1e-7, 1 - 1e-7]. With ``from_logits=True`` y_pred are logits z and the loss is
    ``softplus(z) - y z``, computed stably (gradient ``sigmoid(z) - y``).

    Args:
        from_logits (bool): Whether ``y_pred`` holds logits (True) or probabilities (False, the
            default), as in Keras.

    Example:
        >>> import numpy as np
        >>> from fastrnn import losses
        >>> value, grad = losses.BinaryCrossentropy(from_logits=True)(np.array([[1.0]]), np.array([[0.0]]))
        >>> round(value, 4), grad.tolist()                  # log(2), sigmoid(0) - 1
        (0.6931, [[-0.5]])
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def _elementwise(self, y_true, y_pred):
        c = y_pred.shape[-1]
        if self.from_logits:
            z = y_pred
            loss = np.maximum(z, 0.0) - z * y_true + np.log1p(np.exp(-np.abs(z)))
            sig = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow
            return loss.mean(axis=-1), (sig - y_true) / c
        p = np.clip(y_pred, EPSILON, 1.0 - EPSILON)
        loss = -(y_true * np.log(p) + (1.0 - y_true) * np.log(1.0 - p))
        grad = (p - y_true) / (p * (1.0 - p))
        return loss.mean(axis=-1), grad / c

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}


def _fused_core(y_pred):
    """The compiled module when the fused kernel (fastrnn._core.xent) takes ``y_pred``: a float32
    NumPy array with a class axis (not CuPy, not float64: those keep the NumPy path); else None."""
    if type(y_pred) is not np.ndarray or y_pred.dtype != np.float32 or y_pred.ndim < 2 or y_pred.size == 0:
        return None
    try:
        return backend.core()
    except ImportError:  # pragma: no cover - only on broken installs
        return None


# Gradients of the fused kernel that came from the buffer pool (by id; entries vanish with their
# arrays): a training step may divide such a gradient in place and give it back (grad_from_pool).
_POOL_GRADS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def grad_from_pool(a: object) -> bool:
    """Whether ``a`` is a gradient the fused crossentropy took from fastrnn's buffer pool (its
    caller may return it with ``POOL.give`` once done with it).

    Args:
        a (object): The gradient a loss's ``sum_and_grad`` returned (any object).

    Returns:
        bool: True for the pooled array itself, False for anything else.
    """
    return _POOL_GRADS.get(id(a)) is a


def _fused_sum_and_grad(core, y_pred, ids, y, m, w, from_logits, mean=False, into=None):
    """sum_and_grad through the fused C++ kernel: ``ids`` (int64 class ids, y_pred's shape without
    the class axis) or ``y`` (dense targets of y_pred's shape); ``m`` a bool mask or None, ``w``
    broadcastable per-entry weights (from _sample_weights) or None. With ``mean``, the gradient is
    that of the mean (sum / count), scaled in the kernel's pass. ``into``: y_pred itself, which the
    caller no longer needs (a training step's logits), to receive the gradient (ids only: each row
    is read before its gradient overwrites it), or None."""
    shape = y_pred.shape
    c = shape[-1]
    z = np.ascontiguousarray(y_pred).reshape(-1, c)
    n = z.shape[0]
    mask = None if m is None else np.ascontiguousarray(m, dtype=np.bool_).reshape(n).view(np.uint8)
    weight = None if w is None else np.ascontiguousarray(np.broadcast_to(w, shape[:-1]), dtype=np.float64).reshape(n)
    if ids is not None:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(n)
    else:
        y = np.ascontiguousarray(y, dtype=np.float32).reshape(n, c)
    count = int(m.sum()) if m is not None else n
    scale = (1.0 / count if count else 0.0) if mean else 1.0
    if (into is not None and ids is not None and into is y_pred and y_pred.flags.writeable
            and z.__array_interface__["data"][0] == y_pred.__array_interface__["data"][0]):  # not a copy
        per, _ = core.xent(z, ids, y, mask, weight, from_logits, z, scale)
        return float(per.sum()), count, y_pred
    out = POOL.take(shape)  # an array of its own (not a view), so that it can go back to the pool
    per, grad = core.xent(z, ids, y, mask, weight, from_logits, None if out is None else out.reshape(n, c), scale)
    if out is None:
        return float(per.sum()), count, grad.reshape(shape)
    _POOL_GRADS[id(out)] = out
    return float(per.sum()), count, out


def log_softmax(z: np.ndarray) -> np.ndarray:
    """``log(softmax(z))`` over the last axis, computed stably (the maximum subtracted first)."""
    zmax = z.max(axis=-1, keepdims=True)
    s = z - zmax
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


_log_softmax = log_softmax  # private alias of log_softmax


def _categorical(y_true, y_pred, from_logits):
    """Per-sample ``-sum(y log q)`` and its gradient; y_true are (soft) one-hot targets."""
    if from_logits:
        logq = log_softmax(y_pred)
        q = np.exp(logq)
        with np.errstate(invalid="ignore"):  # 0 * -inf: a class of -inf logit and no target weight adds 0
            loss = -np.where(y_true != 0, y_true * logq, 0.0).sum(axis=-1)
        grad = q * y_true.sum(axis=-1, keepdims=True) - y_true
        return loss, grad
    # Keras: normalise the probabilities over the last axis, then clip.
    s = y_pred.sum(axis=-1, keepdims=True)
    s = np.where(s == 0, 1.0, s)
    q = y_pred / s
    qc = np.clip(q, EPSILON, 1.0 - EPSILON)
    loss = -(y_true * np.log(qc)).sum(axis=-1)
    g = -y_true / qc  # d loss / d q
    grad = (g - (g * q).sum(axis=-1, keepdims=True)) / s
    return loss, grad


class _MeanInKernel:
    """The training step's gradient of the mean from the fused kernel's own pass (its grad_scale),
    for the crossentropies whose ``_sum_and(..., mean)`` takes the flag. A subclass that overrides
    ``sum_and_grad`` gets the base class's division of its own gradient instead."""

    def _sum_and_mean_grad(self, y_true, y_pred, mask=None, sample_weight=None, into=None):
        if type(self).sum_and_grad not in (CategoricalCrossentropy.sum_and_grad,
                                           SparseCategoricalCrossentropy.sum_and_grad):
            return Loss._sum_and_mean_grad(self, y_true, y_pred, mask, sample_weight)
        return self._sum_and(y_true, y_pred, mask, sample_weight, True, into)


class CategoricalCrossentropy(_MeanInKernel, Loss):
    """Categorical cross-entropy, as Keras's ``CategoricalCrossentropy``.

    The per-sample loss is ``-sum(y * log p)`` over the last axis, with one-hot (or soft) targets
    of y_pred's shape. Probabilities are normalised over the last axis first and clipped, as in
    Keras; ``from_logits=True`` applies a stable log-softmax to y_pred instead.

    Args:
        from_logits (bool): Whether ``y_pred`` holds logits (True) or probabilities (False, the
            default), as in Keras.
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def _elementwise(self, y_true, y_pred):
        return _categorical(y_true, y_pred, self.from_logits)

    def sum_and_grad(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None,
                     sample_weight: ArrayLike | None = None) -> tuple[float, int, np.ndarray]:
        """As :meth:`Loss.sum_and_grad`; float32 NumPy predictions go through the fused C++ kernel
        (one sweep over each row of logits, threaded over rows), the rest through the NumPy form."""
        return self._sum_and(y_true, y_pred, mask, sample_weight, False)

    def _sum_and(self, y_true, y_pred, mask, sample_weight, mean, into=None):
        # into (the gradient written over y_pred) is not taken: dense targets need the logits twice
        core = _fused_core(y_pred)
        if core is None:
            f = Loss._sum_and_mean_grad if mean else Loss.sum_and_grad
            return f(self, y_true, y_pred, mask, sample_weight)
        y_true = self._prepare_true(_as_float_array(y_true, "y_true"), y_pred)
        m = _check_mask(mask, y_pred.shape[:-1])
        w = _sample_weights(sample_weight, y_pred.shape[:-1])
        return _fused_sum_and_grad(core, y_pred, None, y_true, m, w, self.from_logits, mean)

    def _prepare_true(self, y_true, y_pred):
        if y_true.shape != y_pred.shape:
            raise ValueError(
                f"y_true: expected one-hot targets of shape {y_pred.shape} for loss '{self.name}', got "
                f"{y_true.shape} (use sparse_categorical_crossentropy for integer class ids)"
            )
        return y_true.astype(np.float64)

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}


class SparseCategoricalCrossentropy(_MeanInKernel, Loss):
    """Categorical cross-entropy with integer class ids as targets, as Keras's
    ``SparseCategoricalCrossentropy``.

    y_true has y_pred's shape without the class axis (or with a trailing axis of 1); ids must be
    whole numbers in ``[0, C)`` (ValueError otherwise). No one-hot array is built.

    Args:
        from_logits (bool): Whether ``y_pred`` holds logits (True) or probabilities (False, the
            default), as in Keras.

    Example:
        >>> import numpy as np
        >>> from fastrnn import losses
        >>> loss = losses.SparseCategoricalCrossentropy(from_logits=True)
        >>> value, grad = loss(np.array([0, 1]), np.zeros((2, 4)))
        >>> round(value, 4), grad.shape                     # log(4)
        (1.3863, (2, 4))
    """

    name = "sparse_categorical_crossentropy"
    sparse = True

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)

    def _prepare_true(self, y_true, y_pred):
        if y_pred.ndim < 2:
            raise ValueError(
                f"y_pred: expected class scores with a class axis [batch, ..., classes] for loss "
                f"'{self.name}', got shape {y_pred.shape}"
            )
        want = y_pred.shape[:-1]
        if y_true.shape == want + (1,):
            y_true = y_true.reshape(want)
        if y_true.shape != want:
            raise ValueError(f"y_true: expected class ids of shape {want} for loss '{self.name}', got {y_true.shape}")
        if np.issubdtype(y_true.dtype, np.floating) and (
                not np.all(np.isfinite(y_true)) or np.any(y_true != np.round(y_true))):
            raise ValueError(f"y_true: class ids must be whole numbers for loss '{self.name}'")
        ids = y_true.astype(np.int64)
        c = y_pred.shape[-1]
        if ids.size and (ids.min() < 0 or ids.max() >= c):
            raise ValueError(f"y_true: class ids must be in [0, {c}), got values in [{ids.min()}, {ids.max()}]")
        return ids

    def _elementwise(self, y_true, y_pred):
        """Reference form through a dense one-hot (kept for checks; ``sum_and_grad`` avoids it)."""
        onehot = np.zeros(y_pred.shape, dtype=np.float64)
        np.put_along_axis(onehot, y_true[..., None], 1.0, axis=-1)
        return _categorical(onehot, y_pred, self.from_logits)

    def sum_and_grad(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None,
                     sample_weight: ArrayLike | None = None) -> tuple[float, int, np.ndarray]:
        """As :meth:`Loss.sum_and_grad`, without a one-hot: the value gathers the target entries and
        the gradient (in y_pred's dtype) is softmax minus one at the target (logits), or the
        derivative of ``-log clip(p_t / sum p)`` (probabilities). Per-row sums and the target
        entries are computed in float64. Float32 NumPy predictions go through the fused C++
        kernel (fastrnn._core.xent), the others through the NumPy form below, its reference."""
        return self._sum_and(y_true, y_pred, mask, sample_weight, False)

    def _sum_and(self, y_true, y_pred, mask, sample_weight, mean, into=None):
        core = _fused_core(y_pred)
        if core is None and mean:
            return Loss._sum_and_mean_grad(self, y_true, y_pred, mask, sample_weight)
        y_pred = _as_float_array(y_pred, "y_pred")
        ids = self._prepare_true(_as_float_array(y_true, "y_true"), y_pred)
        m = _check_mask(mask, y_pred.shape[:-1])
        if core is not None:
            w = _sample_weights(sample_weight, y_pred.shape[:-1])
            return _fused_sum_and_grad(core, y_pred, ids, None, m, w, self.from_logits, mean, into)
        gdt = _grad_dtype(y_pred)
        wdt = np.dtype(np.float64) if gdt == np.float64 else np.dtype(np.float32)
        z = y_pred.astype(wdt, copy=False)
        idx = ids[..., None]
        zt = np.take_along_axis(z, idx, axis=-1).astype(np.float64)  # [..., 1]
        if self.from_logits:
            zmax = z.max(axis=-1, keepdims=True)
            grad = z - zmax  # the only full-size temporary, in the working dtype
            np.exp(grad, out=grad)
            se = grad.sum(axis=-1, keepdims=True, dtype=np.float64)
            per = (np.log(se) + (zmax.astype(np.float64) - zt))[..., 0]  # -log softmax(z)_t
            grad /= se.astype(wdt)
            # softmax_t - 1 = expm1(log softmax_t), accurate when softmax_t is close to 1
            np.put_along_axis(grad, idx, np.expm1(-per)[..., None].astype(wdt), axis=-1)
        else:
            # Keras: normalise the probabilities over the last axis, then clip
            s = z.sum(axis=-1, keepdims=True, dtype=np.float64)
            s = np.where(s == 0, 1.0, s)
            qt = zt / s
            qc = np.clip(qt, EPSILON, 1.0 - EPSILON)
            per = -np.log(qc)[..., 0]
            # -1/qc_t times d q_t / d p_j (the clip only guards the division): (q_t/qc_t)/s for
            # every j, plus -1/(qc_t s) at the target
            other = qt / qc / s
            grad = np.empty(z.shape, dtype=wdt)
            grad[...] = other.astype(wdt)
            np.put_along_axis(grad, idx, ((qt - 1.0) / qc / s).astype(wdt), axis=-1)
        if m is not None:
            per = np.where(m, per, 0.0)
            grad[~m] = 0
            count = int(m.sum())
        else:
            count = int(np.prod(per.shape))
        w = _sample_weights(sample_weight, per.shape)
        if w is not None:
            per = per * w
            grad *= w[..., None].astype(wdt)
        return float(per.sum()), count, grad.astype(gdt, copy=False)

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}
