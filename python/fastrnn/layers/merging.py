"""Merging layers: Concatenate.

Importable from ``fastrnn.layers`` and, as before, from ``fastrnn.layers.core``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _symbolic
from ._core_common import _Stateless
from .base import register_layer

__all__ = [
    "Concatenate",
]


@register_layer
class Concatenate(_Stateless):
    """Joins a list of arrays along one axis, as Keras's Concatenate.

    For models with several branches (``fastrnn.Model`` subclasses): ``layer([a, b])`` returns one
    array, and ``backward(dy)`` the list of the inputs' gradients. The inputs must have one rank
    (>= 2) and equal sizes outside ``axis``. ``compute_mask(x, [masks])`` follows Keras 3: each
    input's mask (its shape without the last axis; None: every entry kept) is broadcast over the
    input's last axis, the masks are joined along ``axis`` and reduced with a logical OR over the
    last axis. For the usual feature-axis join that is the OR of the inputs' [B, T] masks (an
    unmasked input keeps every step); a join along the time axis joins the masks. None when no
    input has a mask.

    Args:
        axis (int): The axis to join along (default -1, the last); any int but 0 (the batch axis),
            otherwise ValueError.
        **kwargs: ``name``, ``trainable``, ``dtype``, ``input_shape`` (see
            :class:`~fastrnn.layers.Layer`).

    Call arguments:
        inputs: A list (or tuple) of at least 2 arrays.
        training (bool): Keep the sizes along ``axis`` for ``backward`` (default False).
        mask: Ignored (use ``compute_mask``).

    Input shape:
        A list of arrays of one rank, equal outside ``axis``.

    Output shape:
        The common shape with the sizes along ``axis`` summed.

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> cat = layers.Concatenate()
        >>> y = cat([np.zeros((2, 3)), np.ones((2, 4))], training=True)
        >>> y.shape
        (2, 7)
        >>> [g.shape for g in cat.backward(np.ones((2, 7)))]
        [(2, 3), (2, 4)]
    """

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ValueError(f"{self._who()}: axis must be a non-batch axis (an int other than 0), got {axis!r}")
        self.axis = int(axis)

    def __call__(self, inputs, training=False, mask=None, **kwargs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"{self._who()}: expected a list of at least 2 arrays, got {type(inputs).__name__}")
        if _symbolic.is_symbolic(inputs, mask):
            return _symbolic.call_layer(self, list(inputs), dict(kwargs, mask=mask))
        xs = [self._convert_input(a) for a in inputs]
        self._check_shapes([a.shape for a in xs])
        ax = self.axis % xs[0].ndim
        if not self.built:
            self.build(tuple(xs[0].shape[1:]))
        if training:
            self._cache = [a.shape[ax] for a in xs]
        return np.concatenate(xs, axis=ax)

    def _check_shapes(self, shapes):
        """ValueError unless arrays of ``shapes`` (batch included; None: unknown) can be joined."""
        ndim = len(shapes[0])
        if ndim < 2 or any(len(sh) != ndim for sh in shapes) or not -ndim <= self.axis < ndim:
            raise ValueError(f"{self._who()}: the inputs must all have one rank >= 2 that has axis {self.axis}, "
                             f"got shapes {[tuple(sh) for sh in shapes]}")
        ax = self.axis % ndim
        for i, sh in enumerate(shapes):
            for d, d0 in zip(sh[:ax] + sh[ax + 1:], shapes[0][:ax] + shapes[0][ax + 1:]):
                if d is not None and d0 is not None and d != d0:
                    raise ValueError(f"{self._who()}: inputs[{i}] has shape {tuple(sh)}, which differs from "
                                     f"inputs[0]'s {tuple(shapes[0])} outside axis {self.axis}")

    def _symbolic_output_shape(self, input_shape):
        self._check_shapes([(None,) + tuple(sh) for sh in input_shape])
        if not self.built:
            self.build(tuple(input_shape[0]))
        return self.compute_output_shape(input_shape)

    def _backward(self, dy):
        dy = np.asarray(dy).astype(self.dtype, copy=False)
        sizes = self._cache
        ax = self.axis % dy.ndim
        if dy.shape[ax] != sum(sizes):
            raise ValueError(f"{self._who()}: dy must have {sum(sizes)} entries along axis {self.axis}, got shape "
                             f"{dy.shape}")
        return np.split(dy, np.cumsum(sizes)[:-1], axis=ax)

    def compute_output_shape(self, input_shape: Any) -> Any:
        shapes = [tuple(sh) for sh in input_shape]
        ax = self.axis % (len(shapes[0]) + 1) - 1  # input_shape excludes the batch axis
        out = list(shapes[0])
        out[ax] = None if any(sh[ax] is None for sh in shapes) else sum(sh[ax] for sh in shapes)
        return tuple(out)

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask]
        if all(m is None for m in masks):
            return None
        if not isinstance(x, (list, tuple)) or len(x) != len(masks):
            raise ValueError(f"{self._who()}: compute_mask needs the list of inputs and one mask (or None) per "
                             f"input, got {len(masks)} mask(s) for "
                             f"{len(x) if isinstance(x, (list, tuple)) else 'a non-list'} input(s)")
        shapes = [np.shape(a) for a in x]
        self._check_shapes(shapes)
        full = []
        for i, (shape, m) in enumerate(zip(shapes, masks)):
            if m is None:
                full.append(np.ones(shape, bool))
                continue
            m = np.asarray(m, bool)
            if m.shape == shape[:-1]:
                m = m[..., None]
            try:
                full.append(np.broadcast_to(m, shape))
            except ValueError:
                raise ValueError(f"{self._who()}: mask[{i}] has shape {m.shape}, which fits neither inputs[{i}]'s "
                                 f"shape {shape} nor that shape without its last axis") from None
        return np.concatenate(full, axis=self.axis % len(shapes[0])).any(axis=-1)

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(axis=self.axis)
        return cfg
