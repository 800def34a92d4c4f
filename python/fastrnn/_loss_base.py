"""The base of :mod:`fastrnn.losses`: the :class:`Loss` class, the checks of its inputs, and the
elementwise losses (mean squared and mean absolute error). The conventions (reduction, masks,
sample weights, gradient dtype) are described in ``fastrnn.losses``' docstring; the classes are
importable from there."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._config import Configurable

EPSILON = 1e-7

__all__ = [
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
]


def _as_float_array(a, argname):
    if type(a).__module__.startswith("cupy"):
        a = a.get()
    a = np.asarray(a)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{argname}: expected a numeric array, got dtype {a.dtype}")
    return a


def _grad_dtype(y_pred):
    return y_pred.dtype if np.issubdtype(y_pred.dtype, np.floating) else np.dtype(np.float32)


def _sample_weights(sample_weight, per_shape):
    """Per-entry weights broadcast to ``per_shape`` (float64), or None. Keras's shapes: one weight
    per sample [B] (also [B, 1]), or one per sample and step, the shape of the per-entry losses."""
    if sample_weight is None:
        return None
    w = _as_float_array(sample_weight, "sample_weight").astype(np.float64)
    per_shape = tuple(per_shape)
    if w.ndim == len(per_shape) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    if w.ndim < 1 or w.ndim > len(per_shape) or w.shape != per_shape[:w.ndim]:
        raise ValueError(
            f"sample_weight: expected shape {per_shape[:1]} (one weight per sample) or {per_shape} (one per "
            f"entry of the loss), got {w.shape}"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight: weights must be finite")
    return w.reshape(w.shape + (1,) * (len(per_shape) - w.ndim))


def _check_mask(mask, per_sample_shape):
    if mask is None:
        return None
    mask = _as_float_array(mask, "mask")
    if mask.shape != tuple(per_sample_shape):
        raise ValueError(
            f"mask: expected shape {tuple(per_sample_shape)} (y_pred's shape without its last axis), "
            f"got {mask.shape}"
        )
    return mask.astype(bool)


class Loss(Configurable):
    """Base class. Subclasses implement ``_elementwise(y_true, y_pred) -> (per_sample, dper_sample)``.

    ``per_sample`` has shape ``y_pred.shape[:-1]``; ``dper_sample`` is the gradient of
    ``per_sample.sum()`` with respect to ``y_pred`` (shape of ``y_pred``), both in float64.
    """

    name = "loss"
    sparse = False  # y_true holds class ids (one axis fewer than y_pred)

    def __call__(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None
                 ) -> tuple[float, np.ndarray]:
        """The mean loss over the valid entries and its gradient.

        Args:
            y_true: The targets.
            y_pred: The predictions [B, ..., C].
            mask: Optional bool (or 0/1) of shape ``y_pred.shape[:-1]``, True at valid entries.

        Returns:
            ``(value, d value / d y_pred)``: a float and an array of y_pred's shape and float
            dtype (0 and a zero gradient when no entry is valid).
        """
        total, count, dtotal = self.sum_and_grad(y_true, y_pred, mask)
        if count == 0:
            return 0.0, np.zeros_like(dtotal)
        return total / count, (dtotal / count).astype(dtotal.dtype, copy=False)

    def _entries(self, y_true, y_pred):
        """(y_pred, per-entry losses [y_pred.shape[:-1]], their gradients), float64."""
        y_pred = _as_float_array(y_pred, "y_pred")
        if y_pred.ndim < 1:
            raise ValueError(f"y_pred: expected at least 1 dimension [batch, ...], got shape {y_pred.shape}")
        y_true = self._prepare_true(_as_float_array(y_true, "y_true"), y_pred)
        if y_pred.ndim == 1:  # [B] predictions: one value per sample
            y_pred2 = y_pred[:, None]
            y_true2 = y_true if self.sparse else y_true[:, None]
        else:
            y_pred2, y_true2 = y_pred, y_true
        per, dper = self._elementwise(y_true2, y_pred2.astype(np.float64))
        return y_pred, per, dper

    def per_sample(self, y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
        """The loss of every sample (and step), unreduced, like Keras's functional losses
        (``keras.losses.mean_squared_error(y_true, y_pred)``).

        Args:
            y_true: The targets.
            y_pred: The predictions.

        Returns:
            The losses, of shape ``y_pred.shape[:-1]`` ([B] for [B] predictions), in y_pred's
            float dtype.
        """
        y_pred, per, _ = self._entries(y_true, y_pred)
        return per.astype(_grad_dtype(y_pred), copy=False)

    def sum_and_grad(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None,
                     sample_weight: ArrayLike | None = None) -> tuple[float, int, np.ndarray]:
        """The summed loss, the number of valid entries and the gradient of the sum.

        Models use this to weight chunks of a sequence (truncated BPTT) by their valid entries.

        Args:
            y_true: The targets.
            y_pred: The predictions.
            mask: Optional bool (or 0/1) of shape ``y_pred.shape[:-1]``, True at valid entries.
            sample_weight: Optional weights, [B] or the shape of the per-entry losses, multiplying
                each entry's loss; the count stays that of the valid entries, so the mean is
                Keras's: sum(w * loss) / count.

        Returns:
            ``(sum of the per-entry losses, number of valid entries, gradient of the sum w.r.t.
            y_pred)``.
        """
        y_pred, per, dper = self._entries(y_true, y_pred)
        y_pred2 = y_pred[:, None] if y_pred.ndim == 1 else y_pred
        m = _check_mask(mask, y_pred2.shape[:-1])
        w = _sample_weights(sample_weight, per.shape)
        if m is not None:
            per = np.where(m, per, 0.0)
            dper = np.where(m[..., None], dper, 0.0)  # a select: NaN * 0 would be NaN
            count = int(m.sum())
        else:
            count = int(np.prod(per.shape))
        if w is not None:
            per = per * w
            dper = dper * w[..., None]
        return float(per.sum()), count, dper.reshape(y_pred.shape).astype(_grad_dtype(y_pred))

    def _sum_and_mean_grad(self, y_true, y_pred, mask=None, sample_weight=None):
        """(sum, count, gradient of the mean sum / count): what a training step needs. Here
        sum_and_grad's gradient divided by the count (zeros for no valid entry); the fused
        crossentropies scale it inside their kernel's one pass instead."""
        total, count, grad = self.sum_and_grad(y_true, y_pred, mask, sample_weight)
        return total, count, (grad / count if count else np.zeros_like(grad))

    def _prepare_true(self, y_true, y_pred):
        if y_true.shape == y_pred.shape:
            return y_true.astype(np.float64)
        if y_pred.ndim >= 2 and y_pred.shape[-1] == 1 and y_true.shape == y_pred.shape[:-1]:
            return y_true.reshape(y_pred.shape).astype(np.float64)
        if y_pred.ndim >= 1 and y_true.shape == y_pred.shape + (1,):
            return y_true.reshape(y_pred.shape).astype(np.float64)
        raise ValueError(
            f"y_true: expected shape {y_pred.shape} (the shape of y_pred) for loss '{self.name}', "
            f"got {y_true.shape}"
        )

    def _elementwise(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError


class MeanSquaredError(Loss):
    """Mean squared error, as Keras's ``MeanSquaredError`` (``"mse"``).

    The per-sample loss is the mean over the last axis of ``(y_pred - y_true)**2``; the value is
    its mean over the valid samples (and steps). Takes no arguments.

    Example:
        >>> import numpy as np
        >>> from fastrnn import losses
        >>> value, grad = losses.MeanSquaredError()(np.array([[1.0, 2.0]]), np.array([[1.0, 4.0]]))
        >>> value, grad.tolist()
        (2.0, [[0.0, 2.0]])
    """

    name = "mean_squared_error"

    def _elementwise(self, y_true, y_pred):
        d = y_pred - y_true
        c = y_pred.shape[-1]
        return (d * d).mean(axis=-1), 2.0 * d / c


class MeanAbsoluteError(Loss):
    """Mean absolute error, as Keras's ``MeanAbsoluteError`` (``"mae"``).

    The per-sample loss is the mean over the last axis of ``|y_pred - y_true|``; the gradient at
    0 is 0. Takes no arguments.
    """

    name = "mean_absolute_error"

    def _elementwise(self, y_true, y_pred):
        d = y_pred - y_true
        c = y_pred.shape[-1]
        return np.abs(d).mean(axis=-1), np.sign(d) / c
