"""Layer wrappers: TimeDistributed.

Importable from ``fastrnn.layers`` and, as before, from ``fastrnn.layers.core``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer, Parameter, deserialize, register_layer, serialize

__all__ = [
    "TimeDistributed",
]


@register_layer
class TimeDistributed(Layer):
    """Applies a layer to every time step.

    [B, T, ...] is folded to [B*T, ...], run through ``layer`` and unfolded to [B, T, ...]. The
    wrapped layer's parameters are this layer's parameters; the mask passes through.

    Args:
        layer (Layer): The layer to apply (a fastrnn Layer, else TypeError), e.g. a Dense.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`); ``trainable=False`` (given or set later) freezes the
            wrapped layer too.

    Call arguments:
        x: Array [B, T, ...].
        training (bool): Keep what ``backward`` needs (default False).
        mask: Passed through (not given to the wrapped layer).

    Input shape:
        [batch, time, ...] (rank >= 3).

    Output shape:
        [batch, time] + the wrapped layer's output shape for one step.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> td = layers.TimeDistributed(layers.Dense(2, seed=0))
        >>> td(np.zeros((4, 5, 3), dtype=np.float32)).shape
        (4, 5, 2)
    """

    _input_rank = (3, None)
    _input_desc = "[batch, time, ...]"
    _per_step = True

    def __init__(self, layer: Layer, **kwargs: Any) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed: layer must be a Layer, got {type(layer).__name__}")
        super().__init__(**kwargs)
        self.layer = layer
        if not self._trainable:
            layer.trainable = False

    def _wrapped_layers(self):
        return [self.layer]

    def build(self, input_shape: Any) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(f"{self._who()}: input shape must be (time, ...), got {input_shape}")
        if not self.layer.built:
            self.layer.build(input_shape[1:])
        self._params = self.layer._params
        super().build(input_shape)

    def _build_from_weights(self, weights):
        self.layer._build_from_weights(weights)
        if self.layer.built:
            self._params = self.layer._params
            self.built = True

    def _build_shape(self, shape):
        return (None,) + tuple(shape[1:])

    def parameters(self) -> list[Parameter]:
        self._ensure_built()
        return self.layer.parameters()

    def _check_input_shape(self, shape):
        self.layer._check_input_shape(tuple(shape[1:]))

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        B, T = x.shape[:2]
        y = self.layer(x.reshape((B * T,) + x.shape[2:]), training=training)
        y = np.asarray(y)
        if training:
            self._cache = (B, T, x.shape)
        return y.reshape((B, T) + y.shape[1:])

    def _backward(self, dy):
        B, T, xshape = self._cache
        dy = np.asarray(dy)
        if dy.shape[:2] != (B, T):
            raise ValueError(f"{self._who()}: dy must start with (batch, time) = {(B, T)}, got shape {dy.shape}")
        dx = self.layer.backward(dy.reshape((B * T,) + dy.shape[2:]))
        return None if dx is None else dx.reshape(xshape)

    def compute_output_shape(self, input_shape: Any) -> Any:
        inner = self.layer.compute_output_shape(tuple(input_shape[1:]))
        return (input_shape[0],) + tuple(inner)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg["layer"] = serialize(self.layer)
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> Any:
        cfg = dict(config)
        cfg["layer"] = deserialize(cfg["layer"])
        return super().from_config(cfg)
