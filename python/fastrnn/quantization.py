"""int8 inference: ``fastrnn.quantize(model, "int8")``.

A quantized copy of a trained model runs its SimpleRNN / LSTM / GRU layers (also inside
Bidirectional) and its Dense layers (also inside TimeDistributed) with int8 weights, quantized once
per output column (symmetric, scale = max|w| / 127), and int8 activations, quantized per row at
each call and each time step (the same rule), with int32 products dequantized into the float32
gate maths: the dynamic quantization of PyTorch's ``quantize_dynamic`` and ONNX Runtime's
``quantize_dynamic``. The scheme and its NumPy twin: :mod:`fastrnn.reference.quantized`. The
products use AVX-512 VNNI where the CPU has it, AVX-512 BW or AVX2 (``VPMADDUBSW``) otherwise,
and a portable path elsewhere; all give the same integers.

Accuracy contract (tested in tests/test_quantization.py): a quantized product differs from the
float one by at most ``sum_k |a_k| |w_k| / 127`` (the two roundings of each factor, each at most
half a step of 1/127 of its row's maximum), so a layer's output error is about 1/127 of its
pre-activations' scale, not of the outputs'; on random and trained models the outputs stay within
the bounds the tests state (about 1e-2 absolute for tanh / sigmoid outputs).

Quantized layers compute inference only: ``training=True``, ``fit`` and ``backward`` raise (train
the float model and quantize it again). The int8 weights and their scales replace the float
weights in ``get_weights()`` / ``set_weights()``; the float parameters are not kept.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from . import backend
from .layers import GRU, LSTM, Dense, SimpleRNN
from .layers._core_common import ACTIVATIONS
from .layers.base import register_layer
from .reference.quantized import quantize_rows

__all__ = ["MODES", "Int8Dense", "Int8GRU", "Int8LSTM", "Int8SimpleRNN", "quantize"]

MODES = ("int8",)


class _Int8Packs:
    """A layer's int8 matrices, packed for the ISA path in use (packed again when it changes)."""

    def __init__(self):
        self.isa = None
        self.packs = {}

    def get(self, layer, specs):
        isa = backend.isa()
        if isa != self.isa:
            core = backend.core()
            self.packs = {name: core.qpack(layer._q[name][0], layer._q[name][1], nv, hg)
                          for name, (nv, hg) in specs.items()}
            self.isa = isa
        return self.packs


def _inference_only(layer):
    raise ValueError(f"{type(layer).__name__} '{layer.name}': int8 layers compute inference only (training=False); "
                     "train the float model and quantize it again")


class _Int8Mixin:
    """What the int8 layers share: the int8 matrices ``_q`` {name: (int8 [N, K], float32 scales [N])}."""

    _int8_matrices: tuple[str, ...] = ()

    def _quantize_from_float(self):
        self._q = {}
        for name in self._int8_matrices:
            w = self._int8_source(name)
            self._q[name] = quantize_rows(np.ascontiguousarray(w, dtype=np.float32))
        self._packs = _Int8Packs()
        self.trainable = False

    def _backward(self, dy):
        _inference_only(self)

    def _int8_packs(self, specs):
        if getattr(self, "_q", None) is None:  # made from a config (load_model): quantize what it holds
            self._quantize_from_float()
        return self._packs.get(self, specs)

    def set_weights(self, weights) -> None:
        """Set the float weights (``get_weights`` order) and quantize them again.

        Args:
            weights: A list of arrays in ``get_weights`` order.
        """
        super().set_weights(weights)
        self._quantize_from_float()

    def int8_weights(self) -> dict:
        """The layer's int8 matrices: {name: (int8 weights [N, K], float32 scales [N])}; a weight
        ``w[n, k]`` is ``q[n, k] * scale[n]``.

        Returns:
            dict: copies of the int8 matrices and their scales.
        """
        return {k: (q.copy(), s.copy()) for k, (q, s) in self._q.items()}


class _Int8RNN(_Int8Mixin):
    _int8_matrices = ("w_ih", "w_hh")

    def _int8_source(self, name):
        return getattr(self, name).value

    def _forward_op(self, x, w_hh, init, mask, training, hmask=None):
        if training:  # (recurrent dropout masks, hmask, exist only when training)
            _inference_only(self)
        spec = self._spec
        G, H = spec.gates, self.units
        packs = self._int8_packs({"w_ih": (G, H), "w_hh": (G, H)})
        biases = [np.ascontiguousarray(self._bias_value(name), dtype=np.float32) for name in spec.bias_names]
        h0 = c0 = None
        if init is not None:
            h0 = np.ascontiguousarray(init[0], dtype=np.float32)
            if spec.n_states == 2:
                c0 = np.ascontiguousarray(init[1], dtype=np.float32)
        m = None if mask is None else np.ascontiguousarray(mask, dtype=np.uint8)
        y, hn, cn = backend.core().qforward(spec.kernel_id, np.ascontiguousarray(x, dtype=np.float32),
                                            packs["w_ih"], packs["w_hh"], biases[0],
                                            biases[1] if len(biases) == 2 else None, h0, c0, m,
                                            bool(self.go_backwards), True)
        return y, ([hn, cn] if spec.n_states == 2 else [hn]), None

    def _backward_op(self, cache, dy, dstates):
        _inference_only(self)


@register_layer
class Int8SimpleRNN(_Int8RNN, SimpleRNN):
    """A SimpleRNN with int8 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Int8LSTM(_Int8RNN, LSTM):
    """An LSTM with int8 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Int8GRU(_Int8RNN, GRU):
    """A GRU with int8 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Int8Dense(_Int8Mixin, Dense):
    """A Dense layer with int8 weights (made by :func:`quantize`; inference only)."""

    _int8_matrices = ("kernel",)

    def _int8_source(self, name):
        return self.kernel.value.T  # [units, in]: one row per output column

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if training:
            _inference_only(self)
        core = backend.core()
        packs = self._int8_packs({"kernel": (core.qgemm_nv(), 0)})
        x = np.asarray(x)
        lead = x.shape[:-1]
        a = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        bias = np.ascontiguousarray(self.bias.value, dtype=np.float32) if self.use_bias else None
        if a.shape[0] == 0:
            z = np.zeros((0, self.units), np.float32)
        else:
            z = core.qgemm(a, packs["kernel"], bias)
        return ACTIVATIONS[self.activation][0](z.reshape(*lead, self.units))


_INT8 = {SimpleRNN: Int8SimpleRNN, LSTM: Int8LSTM, GRU: Int8GRU, Dense: Int8Dense}


def _int8_class(layer):
    if isinstance(layer, _Int8Mixin):
        return None
    return _INT8.get(type(layer))


def quantize(model: Any, mode: str = "int8", inplace: bool = False) -> Any:
    """A copy of ``model`` (a Sequential, a functional Model or one layer) whose SimpleRNN, LSTM,
    GRU and Dense layers compute with int8 weights and activations.

    Recurrent layers inside Bidirectional and Dense layers inside TimeDistributed are quantized too;
    every other layer is kept as it is. The model must be built (trained or given weights) and
    float32. The copy computes inference only (``predict``, calls with ``training=False``, the
    step API).

    Args:
        model (Any): A built fastrnn model or layer.
        mode (str): 'int8' (the only mode so far).
        inplace (bool): Quantize ``model`` itself instead of a copy.

    Returns:
        Any: The quantized model (``model`` itself when ``inplace``).

    Raises:
        ValueError: an unknown mode, an unbuilt model, a float64 layer, or nothing to quantize.
    """
    from .training import _all_layers

    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    roots = list(model.layers) if hasattr(model, "layers") else [model]
    found = [lay for lay in _all_layers(roots) if _int8_class(lay) is not None]
    if not found:
        raise ValueError(f"quantize: {type(model).__name__} has no SimpleRNN, LSTM, GRU or Dense layer to quantize")
    for lay in found:
        if not lay.built:
            raise ValueError(f"quantize: layer '{lay.name}' is not built; build or train the model first")
        if np.dtype(lay.dtype) != np.float32:
            raise ValueError(f"quantize: layer '{lay.name}' is {np.dtype(lay.dtype).name}; int8 quantization takes "
                             "float32 layers")
    target = model if inplace else copy.deepcopy(model)
    roots = list(target.layers) if hasattr(target, "layers") else [target]
    for lay in _all_layers(roots):
        cls = _int8_class(lay)
        if cls is not None:
            lay.__class__ = cls
            lay._quantize_from_float()
    return target
