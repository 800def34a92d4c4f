"""Exact weight exchange with PyTorch and Keras.

fastrnn stores recurrent weights in PyTorch layouts (``w_ih [G*H, I]``, ``w_hh [G*H, H]``), so:

- PyTorch: ``torch.nn.RNN`` (tanh / relu), ``LSTM`` and ``GRU`` with any ``num_layers``,
  ``bidirectional`` and ``batch_first``. :func:`from_torch` gives one fastrnn layer per torch layer
  with ``return_sequences=True`` (a ``Bidirectional(..., merge_mode="concat")`` when the module is
  bidirectional): the layer itself for ``num_layers=1``, a :class:`~fastrnn.Sequential` of the
  layers for more (with ``Dropout`` layers between them for torch's ``dropout``), whose output is
  the module's ``output``. :func:`to_torch` turns a layer or such a Sequential (or list) back into
  one torch module, and refuses, with a ValueError that names the layer, a stack that one torch
  module cannot express. torch's two biases of SimpleRNN and LSTM are summed into fastrnn's one
  bias; :func:`to_torch` puts that bias in ``bias_ih`` and zeros in ``bias_hh`` (the outputs are
  identical). GRU keeps both biases.
- Keras 3: ``SimpleRNN``, ``LSTM``, ``GRU`` (``reset_after=True`` only, Keras's default) and
  ``Bidirectional``, the core layers (Dense, Embedding, Dropout, Flatten, TimeDistributed,
  Activation, RepeatVector, Masking) and whole Sequential models of them, both ways. Keras kernels
  are ``[I, G*H]`` (transposed); Keras's LSTM gate order i, f, c, o is fastrnn's i, f, g, o;
  Keras's GRU order z, r, h is reordered to r, z, n; Keras's GRU bias ``[2, 3H]`` holds the input
  and the recurrent bias.


Dropout between torch layers and dropout inside Keras cells are training-time options: they are
carried over where both sides have them (torch's ``dropout`` as ``Dropout`` layers between the
recurrent layers, Keras ``dropout`` / ``recurrent_dropout``) and otherwise dropped; inference
outputs are identical.
"""
from __future__ import annotations

from .keras import from_keras, to_keras
from .torch import from_torch, to_torch

__all__ = ["from_keras", "from_torch", "to_keras", "to_torch"]
