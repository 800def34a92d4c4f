"""The graph of a functional model, ``fastrnn.Model(inputs, outputs)``: ordering, forward, backward
and the Keras-style config of its layers and their calls (``Functional`` in :mod:`fastrnn._model`
is the model built on it).

    inputs = fr.Input((None, 8))
    x = fr.layers.LSTM(32, return_sequences=True)(inputs)
    outputs = fr.layers.Dense(1)(x)
    model = fr.Model(inputs, outputs)

Forward runs the recorded layer calls (nodes) in topological order, each on the values of its
input tensors, and propagates masks as Keras does: a call without an explicit ``mask=`` gets the
mask of its input (``layer.compute_mask`` gives every output's). A training forward keeps, per
node, the backward caches of the layer (and of the layers it wraps): a layer called twice (a
shared layer) has one cache per call. Backward runs the nodes in reverse order, restores each
node's caches, calls the layer's ``backward`` with its outputs' gradients (zeros for outputs no
gradient reached) and adds what it returns to its input tensors' gradients, so a tensor used
several times, or a shared layer, gets the sum; gradients w.r.t. recurrent initial states come
from the layer's ``initial_state_grads``.

The config is Keras's: ``{"name", "layers": [{"class_name", "config", "name", "inbound_nodes":
[{"args": [...], "kwargs": {...}}]}], "input_layers": [[name, node, index]], "output_layers":
[...]}``, a tensor written as ``{"class_name": "__keras_tensor__", "config": {"shape", "dtype",
"keras_history": [layer name, node index, tensor index]}}``. Loading creates registered layer
classes from their configs and replays the calls; no code is run.
"""
from __future__ import annotations

import numpy as np

from .layers import base as layers_base
from .layers._symbolic import InputTensor, SymbolicTensor, flatten, is_symbolic, make_input, map_structure
from .layers.attention import _Attention
from .layers.core import InputLayer
from .training import _all_layers

__all__ = ["Graph", "Targets"]

_TENSOR = "__keras_tensor__"


def _as_tensor_list(obj, argname):
    """A tensor or a list / tuple of tensors as (list of tensors, whether a single tensor was given)."""
    if isinstance(obj, SymbolicTensor):
        return [obj], True
    if not isinstance(obj, (list, tuple)):
        raise TypeError(f"Model: {argname} must be a symbolic tensor (from fr.Input or a layer called on one) or "
                        f"a list of them, got {type(obj).__name__}")
    items = list(obj)
    if not items:
        raise ValueError(f"Model: {argname} is empty")
    for i, t in enumerate(items):
        if not isinstance(t, SymbolicTensor):
            raise TypeError(f"Model: {argname}[{i}] must be a symbolic tensor (from fr.Input or a layer called on "
                            f"one), got {type(t).__name__}")
    return items, False


def _describe(t):
    return f"{t!r}"


class Targets:
    """The targets of a model with several outputs, one array per output, indexed and sliced along
    the samples together (what the training loops do with one target array)."""

    def __init__(self, arrays):
        self.arrays = list(arrays)

    @property
    def shape(self):
        """(number of samples,)."""
        return (self.arrays[0].shape[0],)

    def __getitem__(self, idx):
        return Targets([a[idx] for a in self.arrays])

    def __len__(self):
        return len(self.arrays)

    def __iter__(self):
        return iter(self.arrays)

    def __array__(self, *args, **kwargs):
        raise TypeError("the targets of a model with several outputs are a list of arrays, not one array "
                        "(class_weight needs a model with one output)")


class Graph:
    """The nodes between ``inputs`` and ``outputs`` in topological order, and how to run them."""

    def __init__(self, inputs, outputs):
        self.inputs, self.single_input = _as_tensor_list(inputs, "inputs")
        self.outputs, self.single_output = _as_tensor_list(outputs, "outputs")
        for i, t in enumerate(self.inputs):
            if not isinstance(t, InputTensor):
                raise ValueError(
                    f"Model: inputs[{i}] must be a tensor made by fr.Input, got {_describe(t)}, the output of a layer")
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise ValueError("Model: the same input tensor is listed more than once in inputs")
        input_ids = {id(t) for t in self.inputs}
        # depth-first from the outputs: every tensor reached must come from the inputs
        order, state = [], {}

        def visit(tensor, path):
            node = tensor.node
            if id(tensor) in input_ids:
                return
            if node is None or isinstance(tensor, InputTensor):
                raise ValueError(
                    f"Model: graph disconnected: cannot obtain the value of {_describe(tensor)}, needed by "
                    f"{path}; it is not one of the model's inputs (pass it in inputs=[...])")
            st = state.get(id(node))
            if st == "done":
                return
            if st == "active":  # pragma: no cover - layers cannot be called on their own future outputs
                raise ValueError("Model: the graph has a cycle")
            state[id(node)] = "active"
            for t in node.inputs:
                visit(t, f"{type(node.layer).__name__} '{node.layer.name}'")
            state[id(node)] = "done"
            order.append(node)

        for i, t in enumerate(self.outputs):
            visit(t, f"outputs[{i}]")
        self.nodes = order
        self.input_nodes = [t.node for t in self.inputs]
        names = {}
        for layer in self.layers():
            if names.setdefault(layer.name, layer) is not layer:
                raise ValueError(f"Model: two different layers are named '{layer.name}'; the layers of a model need "
                                 "unique names")
        self._trace = None

    # ------------------------------------------------------------------ structure
    def layers(self) -> list:
        """Every layer, each once: the input layers, then the others in order of first call."""
        out, seen = [], set()
        for node in self.input_nodes + self.nodes:
            if id(node.layer) not in seen:
                seen.add(id(node.layer))
                out.append(node.layer)
        return out

    def nodes_of(self, layer) -> list:
        """The calls of ``layer`` in this graph, in order."""
        return [n for n in self.input_nodes + self.nodes if n.layer is layer]

    # ------------------------------------------------------------------ forward
    def forward(self, xs, training=False):
        """Output values and masks for the input arrays ``xs`` (one per input)."""
        values = {}
        for t, x in zip(self.inputs, xs):
            values[id(t)] = (t.layer(x, training=False), None)
        trace = []

        def value(t):
            return values[id(t)][0] if isinstance(t, SymbolicTensor) else t

        for node in self.nodes:
            layer = node.layer
            args = map_structure(value, node.args)
            kwargs = {k: map_structure(value, v) for k, v in node.kwargs.items() if k != "mask"}
            if "mask" in node.kwargs:
                mask = map_structure(value, node.kwargs["mask"])
            elif isinstance(node.args, list):
                masks = [values[id(t)][1] for t in node.args]
                mask = masks if any(m is not None for m in masks) else None
                if isinstance(layer, _Attention) and mask is not None:  # the values' mask (Keras)
                    mask = None if masks[1] is None else [None, masks[1]]
            else:
                mask = values[id(node.args)][1]
            out = layer(args, training=training, mask=mask, **kwargs)
            outs = [out] if node.single else list(out)
            out_masks = layer.compute_mask(args, mask)
            if node.single:
                out_masks = [out_masks]
            elif not isinstance(out_masks, (list, tuple)) or len(out_masks) != len(outs):
                out_masks = [None] * len(outs)
            for t, y, m in zip(node.outputs, outs, out_masks):
                values[id(t)] = (y, m)
            if training:
                caches = [(lay, lay._cache) for lay in _all_layers([layer])]
                trace.append((node, caches, [(np.shape(y), np.asarray(y).dtype) for y in outs]))
        self._trace = trace if training else None
        return [values[id(t)][0] for t in self.outputs], [values[id(t)][1] for t in self.outputs]

    # ------------------------------------------------------------------ backward
    def backward(self, dys, on_layer_done=None):
        """Gradients w.r.t. the inputs (None for integer inputs such as token ids) for the output
        gradients ``dys`` (one per output, None for none) of the last training forward; accumulates
        the parameter gradients. ``on_layer_done(layer)``, if given, is called once per layer when
        its last node in backward order is done (its parameter gradients are then complete)."""
        if self._trace is None:
            raise RuntimeError("Model: backward() called before a forward pass with training=True")
        grads = {}
        uses: dict = {}
        for node, _, _ in self._trace:
            uses[id(node.layer)] = uses.get(id(node.layer), 0) + 1

        def done(layer):
            uses[id(layer)] -= 1
            if on_layer_done is not None and uses[id(layer)] == 0:
                on_layer_done(layer)

        def add(t, g):
            if g is None or not isinstance(t, SymbolicTensor):
                return
            g = np.asarray(g)
            grads[id(t)] = g if id(t) not in grads else grads[id(t)] + g

        for t, g in zip(self.outputs, dys):
            add(t, g)
        for node, caches, out_specs in reversed(self._trace):
            dout = [grads.pop(id(t), None) for t in node.outputs]
            if all(g is None for g in dout):
                done(node.layer)
                continue
            dout = [np.zeros(sh, dt) if g is None else g for g, (sh, dt) in zip(dout, out_specs)]
            for lay, cache in caches:
                lay._cache = cache
            layer = node.layer
            if node.single:
                dx = layer.backward(dout[0])
            elif isinstance(layer, _Attention):
                dx = layer.backward(dout[0], dout[1])
            else:
                dx = layer.backward(dout)
            if isinstance(node.args, list):
                for t, g in zip(node.args, dx if dx is not None else [None] * len(node.args)):
                    add(t, g)
            else:
                add(node.args, dx)
            states = node.kwargs.get("initial_state")
            if states is not None and is_symbolic(states):
                state_grads = getattr(layer, "initial_state_grads", None) or []
                for t, g in zip(flatten(states), state_grads):
                    add(t, g)
            done(layer)
        return [grads.get(id(t)) for t in self.inputs]

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """Keras's functional config (see the module docstring)."""
        history = {}
        for layer in self.layers():
            for ni, node in enumerate(self.nodes_of(layer)):
                for ti, t in enumerate(node.outputs):
                    history[id(t)] = [layer.name, ni, ti]

        def enc(v):
            if isinstance(v, SymbolicTensor):
                return {"class_name": _TENSOR, "config": {
                    "shape": list(v.shape), "dtype": v.dtype.name, "keras_history": history[id(v)]}}
            if isinstance(v, np.generic):
                return v.item()
            return v

        entries = []
        for layer in self.layers():
            entry = {"class_name": type(layer).__name__, "config": layer.get_config(), "name": layer.name,
                     "inbound_nodes": []}
            for node in self.nodes_of(layer):
                if isinstance(layer, InputLayer):
                    entry["input_dtype"] = node.outputs[0].dtype.name
                    continue
                entry["inbound_nodes"].append({"args": [map_structure(enc, node.args)],
                                               "kwargs": {k: map_structure(enc, v) for k, v in node.kwargs.items()}})
            entries.append(entry)
        return {
            "layers": entries,
            "input_layers": [history[id(t)] for t in self.inputs],
            "output_layers": [history[id(t)] for t in self.outputs],
        }

    @staticmethod
    def tensors_from_config(config: dict, custom_objects=None):
        """(inputs, outputs) rebuilt from :meth:`get_config`'s dict: the layers from their configs,
        then their calls replayed on symbolic tensors."""
        try:
            entries = list(config["layers"])
            input_refs, output_refs = config["input_layers"], config["output_layers"]
        except (KeyError, TypeError):
            raise ValueError("Model.from_config: a functional config needs 'layers', 'input_layers' and "
                             "'output_layers'") from None
        tensors, pending, by_name = {}, [], {}
        for entry in entries:
            cname = entry["class_name"]
            if custom_objects and cname in custom_objects:
                layer = custom_objects[cname].from_config(dict(entry["config"]))
            else:
                layer = layers_base.deserialize({"class_name": cname, "config": entry["config"]})
            by_name[entry.get("name", layer.name)] = layer
            if isinstance(layer, InputLayer):
                t = make_input(layer, layer._given_input_shape, entry.get("input_dtype", layer.dtype.name))
                tensors[(layer.name, 0, 0)] = t
                continue
            for ni, node in enumerate(entry.get("inbound_nodes", [])):
                pending.append((layer, ni, node))

        def dec(v):
            if isinstance(v, dict) and v.get("class_name") == _TENSOR:
                key = tuple(v["config"]["keras_history"])
                if key not in tensors:
                    raise KeyError(key)
                return tensors[key]
            if isinstance(v, (list, tuple)):
                return [dec(a) for a in v]
            if isinstance(v, dict):
                return {k: dec(a) for k, a in v.items()}
            return v

        while pending:
            progress, left = False, []
            for layer, ni, node in pending:
                try:
                    args = dec(node["args"])
                    kwargs = dec(node.get("kwargs", {}))
                except KeyError:
                    left.append((layer, ni, node))
                    continue
                if len(args) != 1:
                    raise ValueError(f"Model.from_config: layer '{layer.name}': expected one positional argument "
                                     f"per call, got {len(args)}")
                out = layer(args[0], **kwargs)
                for ti, t in enumerate(out if isinstance(out, list) else [out]):
                    tensors[(layer.name, ni, ti)] = t
                progress = True
            if not progress:
                names = sorted({layer.name for layer, _, _ in left})
                raise ValueError(f"Model.from_config: the calls of layers {names} use tensors that no layer produces")
            pending = left

        def pick(refs):
            try:
                ts = [tensors[tuple(r)] for r in refs]
            except (KeyError, TypeError):
                raise ValueError(f"Model.from_config: unknown tensor in {refs}") from None
            return ts[0] if len(ts) == 1 else ts

        return pick(input_refs), pick(output_refs)
