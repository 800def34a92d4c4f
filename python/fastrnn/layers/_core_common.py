"""What the layer modules share: the activation functions, the check of an activation or
initializer argument, and the base of the layers without parameters."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import initializers
from .base import Layer

__all__ = ["ACTIVATIONS"]


# ----------------------------------------------------------------------------------------------
# activations: forward f(z) and backward (dy, y) -> dz, expressed through the output y
# ----------------------------------------------------------------------------------------------
def _sigmoid(z):
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "linear": (lambda z: z, lambda dy, y: dy),
    "tanh": (np.tanh, lambda dy, y: dy * (1.0 - y * y)),
    "relu": (lambda z: np.maximum(z, 0), lambda dy, y: dy * (y > 0)),
    "sigmoid": (_sigmoid, lambda dy, y: dy * y * (1.0 - y)),
    "softmax": (_softmax, lambda dy, y: y * (dy - (dy * y).sum(axis=-1, keepdims=True))),
}


def _activation(name, who):
    if name is None:
        return "linear"
    if not isinstance(name, str):
        raise TypeError(f"{who}: activation must be a str or None, got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise ValueError(f"{who}: unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return name


def _init_name(init, who, arg):
    """Validate an initializer argument; return (callable, JSON-able name)."""
    try:
        fn = initializers.get(init)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{who}: {arg}: {exc}") from None
    name = init if isinstance(init, str) else getattr(init, "__name__", None)
    return fn, name


# ----------------------------------------------------------------------------------------------
class _Stateless(Layer):
    """A layer without parameters that takes inputs of any rank and feature size."""

    _input_rank = (1, None)
    _input_desc = "[batch, ...]"

    def _build_from_weights(self, weights):
        return

    def _check_input_shape(self, shape):
        return
