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

from . import saving
from ._model import Functional, Model
from .layers import base as layers_base
from .layers._symbolic import InputTensor
from .layers.base import Layer
from .layers.core import Embedding, InputLayer
from .seq2seq import Seq2Seq
from .training import _fmt_shape

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

    def __call__(self, x, training=False, mask=None):
        self.output_mask = None
        y = self.forward(x, training=training, mask=mask)
        if self._build_input_shape is None and self._layers[0].input_shape is not None:
            self._build_input_shape = tuple(self._layers[0].input_shape)
        return y

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
