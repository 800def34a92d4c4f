"""Loss functions that return the value and its gradient with respect to the predictions.

Every loss is an object (``MeanSquaredError()``) or a Keras name (``"mse"``), and is called as
``value, grad = loss(y_true, y_pred, mask=None)``: ``value`` is a Python float and ``grad`` has
``y_pred``'s shape and floating dtype (float32 predictions give a float32 gradient; float64 ones a
float64 gradient, which is what finite-difference checks use).

Reduction (Keras's ``sum_over_batch_size``): the last axis is reduced first (mean for mse, mae and
binary crossentropy; sum for the categorical crossentropies), which gives one loss per sample, or per
sample and time step for sequence outputs ``[B, T, C]``; the value is the mean of those over the
valid entries. ``mask`` (bool or 0/1, shape ``y_pred.shape[:-1]``, e.g. ``[B, T]``) marks the valid
entries: masked entries contribute nothing to the value or the gradient, and the mean is over the
valid ones only (0 with zero gradient when none is valid).

Probability inputs are clipped to ``[1e-7, 1 - 1e-7]`` as Keras does; the gradient is the
derivative of the loss evaluated at the clipped probability (it is not zeroed where clipping acts,
so a saturated sigmoid/softmax output still learns). ``from_logits=True`` uses the stable
log-sum-exp / softplus forms, whose gradients are ``sigmoid(z) - y`` and ``softmax(z) - y``.

Keras's functional forms are here too and return the unreduced per-sample losses (no gradient):
``mean_squared_error(y_true, y_pred)``, ``mean_absolute_error``, ``binary_crossentropy``,
``categorical_crossentropy``, ``sparse_categorical_crossentropy`` (``loss.per_sample`` on an object).
``log_softmax(z)`` is the stable log-softmax the crossentropies on logits use.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from ._config import Configurable

EPSILON = 1e-7

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "Loss",
    "LossFunctionWrapper",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "OutputLosses",
    "SparseCategoricalCrossentropy",
    "binary_crossentropy",
    "categorical_crossentropy",
    "deserialize",
    "get",
    "log_softmax",
    "mean_absolute_error",
    "mean_squared_error",
    "serialize",
    "sparse_categorical_crossentropy",
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
        loss = -(y_true * logq).sum(axis=-1)
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


class CategoricalCrossentropy(Loss):
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

    def _prepare_true(self, y_true, y_pred):
        if y_true.shape != y_pred.shape:
            raise ValueError(
                f"y_true: expected one-hot targets of shape {y_pred.shape} for loss '{self.name}', got "
                f"{y_true.shape} (use sparse_categorical_crossentropy for integer class ids)"
            )
        return y_true.astype(np.float64)

    def get_config(self) -> dict:
        return {"from_logits": self.from_logits}


class SparseCategoricalCrossentropy(Loss):
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
        entries are computed in float64."""
        y_pred = _as_float_array(y_pred, "y_pred")
        ids = self._prepare_true(_as_float_array(y_true, "y_true"), y_pred)
        m = _check_mask(mask, y_pred.shape[:-1])
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
            per = (np.log(se) + zmax.astype(np.float64) - zt)[..., 0]  # -log softmax(z)_t
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


class LossFunctionWrapper(Loss):
    """Wraps a callable returning ``(value, grad)`` as a Loss.

    The callable must return the gradient itself (there is no automatic differentiation). Its
    value is taken as the mean over all entries of y_pred but the last axis. When a mask is
    present and the callable takes no ``mask`` argument, calling it is an error (ValueError)
    rather than silently ignoring the mask; sample weights are refused.

    Args:
        fn (Callable): ``fn(y_true, y_pred[, mask=None]) -> (value, d value / d y_pred)``.
        name (str | None): The loss's name; default the callable's ``__name__``.

    Example:
        >>> import numpy as np
        >>> from fastrnn import losses
        >>> def l2(y_true, y_pred):
        ...     d = y_pred - y_true
        ...     return float((d * d).mean()), 2 * d / d.size
        >>> loss = losses.LossFunctionWrapper(l2)
        >>> loss.name, loss(np.zeros((1, 2)), np.ones((1, 2)))[0]
        ('l2', 1.0)
    """

    def __init__(self, fn: Callable, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"loss: expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        try:
            params = inspect.signature(fn).parameters
            self._takes_mask = "mask" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):  # builtins without a signature
            self._takes_mask = False

    def __call__(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None
                 ) -> tuple[float, np.ndarray]:
        if mask is not None and not self._takes_mask:
            raise ValueError(
                f"loss '{self.name}': the model's outputs carry a mask but the loss callable takes no "
                "'mask' argument; add a mask=None parameter to it"
            )
        out = self.fn(y_true, y_pred, mask=mask) if self._takes_mask else self.fn(y_true, y_pred)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                f"loss '{self.name}': a loss callable must return (value, gradient w.r.t. y_pred), "
                f"got {type(out).__name__}"
            )
        value, grad = out
        grad = np.asarray(grad)
        if grad.shape != np.shape(y_pred):
            raise ValueError(
                f"loss '{self.name}': gradient has shape {grad.shape}, expected y_pred's shape {np.shape(y_pred)}"
            )
        return float(value), grad

    def sum_and_grad(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None,
                     sample_weight: ArrayLike | None = None) -> tuple[float, int, np.ndarray]:
        """Treats the callable's value as the mean over all entries of y_pred but the last axis
        (over the samples for 1-D predictions [B]). A callable returns one value, not one per
        sample, so it cannot be weighted per sample: ``sample_weight`` is refused."""
        if sample_weight is not None:
            raise ValueError(f"sample_weight: loss '{self.name}' is a callable returning (value, gradient), which "
                             "cannot be weighted per sample; use a fastrnn.losses.Loss subclass")
        value, grad = self(y_true, y_pred, mask)
        y_pred = np.asarray(y_pred)
        if mask is not None:
            count = int(np.asarray(mask).astype(bool).sum())
        elif y_pred.ndim == 1:  # [B] predictions: one value per sample, as in the built-in losses
            count = int(y_pred.shape[0])
        else:
            count = int(np.prod(y_pred.shape[:-1]))
        return value * count, count, grad * count

    def get_config(self) -> dict:
        return {"name": self.name}


_ALIASES = {
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "meansquarederror": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "meanabsoluteerror": MeanAbsoluteError,
    "binary_crossentropy": BinaryCrossentropy,
    "binarycrossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "categoricalcrossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "sparsecategoricalcrossentropy": SparseCategoricalCrossentropy,
}
class OutputLosses(Loss):
    """The loss of a model with several outputs, as Keras's ``compile(loss=[...], loss_weights=[...])``:
    ``sum_i weights[i] * (mean loss i over its output's valid entries)``; an output whose loss is
    None does not count. ``sum_and_grad`` takes lists (one entry per output) of targets,
    predictions and masks; ``sample_weight`` ([B]) weighs every output's loss. It returns the
    value times the batch size, the batch size and the list of the outputs' gradients of that sum
    (None for outputs without a loss), so that a mean over batches weighs them by their size.

    Args:
        losses: One loss per output (a Loss, its name, a callable, or None for an output that is not
            trained).
        weights: One weight per output (Keras's ``loss_weights``); default 1 for each.
    """

    def __init__(self, losses: Sequence[Any], weights: Sequence[float] | None = None):
        self.losses = [None if loss is None else get(loss) for loss in losses]
        if weights is None:
            weights = [1.0] * len(self.losses)
        if len(weights) != len(self.losses):
            raise ValueError(f"loss_weights: expected {len(self.losses)} weights (one per output), got {len(weights)}")
        self.weights = [float(w) for w in weights]

    def sum_and_grad(self, y_true: Any, y_pred: Any, mask: Any = None,
                     sample_weight: ArrayLike | None = None) -> tuple[float, int, list]:
        n = len(self.losses)
        if not isinstance(y_pred, (list, tuple)) or len(y_pred) != n or len(y_true) != n:
            raise ValueError(f"y: the model has {n} outputs; expected {n} targets and {n} predictions")
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * n
        batch = int(np.shape(y_pred[0])[0])
        value, grads = 0.0, []
        for loss, w, yt, yp, m in zip(self.losses, self.weights, y_true, y_pred, masks):
            if loss is None:
                grads.append(None)
                continue
            total, count, dtotal = loss.sum_and_grad(yt, yp, m, sample_weight=sample_weight)
            scale = w / count if count else 0.0
            value += scale * total
            grads.append((dtotal * (scale * batch)).astype(dtotal.dtype, copy=False))
        return value * batch, batch, grads

    def __call__(self, y_true: Any, y_pred: Any, mask: Any = None) -> tuple[float, list]:
        total, count, grads = self.sum_and_grad(y_true, y_pred, mask)
        return total / count, [None if g is None else g / count for g in grads]

    def get_config(self) -> dict:
        return {"losses": [None if loss is None else serialize(loss) for loss in self.losses],
                "weights": list(self.weights)}

    @classmethod
    def from_config(cls, config: dict) -> OutputLosses:
        return cls([None if c is None else deserialize(c) for c in config["losses"]], config.get("weights"))


_CLASSES = {c.__name__: c for c in (MeanSquaredError, MeanAbsoluteError, BinaryCrossentropy,
                                    CategoricalCrossentropy, SparseCategoricalCrossentropy, OutputLosses)}


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample mean squared error over the last axis (``keras.losses.mean_squared_error``).

    Like every functional loss here, [B] predictions count as one value per sample and give [B]
    (Keras reduces their last axis, the batch, to one number: the mean of these)."""
    return MeanSquaredError().per_sample(y_true, y_pred)


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample mean absolute error over the last axis (``keras.losses.mean_absolute_error``)."""
    return MeanAbsoluteError().per_sample(y_true, y_pred)


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False) -> np.ndarray:
    """Per-sample binary crossentropy averaged over the last axis (``keras.losses.binary_crossentropy``)."""
    return BinaryCrossentropy(from_logits=from_logits).per_sample(y_true, y_pred)


def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False) -> np.ndarray:
    """Per-sample crossentropy with one-hot targets (``keras.losses.categorical_crossentropy``)."""
    return CategoricalCrossentropy(from_logits=from_logits).per_sample(y_true, y_pred)


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike,
                                    from_logits: bool = False) -> np.ndarray:
    """Per-sample crossentropy with integer targets (``keras.losses.sparse_categorical_crossentropy``)."""
    return SparseCategoricalCrossentropy(from_logits=from_logits).per_sample(y_true, y_pred)


_FUNCTIONS = {mean_squared_error: MeanSquaredError, mean_absolute_error: MeanAbsoluteError,
              binary_crossentropy: BinaryCrossentropy, categorical_crossentropy: CategoricalCrossentropy,
              sparse_categorical_crossentropy: SparseCategoricalCrossentropy}


def get(identifier: str | Loss | dict | Callable) -> Loss:
    """A Loss from a name, a Loss, a config dict or a callable.

    Args:
        identifier: A Keras name (``"mse"``, ``"mae"``, ``"binary_crossentropy"`` / ``"bce"``,
            ``"categorical_crossentropy"``, ``"sparse_categorical_crossentropy"``, any case), a
            Loss (returned as is), a ``{"class_name", "config"}`` dict, one of this module's
            functional losses (its class), or a callable returning (value, grad) (wrapped in a
            :class:`LossFunctionWrapper`).

    Returns:
        The Loss.

    Raises:
        ValueError: Unknown name.
        TypeError: Anything else.
    """
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier.lower())
        if cls is None:
            raise ValueError(
                f"loss: unknown loss '{identifier}'; expected one of "
                f"{sorted(k for k in _ALIASES if '_' in k or len(k) <= 3)} or a Loss object"
            )
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if identifier in _FUNCTIONS:  # compile(loss=losses.mean_squared_error), as with keras.losses
        return _FUNCTIONS[identifier]()
    if callable(identifier):
        return LossFunctionWrapper(identifier)
    raise TypeError(f"loss: expected a str, Loss or callable, got {type(identifier).__name__}")


def serialize(loss: Loss) -> dict:
    """``{"class_name", "config"}`` for a loss.

    Args:
        loss: The loss. A wrapped callable gives ``{"class_name": "function", "config": {"name":
            ...}}``, which :func:`deserialize` resolves through ``custom_objects``.

    Returns:
        The JSON-able dict.
    """
    if isinstance(loss, LossFunctionWrapper):
        return {"class_name": "function", "config": {"name": loss.name}}
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(config: dict, custom_objects: dict | None = None) -> Loss:
    """Inverse of :func:`serialize`.

    Args:
        config: :func:`serialize`'s dict.
        custom_objects: ``{name: class or callable}`` for custom losses, looked up by name.

    Returns:
        The Loss.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"loss config: expected a dict with 'class_name', got {config!r}")
    name = config["class_name"]
    cfg = config.get("config", {}) or {}
    custom_objects = custom_objects or {}
    if name == "function":
        fname = cfg.get("name")
        if fname in custom_objects:
            return get(custom_objects[fname])
        raise ValueError(
            f"loss config: the loss is the custom function '{fname}'; pass it as custom_objects={{'{fname}': fn}}"
        )
    if name in custom_objects:
        obj = custom_objects[name]
        return obj.from_config(cfg) if isinstance(obj, type) else get(obj)
    if name in _CLASSES:
        return _CLASSES[name].from_config(cfg)
    raise ValueError(f"loss config: unknown loss class '{name}'; pass it in custom_objects")
