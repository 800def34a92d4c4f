"""Export of trained models to ONNX: ``fastrnn.onnx.export(model, path)`` or ``model.export_onnx(path)``.

The written model runs in ONNX Runtime (or any runtime with the standard operators) and computes
what ``model.predict`` computes, to float32 rounding. It needs the ``onnx`` package
(``pip install fastrnn[onnx]``, which also installs ``onnxruntime`` to run the file);
``import fastrnn`` does not import it.

What is exported:

* Sequential models, and functional models (``fr.Model(inputs, outputs)``) whose layers each take
  one tensor (any graph of them; ``Concatenate`` joins several), with one or more inputs and outputs.
* Layers: Input, Embedding (``Gather``; ``mask_zero``), Masking, SimpleRNN / LSTM / GRU as ONNX's
  ``RNN`` / ``LSTM`` / ``GRU`` operators (weights reordered into ONNX's gate orders: LSTM i,o,f,c;
  GRU z,r,h with ``linear_before_reset=1``, which is fastrnn's reset-after GRU: the GRU is never
  changed into the other variant), ``go_backwards``, ``return_sequences``, ``return_state``
  (functional models), Bidirectional (``direction="bidirectional"``, every merge mode: concat, sum,
  mul, ave, and None in functional models), Dense, Activation, Dropout (the identity), Flatten,
  RepeatVector, TimeDistributed, Concatenate.
* Masks (from ``Embedding(mask_zero=True)`` or ``Masking``) are computed inside the graph and given
  to the recurrent operators as ``sequence_lens``. fastrnn lets a mask have holes (a masked step
  between valid ones carries the state unchanged): the graph moves each sequence's valid steps to
  its front (a stable ``TopK`` on the step index), runs the operator on that, and gathers the
  outputs back to their steps, with fastrnn's values at masked steps (the output of the last valid
  step in running order, 0 before the first; 0 where ``zero_output_for_mask``, as inside
  Bidirectional) and its last output (0 for a sequence with no valid step).
* The batch axis, and the time axis of sequence inputs, are symbolic (``batch``, ``time``): the
  file runs at any batch size and length (a model with Flatten keeps the length it was built for).

Refused with a ValueError naming the layer: any other layer (attention, custom layers), stateful
layers (``stateful=True`` or ``carry_state=True``: the carried state lives between calls, which a
stateless graph cannot hold; rebuild the model with ``stateful=False`` and the same weights to
export it), layers of another dtype than float32, layer calls with extra arguments (e.g.
``initial_state=``), subclassed models.

Opset: 17 by default (any of 14 to what the installed ``onnx`` knows may be asked for). 17 is
read by ONNX Runtime 1.13 and later (``onnxruntime>=1.17`` is the extra's floor) and by the other
common runtimes; the operators used have not changed since opset 14 (the recurrent operators'
``layout`` attribute, left at its default, time-major).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import _cells
from ._saving_io import _atomic_write
from ._version import __version__
from .layers import (
    Activation,
    Bidirectional,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    InputLayer,
    Masking,
    RepeatVector,
    TimeDistributed,
)
from .layers._base_rnn import BaseRNN
from .layers.base import Layer, refuse_quantized

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "export", "to_model_proto"]

#: The opset written when ``opset`` is not given.
DEFAULT_OPSET = 17
#: The oldest opset the exporter writes (the recurrent operators' and Squeeze's current forms).
MIN_OPSET = 14

# ONNX's gate order of each cell, by fastrnn's gate names (fastrnn._cells: LSTM i,f,g,o; GRU r,z,n)
_ONNX_GATES = {"rnn": ("h",), "lstm": ("i", "o", "f", "g"), "gru": ("z", "r", "n")}
_ONNX_OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# activations of the recurrent operators' ``activations`` attribute
_ONNX_RNN_ACT = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}
# the operators' default activations (written only when a layer differs)
_DEFAULT_ACTS = {"rnn": ["Tanh"], "lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"]}
_SUPPORTED = ("InputLayer, Embedding, Masking, SimpleRNN, LSTM, GRU, Bidirectional, Dense, Activation, Dropout, "
              "Flatten, RepeatVector, TimeDistributed, Concatenate")
_SUPPORTED_CLASSES = (InputLayer, Embedding, Masking, BaseRNN, Bidirectional, Dense, Activation, Dropout, Flatten,
                      RepeatVector, TimeDistributed, Concatenate)
_INT64_MIN = np.iinfo(np.int64).min


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError("fastrnn.onnx.export needs the onnx package: pip install 'fastrnn[onnx]'") from exc
    return onnx


def _who(layer):
    return f"layer '{layer.name}' ({type(layer).__name__})"


class _Graph:
    """The nodes, initializers and constants of the graph being written."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes: list = []
        self.inits: list = []
        self._names: set[str] = set()
        self._consts: dict = {}
        self.mask_infos: dict = {}  # mask tensor name -> _MaskInfo (shared by the layers of one mask)

    def name(self, base: str) -> str:
        base = "".join(c if c.isalnum() or c in "_.-/" else "_" for c in base) or "t"
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def init(self, arr: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.array(arr, order="C"), name))  # 0-d stays 0-d
        return name

    def const(self, value, dtype) -> str:
        """A shared constant (an initializer) of ``value`` as ``dtype``."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(arr, "const")
        return self._consts[key]

    def i64(self, *values) -> str:
        """A 1-D int64 constant (axes, shapes, starts)."""
        return self.const(list(values), np.int64)

    def op(self, op_type: str, inputs, base: str | None = None, n_out: int = 1, **attrs) -> Any:
        outs = [self.name(f"{base or op_type.lower()}" + (f"_{i}" if n_out > 1 else "")) for i in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs, name=self.name("n_" + outs[0]),
                                                **attrs))
        return outs[0] if n_out == 1 else outs

    def unsqueeze(self, x, *axes):
        return self.op("Unsqueeze", [x, self.i64(*axes)])

    def reverse_time(self, x):
        """x [B, T, ...] with the time axis reversed."""
        return self.op("Slice", [x, self.i64(-1), self.i64(_INT64_MIN), self.i64(1), self.i64(-1)], "reversed")


class _Value:
    """A tensor of the graph: its name, the fastrnn shape (batch excluded) and its mask (a bool
    [B, T] tensor name) or None."""

    __slots__ = ("mask", "name", "shape")

    def __init__(self, name, shape, mask=None):
        self.name, self.shape, self.mask = name, tuple(shape), mask


# ---------------------------------------------------------------------------------------------- layers
def _activation(g: _Graph, x: str, act: str, layer) -> str:
    if act == "linear":
        return x
    if act == "softmax":
        return g.op("Softmax", [x], "softmax", axis=-1)
    op = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}.get(act)
    if op is None:
        raise ValueError(f"export: {_who(layer)}: activation {act!r} has no ONNX equivalent here")
    return g.op(op, [x], act)


def _dense(g: _Graph, layer: Dense, x: str) -> str:
    y = g.op("MatMul", [x, g.init(layer.kernel.value, f"{layer.name}.kernel")], layer.name)
    if layer.bias is not None:
        y = g.op("Add", [y, g.init(layer.bias.value, f"{layer.name}.bias")], layer.name)
    return _activation(g, y, layer.activation, layer)


def _masking(g: _Graph, layer: Masking, x: str) -> tuple[str, str]:
    differs = g.op("Not", [g.op("Equal", [x, g.const(layer.mask_value, np.float32)])])
    count = g.op("ReduceSum", [g.op("Cast", [differs], to=g.onnx.TensorProto.INT64), g.i64(-1)], keepdims=0)
    keep = g.op("Greater", [count, g.const(0, np.int64)], f"{layer.name}.mask")
    y = g.op("Where", [g.unsqueeze(keep, -1), x, g.const(0.0, np.float32)], layer.name)
    return y, keep


def _rnn_weights(layer: BaseRNN):
    """(W [G*H, F], R [G*H, H], B [2*G*H]) of one direction, in ONNX's gate order."""
    spec, H = layer.spec, layer.units
    perm = [spec.gate_names.index(name) for name in _ONNX_GATES[spec.base]]

    def reorder(a):
        return np.concatenate([a[i * H:(i + 1) * H] for i in perm], axis=0)

    W, R = reorder(layer.w_ih.value), reorder(layer.w_hh.value)
    if spec.bias_names == ("b_ih", "b_hh"):
        B = np.concatenate([reorder(layer._bias_value("b_ih")), reorder(layer._bias_value("b_hh"))])
    else:  # one bias: ONNX's input bias, its recurrent bias 0
        b = reorder(layer._bias_value(spec.bias_names[0]))
        B = np.concatenate([b, np.zeros_like(b)])
    return W, R, B


def _rnn_activations(layer: BaseRNN) -> list[str]:
    base = layer.spec.base
    names = [layer.activation] if base == "rnn" else (
        [layer.recurrent_activation, layer.activation] + ([layer.activation] if base == "lstm" else []))
    out = []
    for name in names:
        if name not in _ONNX_RNN_ACT:
            raise ValueError(f"export: {_who(layer)}: activation {name!r} has no equivalent among ONNX's "
                             f"{_ONNX_OP[base]} activations")
        out.append(_ONNX_RNN_ACT[name])
    return out


class _MaskInfo:
    """What the recurrent layers of one mask share: valid steps as int64 [B, T], their count per
    sequence [B], their running count [B, T] and the order that moves them to the front."""

    def __init__(self, g: _Graph, mask: str, x: str):
        i64 = g.onnx.TensorProto.INT64
        self.mask = mask
        self.valid = g.op("Cast", [mask], "valid", to=i64)
        self.count = g.op("ReduceSum", [self.valid, g.i64(1)], "valid_count", keepdims=0)  # [B]
        self.cum = g.op("CumSum", [self.valid, g.const(1, np.int64)], "valid_cum")  # [B, T], inclusive
        T = g.op("Gather", [g.op("Shape", [x]), g.const(1, np.int64)], "steps")  # scalar
        pos = g.op("Range", [g.const(0, np.int64), T, g.const(1, np.int64)], "step_index")  # [T]
        # key: the step index for valid steps, T + index for masked ones; sorted ascending it puts
        # the valid steps first, each group in time order
        key = g.op("Add", [pos, g.op("Mul", [g.op("Sub", [g.const(1, np.int64), self.valid]), T])], "compact_key")
        _, self.order = g.op("TopK", [key, g.op("Reshape", [T, g.i64(1)])], "compact", n_out=2, axis=1,
                             largest=0, sorted=1)
        self.last = g.op("Sub", [T, g.const(1, np.int64)], "last_step")  # scalar T - 1
        self.empty = g.op("Equal", [self.count, g.const(0, np.int64)], "no_valid_step")  # [B]
        # at least one step for the operator: a sequence with none runs one step whose outputs are dropped
        self.lens = g.op("Cast", [g.op("Max", [self.count, g.const(1, np.int64)])], "sequence_lens",
                         to=g.onnx.TensorProto.INT32)
        self._compacted: dict = {}

    def compact(self, g: _Graph, x: str) -> str:
        """x [B, T, F] with each sequence's valid steps moved to its front."""
        if x not in self._compacted:
            idx = g.op("Expand", [g.unsqueeze(self.order, 2), g.op("Shape", [x])])
            self._compacted[x] = g.op("GatherElements", [x, idx], "compacted", axis=1)
        return self._compacted[x]


def _gather_steps(g: _Graph, y: str, idx: str, last: str) -> str:
    """y [B, T, H] gathered along time at idx [B, T] (clipped into [0, T-1])."""
    idx = g.op("Min", [g.op("Max", [idx, g.const(0, np.int64)]), last])
    return g.op("GatherElements", [y, g.op("Expand", [g.unsqueeze(idx, 2), g.op("Shape", [y])])], axis=1)


def _rnn_direction_outputs(g: _Graph, layer: BaseRNN, Y: str, Y_h: str, Y_c: str | None, d: int,
                           mi: _MaskInfo | None) -> tuple[str, list[str]]:
    """The output of ``layer`` (direction ``d`` of the operator) IN TIME ORDER (a go_backwards
    layer's sequence is reversed by the caller) and its final states."""
    zero = g.const(0.0, np.float32)
    states = []
    if layer.return_state or not layer.return_sequences:
        states = [g.op("Gather", [Y_h, g.const(d, np.int64)], f"{layer.name}.h", axis=0)]
        if Y_c is not None:
            states.append(g.op("Gather", [Y_c, g.const(d, np.int64)], f"{layer.name}.c", axis=0))
        if mi is not None:  # no valid step: the states stay the initial zeros
            empty = g.unsqueeze(mi.empty, 1)
            states = [g.op("Where", [empty, zero, s]) for s in states]
    if not layer.return_sequences:
        out = states[0]
        if mi is not None and layer.zero_output_for_mask:  # the last step run is masked: 0
            t = mi.last if not layer.go_backwards else g.const(0, np.int64)
            last_masked = g.op("Not", [g.op("Gather", [mi.mask, t], axis=1)])
            out = g.op("Where", [g.unsqueeze(last_masked, 1), zero, out], f"{layer.name}.last")
        return out, states
    y = g.op("Transpose", [g.op("Gather", [Y, g.const(d, np.int64)], axis=1)], f"{layer.name}.seq",
             perm=[1, 0, 2])  # [B, T, H]
    if mi is None:
        return y, states
    # valid step t holds the output of compacted step cum[t] - 1; a masked step the last valid
    # output in running order (forwards: compacted step cum[t] - 1; backwards: the next valid
    # step, cum[t] - valid[t]), or 0 where there is none or with zero_output_for_mask
    one = g.const(1, np.int64)
    if layer.zero_output_for_mask:
        idx, ok = g.op("Sub", [mi.cum, one]), mi.mask
    elif not layer.go_backwards:
        idx = g.op("Sub", [mi.cum, one])
        ok = g.op("Greater", [mi.cum, g.const(0, np.int64)])
    else:
        idx = g.op("Sub", [mi.cum, mi.valid])
        ok = g.op("Less", [idx, g.unsqueeze(mi.count, 1)])
    y = _gather_steps(g, y, idx, mi.last)
    return g.op("Where", [g.unsqueeze(ok, 2), y, zero], f"{layer.name}.seq"), states


def _check_rnn(layer: BaseRNN, owner: Layer) -> None:
    if layer.stateful or layer.carry_state:
        raise ValueError(f"export: {_who(owner)} is stateful (stateful=True or carry_state=True): its state is carried "
                         "between calls, which a stateless ONNX graph cannot hold; rebuild the model with "
                         "stateful=False and the same weights (set_weights) to export it")


def _recurrent(g: _Graph, layers: list[BaseRNN], x: _Value, owner: Layer) -> tuple[dict, str | None]:
    """Run ``layers`` (one, or the two directions of a Bidirectional: the one running forwards
    first) as one ONNX operator on x [B, T, F]: {layer name: (output in time order, states)}."""
    for lay in layers:
        _check_rnn(lay, owner)
    first = layers[0]
    base = first.spec.base
    mi = None
    if x.mask is not None:
        mi = g.mask_infos.get(x.mask)
        if mi is None:
            mi = g.mask_infos[x.mask] = _MaskInfo(g, x.mask, x.name)
    xin = x.name if mi is None else mi.compact(g, x.name)
    xt = g.op("Transpose", [xin], "time_major", perm=[1, 0, 2])
    Ws, Rs, Bs = zip(*(_rnn_weights(lay) for lay in layers))
    name = owner.name
    W = g.init(np.stack(Ws), f"{name}.W")
    R = g.init(np.stack(Rs), f"{name}.R")
    B = g.init(np.stack(Bs), f"{name}.B")
    attrs: dict[str, Any] = {"hidden_size": first.units}
    if len(layers) == 2:
        attrs["direction"] = "bidirectional"
    elif first.go_backwards:
        attrs["direction"] = "reverse"
    acts = [a for lay in layers for a in _rnn_activations(lay)]
    if acts != _DEFAULT_ACTS[base] * len(layers):
        attrs["activations"] = acts
    if base == "gru":
        attrs["linear_before_reset"] = 1  # fastrnn's GRU: the reset gate multiplies (h W_hn^T + b_hn)
    inputs = [xt, W, R, B, "" if mi is None else mi.lens]
    n_out = 3 if base == "lstm" else 2
    outs = g.op(_ONNX_OP[base], inputs, name, n_out=n_out, **attrs)
    Y, Y_h = outs[0], outs[1]
    Y_c = outs[2] if base == "lstm" else None
    node = g.nodes[-1]  # outputs nobody reads are left out (the runtime then need not write them)
    if Y_c is not None and not first.return_state:
        del node.output[2]
        Y_c = None
    if first.return_sequences and not first.return_state:
        del node.output[1]
    if not first.return_sequences:
        node.output[0] = ""
    return {lay.name: _rnn_direction_outputs(g, lay, Y, Y_h, Y_c, d, mi) for d, lay in enumerate(layers)}, mi


def _single_rnn(g: _Graph, layer: BaseRNN, x: _Value) -> list[_Value]:
    res, _ = _recurrent(g, [layer], x, layer)
    y, states = res[layer.name]
    mask = None
    if layer.return_sequences:
        if layer.go_backwards:  # the sequence in running order, as fastrnn returns it
            y = g.reverse_time(y)
        if x.mask is not None:
            mask = g.reverse_time(x.mask) if layer.go_backwards else x.mask
    shapes = layer.compute_output_shape(x.shape)
    if not layer.return_state:
        return [_Value(y, shapes, mask)]
    return [_Value(y, shapes[0], mask)] + [_Value(s, sh) for s, sh in zip(states, shapes[1:])]


def _bidirectional(g: _Graph, layer: Bidirectional, x: _Value) -> list[_Value]:
    fl, bl = layer.forward_layer, layer.backward_layer
    order = [bl, fl] if fl.go_backwards else [fl, bl]  # ONNX: the forward-running direction first
    res, _ = _recurrent(g, order, x, layer)
    (yf, sf), (yb, sb) = res[fl.name], res[bl.name]
    if layer.return_sequences:  # fastrnn: yf as the forward layer returns it, yb reversed back
        if fl.go_backwards:
            yf = g.reverse_time(yf)
        if not bl.go_backwards:
            yb = g.reverse_time(yb)
    mode = layer.merge_mode
    if mode == "concat":
        ys = [g.op("Concat", [yf, yb], layer.name, axis=-1)]
    elif mode == "sum":
        ys = [g.op("Add", [yf, yb], layer.name)]
    elif mode == "ave":
        ys = [g.op("Mul", [g.op("Add", [yf, yb]), g.const(0.5, np.float32)], layer.name)]
    elif mode == "mul":
        ys = [g.op("Mul", [yf, yb], layer.name)]
    else:
        ys = [yf, yb]
    mask = x.mask if layer.return_sequences else None
    shapes = layer.compute_output_shape(x.shape)
    if layer.return_state:
        y_shapes = shapes[0] if mode is None else [shapes[0]]
        out = [_Value(y, sh, mask) for y, sh in zip(ys, y_shapes)]
        return out + [_Value(s, sh) for s, sh in zip(list(sf) + list(sb), shapes[len(y_shapes):])]
    y_shapes = shapes if mode is None else [shapes]
    return [_Value(y, sh, mask) for y, sh in zip(ys, y_shapes)]


def _per_step(g: _Graph, layer: Layer, x: _Value) -> _Value:
    """Layers that act on the last axis only, as the layer inside TimeDistributed."""
    outs = _convert(g, layer, [x], x)
    if len(outs) != 1:
        raise ValueError(f"export: {_who(layer)} inside TimeDistributed must return one tensor")
    return outs[0]


def _time_distributed(g: _Graph, layer: TimeDistributed, x: _Value) -> _Value:
    rest = tuple(x.shape[1:])
    if any(d is None for d in rest):
        raise ValueError(f"export: {_who(layer)}: the sizes after the time axis must be known, got input shape "
                         f"{x.shape}")
    flat = g.op("Reshape", [x.name, g.i64(-1, *rest)])  # [B*T, ...]
    inner = _per_step(g, layer.layer, _Value(flat, rest))
    out_rest = tuple(layer.layer.compute_output_shape(rest))
    head = g.op("Slice", [g.op("Shape", [x.name]), g.i64(0), g.i64(2)])  # [B, T]
    y = g.op("Reshape", [inner.name, g.op("Concat", [head, g.i64(*out_rest)], axis=0)], layer.name)
    return _Value(y, layer.compute_output_shape(x.shape), x.mask)


def _convert(g: _Graph, layer: Layer, args: list[_Value], x: _Value) -> list[_Value]:
    """The outputs of ``layer`` called on ``args`` (``x``: the one input of single-input layers)."""
    if not isinstance(layer, _SUPPORTED_CLASSES):
        raise ValueError(f"export: {_who(layer)} is not supported; the layers exported are {_SUPPORTED}")
    if layer.dtype != np.float32:
        raise ValueError(f"export: {_who(layer)} has dtype {layer.dtype.name}; only float32 layers are exported")
    refuse_quantized(layer, "export")
    if isinstance(layer, Concatenate):
        rank = len(args[0].shape) + 1
        axis = layer.axis % rank
        masks = [a.mask for a in args if a.mask is not None]
        mask = None
        if masks:
            if axis != rank - 1:
                raise ValueError(f"export: {_who(layer)}: masked inputs are exported for a join along the last "
                                 f"axis only, got axis={layer.axis}")
            mask = masks[0]
            for m in masks[1:]:
                mask = g.op("And", [mask, m])
        y = g.op("Concat", [a.name for a in args], layer.name, axis=axis)
        return [_Value(y, layer.compute_output_shape([a.shape for a in args]), mask)]
    if len(args) != 1:
        raise ValueError(f"export: {_who(layer)} is called on {len(args)} tensors; only Concatenate takes several")
    shape = tuple(layer.compute_output_shape(x.shape)) if not isinstance(layer, (BaseRNN, Bidirectional)) else None
    if isinstance(layer, Bidirectional):
        return _bidirectional(g, layer, x)
    if isinstance(layer, BaseRNN):
        return _single_rnn(g, layer, x)
    if isinstance(layer, InputLayer):
        return [x]
    if isinstance(layer, Dropout):  # inference: the identity
        return [x]
    if isinstance(layer, Embedding):
        y = g.op("Gather", [g.init(layer.embeddings.value, f"{layer.name}.embeddings"), x.name], layer.name, axis=0)
        mask = g.op("Not", [g.op("Equal", [x.name, g.const(0, np.int64)])], f"{layer.name}.mask") \
            if layer.mask_zero else None
        return [_Value(y, shape, mask)]
    if isinstance(layer, Masking):
        y, keep = _masking(g, layer, x.name)
        return [_Value(y, shape, keep)]
    if isinstance(layer, Dense):
        return [_Value(_dense(g, layer, x.name), shape, x.mask)]
    if isinstance(layer, Activation):
        return [_Value(_activation(g, x.name, layer.activation, layer), shape, x.mask)]
    if isinstance(layer, Flatten):
        return [_Value(g.op("Flatten", [x.name], layer.name, axis=1), shape)]
    if isinstance(layer, RepeatVector):
        y = g.op("Tile", [g.unsqueeze(x.name, 1), g.i64(1, layer.n, 1)], layer.name)
        return [_Value(y, shape)]
    if isinstance(layer, TimeDistributed):
        return [_time_distributed(g, layer, x)]
    raise ValueError(f"export: {_who(layer)} is not supported; the layers exported are {_SUPPORTED}")


# ---------------------------------------------------------------------------------------------- the model
def _has_flatten(layers):
    return any(isinstance(lay, Flatten) or (isinstance(lay, TimeDistributed) and _has_flatten([lay.layer]))
               for lay in layers)


def _build_model(onnx, model, opset: int):
    inputs, nodes, outputs = model._export_plan()
    g = _Graph(onnx)
    all_layers = [n[0] for n in nodes]
    fixed_time = _has_flatten(all_layers)
    values: dict = {}
    graph_inputs = []
    for key, name, shape, integer in inputs:
        shape = tuple(shape)
        if fixed_time and any(d is None for d in shape):
            raise ValueError(f"export: the model has a Flatten layer, so its input shape must be fully known "
                             f"(give the input layer its length), got {shape}")
        # token ids for an Embedding (a functional model's Input may be declared float)
        integer = integer or any(isinstance(lay, Embedding) and args == key for lay, args, _ in nodes)
        iname = g.name(name)
        has_time = not fixed_time and (len(shape) >= 2 or (len(shape) == 1 and integer))
        dims = ["batch"] + [("time" if i == 0 and has_time else d if d is not None else f"{iname}_dim{i + 1}")
                            for i, d in enumerate(shape)]
        elem = onnx.TensorProto.INT64 if integer else onnx.TensorProto.FLOAT
        graph_inputs.append(onnx.helper.make_tensor_value_info(iname, elem, dims))
        if has_time:  # the layers' output shapes then carry the symbolic length along (None)
            shape = (None,) + shape[1:]
        values[key] = _Value(iname, shape)
    out_names = [g.name(name) for _, name in outputs]  # reserved before the layers name their tensors
    for layer, arg_keys, out_keys in nodes:
        single = not isinstance(arg_keys, list)
        args = [values[k] for k in ([arg_keys] if single else arg_keys)]
        outs = _convert(g, layer, args, args[0])
        if len(outs) != len(out_keys):
            raise ValueError(f"export: {_who(layer)} gives {len(outs)} outputs where the model uses {len(out_keys)}")
        for k, v in zip(out_keys, outs):
            values[k] = v
    graph_outputs = []
    for (key, _), oname in zip(outputs, out_names):
        v = values[key]
        g.nodes.append(onnx.helper.make_node("Identity", [v.name], [oname], name=g.name("n_" + oname)))
        dims = ["batch"] + [d if d is not None else "time" for d in v.shape]
        graph_outputs.append(onnx.helper.make_tensor_value_info(oname, onnx.TensorProto.FLOAT, dims))
    # what the outputs do not need is left out (e.g. the mask's running count where no layer
    # returns sequences), and so are the constants no node reads
    read, kept = set(out_names), []
    for node in reversed(g.nodes):
        if any(o in read for o in node.output if o):
            kept.append(node)
            read.update(node.input)
    inits = [t for t in g.inits if t.name in read]
    graph = onnx.helper.make_graph(kept[::-1], model.name, graph_inputs, graph_outputs, initializer=inits)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="fastrnn", producer_version=__version__)
    proto.ir_version = min(proto.ir_version, _IR_FOR_OPSET.get(opset, proto.ir_version))
    proto.doc_string = f"Exported from the fastrnn model '{model.name}'"
    return proto


# the IR versions of the ONNX releases that introduced each opset: a file readable by the runtimes
# of that time (onnx.helper.make_model writes its own, newer, IR version)
_IR_FOR_OPSET = {14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10}


def _check_opset(onnx, opset):
    if opset is None:
        return DEFAULT_OPSET
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= int(opset) <= newest:
        raise ValueError(f"export: opset must be an int in [{MIN_OPSET}, {newest}] (the installed onnx's newest), "
                         f"got {opset!r}")
    return int(opset)


def to_model_proto(model: Any, *, opset: int | None = None) -> Any:
    """The ONNX ``ModelProto`` of ``model`` (checked with ``onnx.checker``), without writing it.

    Args:
        model: A built Sequential or functional fastrnn model.
        opset: The ONNX opset to write (default :data:`DEFAULT_OPSET`).

    Returns:
        The ``onnx.ModelProto``.
    """
    onnx = _import_onnx()
    opset = _check_opset(onnx, opset)
    plan = getattr(model, "_export_plan", None)
    if plan is None:
        raise TypeError(f"export: model must be a fastrnn Sequential or functional model, got {type(model).__name__}")
    proto = _build_model(onnx, model, opset)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model: Any, path: str | os.PathLike, *, opset: int | None = None) -> None:
    """Write ``model`` to ``path`` as an ONNX file (atomically: a failed export leaves nothing).

    The file's inputs are named after the model's inputs ('input' for a Sequential): float32
    [batch, time, features] for sequence inputs, int64 [batch, time] token ids for a model that
    starts with an Embedding; its outputs 'output' (or the model's output names). Batch and time
    are symbolic. See the module's documentation for the layers and options exported, and for what
    is refused (ValueError naming the layer).

    Args:
        model: A built Sequential or functional fastrnn model (call, fit or build it first).
        path: The file to write (str or PathLike); replaced atomically if it exists.
        opset: The ONNX opset to write: None for :data:`DEFAULT_OPSET` (17), or an int from
            :data:`MIN_OPSET` (14) to the installed onnx's newest.

    Example:
        >>> import os, tempfile
        >>> import numpy as np, onnxruntime as ort
        >>> import fastrnn as fr
        >>> model = fr.Sequential([fr.layers.LSTM(8, input_shape=(None, 3), seed=0), fr.layers.Dense(1, seed=1)])
        >>> x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     fr.onnx.export(model, os.path.join(d, "model.onnx"))
        ...     sess = ort.InferenceSession(os.path.join(d, "model.onnx"), providers=["CPUExecutionProvider"])
        >>> y = sess.run(None, {"input": x})[0]
        >>> bool(np.allclose(y, model.predict(x), rtol=1e-5, atol=1e-5))
        True
    """
    proto = to_model_proto(model, opset=opset)
    data = proto.SerializeToString()
    _atomic_write(path, lambda f: f.write(data))


# the cells of fastrnn._cells the exporter knows (a new cell must be added to _ONNX_GATES)
assert {spec.base for spec in _cells.CELLS} <= set(_ONNX_GATES)
