"""What the torch and Keras converters share: the recurrent layers' kinds and cells (gate counts,
bias names and activations from fastrnn._cells), and reading / writing a fastrnn recurrent
layer's weight arrays."""
from __future__ import annotations

import numpy as np

from .. import layers
from .._cells import ACTIVATIONS, cell_spec
from ..layers.base import refuse_quantized

#: A SimpleRNN's activations as messages list them: "'tanh' or 'relu'".
_RNN_ACTIVATIONS = " or ".join(repr(a) for a in ACTIVATIONS)


def _f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _kind(layer):
    """'SimpleRNN', 'LSTM' or 'GRU' for a fastrnn recurrent layer (ValueError otherwise)."""
    L = layers
    for name in ("LSTM", "GRU", "SimpleRNN"):
        cls = getattr(L, name, None)
        if cls is not None and isinstance(layer, cls):
            return name
    raise TypeError(
        f"expected a fastrnn SimpleRNN, LSTM, GRU or Bidirectional layer, got {type(layer).__name__}")


def _is_bidirectional(layer):
    cls = getattr(layers, "Bidirectional", None)
    return cls is not None and isinstance(layer, cls)


def _cfg(layer, key, default=None):
    if hasattr(layer, key):
        return getattr(layer, key)
    return layer.get_config().get(key, default)


def _activation_name(layer):
    act = _cfg(layer, "activation", "tanh")
    if callable(act) and not isinstance(act, str):
        act = getattr(act, "__name__", str(act))
    return str(act)


def _new_cell(kind, units, input_size, **kw):
    """A built fastrnn recurrent layer of the given kind."""
    cls = getattr(layers, kind)
    layer = cls(units, **kw)
    layer.build((None, int(input_size)))
    return layer


def _assign(layer, name, value):
    p = getattr(layer, name)
    value = _f32(value)
    if tuple(value.shape) != tuple(p.value.shape):
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': {name} must have shape {tuple(p.value.shape)}, got {value.shape}")
    p.assign(value)


def _set_cell(layer, kind, w_ih, w_hh, **biases):
    """Assign the weights and the biases of the cell of ``kind`` (b, or b_ih and b_hh for GRU)."""
    _assign(layer, "w_ih", w_ih)
    _assign(layer, "w_hh", w_hh)
    for name in cell_spec(kind).bias_names:
        _assign(layer, name, biases.get(name))


def _cell_arrays(layer):
    """(kind, units, input_size, dict of float32 arrays) of a built fastrnn recurrent layer."""
    kind = _kind(layer)
    refuse_quantized(layer, "interop")
    if not layer.built:
        raise ValueError(
            f"{kind} '{layer.name}' is not built: call it on data or call build(input_shape) before converting it")
    arrays = {}
    spec = layer.spec
    for n in ("w_ih", "w_hh") + spec.bias_names:
        p = getattr(layer, n, None)
        if p is None:  # use_bias=False: the bias is zero
            arrays[n] = np.zeros(spec.gates * int(layer.units), np.float32)
        else:
            arrays[n] = np.array(p.value, dtype=np.float32)
    units = arrays["w_hh"].shape[1]
    return kind, units, arrays["w_ih"].shape[1], arrays

