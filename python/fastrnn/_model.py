"""The ``Model`` base class: structure (layers, parameters, weights), build, compile, summary and
save / load; the training loops come from :class:`fastrnn.training.TrainingLoops`.

A custom model subclasses ``Model``, assigns its layers as attributes (they are found by
``model.layers``, also inside lists, tuples and dicts, and their Parameters by
``model.parameters()``) and writes ``forward(x, training=False, mask=None)`` and
``backward(dy) -> dx``; when its output is a masked sequence it sets ``self.output_mask`` in
``forward`` so that the loss skips the masked steps. compile/fit/evaluate/predict/summary/save
are inherited. A model with several inputs (Keras's encoder-decoder pattern) takes them as a list
of arrays, ``model.fit([x_enc, x_dec], y)``, and its ``forward`` receives that list; a Sequential
takes one array (a list of per-sample arrays is stacked into one).
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
from numpy.typing import ArrayLike

from . import functional, saving
from . import losses as losses_module
from . import metrics as metrics_module
from . import optim as optim_module
from ._validation import positive_int as _positive_int
from .layers import _symbolic
from .layers import base as layers_base
from .layers import recurrent as layers_recurrent
from .training import (
    TrainingLoops,
    _all_layers,
    _fmt_shape,
    _input_shape_of,
    _is_array,
    _is_shape_list,
    _n_samples,
    _take,
    _to_array,
    _walk_layers,
)

if TYPE_CHECKING:
    from .layers.base import Layer, Parameter
    from .losses import Loss
    from .metrics import Metric
    from .optim import Optimizer

__all__ = ["Functional", "Model"]


class _ConstructorSignature:
    """``inspect.signature(Model)`` shows ``(inputs=None, outputs=None, *, name=None)`` and that of
    a subclass its own ``__init__`` (``Model.__new__`` takes ``*args, **kwargs`` to tell a
    functional model from a subclassed one, which inspect would show instead)."""

    def __get__(self, obj, cls):
        if obj is not None:
            return None  # an instance: inspect falls back to its __call__
        if cls is Model:
            P = inspect.Parameter
            return inspect.Signature([P("inputs", P.POSITIONAL_OR_KEYWORD, default=None),
                                      P("outputs", P.POSITIONAL_OR_KEYWORD, default=None),
                                      P("name", P.KEYWORD_ONLY, default=None, annotation="str | None")])
        sig = inspect.signature(cls.__init__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])


def _readable_bytes(n: int) -> str:
    """``n`` bytes as Keras's summary writes them: 512.00 B, 43.50 KB, 1.20 MB (powers of 1024)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"


@saving.register_model
class Model(TrainingLoops):
    """Base class of the models: subclass it and write ``forward`` and ``backward``.

    A subclass assigns its layers as attributes in ``__init__`` (they are found by ``layers``,
    also inside lists, tuples and dicts, and their Parameters by ``parameters()``), writes
    ``forward(x, training=False, mask=None)`` and ``backward(dy) -> dx``, and when its output is a
    masked sequence sets ``self.output_mask`` in ``forward`` so that the loss skips the masked
    steps. compile / fit / evaluate / predict / train_on_batch / summary / save are inherited. A
    model with several inputs takes them as a list of arrays, ``model.fit([x_enc, x_dec], y)``,
    and its ``forward`` receives that list.

    ``Model(inputs, outputs)`` instead makes a functional model (:class:`Functional`, Keras's
    functional API).

    Args:
        inputs (Any): For a functional model only: an ``fr.Input`` tensor or a list of them.
        outputs (Any): For a functional model only: the symbolic tensor(s) computed from ``inputs``.
        name (str | None): The model's name; default a Keras-style unique name from the class
            name in snake case ('my_model', 'my_model_1', ...).

    Example:
        >>> import numpy as np
        >>> import fastrnn as fr
        >>> class TwoLayer(fr.Model):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.rnn = fr.layers.GRU(8, seed=0)
        ...         self.out = fr.layers.Dense(1, seed=1)
        ...     def forward(self, x, training=False, mask=None):
        ...         return self.out(self.rnn(x, training=training, mask=mask), training=training)
        ...     def backward(self, dy):
        ...         return self.rnn.backward(self.out.backward(dy))
        >>> model = TwoLayer()
        >>> model.compile(optimizer="adam", loss="mse")
        >>> x, y = np.zeros((4, 5, 3), np.float32), np.zeros((4, 1), np.float32)
        >>> history = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
        >>> len(history.history["loss"]), model.predict(x).shape
        (2, (4, 1))
    """

    # class-level defaults, so a subclass that forgets super().__init__() still works
    optimizer = None
    loss = None
    compiled_metrics: ClassVar[list] = []  # replaced per instance by compile()
    stop_training = False
    history = None
    output_mask = None
    _metric_ids: ClassVar[list] = []
    _build_input_shape = None
    _held_step_states = None  # the states Sequential.step holds (None: zeros)
    _name = None
    #: called with each layer whose parameter gradients the backward pass has completed (set by
    #: fastrnn.distributed.DistributedOptimizer to start reducing them early); None: nothing
    _grad_ready_hook = None
    #: the base of the default name ("model_1", ...); None: the class name in snake case
    _default_name = None

    __signature__ = _ConstructorSignature()

    def __new__(cls, *args, **kwargs):
        # Model(inputs, outputs) (Keras's functional API) makes a Functional model; Model() and
        # Model(name=...) stay the base of subclassed models
        if cls is Model and ("inputs" in kwargs or "outputs" in kwargs or _symbolic.is_symbolic(args)):
            return super().__new__(Functional)
        return super().__new__(cls)

    def __init__(self, name: str | None = None):
        self._name = name
        self.optimizer = None
        self.loss = None
        self.compiled_metrics = []
        self._metric_ids = []
        self.stop_training = False
        self.history = None
        self.output_mask = None
        self._build_input_shape = None

    def reset_states(self) -> None:
        """Forget the recurrent states: those the recurrent layers carry (``stateful`` or
        ``carry_state``; the next call starts from zeros) and those ``step`` holds (Keras's
        ``model.reset_states()``)."""
        self._held_step_states = None
        for lay in self._recurrent_layers():
            lay.reset_states()

    # ------------------------------------------------------------------ structure
    @property
    def name(self) -> str:
        """The model's name (Keras-style default: 'model', 'sequential', ... made unique)."""
        if self._name is None:
            base = self._default_name or layers_base._snake_case(type(self).__name__)
            self._name = layers_base.unique_name(base)
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = str(value)

    @property
    def layers(self) -> list[Layer]:
        """The model's layers: attributes that are Layers (or lists/tuples/dicts of them), in assignment order."""
        out, seen = [], set()
        for key, val in vars(self).items():
            if key in ("optimizer", "loss", "compiled_metrics", "history"):
                continue
            _walk_layers(val, out, seen)
        return out

    def parameters(self) -> list[Parameter]:
        """Every Parameter of the model's layers (and Parameters assigned directly), each once, in a fixed order."""
        out, seen = [], set()
        for lay in self.layers:
            for p in lay.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        for val in vars(self).values():
            if isinstance(val, layers_base.Parameter) and id(val) not in seen:
                seen.add(id(val))
                out.append(val)
        return out

    def zero_grad(self) -> None:
        """Zero every parameter's gradient."""
        for p in self.parameters():
            p.zero_grad()

    def _zero_grads(self, params):
        if type(self).zero_grad is not Model.zero_grad:  # a model with its own
            self.zero_grad()
            return
        for p in params:  # what zero_grad does, without looking the parameters up again
            p.zero_grad()

    @property
    def built(self) -> bool:
        """True once every layer is built (after build(input_shape) or a first call on data)."""
        lays = self.layers
        return bool(lays) and all(lay.built for lay in lays)

    def count_params(self) -> int:
        """Number of scalars in the parameters; ValueError before the model is built."""
        if not self.built:
            raise ValueError(
                f"model '{self.name}': count_params() needs a built model; call build(input_shape) or call the "
                "model on a batch of data first"
            )
        return int(sum(p.size for p in self.parameters()))

    def get_weights(self) -> list[np.ndarray]:
        """Copies of all parameter values, in ``parameters()`` order."""
        return [p.value.copy() for p in self.parameters()]

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Copy a list of arrays into the parameters, in place.

        Args:
            weights: One array per parameter, in ``get_weights()`` order.

        Raises:
            ValueError: The number of arrays or a shape does not match.
        """
        params = self.parameters()
        weights = list(weights)
        if len(weights) != len(params):
            raise ValueError(f"weights: model '{self.name}' has {len(params)} parameters, got {len(weights)} arrays")
        for p, w in zip(params, weights):
            if np.shape(w) != p.shape:
                raise ValueError(f"weights: '{p.name}' has shape {p.shape}, got an array of shape {np.shape(w)}")
        for p, w in zip(params, weights):
            p.assign(w)

    # ------------------------------------------------------------------ forward / backward
    def _layer_grads_ready(self, layer):
        """Backward's signal that ``layer``'s parameter gradients are complete for this batch
        (Sequential and functional models send it layer by layer, in backward order)."""
        hook = self._grad_ready_hook
        if hook is not None:
            hook(layer)

    def forward(self, x: Any, training: bool = False, mask: np.ndarray | None = None) -> Any:
        """The model's computation (override). Set ``self.output_mask`` for masked sequence outputs.

        Args:
            x: The input batch (a list of arrays for a model with several inputs).
            training: Training mode (dropout on, keep what ``backward`` needs).
            mask: Optional input mask [B, T].

        Returns:
            The output (usually one array).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, training=False, mask=None)")

    def backward(self, dy: np.ndarray) -> Any:
        """Backpropagate ``dy`` through the last training forward, accumulating the grads (override).

        Args:
            dy: The gradient w.r.t. the output of the last ``forward(..., training=True)``.

        Returns:
            The gradient w.r.t. the input (None where it has none, e.g. token ids).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement backward(dy)")

    def __call__(self, x, training: bool = False, mask=None):
        """Run ``forward``; records the input shape the first time (for summary and save/load)."""
        self.output_mask = None
        y = self.forward(x, training=training, mask=mask)
        if self._build_input_shape is None:
            self._build_input_shape = _input_shape_of(x)
        return y

    def build(self, input_shape: Sequence[Any]) -> None:
        """Build by running the model once on zeros of shape ``(1,) + input_shape`` (None dims become 1).

        The carried states of stateful / carry_state recurrent layers are left as they were before
        (layers first made during this forward end with no carried state).

        Args:
            input_shape: The shape of one sample, batch excluded (a list of shapes for a model
                with several inputs).
        """
        multi = _is_shape_list(input_shape)
        shapes = [tuple(1 if d is None else int(d) for d in sh) for sh in (input_shape if multi else [input_shape])]
        saved = {}
        for lay in _all_layers(self.layers):
            if isinstance(lay, layers_recurrent.BaseRNN):
                saved[id(lay)] = lay.states
                lay.states = None
        try:
            zeros = [np.zeros((1,) + sh, dtype=np.float32) for sh in shapes]
            self(zeros if multi else zeros[0], training=False)
        finally:
            for lay in _all_layers(self.layers):
                if isinstance(lay, layers_recurrent.BaseRNN):
                    lay.states = saved.get(id(lay))
        self._build_input_shape = [tuple(sh) for sh in input_shape] if multi else tuple(input_shape)

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer: str | Optimizer = "rmsprop", loss: str | Loss | Callable | None = None,
                metrics: Sequence[str | Metric | Callable] | str | Metric | Callable | None = None) -> None:
        """Configure the model for training: set the optimizer, the loss and the metrics.

        Args:
            optimizer: An optimizer name ('sgd', 'rmsprop', 'adam', 'adamw'), a config dict or an
                :class:`~fastrnn.optim.Optimizer` (default 'rmsprop', as Keras).
            loss: A loss name (e.g. 'mse', 'binary_crossentropy',
                'sparse_categorical_crossentropy'), a :class:`~fastrnn.losses.Loss`, or a callable
                (see :func:`fastrnn.losses.get`). Required (ValueError when None).
            metrics: A metric or a list of them: names such as 'accuracy' or 'mae',
                :class:`~fastrnn.metrics.Metric` objects or callables. Names must be unique and
                not 'loss'.
        """
        opt = optim_module.get(optimizer)
        if loss is None:
            raise ValueError("loss: compile() needs a loss (a name such as 'mse', a Loss object or a callable)")
        loss_obj = losses_module.get(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, (str, metrics_module.Metric)) or callable(metrics):
            metrics = [metrics]
        elif not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics: expected a list of metrics, got {type(metrics).__name__}")
        mets = [metrics_module.get(m, loss=loss_obj) for m in metrics]
        names = [m.name for m in mets]
        dup = {n for n in names if names.count(n) > 1}
        if dup or {"loss"} & set(names):
            raise ValueError(f"metrics: metric names must be unique and not 'loss', got {names}")
        self.optimizer = opt
        self.loss = loss_obj
        self.compiled_metrics = mets
        self._metric_ids = list(metrics)

    def _assert_compiled(self, what):
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(
                f"{what}: the model must be compiled first; call model.compile(optimizer=..., loss=...)"
            )


    # ------------------------------------------------------------------ summary
    def _layer_rows(self):
        rows = []
        for lay in self.layers:
            if lay.built and lay.input_shape is not None:
                out = lay.compute_output_shape(tuple(lay.input_shape))
                shape = _fmt_shape((None, list(out)) if isinstance(out, list) else (None,) + tuple(out))
                params = lay.count_params()
            else:
                shape, params = "? (unbuilt)", 0
            rows.append((f"{lay.name} ({type(lay).__name__})", shape, params))
        return rows

    def summary(self, line_length: int | None = None, print_fn: Callable[[str], object] | None = None) -> str:
        """Print a Keras-like table (Layer (type), Output Shape, Param #, totals) and return it as a string.

        Args:
            line_length: Minimum width of the table (default: as wide as its content).
            print_fn: Called with the text instead of ``print``.

        Returns:
            The table.

        Raises:
            ValueError: The model is not built.
        """
        if not self.built:
            raise ValueError(
                f"model '{self.name}': summary() needs a built model; call build(input_shape), give the first "
                "layer input_shape=..., or call the model on a batch of data first"
            )
        rows = self._layer_rows()
        w1 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 3
        w2 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 3
        w3 = max([len("Param #")] + [len(f"{r[2]:,}") for r in rows]) + 2
        width = max(line_length or 0, w1 + w2 + w3 + 1)
        lines = [f'Model: "{self.name}"', "_" * width,
                 " " + "Layer (type)".ljust(w1) + "Output Shape".ljust(w2) + "Param #".ljust(w3), "=" * width]
        for i, (name, shape, params) in enumerate(rows):
            lines.append(" " + name.ljust(w1) + shape.ljust(w2) + f"{params:,}".ljust(w3))
            if i < len(rows) - 1:
                lines.append("")
        params = self.parameters()
        total = sum(p.size for p in params)
        trainable = sum(p.size for p in params if p.trainable)
        nbytes = sum(p.value.nbytes for p in params)
        tbytes = sum(p.value.nbytes for p in params if p.trainable)
        lines += ["=" * width, f"Total params: {total:,} ({_readable_bytes(nbytes)})",
                  f"Trainable params: {trainable:,} ({_readable_bytes(tbytes)})",
                  f"Non-trainable params: {total - trainable:,} ({_readable_bytes(nbytes - tbytes)})"]
        modes: dict = {}
        for lay in _all_layers(self.layers):
            mode = getattr(lay, "quant_mode", "")
            if mode:
                modes[mode] = modes.get(mode, 0) + 1
        if modes:  # fastrnn.quantize: the layers' matrices are stored in their quantized form
            lines.append("Quantized layers: " + ", ".join(f"{n} {mode}" for mode, n in modes.items())
                         + " (inference only)")
        lines.append("_" * width)
        text = "\n".join(line.rstrip() if line.strip() else line for line in lines)
        (print_fn or print)(text)
        return text

    # ------------------------------------------------------------------ config and saving
    def get_config(self) -> dict:
        """Constructor arguments for ``from_config`` (a subclass with arguments overrides this)."""
        return {}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Model:
        """A new model from ``get_config()``'s dict (``Model.from_config`` of a functional model's
        config makes a functional model, as in Keras).

        Args:
            config: The constructor arguments (or a functional model's graph).
            custom_objects: Unused here; subclasses that rebuild custom layers take it.
        """
        if cls is Model and isinstance(config, dict) and "input_layers" in config:
            return Functional.from_config(config, custom_objects=custom_objects)
        return cls(**config)

    def save(self, filepath: str | os.PathLike) -> None:
        """Save architecture, weights, compile configuration and optimizer state to ONE file, atomically.

        Args:
            filepath: Where to write; reload with :func:`fastrnn.load_model`. In data-parallel
                training (a DistributedOptimizer on several ranks) only rank 0 writes.
        """
        if self.optimizer is None or self.optimizer._is_root:
            saving.save_model(self, filepath)

    def export_onnx(self, path: str | os.PathLike, *, opset: int | None = None) -> None:
        """Write the model to ``path`` as an ONNX file: :func:`fastrnn.onnx.export` (needs the
        ``onnx`` package: ``pip install 'fastrnn[onnx]'``).

        Args:
            path: The file to write, atomically.
            opset: The ONNX opset (default 17; see :mod:`fastrnn.onnx`).
        """
        from . import onnx as onnx_export

        onnx_export.export(self, path, opset=opset)

    def _export_plan(self):
        """What :mod:`fastrnn.onnx` exports: (inputs, nodes, outputs); inputs are (key, name, shape
        without batch, integer ids?), nodes (layer, input key or list of keys, output keys) in order,
        outputs (key, name). A subclassed model's computation is its Python code: refused."""
        raise ValueError(f"export: model '{self.name}' is a subclassed {type(self).__name__}, whose computation is "
                         "Python code; only Sequential and functional models (fr.Model(inputs, outputs)) are exported")

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Save only the weights, atomically, in the same container format.

        Args:
            filepath: Where to write (in data-parallel training, by rank 0 only).
        """
        if self.optimizer is None or self.optimizer._is_root:
            saving.save_weights(self, filepath)

    def load_weights(self, filepath: str | os.PathLike) -> None:
        """Load weights saved by ``save_weights`` (or ``save``) into this model.

        Args:
            filepath: The file to read.

        Raises:
            ValueError: The file's weights do not match the model's parameters.
        """
        saving.load_weights(self, filepath)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} layers={len(self.layers)} built={self.built}>"


@saving.register_model
class Functional(Model):
    """A model defined by its graph: ``Model(inputs, outputs, name=None)`` (Keras's functional API).

    ``inputs``: an ``fr.Input`` tensor or a list of them (call and fit the model with one array, or a
    list of as many arrays); ``outputs``: a symbolic tensor computed from them, or a list (several
    outputs: ``predict`` and calls return a list of arrays; fit, evaluate and train_on_batch need one
    output). See :mod:`fastrnn.functional` for how the graph runs forward and backward. The layers
    are ``model.layers`` (input layers first), a layer called several times (a shared layer) counts
    once in ``parameters()`` and gets the sum of the gradients of its calls.

    Args:
        inputs: An ``fr.Input`` tensor or a list of them.
        outputs: A symbolic tensor computed from ``inputs``, or a list of them.
        name (str | None): The model's name (default 'functional', 'functional_1', ...).
    """

    _default_name = "functional"
    _config_takes_custom_objects = True

    def __init__(self, inputs: Any = None, outputs: Any = None, name: str | None = None):
        if inputs is None or outputs is None:
            raise TypeError("Model: a functional model needs both inputs and outputs: Model(inputs, outputs)")
        super().__init__(name=name)
        self._graph = functional.Graph(inputs, outputs)
        shapes = [tuple(t.shape[1:]) for t in self._graph.inputs]
        self._single_input = len(shapes) == 1
        self._build_input_shape = shapes[0] if self._single_input else shapes

    @property
    def inputs(self) -> list:
        """The model's input tensors."""
        return list(self._graph.inputs)

    @property
    def outputs(self) -> list:
        """The model's output tensors."""
        return list(self._graph.outputs)

    @property
    def layers(self) -> list[Layer]:
        """The layers: the input layers, then the others in the order of their first call."""
        return self._graph.layers()

    @property
    def output_names(self) -> list[str]:
        """The names of the layers that produce the outputs (the keys of per-output loss dicts)."""
        return [t.layer.name for t in self._graph.outputs]

    def _per_output(self, value, argname, default):
        """``value`` as one entry per output: a list / tuple of them, a dict keyed by output name
        (missing outputs get ``default``) or one value for every output."""
        names, n = self.output_names, len(self._graph.outputs)
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ValueError(f"{argname}: unknown output name(s) {unknown}; the outputs are {names}")
            return [value.get(name, default) for name in names]
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise ValueError(f"{argname}: expected {n} entries (one per output {names}), got {len(value)}")
            return list(value)
        return [value] * n

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None,
                loss_weights: Any = None) -> None:
        """As :meth:`Model.compile`; with several outputs ``loss`` is one loss for all, a list or a
        dict by output name (None: that output is not trained), ``loss_weights`` a list or dict
        weighing them (default 1), and the loss is ``sum(weight * output loss)`` (Keras). Metrics
        need a model with one output."""
        n = len(self._graph.outputs)
        if isinstance(loss, losses_module.OutputLosses) or n == 1:
            if loss_weights is not None:
                raise ValueError("loss_weights: weighs the losses of several outputs; this model has one")
            if n == 1 and isinstance(loss, (list, tuple, dict)):
                loss = self._per_output(loss, "loss", None)[0]
            super().compile(optimizer, loss, metrics)
            return
        per = self._per_output(loss, "loss", None)
        if all(item is None for item in per):
            raise ValueError("loss: compile() needs a loss for at least one output")
        if metrics:
            raise ValueError("metrics: not supported for a model with several outputs; compile without metrics")
        weights = self._per_output(1.0 if loss_weights is None else loss_weights, "loss_weights", 1.0)
        super().compile(optimizer, losses_module.OutputLosses(per, weights), None)

    def _check_xy(self, x, y, xname="x", yname="y"):
        n = len(self._graph.outputs)
        if n == 1:
            return super()._check_xy(x, y, xname, yname)
        x = self._check_x(x, xname)
        if isinstance(y, functional.Targets):
            y = y.arrays
        if not isinstance(y, (list, tuple, dict)):
            raise ValueError(f"{yname}: the model has {n} outputs {self.output_names}; pass a list (or a dict by "
                             f"output name) of {n} target arrays")
        ys = [None if a is None else _to_array(a, f"{yname}[{i}]")
              for i, a in enumerate(self._per_output(y, yname, None))]
        for i, a in enumerate(ys):
            if a is None and self.loss is not None and self.loss.losses[i] is not None:
                raise ValueError(f"{yname}: no target for output '{self.output_names[i]}', which has a loss")
            if a is not None and a.shape[0] != _n_samples(x):
                raise ValueError(f"{xname} and {yname}[{i}] must have the same number of samples (first axis): "
                                 f"{xname} has {_n_samples(x)}, {yname}[{i}] has {a.shape[0]}")
        filler = next(a for a in ys if a is not None)
        return x, functional.Targets([filler if a is None else a for a in ys])

    def _step_full(self, xb, yb, where, swb=None):
        if len(self._graph.outputs) == 1:
            return super()._step_full(xb, yb, where, swb)
        y_pred, mask = self._outputs_for_loss(xb, yb, True)
        total, count, grads = self.loss.sum_and_grad(list(yb), y_pred, mask, sample_weight=swb)
        value = total / count
        self._check_loss(value, where)
        self.optimizer._begin_step(self, count)
        self.backward([None if g is None else g / count for g in grads])
        return value

    def forward(self, x: Any, training: bool = False, mask: Any = None) -> Any:
        """Run the graph on ``x`` (one array, or a list with one array per input)."""
        n = len(self._graph.inputs)
        xs = list(x) if isinstance(x, (list, tuple)) and n > 1 else [x]
        if len(xs) != n:
            raise ValueError(f"model '{self.name}': takes {n} inputs, got {len(xs)}")
        ys, masks = self._graph.forward(xs, training=training)
        if len(ys) == 1:
            self.output_mask = masks[0]
            return ys[0]
        self.output_mask = masks
        return ys

    def backward(self, dy: Any) -> Any:
        """Backpropagate the output gradient(s) (a list for several outputs, None entries allowed);
        returns the input gradient(s) (None for integer inputs)."""
        n = len(self._graph.outputs)
        if n == 1:
            dys = [dy]
        elif isinstance(dy, (list, tuple)) and len(dy) == n:
            dys = list(dy)
        else:
            raise ValueError(f"model '{self.name}': backward takes a list of {n} gradients (one per output)")
        dxs = self._graph.backward(dys, None if self._grad_ready_hook is None else self._layer_grads_ready)
        return dxs[0] if len(dxs) == 1 else dxs

    def build(self, input_shape: Any = None) -> None:
        """Nothing to do: a functional model is built from its inputs' shapes when it is made."""

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0) -> Any:
        """Outputs for x in inference mode (a list of arrays for a model with several outputs)."""
        if len(self._graph.outputs) == 1:
            return super().predict(x, batch_size=batch_size, verbose=verbose)
        x = self._check_x(x)
        batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
        n = _n_samples(x)
        outs = [self(_take(x, slice(b, b + batch_size)), training=False) for b in range(0, n, batch_size)]
        return [np.concatenate([o[i] for o in outs], axis=0) for i in range(len(self._graph.outputs))]

    def _layer_rows(self):
        rows = []
        for lay in self.layers:
            shapes = []
            for node in self._graph.nodes_of(lay):
                outs = [_fmt_shape(t.shape) for t in node.outputs]
                shapes.append(outs[0] if len(outs) == 1 else "[" + ", ".join(outs) + "]")
            shape = shapes[0] if len(set(shapes)) == 1 else "multiple"  # a shared layer on other shapes
            rows.append((f"{lay.name} ({type(lay).__name__})", shape, lay.count_params()))
        return rows

    def _export_plan(self):
        graph = self._graph
        keys = {}
        inputs = []
        for t in graph.inputs:
            keys[id(t)] = len(keys)
            inputs.append((keys[id(t)], t.layer.name, tuple(t.shape[1:]), t.dtype.kind in "iub"))
        nodes = []
        for node in graph.nodes:
            if node.kwargs:
                raise ValueError(f"export: layer '{node.layer.name}' ({type(node.layer).__name__}) is called with "
                                 f"{', '.join(sorted(node.kwargs))}=...; only calls on input tensors are exported")
            args = [keys[id(t)] for t in node.args] if isinstance(node.args, (list, tuple)) else keys[id(node.args)]
            outs = []
            for t in node.outputs:
                keys[id(t)] = len(keys)
                outs.append(keys[id(t)])
            nodes.append((node.layer, args, outs))
        names = self.output_names if len(graph.outputs) > 1 else ["output"]
        return inputs, nodes, [(keys[id(t)], n) for t, n in zip(graph.outputs, names)]

    def _check_x(self, x, argname="x"):
        if self._single_input and isinstance(x, (list, tuple)) and len(x) == 1 and _is_array(x[0]):
            x = x[0]  # [x] for a model with one input, as Keras takes it
        return super()._check_x(x, argname)

    def get_config(self) -> dict:
        """Keras's functional config: the layers with their calls (inbound nodes), inputs and outputs."""
        return {"name": self.name, "trainable": True, **self._graph.get_config()}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Functional:
        """A new functional model from ``get_config()``'s dict (layer classes by registered name or
        ``custom_objects``; no code is run)."""
        inputs, outputs = functional.Graph.tensors_from_config(config, custom_objects)
        return cls(inputs, outputs, name=config.get("name"))
