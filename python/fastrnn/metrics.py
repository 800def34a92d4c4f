"""Metrics: stateful running means over batches, as Keras metrics.

Each metric has ``update_state(y_true, y_pred, mask=None)``, ``result()``, ``reset_state()`` and,
for one-off use, ``metric(y_true, y_pred, mask=None) -> float`` (the value on that batch alone).
Values are computed per sample (per sample and time step for sequence outputs ``[B, T, C]``) and
averaged over the valid entries; ``mask`` has ``y_pred.shape[:-1]`` like the losses' mask.

``"accuracy"`` / ``"acc"`` in ``Model.compile`` picks the accuracy that fits the loss, as Keras does:
binary_accuracy for binary crossentropy (threshold 0 instead of 0.5 when the loss takes logits),
sparse_categorical_accuracy for sparse categorical crossentropy, categorical_accuracy for
categorical crossentropy; for other losses it decides from the shapes on the first batch (last axis
of 1 -> binary; y_true with one axis fewer than y_pred -> sparse; otherwise categorical).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from . import losses as _losses

__all__ = [
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "MeanAbsoluteError",
    "MeanMetricWrapper",
    "MeanSquaredError",
    "Metric",
    "SparseCategoricalAccuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "get",
    "sparse_categorical_accuracy",
]


def _arr(a, argname):
    return _losses._as_float_array(a, argname)


def _pair(y_true, y_pred, sparse) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) with y_pred at least 2-D and y_true aligned to it."""
    y_pred = _arr(y_pred, "y_pred")
    y_true = _arr(y_true, "y_true")
    if y_pred.ndim == 0:
        raise ValueError(f"y_pred: expected at least 1 dimension [batch, ...], got shape {y_pred.shape}")
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if sparse:
        want = y_pred.shape[:-1]
        if y_true.shape == want + (1,):
            y_true = y_true.reshape(want)
        if y_true.shape != want:
            raise ValueError(f"y_true: expected class ids of shape {want}, got {y_true.shape}")
        return y_true, y_pred
    if y_true.shape == y_pred.shape:
        return y_true, y_pred
    if y_pred.shape[-1] == 1 and y_true.shape == y_pred.shape[:-1]:
        return y_true.reshape(y_pred.shape), y_pred
    if y_true.shape == y_pred.shape + (1,):
        return y_true.reshape(y_pred.shape), y_pred
    raise ValueError(f"y_true: expected shape {y_pred.shape} (the shape of y_pred), got {y_true.shape}")


def binary_accuracy(y_true: ArrayLike, y_pred: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """Per-sample fraction of entries where ``(y_pred > threshold) == (y_true > 0.5)`` (last axis averaged).

    Args:
        y_true: 0/1 targets.
        y_pred: Predictions (probabilities, or logits with threshold 0).
        threshold: Predictions above it count as 1 (default 0.5).

    Returns:
        The accuracies, of shape ``y_pred.shape[:-1]`` ([B] for [B] predictions).
    """
    y_true, y_pred = _pair(y_true, y_pred, sparse=False)
    return ((y_pred > threshold) == (y_true > 0.5)).mean(axis=-1)


def categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample 1.0 where ``argmax(y_pred) == argmax(y_true)`` over the last axis, else 0.0.

    Args:
        y_true: One-hot targets.
        y_pred: Class scores of the same shape.

    Returns:
        The accuracies, of shape ``y_pred.shape[:-1]``.
    """
    y_true, y_pred = _pair(y_true, y_pred, sparse=False)
    return (np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)).astype(np.float64)


def sparse_categorical_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """Per-sample 1.0 where ``argmax(y_pred) == y_true`` (integer class ids), else 0.0.

    Args:
        y_true: Class ids of shape ``y_pred.shape[:-1]`` (or with a trailing axis of 1).
        y_pred: Class scores [..., C].

    Returns:
        The accuracies, of shape ``y_pred.shape[:-1]``.
    """
    y_true, y_pred = _pair(y_true, y_pred, sparse=True)
    return (np.argmax(y_pred, axis=-1) == y_true.astype(np.int64)).astype(np.float64)


def _mse(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred, sparse=False)
    return ((y_pred.astype(np.float64) - y_true) ** 2).mean(axis=-1)


def _mae(y_true, y_pred):
    y_true, y_pred = _pair(y_true, y_pred, sparse=False)
    return np.abs(y_pred.astype(np.float64) - y_true).mean(axis=-1)


class Metric:
    """Base class of the metrics: a running mean of per-sample values over batches.

    Subclasses implement ``_per_sample(y_true, y_pred)``. ``update_state`` adds a batch,
    ``result`` gives the mean over the valid entries since ``reset_state``, and calling the
    metric gives the value on one batch alone (without changing the state).

    Args:
        name (str | None): The metric's name, the key in the logs and the History; default the
            class name in lower case.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__.lower()
        self.reset_state()

    def reset_state(self) -> None:
        """Forget all accumulated batches."""
        self._total = 0.0
        self._count = 0

    def _per_sample(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch(self, y_true, y_pred, mask):
        vals = np.asarray(self._per_sample(y_true, y_pred), dtype=np.float64)
        if mask is not None:
            m = _arr(mask, "mask")
            if m.shape != vals.shape:
                raise ValueError(f"mask: expected shape {vals.shape} (y_pred's shape without its last axis), "
                                 f"got {m.shape}")
            m = m.astype(bool)
            return float(vals[m].sum()), int(m.sum())
        return float(vals.sum()), int(vals.size)

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Add one batch to the running mean.

        Args:
            y_true: The targets.
            y_pred: The predictions.
            mask: Optional bool (or 0/1) of shape ``y_pred.shape[:-1]``, True at the entries
                that count.
        """
        total, count = self._batch(y_true, y_pred, mask)
        self._total += total
        self._count += count

    def result(self) -> float:
        """The mean over all batches since the last reset (0.0 before any valid entry)."""
        return self._total / self._count if self._count else 0.0

    def __call__(self, y_true: ArrayLike, y_pred: ArrayLike, mask: ArrayLike | None = None) -> float:
        total, count = self._batch(y_true, y_pred, mask)
        return total / count if count else 0.0

    def get_config(self) -> dict:
        """JSON-able constructor arguments."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Metric:
        """Recreate from ``get_config()``'s dict."""
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class MeanMetricWrapper(Metric):
    """A Metric from a function returning per-sample values.

    Args:
        fn (Callable): ``fn(y_true, y_pred) -> per-sample values`` (shape ``y_pred.shape[:-1]``).
        name (str | None): The metric's name; default the function's ``__name__``.

    Example:
        >>> import numpy as np
        >>> from fastrnn import metrics
        >>> def abs_err(y_true, y_pred):
        ...     return np.abs(y_pred - y_true).mean(axis=-1)
        >>> m = metrics.MeanMetricWrapper(abs_err)
        >>> m.update_state(np.zeros((2, 1)), np.array([[1.0], [3.0]]))
        >>> m.name, m.result()
        ('abs_err', 2.0)
    """

    def __init__(self, fn: Callable, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"metric: expected a callable, got {type(fn).__name__}")
        self.fn = fn
        super().__init__(name or getattr(fn, "__name__", "metric"))

    def _per_sample(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


class BinaryAccuracy(Metric):
    """Binary accuracy, as Keras's ``BinaryAccuracy``: predictions above ``threshold`` count as 1.

    Args:
        name (str): The metric's name, the key in the logs and the History (default 'binary_accuracy').
        threshold (float): The decision threshold (default 0.5; ``compile(metrics=["accuracy"])``
            uses 0 with a ``from_logits`` binary cross-entropy).

    Example:
        >>> import numpy as np
        >>> from fastrnn import metrics
        >>> metrics.BinaryAccuracy()(np.array([[1.0], [0.0]]), np.array([[0.9], [0.7]]))
        0.5
    """

    def __init__(self, name: str = "binary_accuracy", threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        super().__init__(name)

    def _per_sample(self, y_true, y_pred):
        return binary_accuracy(y_true, y_pred, self.threshold)

    def get_config(self) -> dict:
        return {"name": self.name, "threshold": self.threshold}


class CategoricalAccuracy(Metric):
    """Categorical accuracy with one-hot targets, as Keras's ``CategoricalAccuracy``.

    Args:
        name (str): The metric's name, the key in the logs and the History (default 'categorical_accuracy').
    """

    def __init__(self, name: str = "categorical_accuracy") -> None:
        super().__init__(name)

    def _per_sample(self, y_true, y_pred):
        return categorical_accuracy(y_true, y_pred)


class SparseCategoricalAccuracy(Metric):
    """Categorical accuracy with integer class ids as targets, as Keras's ``SparseCategoricalAccuracy``.

    Args:
        name (str): The metric's name, the key in the logs and the History (default 'sparse_categorical_accuracy').

    Example:
        >>> import numpy as np
        >>> from fastrnn import metrics
        >>> m = metrics.SparseCategoricalAccuracy()
        >>> m(np.array([2, 0]), np.array([[0.1, 0.2, 0.7], [0.3, 0.6, 0.1]]))
        0.5
    """

    def __init__(self, name: str = "sparse_categorical_accuracy") -> None:
        super().__init__(name)

    def _per_sample(self, y_true, y_pred):
        return sparse_categorical_accuracy(y_true, y_pred)


class MeanSquaredError(Metric):
    """Mean squared error over the last axis, averaged over samples (Keras's ``mse`` metric).

    Args:
        name (str): The metric's name, the key in the logs and the History (default 'mean_squared_error').
    """

    def __init__(self, name: str = "mean_squared_error") -> None:
        super().__init__(name)

    def _per_sample(self, y_true, y_pred):
        return _mse(y_true, y_pred)


class MeanAbsoluteError(Metric):
    """Mean absolute error over the last axis, averaged over samples (Keras's ``mae`` metric).

    Args:
        name (str): The metric's name, the key in the logs and the History (default 'mean_absolute_error').
    """

    def __init__(self, name: str = "mean_absolute_error") -> None:
        super().__init__(name)

    def _per_sample(self, y_true, y_pred):
        return _mae(y_true, y_pred)


class _AutoAccuracy(Metric):
    """'accuracy' for a loss that does not say which: decided from the shapes of the first batch."""

    def __init__(self, name="accuracy"):
        self._impl = None
        super().__init__(name)

    def _per_sample(self, y_true, y_pred):
        if self._impl is None:
            yt, yp = np.shape(y_true), np.shape(y_pred)
            if len(yp) <= 1 or yp[-1] == 1:
                self._impl = lambda a, b: binary_accuracy(a, b, 0.5)
            elif len(yt) == len(yp) - 1 or (len(yt) == len(yp) and yt[-1] == 1):
                self._impl = sparse_categorical_accuracy
            else:
                self._impl = categorical_accuracy
        return self._impl(y_true, y_pred)


_CLASSES = {c.__name__: c for c in (BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
                                    MeanSquaredError, MeanAbsoluteError)}
_NAMES = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
}


def get(identifier: str | Metric | dict | Callable, loss: _losses.Loss | None = None) -> Metric:
    """A Metric from a Keras name, a Metric, a ``{"class_name", "config"}`` dict or a callable.

    Args:
        identifier: A name ('accuracy' / 'acc', 'binary_accuracy', 'categorical_accuracy',
            'sparse_categorical_accuracy', 'mse', 'mae', ... ; the metric is named after the
            string given, so 'acc' appears as ``acc`` / ``val_acc`` in the history, as in Keras),
            a Metric (returned as is), a config dict, or a callable returning per-sample values
            (wrapped in a :class:`MeanMetricWrapper`).
        loss: The compiled Loss, which resolves 'accuracy' / 'acc' (see the module docstring).

    Returns:
        The Metric.

    Raises:
        ValueError: Unknown name or class.
        TypeError: Anything else.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key in ("accuracy", "acc"):
            if isinstance(loss, _losses.BinaryCrossentropy):
                return BinaryAccuracy(name=identifier, threshold=0.0 if loss.from_logits else 0.5)
            if isinstance(loss, _losses.SparseCategoricalCrossentropy):
                return SparseCategoricalAccuracy(name=identifier)
            if isinstance(loss, _losses.CategoricalCrossentropy):
                return CategoricalAccuracy(name=identifier)
            return _AutoAccuracy(name=identifier)
        cls = _NAMES.get(key)
        if cls is None:
            raise ValueError(
                f"metrics: unknown metric '{identifier}'; expected one of "
                f"{['accuracy', 'acc'] + sorted(_NAMES)} or a Metric object"
            )
        return cls(name=identifier)
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if name == "custom":
            cname = (identifier.get("config") or {}).get("name")
            raise ValueError(
                f"metrics: the custom metric '{cname}' cannot be rebuilt from a file; pass it as "
                f"custom_objects={{'{cname}': ...}} or load with compile=False and compile again"
            )
        if name not in _CLASSES:
            raise ValueError(f"metrics: unknown metric class '{name}'")
        return _CLASSES[name].from_config(identifier.get("config", {}))
    if callable(identifier):
        return MeanMetricWrapper(identifier)
    raise TypeError(f"metrics: expected a str, Metric or callable, got {type(identifier).__name__}")


def serialize(identifier: str | Metric | Callable) -> str | dict:
    """A JSON-able form of a metric identifier as given to compile (strings stay strings; custom
    metrics become ``{"class_name": "custom", "config": {"name": ...}}``, found again through
    ``custom_objects`` when loading)."""
    if isinstance(identifier, str):
        return identifier
    if isinstance(identifier, Metric) and type(identifier).__name__ in _CLASSES:
        return {"class_name": type(identifier).__name__, "config": identifier.get_config()}
    name = getattr(identifier, "name", None) or getattr(identifier, "__name__", type(identifier).__name__)
    return {"class_name": "custom", "config": {"name": name}}
