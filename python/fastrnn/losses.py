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

The classes are defined in ``fastrnn._loss_base`` (``Loss`` and the elementwise losses) and
``fastrnn._crossentropy`` (the crossentropies and ``log_softmax``); import them from here.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from ._crossentropy import BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy, log_softmax
from ._crossentropy import _categorical as _categorical
from ._crossentropy import _log_softmax as _log_softmax
from ._loss_base import EPSILON as EPSILON
from ._loss_base import Loss, MeanAbsoluteError, MeanSquaredError
from ._loss_base import _as_float_array as _as_float_array
from ._loss_base import _check_mask as _check_mask
from ._loss_base import _grad_dtype as _grad_dtype
from ._loss_base import _sample_weights as _sample_weights

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
