"""Keras-style models: a ``Model`` base class for custom forward/backward, and ``Sequential``.

    model = Sequential([layers.Embedding(10000, 100, mask_zero=True), layers.LSTM(128),
                        layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=3, batch_size=64, validation_split=0.2)
    model.evaluate(x_test, y_test); model.predict(x_test); model.summary(); model.save("m.fastrnn")

A custom model subclasses ``Model`` and writes ``forward`` and ``backward`` (see
:mod:`fastrnn._model`, where ``Model`` is defined); the training loops, truncated BPTT
(``fit(..., tbptt=k)``) included, are described in :mod:`fastrnn.training`. ``Seq2Seq``, an
encoder-decoder with attention built on ``Model``, is defined in :mod:`fastrnn.seq2seq`. All three
are importable from here.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import saving
from ._model import Functional, Model
from .layers import base as layers_base
from .layers._base_rnn import BaseRNN
from .layers._symbolic import InputTensor
from .layers.base import Layer
from .layers.core import Embedding, InputLayer
from .seq2seq import Seq2Seq
from .training import _fmt_shape, _to_array

__all__ = ["Functional", "Model", "Seq2Seq", "Sequential"]


@saving.register_model
class Sequential(Model):
    """A plain stack of layers, as ``keras.Sequential``.

    Each layer's output, and its mask (``compute_mask``: e.g. from ``Embedding(mask_zero=True)``
    or ``Masking``), feeds the next layer; the last mask is the model's ``output_mask``, which the
    loss uses to skip padded steps. Every layer must return one array (no ``return_state``).
    The model is built as soon as its input shape is known: from a first layer with
    ``input_shape=`` (or a ``layers.Input``), from ``build(input_shape)`` or from the first call.

    Args:
        layers (Layer | Sequence[Layer] | None): The layers, in order (one layer is accepted);
            more can be appended with :meth:`add`. Layer names must be unique.
        name (str | None): The model's name; default 'sequential', 'sequential_1', ...

    Example:
        >>> import numpy as np
        >>> import fastrnn as fr
        >>> model = fr.Sequential([
        ...     fr.layers.Embedding(20, 8, mask_zero=True, seed=0),
        ...     fr.layers.LSTM(16, seed=1),
        ...     fr.layers.Dense(1, activation="sigmoid", seed=2),
        ... ])
        >>> model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        >>> x = np.array([[3, 5, 0, 0], [7, 2, 9, 0]])
        >>> y = np.array([[1.0], [0.0]])
        >>> history = model.fit(x, y, epochs=2, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'loss']
        >>> model.predict(x).shape
        (2, 1)
    """

    _default_name = "sequential"
    _single_input = True
    #: from_config takes custom_objects (for custom layers), which load_model passes
    _config_takes_custom_objects = True

    def __init__(self, layers: Layer | Sequence[Layer] | None = None, name: str | None = None):
        super().__init__(name=name)
        self._layers = []
        if layers is not None:
            if isinstance(layers, (layers_base.Layer, InputTensor)):
                layers = [layers]
            if not isinstance(layers, (list, tuple)):
                raise TypeError(f"layers: expected a list of layers, got {type(layers).__name__}")
            for lay in layers:
                self.add(lay)

    @property
    def layers(self) -> list[Layer]:
        """The layers, in order."""
        return list(self._layers)

    def add(self, layer: Layer) -> None:
        """Append a layer.

        When the model already knows its input shape the layer is built at once; if that fails the
        layer is removed again and the error re-raised.

        Args:
            layer: The layer to append (``fr.Input(...)`` stands for its InputLayer).

        Raises:
            TypeError: ``layer`` is not a fastrnn Layer.
            ValueError: The model already has a layer of that name.
        """
        if isinstance(layer, InputTensor):  # fr.Input(...) stands for its InputLayer, as in Keras
            layer = layer.layer
        if not isinstance(layer, layers_base.Layer):
            raise TypeError(f"add: expected a fastrnn Layer, got {type(layer).__name__}")
        if any(lay.name == layer.name for lay in self._layers):
            raise ValueError(f"add: the model already has a layer named '{layer.name}'; layer names must be unique")
        prev_shape = self._build_input_shape
        self._held_step_states = None  # step's states belong to the layers as they were
        self._layers.append(layer)
        if len(self._layers) == 1 and getattr(layer, "_given_input_shape", None) is not None:
            self._build_input_shape = tuple(layer._given_input_shape)
        if self._build_input_shape is not None:
            try:
                self.build(self._build_input_shape)
            except Exception:
                # a layer that does not fit is not kept: the model stays as it was before add()
                self._layers.pop()
                self._build_input_shape = prev_shape
                raise

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self._layers:
            raise IndexError("pop: the model has no layers")
        self._held_step_states = None
        return self._layers.pop()

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build every layer for inputs of shape ``input_shape``.

        Args:
            input_shape: The shape of one sample, batch excluded (None for unknown sizes).
        """
        if not self._layers:
            raise ValueError(f"model '{self.name}': build() needs at least one layer")
        shape = tuple(None if d is None else int(d) for d in input_shape)
        self._build_input_shape = shape
        for lay in self._layers:
            if not lay.built:
                lay.build(shape)
            shape = tuple(lay.compute_output_shape(shape))

    def forward(self, x: Any, training: bool = False, mask: Any = None) -> Any:
        """Run the layers in order, passing each layer's output mask to the next.

        Args:
            x: The input batch.
            training: Training mode (dropout on, keep what ``backward`` needs).
            mask: Optional input mask [B, T].

        Returns:
            The last layer's output.
        """
        if not self._layers:
            raise ValueError(f"model '{self.name}': the model has no layers")
        for lay in self._layers:
            y = lay(x, training=training, mask=mask)
            if isinstance(y, (tuple, list)):
                raise ValueError(
                    f"layer '{lay.name}' returns several arrays (return_state=True?); a Sequential model needs "
                    "single-output layers"
                )
            mask = lay.compute_mask(x, mask)
            x = y
        self.output_mask = mask
        return x

    def backward(self, dy: np.ndarray) -> Any:
        """Backpropagate through the layers in reverse, accumulating the parameter gradients.

        Args:
            dy: The gradient w.r.t. the output of the last training forward.

        Returns:
            The gradient w.r.t. the input (None for token ids).
        """
        n = len(self._layers)
        for i, lay in enumerate(reversed(self._layers)):
            dy = lay.backward(dy)
            if self._grad_ready_hook is not None and all(lay is not e for e in self._layers[:n - 1 - i]):
                self._layer_grads_ready(lay)  # its last use in backward order: its gradients are complete
            if dy is None:
                break
        return dy

    def _output_layer(self):
        # backward hands the loss gradient to the last layer first (unless a subclass changes it)
        if not self._layers or type(self).backward is not Sequential.backward:
            return None
        return self._layers[-1]

    def __call__(self, x, training=False, mask=None):
        self.output_mask = None
        y = self.forward(x, training=training, mask=mask)
        if self._build_input_shape is None and self._layers[0].input_shape is not None:
            self._build_input_shape = tuple(self._layers[0].input_shape)
        return y

    # ------------------------------------------------------------------ one time step
    def step(self, x_t: ArrayLike, states: Any = "model") -> Any:
        """Run the model on ONE time step, for streaming inference (one step in, one step out).

        The output equals what ``predict`` on the whole sequence gives at that step (to float
        rounding): ``predict(x)[:, t]`` for a model that returns sequences, else
        ``predict(x[:, :t + 1])``. The model may hold recurrent layers (SimpleRNN, LSTM, GRU,
        stacked) and layers that act on each step alone (Dense, Activation, Dropout, which is
        the identity here, Embedding, Masking, TimeDistributed); masks from
        ``Embedding(mask_zero=True)`` or ``Masking`` work as in ``predict``: at a masked step
        the states are carried unchanged and the output repeats the last valid one. Layers that
        need the whole sequence (Bidirectional, ``go_backwards``, Flatten, attention, ...) are
        refused (ValueError). Inference only: no dropout, nothing kept for backward; the
        layers' own ``stateful`` states are neither read nor changed.

        Args:
            x_t: One step of the model's input: [batch, features] (the input without its time
                axis), or token ids [batch] when the model starts with an Embedding.
            states: ``"model"`` (default): the model holds the recurrent states between calls
                (zeros at first and after :meth:`reset_states`) and ``step`` returns ``y_t``.
                ``None`` (zeros) or the ``new_states`` of the previous call: the caller holds
                them, and ``step`` returns ``(y_t, new_states)``; ``new_states`` is a list with
                one entry per recurrent layer, that layer's states ``[h]`` or ``[h, c]`` (an
                entry may be None: zeros).

        Returns:
            ``y_t`` [batch, ...], or ``(y_t, new_states)`` when ``states`` is given.

        Example:
            >>> import numpy as np
            >>> import fastrnn as fr
            >>> model = fr.Sequential([fr.layers.LSTM(8, return_sequences=True, seed=0),
            ...                        fr.layers.Dense(2, seed=1)])
            >>> x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
            >>> ys = [model.step(x[:, t]) for t in range(5)]
            >>> bool(np.allclose(np.stack(ys, axis=1), model.predict(x), atol=1e-6))
            True
            >>> model.reset_states()
            >>> y0, states = model.step(x[:, 0], states=None)   # the caller holds the states
            >>> [[s.shape for s in st] for st in states]
            [[(3, 8), (3, 8)]]
        """
        held = isinstance(states, str)
        if held and states != "model":
            raise ValueError(f"step: states must be 'model', None or the new_states of a previous step, got {states!r}")
        plan, rnns = self._step_plan()
        x = self._step_input(x_t)
        B = x.shape[0]
        if held:
            states = self._held_step_states
            if states is not None and states[0][0].shape[0] != B:
                raise ValueError(
                    f"step: x_t has batch size {B} but the states the model holds have batch size "
                    f"{states[0][0].shape[0]}; call reset_states() before changing the batch size")
        elif states is not None and (not isinstance(states, (list, tuple)) or len(states) != len(rnns)):
            raise ValueError(
                f"step: states must be None or a list of {len(rnns)} entries (one per recurrent layer: "
                f"{', '.join(repr(r.name) for r in rnns)}), each that layer's [h] or [h, c], got "
                f"{type(states).__name__}" + (f" of length {len(states)}" if isinstance(states, (list, tuple)) else ""))
        new_states, mask, i = [], None, 0
        for lay in plan:
            if isinstance(lay, BaseRNN):
                prev = None if states is None else states[i]
                h, st = lay.step(x, prev)
                if mask is not None and not mask.all():  # masked rows carry their states unchanged
                    old = lay._step_states(prev, B) or [np.zeros_like(s) for s in st]
                    st = [np.where(mask[:, None], s, o) for s, o in zip(st, old)]
                    h = st[0]
                if not lay.return_sequences:
                    mask = None
                new_states.append(st)
                x, i = h, i + 1
            else:
                seq, m = x[:, None], None if mask is None else mask[:, None]
                y = lay(seq, mask=m)
                m = lay.compute_mask(seq, m)
                x, mask = y[:, 0], None if m is None else np.asarray(m)[:, 0]
        if held:
            self._held_step_states = new_states
            return x
        return x, new_states

    def _step_plan(self):
        """(the layers step runs, the recurrent ones among them); ValueError for a layer that
        cannot run one step at a time."""
        if not self._layers:
            raise ValueError(f"model '{self.name}': the model has no layers")
        plan = []
        for lay in self._layers:
            if isinstance(lay, InputLayer):
                continue
            what = f"step: layer '{lay.name}' ({type(lay).__name__})"
            if isinstance(lay, BaseRNN):
                if lay.go_backwards:
                    raise ValueError(f"{what} runs backwards in time (go_backwards=True): it needs the whole "
                                     "sequence and cannot run one step at a time")
            elif hasattr(lay, "backward_layer"):
                raise ValueError(f"{what} cannot run one step at a time: its backward direction starts at the "
                                 "last step of the sequence; use predict on whole sequences")
            elif not lay._per_step:
                raise ValueError(f"{what} does not act on each time step alone; step supports recurrent layers "
                                 "and Dense, Activation, Dropout, Embedding, Masking and TimeDistributed")
            plan.append(lay)
        return plan, [lay for lay in plan if isinstance(lay, BaseRNN)]

    def _step_input(self, x_t):
        """x_t as an array of one step's shape [batch] + the model's input shape without time."""
        x_t = _to_array(x_t, "step: x_t")
        shape = self._build_input_shape
        if shape is None:  # built from this step: token ids [batch] for an Embedding, else [batch, ...]
            first = next((lay for lay in self._layers if not isinstance(lay, InputLayer)), None)
            shape = (None,) if isinstance(first, Embedding) else (None,) + x_t.shape[1:]
            if x_t.ndim == len(shape):
                self.build(shape)
        want = shape[1:]
        if len(shape) < 1 or x_t.ndim != 1 + len(want) or any(
                w is not None and w != d for w, d in zip(want, x_t.shape[1:])):
            dims = ", ".join(["batch"] + ["None" if d is None else str(d) for d in want])
            raise ValueError(f"step: x_t must have shape [{dims}] (one time step of the model's input "
                             f"{(None,) + tuple(shape)}), got shape {x_t.shape}")
        return x_t

    def _export_plan(self):
        if self._build_input_shape is None:
            raise ValueError(f"export: model '{self.name}' is not built; call, fit or build(input_shape) it first")
        first = next((lay for lay in self._layers if not isinstance(lay, InputLayer)), None)
        ids = isinstance(first, Embedding)  # token ids in
        nodes = [(lay, i, [i + 1]) for i, lay in enumerate(self._layers)]
        return [(0, "input", self._build_input_shape, ids)], nodes, [(len(self._layers), "output")]

    def _layer_rows(self):
        if self._build_input_shape is None:
            return super()._layer_rows()
        rows, shape = [], self._build_input_shape
        for lay in self._layers:
            shape = tuple(lay.compute_output_shape(shape))
            rows.append((f"{lay.name} ({type(lay).__name__})", _fmt_shape((None,) + shape), lay.count_params()))
        return rows

    def get_config(self) -> dict:
        """``{"name", "layers": [serialized layers], "build_input_shape"}``."""
        return {"name": self.name, "layers": [layers_base.serialize(lay) for lay in self._layers],
                "build_input_shape": None if self._build_input_shape is None else list(self._build_input_shape)}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Sequential:
        """A new Sequential (built when the config records an input shape).

        Args:
            config: ``get_config()``'s dict.
            custom_objects: ``{class name: class}`` for custom layer classes.
        """
        lays = []
        for lc in config.get("layers", []):
            name = lc.get("class_name") if isinstance(lc, dict) else None
            if custom_objects and name in custom_objects:
                lays.append(custom_objects[name].from_config(dict(lc["config"])))
            else:
                lays.append(layers_base.deserialize(lc))
        model = cls(lays, name=config.get("name"))
        shape = config.get("build_input_shape")
        if shape is not None and model._build_input_shape is None:
            model.build(tuple(shape))
        return model
