"""Symbolic tensors and the nodes that layers record when called on them (the functional API).

``fr.Input(shape)`` returns a :class:`SymbolicTensor`: a shape (batch axis None), a dtype and the
layer call (a :class:`Node`) that produced it. Calling a layer on symbolic tensors builds the layer
from their shapes, as a first call on data would, records a Node (the layer, its call arguments
with the tensors in them, its output tensors) and returns symbolic outputs with the shapes of the
layer's ``compute_output_shape``. ``fastrnn.Model(inputs, outputs)`` then runs the recorded
graph on arrays (:mod:`fastrnn.functional`).

A symbolic tensor holds no values: NumPy functions, ``np.asarray`` and arithmetic on it raise a
TypeError saying so.
"""
from __future__ import annotations

import numpy as np

__all__ = ["InputTensor", "Node", "SymbolicTensor", "call_layer", "flatten", "is_symbolic", "make_input",
           "map_structure"]


def _no_values(what):
    return TypeError(
        f"{what}: a symbolic tensor (from fr.Input or a layer called on one) has no values; it only describes "
        "a model's graph. Build a model with fr.Model(inputs, outputs) and call it (or model.predict) on arrays"
    )


class SymbolicTensor:
    """A placeholder for a layer's input or output in a functional model: ``shape`` (batch axis None),
    ``dtype`` and ``node`` / ``index`` (the layer call that produces it and which of its outputs it is)."""

    __slots__ = ("dtype", "index", "node", "shape")

    def __init__(self, shape, dtype, node=None, index=0):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.node = node
        self.index = int(index)

    @property
    def layer(self):
        """The layer whose call produced this tensor."""
        return None if self.node is None else self.node.layer

    @property
    def ndim(self) -> int:
        """Rank, the batch axis included."""
        return len(self.shape)

    def __repr__(self) -> str:
        who = "" if self.node is None else f", from {type(self.layer).__name__} '{self.layer.name}'"
        return f"<SymbolicTensor shape={self.shape}, dtype={self.dtype.name}{who}>"

    # a symbolic tensor is no array: NumPy and arithmetic refuse it with a message saying why
    def __array__(self, *args, **kwargs):
        raise _no_values("np.asarray")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise _no_values(f"numpy.{ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        raise _no_values(f"numpy.{func.__name__}")

    def __bool__(self):
        raise _no_values("bool()")

    def __len__(self):
        raise _no_values("len()")

    def __iter__(self):
        raise _no_values("iteration")

    def __getitem__(self, item):
        raise _no_values("indexing")

    def __float__(self):
        raise _no_values("float()")

    def _arith(self, *args):
        raise _no_values("arithmetic")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __rtruediv__ = __matmul__ = __rmatmul__ = __pow__ = __neg__ = _arith


class InputTensor(SymbolicTensor):
    """What ``fr.Input`` returns: a model input. It also stands for its :class:`InputLayer` where
    a layer is expected (``Sequential([fr.Input((T, F)), ...])``, calling it on an array), as
    before the functional API."""

    __slots__ = ()

    def __call__(self, x, *args, **kwargs):
        return self.layer(x, *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.layer, name)


class Node:
    """One call of ``layer`` on symbolic tensors: ``args`` (a tensor, or a list of them), ``kwargs``
    (keyword arguments; tensors or lists of tensors in them are inputs too) and ``outputs`` (the
    tensors it returned; ``single`` when the layer returned one tensor, not a list)."""

    __slots__ = ("args", "kwargs", "layer", "outputs", "single")

    def __init__(self, layer, args, kwargs, outputs=(), single=True):
        self.layer = layer
        self.args = args
        self.kwargs = dict(kwargs)
        self.outputs = list(outputs)
        self.single = bool(single)

    @property
    def inputs(self) -> list:
        """Every input tensor of the call, args first, then keyword arguments (each once, in order)."""
        out, seen = [], set()
        for t in flatten(self.args) + flatten(list(self.kwargs.values())):
            if isinstance(t, SymbolicTensor) and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
        return out

    def __repr__(self) -> str:
        return (f"<Node {type(self.layer).__name__} '{self.layer.name}' inputs={len(self.inputs)} "
                f"outputs={len(self.outputs)}>")


def flatten(obj) -> list:
    """The leaves of nested lists / tuples / dicts, in order."""
    if isinstance(obj, (list, tuple)):
        return [leaf for v in obj for leaf in flatten(v)]
    if isinstance(obj, dict):
        return [leaf for v in obj.values() for leaf in flatten(v)]
    return [obj]


def map_structure(fn, obj):
    """``obj`` with every leaf ``v`` replaced by ``fn(v)`` (lists, tuples and dicts kept)."""
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_structure(fn, v) for v in obj)
    if isinstance(obj, dict):
        return {k: map_structure(fn, v) for k, v in obj.items()}
    return fn(obj)


def is_symbolic(*objs) -> bool:
    """Whether any leaf of ``objs`` (nested lists, tuples, dicts) is a symbolic tensor; nested lists
    of numbers (array data) are not searched entry by entry."""
    for obj in objs:
        if isinstance(obj, SymbolicTensor):
            return True
        if isinstance(obj, dict):
            obj = list(obj.values())
        if isinstance(obj, (list, tuple)) and obj and not isinstance(obj[0], (int, float, complex, np.number)) \
                and is_symbolic(*obj):
            return True
    return False


def _shape_of(t):
    return tuple(t.shape[1:])


def call_layer(layer, args, kwargs):
    """Record ``layer(args, **kwargs)`` on symbolic tensors: build the layer from the inputs' shapes,
    check them, and return the symbolic output(s) of the new node."""
    who = f"{type(layer).__name__} '{layer.name}'"
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs.pop("training", None)  # the model's training flag decides, at every call of the model
    leaves = flatten(args)
    if not leaves or not all(isinstance(t, SymbolicTensor) for t in leaves):
        raise TypeError(
            f"{who}: called on a mix of symbolic tensors and other values; in a functional model every input of a "
            f"layer call must be a symbolic tensor (from fr.Input or another layer's call), got "
            f"{[type(t).__name__ for t in leaves]}"
        )
    for key, val in kwargs.items():
        vleaves = flatten(val)
        if any(isinstance(t, SymbolicTensor) for t in vleaves) and not all(
                isinstance(t, SymbolicTensor) for t in vleaves):
            raise TypeError(f"{who}: keyword argument {key!r} mixes symbolic tensors and other values")
    if "initial_state" in kwargs:
        _check_states(layer, who, kwargs["initial_state"])
    shapes = map_structure(_shape_of, args)
    out_shape = layer._symbolic_output_shape(shapes)
    multi = isinstance(out_shape, list)
    out_shapes = out_shape if multi else [out_shape]
    node = Node(layer, args, kwargs, single=not multi)
    node.outputs = [SymbolicTensor((None,) + tuple(sh), layer.dtype, node, i) for i, sh in enumerate(out_shapes)]
    return list(node.outputs) if multi else node.outputs[0]


def _check_states(layer, who, states):
    units = getattr(layer, "units", None)
    for i, s in enumerate(flatten(states)):
        if (isinstance(s, SymbolicTensor) and units is not None and len(s.shape) == 2
                and s.shape[1] is not None and s.shape[1] != units):
            raise ValueError(f"{who}: initial_state[{i}] must have shape (batch, {units}), got {s.shape}")


def make_input(layer, shape, dtype) -> InputTensor:
    """The tensor an Input layer produces (its node has no inputs)."""
    node = Node(layer, [], {}, single=True)
    node.outputs = [InputTensor((None,) + tuple(shape), dtype, node, 0)]
    return node.outputs[0]
