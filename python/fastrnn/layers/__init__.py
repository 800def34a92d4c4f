"""Keras-style layers on the fast kernels: NumPy in, NumPy out, explicit backward.

    from fastrnn import layers
    lstm = layers.LSTM(64, return_sequences=True)
    y = lstm(x, training=True)       # x: [B, T, F]
    dx = lstm.backward(dy)           # accumulates into lstm.parameters()[i].grad

Core: Dense, Embedding, Dropout, Flatten, TimeDistributed, Activation, RepeatVector, Masking,
Concatenate (for models with several branches), and
Input (``keras.Input``: a symbolic tensor for functional models, ``fr.Model(inputs, outputs)``,
or the first entry of a Sequential, where it stands for its InputLayer). Recurrent: SimpleRNN, LSTM, GRU,
Bidirectional. Attention: BahdanauAttention, LuongAttention. ``set_seed(s)`` makes weight
initialisation and dropout masks reproducible.
``get_layer_class`` / ``serialize`` / ``deserialize`` rebuild layers from their configs.

Keyword arguments common to every layer (``Layer.__init__``; each layer's ``Args:`` lists them
under ``**kwargs``):

* ``name`` (str | None): the layer's name, also the prefix of its parameters' names; default a
  Keras-style unique name from the class name ('lstm', 'lstm_1', ...).
* ``trainable`` (bool): whether optimizers update the parameters (default True).
* ``dtype`` ('float32' or 'float64'): the parameters' and outputs' dtype (default 'float32';
  'float64' runs the NumPy references, for gradient checks).
* ``input_shape`` (tuple | None): the shape of one sample, batch excluded (None for unknown sizes);
  when given the layer is built at construction, before it sees data.
"""
from . import initializers
from .attention import BahdanauAttention, LuongAttention
from .base import (
    Layer,
    Parameter,
    clear_session,
    deserialize,
    get_layer_class,
    register_layer,
    serialize,
    unique_name,
)
from .bidirectional import Bidirectional
from .core import (
    Activation,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Input,
    InputLayer,
    Masking,
    RepeatVector,
    TimeDistributed,
)
from .initializers import set_seed
from .recurrent import GRU, LSTM, BaseRNN, SimpleRNN

__all__ = [
    "GRU",
    "LSTM",
    "Activation",
    "BahdanauAttention",
    "BaseRNN",
    "Bidirectional",
    "Concatenate",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "Input",
    "InputLayer",
    "Layer",
    "LuongAttention",
    "Masking",
    "Parameter",
    "RepeatVector",
    "SimpleRNN",
    "TimeDistributed",
    "clear_session",
    "deserialize",
    "get_layer_class",
    "initializers",
    "register_layer",
    "serialize",
    "set_seed",
    "unique_name",
]
