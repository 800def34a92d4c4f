"""int8 and bf16 inference: ``fastrnn.quantize(model, "int8")`` / ``fastrnn.quantize(model, "bf16")``.

A quantized copy of a trained model runs its SimpleRNN / LSTM / GRU layers (also inside
Bidirectional) and its Dense layers (also inside TimeDistributed) with low-precision weights; the
gate maths, biases, states and outputs stay float32. The schemes and their NumPy twins:
:mod:`fastrnn.reference.quantized`.

int8: int8 weights, quantized once per output column (symmetric, scale = max|w| / 127), and int8
activations, quantized per row at each call and each time step (the same rule), with int32
products dequantized into the float32 gate maths: the dynamic quantization of PyTorch's
``quantize_dynamic`` and ONNX Runtime's ``quantize_dynamic``. The products use AVX-512 VNNI where
the CPU has it, AVX-512 BW or AVX2 (``VPMADDUBSW``) otherwise, and a portable path elsewhere; all
give the same integers.

bf16: bfloat16 weights (rounded to nearest even), activations rounded to bfloat16 for the
products (as oneDNN's bf16 RNN does) and the products accumulated in float32. They use
AVX512-BF16 (``VDPBF16PS``) where the CPU has it and the bf16 weights widened to float32 with
fused multiply-adds in the same order elsewhere (other AVX-512 CPUs, AVX2, NEON, the portable
path): every path gives the same products.

Accuracy contract (tested in tests/test_quantization.py and tests/test_bf16.py; the user guide's
"int8 and bf16 inference" page states the bounds): an int8 product differs from the float one by at
most ``sum_k |a_k| |w_k| / 127``, a bf16 product by at most ``(2^-7 + 2^-16 + K 2^-24 (1 + 2^-8)^2)
sum_k |a_k| |w_k|`` (each factor rounded within 2^-8 of itself, 8 significant bits, then K float32
sums), so a layer's output error scales with its pre-activations, not its outputs; on
random and trained models the outputs stay within the bounds the tests state (about 1e-2
absolute for tanh / sigmoid outputs in int8, a few 1e-3 in bf16).

Quantized layers compute inference only: ``training=True``, ``fit`` and ``backward`` raise (train
the float model and quantize it again). Their parameters are the quantized form and nothing else
(``get_weights()``, ``set_weights()``, ``save``, ``load_model``): an int8 matrix is two parameters,
the int8 weights (``w_ih``, ``w_hh``, or Dense's ``kernel`` in Keras's [in, units] layout) and
their float32 scales (``w_ih_scale`` ...), a bf16 matrix one, its bf16 bits as uint16; biases stay
float32. The float weights are not kept.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from . import backend
from .layers import GRU, LSTM, Dense, SimpleRNN
from .layers._core_common import ACTIVATIONS
from .layers.base import Parameter, register_layer
from .reference.quantized import round_bf16

__all__ = ["MODES", "Bf16Dense", "Bf16GRU", "Bf16LSTM", "Bf16SimpleRNN", "Int8Dense", "Int8GRU", "Int8LSTM",
           "Int8SimpleRNN", "quantize"]

MODES = ("int8", "bf16")


def _encode_int8(w):
    from .reference.quantized import quantize_rows

    q, s = quantize_rows(w)
    return [("", q), ("_scale", s)]


def _encode_bf16(w):
    return [("", round_bf16(w))]


class _Scheme:
    """What differs between the modes: the stored arrays of a matrix and the kernels' entry points."""

    def __init__(self, mode, encode, suffixes, pack, gemm, forward):
        self.mode, self.encode, self.suffixes = mode, encode, suffixes
        self._pack, self._gemm, self._forward = pack, gemm, forward

    def pack(self, arrays, nv, hg):
        return getattr(backend.core(), self._pack)(*arrays, nv, hg)

    def gemm(self, *args):
        return getattr(backend.core(), self._gemm)(*args)

    def forward(self, *args):
        return getattr(backend.core(), self._forward)(*args)


_SCHEMES = {"int8": _Scheme("int8", _encode_int8, ("", "_scale"), "qpack", "qgemm", "qforward"),
            "bf16": _Scheme("bf16", _encode_bf16, ("",), "bpack", "bgemm", "bforward")}


class _QuantParameter(Parameter):
    """A quantized layer's stored array (int8 weights, their scales, bf16 bits): never trained, of
    one dtype; assigning it makes the layer pack its matrices again."""

    __slots__ = ("_owner",)

    def __init__(self, name, value, owner):
        super().__init__(name, value, trainable=False, dtype=np.asarray(value).dtype)
        self._owner = owner

    def assign(self, value) -> None:
        """Copy ``value`` (of this parameter's shape and dtype) in place.

        Args:
            value: An array of the same shape and dtype.
        """
        arr = np.asarray(value)
        if arr.dtype != self.value.dtype:
            raise TypeError(f"parameter '{self.name}': expected a {self.value.dtype} array (the layer's "
                            f"{self._owner.quant_mode} form), got dtype {arr.dtype}")
        super().assign(arr)
        self._owner._packs = None


def _inference_only(layer):
    raise ValueError(f"{type(layer).__name__} '{layer.name}': {layer.quant_mode} layers compute inference only "
                     "(training=False); train the float model and quantize it again")


class _QuantMixin:
    """What the quantized layers share: the matrices in ``_quant_matrices`` held in their quantized
    form as parameters, packed for the ISA path in use (again when it changes or they are assigned)."""

    quant_mode: str = ""
    _quant_matrices: tuple[str, ...] = ()
    _packs: Any = None

    def build(self, input_shape: Any) -> None:
        """Create the parameters (the quantized form of zeros) for inputs of shape ``input_shape``.

        Args:
            input_shape: The input shape without the batch dimension.
        """
        super().build(input_shape)
        self._quantize_from_float()

    def _quantize_from_float(self):
        """Replace each float matrix parameter by its quantized form (in the same place of parameters())."""
        scheme = _SCHEMES[self.quant_mode]
        new = []
        for p in self._params:
            attr = next((a for a in self._quant_matrices if getattr(self, a, None) is p), None)
            if attr is None:
                new.append(p)
                continue
            for suffix, arr in scheme.encode(self._rows(attr, p.value)):
                qp = _QuantParameter(f"{self.name}/{attr}{suffix}", self._rows(attr, arr), self)
                setattr(self, attr + suffix, qp)
                new.append(qp)
        self._params = new
        self._packs = None
        self.trainable = False

    def _rows(self, attr, a):
        """A matrix as [output column, input] rows (Dense's kernel is [in, units]); the inverse for 2-D arrays."""
        return a.T if attr == "kernel" and a.ndim == 2 else a

    def _stored(self, attr):
        """The stored arrays of one matrix, as [output, input] rows: (int8, scales) or (bf16 bits,)."""
        return tuple(np.ascontiguousarray(self._rows(attr, getattr(self, attr + suffix).value))
                     for suffix in _SCHEMES[self.quant_mode].suffixes)

    def _packed(self, specs):
        isa = backend.isa()
        if self._packs is None or self._packs[0] != isa:
            scheme = _SCHEMES[self.quant_mode]
            self._packs = (isa, {name: scheme.pack(self._stored(name), nv, hg) for name, (nv, hg) in specs.items()})
        return self._packs[1]

    def _backward(self, dy):
        _inference_only(self)

    def quantized_weights(self) -> dict:
        """The layer's quantized matrices as [output, input] rows: {name: (int8 weights [N, K], float32
        scales [N])} for int8 (``w[n, k]`` is ``q[n, k] * scale[n]``), {name: (uint16 bf16 bits [N, K],)}
        for bf16 (:func:`fastrnn.reference.quantized.bf16_to_float32` gives the values).

        Returns:
            dict: copies of the stored arrays.
        """
        return {k: tuple(a.copy() for a in self._stored(k)) for k in self._quant_matrices}

    def int8_weights(self) -> dict:
        """The int8 matrices and their scales (int8 layers; see :meth:`quantized_weights`).

        Returns:
            dict: {name: (int8 weights [N, K], float32 scales [N])}.
        """
        if self.quant_mode != "int8":
            raise ValueError(f"{type(self).__name__} '{self.name}': a {self.quant_mode} layer has no int8 weights; "
                             "use quantized_weights()")
        return self.quantized_weights()


class _QuantRNN(_QuantMixin):
    _quant_matrices = ("w_ih", "w_hh")

    def _forward_op(self, x, w_hh, init, mask, training, hmask=None):
        if training:  # (recurrent dropout masks, hmask, exist only when training)
            _inference_only(self)
        spec = self._spec
        G, H = spec.gates, self.units
        packs = self._packed({"w_ih": (G, H), "w_hh": (G, H)})
        biases = [np.ascontiguousarray(self._bias_value(name), dtype=np.float32) for name in spec.bias_names]
        h0 = c0 = None
        if init is not None:
            h0 = np.ascontiguousarray(init[0], dtype=np.float32)
            if spec.n_states == 2:
                c0 = np.ascontiguousarray(init[1], dtype=np.float32)
        m = None if mask is None else np.ascontiguousarray(mask, dtype=np.uint8)
        y, hn, cn = _SCHEMES[self.quant_mode].forward(
            spec.kernel_id, np.ascontiguousarray(x, dtype=np.float32), packs["w_ih"], packs["w_hh"], biases[0],
            biases[1] if len(biases) == 2 else None, h0, c0, m, bool(self.go_backwards), True)
        return y, ([hn, cn] if spec.n_states == 2 else [hn]), None

    def _backward_op(self, cache, dy, dstates):
        _inference_only(self)


class _QuantDense(_QuantMixin):
    _quant_matrices = ("kernel",)

    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None) -> np.ndarray:
        if training:
            _inference_only(self)
        packs = self._packed({"kernel": (backend.core().qgemm_nv(), 0)})
        x = np.asarray(x)
        lead = x.shape[:-1]
        a = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
        bias = np.ascontiguousarray(self.bias.value, dtype=np.float32) if self.use_bias else None
        if a.shape[0] == 0:
            z = np.zeros((0, self.units), np.float32)
        else:
            z = _SCHEMES[self.quant_mode].gemm(a, packs["kernel"], bias)
        return ACTIVATIONS[self.activation][0](z.reshape(*lead, self.units))


class _Int8(_QuantMixin):
    quant_mode = "int8"


class _Bf16(_QuantMixin):
    quant_mode = "bf16"


@register_layer
class Int8SimpleRNN(_Int8, _QuantRNN, SimpleRNN):
    """A SimpleRNN with int8 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Int8LSTM(_Int8, _QuantRNN, LSTM):
    """An LSTM with int8 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Int8GRU(_Int8, _QuantRNN, GRU):
    """A GRU with int8 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Int8Dense(_Int8, _QuantDense, Dense):
    """A Dense layer with int8 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Bf16SimpleRNN(_Bf16, _QuantRNN, SimpleRNN):
    """A SimpleRNN with bf16 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Bf16LSTM(_Bf16, _QuantRNN, LSTM):
    """An LSTM with bf16 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Bf16GRU(_Bf16, _QuantRNN, GRU):
    """A GRU with bf16 weights (made by :func:`quantize`; inference only)."""


@register_layer
class Bf16Dense(_Bf16, _QuantDense, Dense):
    """A Dense layer with bf16 weights (made by :func:`quantize`; inference only)."""


_CLASSES = {
    "int8": {SimpleRNN: Int8SimpleRNN, LSTM: Int8LSTM, GRU: Int8GRU, Dense: Int8Dense},
    "bf16": {SimpleRNN: Bf16SimpleRNN, LSTM: Bf16LSTM, GRU: Bf16GRU, Dense: Bf16Dense},
}


def _quant_class(layer, mode):
    if isinstance(layer, _QuantMixin):
        return None
    return _CLASSES[mode].get(type(layer))


def quantize(model: Any, mode: str = "int8", inplace: bool = False) -> Any:
    """A copy of ``model`` (a Sequential, a functional Model or one layer) whose SimpleRNN, LSTM,
    GRU and Dense layers compute with int8 weights and activations, or bf16 weights and activations
    with float32 accumulation.

    Recurrent layers inside Bidirectional and Dense layers inside TimeDistributed are quantized too;
    every other layer is kept as it is. The model must be built (trained or given weights) and
    float32. The copy computes inference only (``predict``, calls with ``training=False``, the
    step API).

    Args:
        model (Any): A built fastrnn model or layer.
        mode (str): 'int8' or 'bf16'.
        inplace (bool): Quantize ``model`` itself instead of a copy.

    Returns:
        Any: The quantized model (``model`` itself when ``inplace``).

    Raises:
        ValueError: an unknown mode, an unbuilt model, a float64 layer, or nothing to quantize (a layer
            quantized already is kept as it is).
    """
    from .training import _all_layers

    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    roots = list(model.layers) if hasattr(model, "layers") else [model]
    found = [lay for lay in _all_layers(roots) if _quant_class(lay, mode) is not None]
    done = sorted({lay.quant_mode for lay in _all_layers(roots) if isinstance(lay, _QuantMixin)})
    if not found and done:
        raise ValueError(f"quantize: {type(model).__name__} is quantized already ({', '.join(done)}); quantize the "
                         "float model instead")
    if not found:
        raise ValueError(f"quantize: {type(model).__name__} has no SimpleRNN, LSTM, GRU or Dense layer to quantize")
    for lay in found:
        if not lay.built:
            raise ValueError(f"quantize: layer '{lay.name}' is not built; build or train the model first")
        if np.dtype(lay.dtype) != np.float32:
            raise ValueError(f"quantize: layer '{lay.name}' is {np.dtype(lay.dtype).name}; {mode} quantization takes "
                             "float32 layers")
    target = model if inplace else copy.deepcopy(model)
    roots = list(target.layers) if hasattr(target, "layers") else [target]
    for lay in _all_layers(roots):
        cls = _quant_class(lay, mode)
        if cls is not None:
            lay.__class__ = cls
            lay._quantize_from_float()
    return target
