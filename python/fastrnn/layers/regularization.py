"""Regularization layers: Dropout.

Importable from ``fastrnn.layers`` and, as before, from ``fastrnn.layers.core``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _dropout
from .._validation import layer_rate as _rate
from ._core_common import _Stateless
from .base import register_layer

__all__ = [
    "Dropout",
]


@register_layer
class Dropout(_Stateless):
    """Inverted dropout.

    When training, each element is zeroed with probability ``rate`` and the others are scaled by
    1/(1-rate); at inference the layer is the identity. The mask passes through.

    The masks come from Philox4x32-10 (fastrnn._dropout), keyed by the layer's seed and counting
    its training calls: reproducible with ``fastrnn.set_seed`` or ``seed=``, the same for any
    thread count and instruction set. For float32 NumPy input the C++ kernel draws the mask and
    applies it in one pass (its backward redraws it on the gradient instead of keeping it).

    Args:
        rate (float): Fraction of the elements to drop, in [0, 1).
        noise_shape (tuple | None): Shape of the dropout mask including the batch dimension (Keras
            semantics): None for "same as the input" and 1 to share the mask along an axis, e.g.
            ``(None, 1, None)`` for one mask per sequence shared over time. Default None: the
            input's shape.
        seed (int | None): Seed of the layer's masks; None draws the layer's key from the global
            generator.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        x: Array [B, ...].
        training (bool): Apply dropout (default False: identity).
        mask: Passed through.

    Input shape:
        Any, batch first.

    Output shape:
        Same as the input.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> drop = layers.Dropout(0.5, seed=0)
        >>> x = np.ones((2, 4), dtype=np.float32)
        >>> bool((drop(x) == x).all())                       # inference: identity
        True
        >>> sorted(set(drop(x, training=True).ravel().tolist()) - {0.0, 2.0})
        []
    """

    def __init__(self, rate: float, noise_shape: Sequence[int | None] | None = None, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = _rate(rate, self._who(), "rate")
        self.noise_shape = None if noise_shape is None else tuple(None if d is None else int(d) for d in noise_shape)
        self.seed = seed
        self._stream = _dropout.DropoutStream(seed)

    def _mask_shape(self, shape):
        if self.noise_shape is None:
            return shape
        if len(self.noise_shape) != len(shape):
            raise ValueError(
                f"{self._who()}: noise_shape {self.noise_shape} must have the input's rank {len(shape)} "
                f"(input shape {shape})"
            )
        out = []
        for n, s in zip(self.noise_shape, shape):
            if n is None:
                out.append(s)
            elif n == 1 or n == s:
                out.append(n)
            else:
                raise ValueError(f"{self._who()}: noise_shape {self.noise_shape} does not broadcast to input "
                                 f"shape {shape}")
        return tuple(out)

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if not training:
            return x
        if self.rate == 0.0:
            self._cache = (None,)
            return x
        key, call = self._stream.key, self._stream.next_call()
        mshape = self._mask_shape(x.shape)
        if mshape == tuple(x.shape):  # one pass: mask drawn and applied; backward redraws it
            self._cache = (None, tuple(x.shape), call)
            return _dropout.apply(x, key, call, 0, self.rate)
        m = _dropout.mask(mshape, key, call, 0, self.rate, x.dtype)
        self._cache = (m, tuple(x.shape), call)
        return x * m

    def _backward(self, dy):
        cache = self._cache
        dy = np.asarray(dy).astype(self.dtype, copy=False)
        if cache[0] is None and len(cache) == 1:  # rate 0
            return dy
        m, shape, call = cache
        if tuple(dy.shape) != shape:
            raise ValueError(f"{self._who()}: dy of shape {dy.shape} does not match the last input {shape}")
        if m is None:
            return _dropout.apply(dy, self._stream.key, call, 0, self.rate)
        return dy * m

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(rate=self.rate, noise_shape=None if self.noise_shape is None else list(self.noise_shape),
                   seed=self.seed)
        return cfg
