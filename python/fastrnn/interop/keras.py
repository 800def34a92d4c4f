"""Exact weight exchange with Keras 3: ``from_keras`` and ``to_keras`` (see :mod:`fastrnn.interop`).

keras is imported only inside the functions that need it."""
from __future__ import annotations

import contextlib

import numpy as np

from .. import layers
from .._cells import ACTIVATIONS as _RNN_ACTS
from .._cells import cell_spec
from ..layers.base import refuse_quantized
from ..layers.core import ACTIVATIONS
from ..models import Sequential
from ._common import (
    _RNN_ACTIVATIONS,
    _activation_name,
    _cell_arrays,
    _cfg,
    _f32,
    _is_bidirectional,
    _new_cell,
    _set_cell,
)

__all__ = ["from_keras", "to_keras"]


def _keras_kind(layer):
    import keras

    for cls, kind in ((keras.layers.LSTM, "LSTM"), (keras.layers.GRU, "GRU"),
                      (keras.layers.SimpleRNN, "SimpleRNN")):
        if isinstance(layer, cls):
            return kind
    raise TypeError(
        f"from_keras expects a keras SimpleRNN, LSTM, GRU, Bidirectional, Dense, Embedding, Dropout, Flatten, "
        f"TimeDistributed, Activation, RepeatVector or Masking layer or a keras.Sequential of them, got "
        f"{type(layer).__name__}")


def _act_name(act):
    name = getattr(act, "__name__", None) or str(act)
    return name


def _gru_keras_to_ours(a, H):
    """Columns/entries in Keras's GRU order z, r, h -> fastrnn's r, z, n (last axis)."""
    return np.concatenate([a[..., H:2 * H], a[..., :H], a[..., 2 * H:]], axis=-1)


def _gru_ours_to_keras(a, H):
    """fastrnn's r, z, n -> Keras's z, r, h (last axis); the same swap."""
    return _gru_keras_to_ours(a, H)


def _keras_array(v):
    """A Keras weight (a backend variable or an array) as a float32 NumPy array."""
    return _f32(v.numpy() if hasattr(v, "numpy") else v)


def _require_built(klayer):
    if not klayer.built:
        raise ValueError(f"from_keras: keras layer '{klayer.name}' is not built; call it on data or build it first")


def _from_keras_cell(klayer, return_sequences=None, go_backwards=None):
    kind = _keras_kind(klayer)
    _require_built(klayer)
    cell = getattr(klayer, "cell", klayer)
    H = int(klayer.units)
    act = _act_name(cell.activation)
    kw = {
        "return_sequences": bool(klayer.return_sequences) if return_sequences is None else return_sequences,
        "return_state": bool(getattr(klayer, "return_state", False)),
        "go_backwards": bool(klayer.go_backwards) if go_backwards is None else go_backwards,
        "zero_output_for_mask": bool(getattr(klayer, "zero_output_for_mask", False)),
        "stateful": bool(getattr(klayer, "stateful", False)),
    }
    spec = cell_spec(kind)
    if kind == "SimpleRNN":
        if act not in _RNN_ACTS:
            raise ValueError(f"from_keras: SimpleRNN activation must be {_RNN_ACTIVATIONS}, got {act!r}")
        kw["activation"] = act
    else:
        rec = _act_name(cell.recurrent_activation)
        if act != spec.activation or rec != "sigmoid":
            raise ValueError(f"from_keras: {kind} needs activation={spec.activation!r} and "
                             f"recurrent_activation='sigmoid', got {act!r} and {rec!r}")
    if kind == "GRU" and not bool(getattr(cell, "reset_after", True)):
        raise ValueError("from_keras: GRU with reset_after=False is not supported; fastrnn's GRU is the "
                         "reset_after=True form (Keras's default, as in cuDNN and torch)")
    for opt in ("dropout", "recurrent_dropout"):
        v = float(getattr(cell, opt, 0.0) or 0.0)
        if v:
            kw[opt] = v
    kernel, rkernel = _keras_array(cell.kernel), _keras_array(cell.recurrent_kernel)
    G = spec.gates
    if getattr(cell, "use_bias", True) and cell.bias is not None:
        bias = _keras_array(cell.bias)
    else:
        bias = np.zeros((2, G * H) if kind == "GRU" else (G * H,), np.float32)
    I = kernel.shape[0]
    layer = _new_cell(kind, H, I, **kw)
    if kind == "GRU":
        bias = bias.reshape(2, G * H)
        _set_cell(layer, kind, _gru_keras_to_ours(kernel, H).T, _gru_keras_to_ours(rkernel, H).T,
                  b_ih=_gru_keras_to_ours(bias[0], H), b_hh=_gru_keras_to_ours(bias[1], H))
    else:
        _set_cell(layer, kind, kernel.T, rkernel.T, b=bias)
    return layer


def _core_activation(klayer, what):
    act = _act_name(klayer.activation)
    if act not in ACTIVATIONS:
        raise ValueError(f"from_keras: {what} with activation {act!r}; fastrnn has {', '.join(ACTIVATIONS)}")
    return act


def _from_keras_other(klayer):
    """The fastrnn twin of a Keras core layer (Dense, Embedding, Dropout, Flatten, TimeDistributed,
    Activation, RepeatVector, Masking), or None for a kind handled elsewhere."""
    import keras

    L = layers
    K = keras.layers
    if isinstance(klayer, K.Dense):
        act = _core_activation(klayer, "Dense")
        _require_built(klayer)
        kernel = _keras_array(klayer.kernel)
        ours = L.Dense(int(klayer.units), activation=act, use_bias=bool(klayer.use_bias))
        ours.build((kernel.shape[0],))
        ours.set_weights([kernel] + ([_keras_array(klayer.bias)] if klayer.use_bias else []))
        return ours
    if isinstance(klayer, K.Embedding):
        _require_built(klayer)
        ours = L.Embedding(int(klayer.input_dim), int(klayer.output_dim), mask_zero=bool(klayer.mask_zero))
        ours.set_weights([_keras_array(klayer.embeddings)])
        return ours
    if isinstance(klayer, K.Dropout):
        ns = getattr(klayer, "noise_shape", None)
        return L.Dropout(float(klayer.rate), noise_shape=None if ns is None else tuple(ns))
    if isinstance(klayer, K.TimeDistributed):
        return L.TimeDistributed(from_keras(klayer.layer))
    if isinstance(klayer, K.Flatten):
        return L.Flatten()
    if isinstance(klayer, K.Activation):
        return L.Activation(_core_activation(klayer, "Activation"))
    if isinstance(klayer, K.RepeatVector):
        return L.RepeatVector(int(klayer.n))
    if isinstance(klayer, K.Masking):
        return L.Masking(float(klayer.mask_value))
    return None


def _from_keras_sequential(model):
    ours = [from_keras(kl) for kl in model.layers]
    shape = None
    with contextlib.suppress(AttributeError, IndexError, TypeError, ValueError):  # a model never built on an input
        shape = tuple(model.inputs[0].shape[1:])
    if shape is not None:
        ours = [layers.Input(shape)] + ours
    return Sequential(ours)


def from_keras(layer):
    """A fastrnn layer computing exactly what a Keras 3 ``SimpleRNN`` / ``LSTM`` / ``GRU`` /
    ``Bidirectional`` layer computes (same return_sequences, return_state, go_backwards, merge_mode);
    for the core layers ``Dense``, ``Embedding``, ``Dropout``, ``Flatten``, ``TimeDistributed``,
    ``Activation``, ``RepeatVector`` and ``Masking`` their fastrnn twins; for a ``keras.Sequential``
    a fastrnn Sequential of those (with an Input layer when the Keras model knows its input shape).

    The Keras layers must be built. GRU must have ``reset_after=True`` (ValueError otherwise); LSTM
    and GRU must use tanh / sigmoid activations; SimpleRNN tanh or relu; Dense and Activation one of
    linear, tanh, relu, sigmoid, softmax.

    With a mask the results agree at masked steps too: the layer takes the Keras layer's
    ``zero_output_for_mask`` (repeat the last valid output, or 0; Bidirectional: 0).
    """
    import keras

    if isinstance(layer, keras.Sequential):
        return _from_keras_sequential(layer)
    other = _from_keras_other(layer)
    if other is not None:
        return other
    if isinstance(layer, keras.layers.Bidirectional):
        fwd, bwd = layer.forward_layer, layer.backward_layer
        kind = _keras_kind(fwd)
        if _keras_kind(bwd) != kind:
            raise ValueError("from_keras: Bidirectional with different forward and backward cell kinds is not "
                             "supported")
        f = _from_keras_cell(fwd)
        b = _from_keras_cell(bwd)
        if f.go_backwards == b.go_backwards:
            raise ValueError("from_keras: the Bidirectional's backward layer must run opposite to its forward layer")
        bi = layers.Bidirectional(f, merge_mode=layer.merge_mode, backward_layer=b)
        bi.build((None, f.w_ih.value.shape[1]))
        _set_cell(bi.forward_layer, kind, **_cell_arrays(f)[3])
        return bi
    return _from_keras_cell(layer)


def _stateful_batch(layer, batch_size):
    """Keras's stateful RNNs need a static batch size: ``batch_size`` or that of the layer's
    carried state; None for a layer that is not stateful."""
    if not bool(_cfg(layer, "stateful", False)):
        return None
    states = getattr(layer, "states", None)
    if batch_size is None and states:
        batch_size = int(np.shape(states[0])[0])
    if batch_size is None:
        raise ValueError(f"to_keras: layer '{layer.name}' is stateful, and Keras needs a stateful layer's batch "
                         "size: pass batch_size=..., or run the layer once so that its carried state fixes it")
    return int(batch_size)


def _to_keras_cell(layer, go_backwards=None, batch_size=None):
    import keras

    kind, H, I, a = _cell_arrays(layer)
    batch = _stateful_batch(layer, batch_size)
    act = _activation_name(layer)
    kw = dict(return_sequences=bool(_cfg(layer, "return_sequences", False)),
              return_state=bool(_cfg(layer, "return_state", False)),
              go_backwards=bool(_cfg(layer, "go_backwards", False)) if go_backwards is None else go_backwards,
              zero_output_for_mask=bool(_cfg(layer, "zero_output_for_mask", False)))
    for opt in ("dropout", "recurrent_dropout"):
        v = float(_cfg(layer, opt, 0.0) or 0.0)
        if v:
            kw[opt] = v
    if batch is not None:
        kw["stateful"] = True
    if kind == "SimpleRNN":
        kl = keras.layers.SimpleRNN(H, activation=act, **kw)
    elif act != layer.spec.activation:
        raise ValueError(f"to_keras: {kind} activation must be {layer.spec.activation!r}, got {act!r}")
    elif kind == "LSTM":
        kl = keras.layers.LSTM(H, **kw)
    else:
        kl = keras.layers.GRU(H, reset_after=True, **kw)
    kl.build((batch, None, I))  # the state starts from zeros in Keras
    return kl, kind, H, a


def _keras_weights(kind, H, a):
    if kind == "GRU":
        return [_gru_ours_to_keras(a["w_ih"].T, H), _gru_ours_to_keras(a["w_hh"].T, H),
                np.stack([_gru_ours_to_keras(a["b_ih"], H), _gru_ours_to_keras(a["b_hh"], H)])]
    return [a["w_ih"].T.copy(), a["w_hh"].T.copy(), a["b"].copy()]


def _to_keras_other(layer):
    """The Keras twin of a fastrnn core layer, or None for a kind handled elsewhere."""
    import keras

    L = layers
    K = keras.layers
    if isinstance(layer, L.Dense):
        refuse_quantized(layer, "to_keras")
        if not layer.built:
            raise ValueError(f"to_keras: layer '{layer.name}' is not built")
        kl = K.Dense(layer.units, activation=layer.activation, use_bias=layer.use_bias)
        kl.build((None, layer.kernel.shape[0]))
        kl.set_weights([p.value for p in layer.parameters()])
        return kl
    if isinstance(layer, L.Embedding):
        kl = K.Embedding(layer.input_dim, layer.output_dim, mask_zero=layer.mask_zero)
        kl.build((None, None))
        kl.set_weights([layer.embeddings.value])
        return kl
    if isinstance(layer, L.Dropout):
        return K.Dropout(layer.rate, noise_shape=layer.noise_shape)
    if isinstance(layer, L.TimeDistributed):
        return K.TimeDistributed(to_keras(layer.layer))
    if isinstance(layer, L.Flatten):
        return K.Flatten()
    if isinstance(layer, L.Activation):
        return K.Activation(layer.activation)
    if isinstance(layer, L.RepeatVector):
        return K.RepeatVector(layer.n)
    if isinstance(layer, L.Masking):
        return K.Masking(layer.mask_value)
    return None


def _to_keras_sequential(model, batch_size):
    import keras

    lays = list(model.layers)
    shape = model._build_input_shape
    if lays and isinstance(lays[0], layers.InputLayer):
        shape = lays.pop(0)._given_input_shape
    stateful = [lay for lay in lays if isinstance(lay, layers.BaseRNN) and lay.stateful]
    if stateful:
        batch_size = _stateful_batch(stateful[0], batch_size)
    head = [keras.Input(tuple(shape), batch_size=batch_size)] if shape is not None else []
    return keras.Sequential(head + [to_keras(lay, batch_size=batch_size) for lay in lays])


def to_keras(layer, batch_size=None):
    """A built Keras 3 layer computing exactly what the fastrnn ``SimpleRNN`` / ``LSTM`` / ``GRU`` /
    ``Bidirectional`` layer computes (GRU becomes ``reset_after=True``); for the core layers (Dense,
    Embedding, Dropout, Flatten, TimeDistributed, Activation, RepeatVector, Masking) their Keras
    twins; for a fastrnn ``Sequential`` a ``keras.Sequential`` of those (with a ``keras.Input``
    when the model knows its input shape). The fastrnn layers must be built. A Bidirectional
    whose wrapped layer has ``go_backwards=True`` is refused (ValueError). Stateful layers stay
    stateful, with the static batch size Keras needs: ``batch_size``, or the batch size of the
    layer's carried state (the Keras layer starts from zeros).
    """
    import keras

    if isinstance(layer, Sequential):
        return _to_keras_sequential(layer, batch_size)
    other = _to_keras_other(layer)
    if other is not None:
        return other
    if _is_bidirectional(layer):
        merge = _cfg(layer, "merge_mode", "concat")
        if bool(_cfg(layer.forward_layer, "go_backwards", False)):
            raise ValueError(f"to_keras: Bidirectional '{layer.name}' wraps a layer with go_backwards=True; "
                             "only a forward-running wrapped layer can be exported")
        fl, kind, H, fa = _to_keras_cell(layer.forward_layer, go_backwards=False, batch_size=batch_size)
        bl, _, _, ba = _to_keras_cell(layer.backward_layer, go_backwards=True, batch_size=batch_size)
        kl = keras.layers.Bidirectional(fl, backward_layer=bl, merge_mode=merge)
        kl.build((_stateful_batch(layer.forward_layer, batch_size), None, fa["w_ih"].shape[1]))
        kl.forward_layer.set_weights(_keras_weights(kind, H, fa))
        kl.backward_layer.set_weights(_keras_weights(kind, H, ba))
        return kl
    kl, kind, H, a = _to_keras_cell(layer, batch_size=batch_size)
    kl.set_weights(_keras_weights(kind, H, a))
    return kl
