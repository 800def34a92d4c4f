"""Reshaping layers: Flatten, RepeatVector.

Importable from ``fastrnn.layers`` and, as before, from ``fastrnn.layers.core``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._validation import layer_positive_int as _positive_int
from ._core_common import _Stateless
from .base import register_layer

__all__ = [
    "Flatten",
    "RepeatVector",
]


@register_layer
class Flatten(_Stateless):
    """Flattens every sample into a vector: [B, d1, d2, ...] -> [B, d1*d2*...].

    The output has no mask.

    Args:
        **kwargs (Any): ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, d1, d2, ...].
        training (bool): Keep the input shape for ``backward`` (default False).
        mask: Ignored.

    Input shape:
        [batch, d1, d2, ...].

    Output shape:
        [batch, d1*d2*...].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> layers.Flatten()(np.zeros((2, 3, 4), dtype=np.float32)).shape
        (2, 12)
    """

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if training:
            self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dy):
        shape = self._cache
        dy = self._check_dy(dy, (shape[0], int(np.prod(shape[1:], dtype=np.int64))))
        return dy.reshape(shape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        if any(d is None for d in input_shape):
            return (None,)
        return (int(np.prod(input_shape, dtype=np.int64)),)

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        return None



@register_layer
class RepeatVector(_Stateless):
    """Repeats its input ``n`` times along a new time axis: [B, F] -> [B, n, F].

    The encoder-decoder bridge of Keras's sequence-to-sequence examples. The output has no mask;
    ``backward`` sums the gradient over the n copies.

    Args:
        n (int): Number of repetitions (positive int).
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, F].
        training (bool): Keep the input shape for ``backward`` (default False).
        mask: Ignored.

    Input shape:
        [batch, features].

    Output shape:
        [batch, n, features].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> layers.RepeatVector(3)(np.zeros((2, 5), dtype=np.float32)).shape
        (2, 3, 5)
    """

    _input_rank = (2, 2)
    _input_desc = "[batch, features]"

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = _positive_int(n, self._who(), "n")

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if training:
            self._cache = x.shape
        return np.repeat(x[:, None, :], self.n, axis=1)

    def _backward(self, dy):
        B, F = self._cache
        return self._check_dy(dy, (B, self.n, F)).sum(axis=1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (self.n,) + tuple(input_shape)

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        return None

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(n=self.n)
        return cfg
