"""Bidirectional: runs a recurrent layer forwards and a copy of it backwards and merges the outputs."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._base_rnn import BaseRNN
from .base import Layer, Parameter, deserialize, register_layer, serialize

__all__ = ["Bidirectional"]

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@register_layer
class Bidirectional(Layer):
    """Bidirectional wrapper for recurrent layers, as ``keras.layers.Bidirectional``.

    Runs a recurrent layer forwards and a copy of it backwards and merges the two outputs.
    ``forward_layer`` is a copy of ``layer`` (built from its config, named 'forward_<name>');
    ``backward_layer`` a copy with ``go_backwards`` flipped ('backward_<name>'), whose sequence
    output is put back in time order before merging. On a mask, the backward layer runs each
    sequence from its own last valid step, and (as in Keras) both directions output 0 at masked
    steps when they return sequences. count_params is twice the wrapped layer's. When ``layer``
    has a seed s, the backward copy uses s + 1 (so the two directions differ).

    Args:
        layer (BaseRNN): A SimpleRNN, LSTM or GRU (TypeError otherwise); it is copied, not used.
        merge_mode (str | None): How the outputs are merged: 'concat' (default, along the last
            axis), 'sum', 'mul', 'ave', or None (the call returns ``[y_fw, y_bw]``).
        backward_layer (BaseRNN | None): The backward layer to use instead of the derived copy:
            of the same class as ``layer``, with the same ``units``, ``return_sequences`` and
            ``return_state`` and the opposite ``go_backwards`` (ValueError otherwise). Default
            None: derived from ``layer``.
        **kwargs: ``name``, ``trainable``, ``dtype`` (default: the wrapped layer's),
            ``input_shape`` (see :class:`~fastrnn.layers.Layer`); ``trainable=False`` (given or set
            later) freezes both directions.

    Call arguments:
        x: Array [B, T, F].
        training (bool): Apply dropout and keep what ``backward`` needs (default False).
        mask: Optional bool [B, T], True at real steps.
        initial_state: Optional list ``fw_states + bw_states`` (e.g. [h_f, c_f, h_b, c_b] for an
            LSTM).
        lengths: Optional int [B] valid lengths, instead of ``mask``.

    Input shape:
        [batch, time, features].

    Output shape:
        The wrapped layer's output shape, with 2*units features for 'concat'. With
        ``return_state`` a list ``[y] + fw_states + bw_states`` (``[y_fw, y_bw] + ...`` for
        ``merge_mode=None``).

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> bi = layers.Bidirectional(layers.LSTM(4, return_sequences=True, seed=0))
        >>> bi(np.zeros((2, 5, 3), dtype=np.float32)).shape
        (2, 5, 8)
        >>> bi.count_params() == 2 * layers.LSTM(4, input_shape=(None, 3)).count_params()
        True
    """

    _weights_hint = BaseRNN._weights_hint

    _input_rank = (3, 3)
    _input_desc = "[batch, time, features]"

    def __init__(self, layer: BaseRNN, merge_mode: str | None = "concat", backward_layer: BaseRNN | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(layer, BaseRNN):
            raise TypeError(f"Bidirectional: layer must be a SimpleRNN, LSTM or GRU, got {type(layer).__name__}")
        kwargs.setdefault("dtype", layer.dtype.name)
        super().__init__(**kwargs)
        if merge_mode not in _MERGE_MODES:
            raise ValueError(
                f"{self._who()}: unknown merge_mode {merge_mode!r}; expected 'concat', 'sum', 'mul', 'ave' or None"
            )
        self.merge_mode = merge_mode
        self._layer_config = serialize(layer)
        cfg = layer.get_config()
        cfg.pop("input_shape", None)
        self.forward_layer = type(layer).from_config({**cfg, "name": "forward_" + layer.name})
        if backward_layer is None:
            bcfg = {**cfg, "name": "backward_" + layer.name, "go_backwards": not layer.go_backwards}
            if bcfg.get("seed") is not None:
                bcfg["seed"] = int(bcfg["seed"]) + 1
            self.backward_layer = type(layer).from_config(bcfg)
            self._custom_backward = None
        else:
            if not isinstance(backward_layer, BaseRNN):
                raise TypeError(
                    f"{self._who()}: backward_layer must be a SimpleRNN, LSTM or GRU, "
                    f"got {type(backward_layer).__name__}"
                )
            for attr in ("return_sequences", "return_state", "units"):
                if getattr(backward_layer, attr) != getattr(layer, attr):
                    raise ValueError(
                        f"{self._who()}: backward_layer.{attr}={getattr(backward_layer, attr)!r} must equal "
                        f"layer.{attr}={getattr(layer, attr)!r}"
                    )
            if type(backward_layer) is not type(layer):
                raise ValueError(f"{self._who()}: backward_layer must be a {type(layer).__name__}, "
                                 f"got {type(backward_layer).__name__}")
            if backward_layer.go_backwards == layer.go_backwards:
                raise ValueError(f"{self._who()}: backward_layer.go_backwards must be the opposite of "
                                 f"layer.go_backwards")
            self.backward_layer = backward_layer
            self._custom_backward = serialize(backward_layer)
        for inner in (self.forward_layer, self.backward_layer):  # as Keras: the merged sequence is 0 at
            inner.zero_output_for_mask = inner.return_sequences     # masked steps in both directions
        if not self._trainable:
            self.forward_layer.trainable = False
            self.backward_layer.trainable = False
        self.initial_state_grads = None

    def _wrapped_layers(self):
        return [self.forward_layer, self.backward_layer]

    # -- delegated options ----------------------------------------------------------------------
    @property
    def return_sequences(self) -> bool:
        """Whether the merged output is a sequence (from the wrapped layer)."""
        return self.forward_layer.return_sequences

    @property
    def return_state(self) -> bool:
        """Whether the states are returned after the output (from the wrapped layer)."""
        return self.forward_layer.return_state

    @property
    def units(self) -> int:
        """Units of each direction."""
        return self.forward_layer.units

    def _get_both(attr):
        def getter(self):
            return getattr(self.forward_layer, attr)

        def setter(self, value):
            setattr(self.forward_layer, attr, value)
            setattr(self.backward_layer, attr, value)

        return property(getter, setter, doc=f"``{attr}`` of both directions (setting sets both).")

    bptt_steps = _get_both("bptt_steps")
    carry_state = _get_both("carry_state")
    stateful = _get_both("stateful")
    del _get_both

    @property
    def states(self) -> list[np.ndarray] | None:
        """Carried states: forward layer's then backward layer's (None when none are carried)."""
        f, b = self.forward_layer.states, self.backward_layer.states
        if f is None and b is None:
            return None
        return list(f or []) + list(b or [])

    def reset_states(self, states: Sequence[ArrayLike] | np.ndarray | None = None) -> None:
        """Reset the carried states of both directions.

        Args:
            states: None (the next forward starts from zeros), or the list ``fw_states +
                bw_states`` to carry.
        """
        if states is None:
            self.forward_layer.reset_states()
            self.backward_layer.reset_states()
            return
        fw, bw = self._split_states(states, "states")
        self.forward_layer.reset_states(fw)
        self.backward_layer.reset_states(bw)

    reset_state = BaseRNN.reset_state  # Keras 3's name

    def _split_states(self, states, what):
        n = self.forward_layer.spec.n_states
        if not isinstance(states, (list, tuple)) or len(states) != 2 * n:
            raise ValueError(
                f"{self._who()}: {what} must be a list of {2 * n} arrays (forward states then backward states), "
                f"got {type(states).__name__}"
                + (f" of length {len(states)}" if isinstance(states, (list, tuple)) else "")
            )
        return list(states[:n]), list(states[n:])

    # -- build / parameters ---------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        input_shape = tuple(input_shape)
        if not self.forward_layer.built:
            self.forward_layer.build(input_shape)
        if not self.backward_layer.built:
            self.backward_layer.build(input_shape)
        super().build(self.forward_layer.input_shape)

    def _build_shape(self, shape):
        return (None,) + tuple(shape[1:])

    def _build_from_weights(self, weights):
        n = len(weights) // 2
        self.forward_layer._build_from_weights(weights[:n])
        self.backward_layer._build_from_weights(weights[n:])
        self.built = self.forward_layer.built and self.backward_layer.built
        if self.built:
            self.input_shape = self.forward_layer.input_shape

    def parameters(self) -> list[Parameter]:
        self._ensure_built()
        return self.forward_layer.parameters() + self.backward_layer.parameters()

    # -- forward / backward ---------------------------------------------------------------------
    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None,
             initial_state: Sequence[ArrayLike] | None = None, lengths: ArrayLike | None = None) -> Any:
        fw_init = bw_init = None
        if initial_state is not None:
            fw_init, bw_init = self._split_states(initial_state, "initial_state")
        yf = self.forward_layer(x, training=training, mask=mask, initial_state=fw_init, lengths=lengths)
        yb = self.backward_layer(x, training=training, mask=mask, initial_state=bw_init, lengths=lengths)
        sf = sb = []
        if self.return_state:
            yf, sf = yf[0], yf[1:]
            yb, sb = yb[0], yb[1:]
        if self.return_sequences:
            yb = np.ascontiguousarray(yb[:, ::-1])
        mode = self.merge_mode
        if mode == "concat":
            y: Any = np.concatenate([yf, yb], axis=-1)
        elif mode == "sum":
            y = yf + yb
        elif mode == "ave":
            y = (yf + yb) * self.dtype.type(0.5)
        elif mode == "mul":
            y = yf * yb
        else:
            y = [yf, yb]
        if training:
            self._cache = (yf, yb) if mode == "mul" else (None, None)
        if self.return_state:
            return (y if mode is None else [y]) + list(sf) + list(sb)
        return y

    def _backward(self, dy):
        n = self.forward_layer.spec.n_states
        n_y = 2 if self.merge_mode is None else 1
        if self.return_state:
            if not isinstance(dy, (list, tuple)):
                dy = [dy]
            if len(dy) not in (n_y, n_y + 2 * n):
                raise ValueError(
                    f"{self._who()}: dy must be a list of {n_y + 2 * n} gradients (one per output), got {len(dy)}"
                )
            dy = list(dy) + [None] * (n_y + 2 * n - len(dy))
            dys, dsf, dsb = dy[:n_y], dy[n_y:n_y + n], dy[n_y + n:]
        else:
            if self.merge_mode is None and not isinstance(dy, (list, tuple)):
                raise ValueError(f"{self._who()}: with merge_mode=None dy must be [dy_forward, dy_backward]")
            dys = list(dy) if self.merge_mode is None else [dy]
            dsf = dsb = [None] * n
        H = self.units
        mode = self.merge_mode
        if mode is None:
            if len(dys) != 2:
                raise ValueError(f"{self._who()}: with merge_mode=None dy must be [dy_forward, dy_backward]")
            dyf, dyb = dys
        else:
            d = dys[0]
            if d is None:
                dyf = dyb = None
            else:
                d = np.asarray(d).astype(self.dtype, copy=False)
                if mode == "concat":
                    if d.shape[-1] != 2 * H:
                        raise ValueError(f"{self._who()}: dy must have {2 * H} features in the last axis, "
                                         f"got shape {d.shape}")
                    dyf, dyb = d[..., :H], d[..., H:]
                elif mode == "sum":
                    dyf = dyb = d
                elif mode == "ave":
                    dyf = dyb = d * self.dtype.type(0.5)
                else:
                    yf, yb = self._cache
                    if d.shape != yf.shape:
                        raise ValueError(f"{self._who()}: dy must have shape {yf.shape}, got {d.shape}")
                    dyf, dyb = d * yb, d * yf
        if dyb is not None and self.return_sequences:
            dyb = np.asarray(dyb)
            if dyb.ndim != 3:
                raise ValueError(f"{self._who()}: dy must have shape [batch, time, units], got {dyb.shape}")
            dyb = dyb[:, ::-1]
        if dyf is not None:
            dyf = np.ascontiguousarray(dyf)
        if dyb is not None:
            dyb = np.ascontiguousarray(dyb)
        fl, bl = self.forward_layer, self.backward_layer
        for layer in (fl, bl):
            if layer._cache is None:
                raise RuntimeError(f"{layer._who()}: backward() called before a forward pass with training=True")
        # both directions computed before either is applied: a bad gradient for one of them
        # raises with neither layer's gradients changed
        gf, dxf = fl._compute_backward([dyf] + list(dsf) if self.return_state else dyf)
        gb, dxb = bl._compute_backward([dyb] + list(dsb) if self.return_state else dyb)
        fl._apply_backward(gf)
        bl._apply_backward(gb)
        self.initial_state_grads = list(self.forward_layer.initial_state_grads) + list(
            self.backward_layer.initial_state_grads)
        return dxf + dxb

    # -- shapes, masks, config ------------------------------------------------------------------
    def compute_output_shape(self, input_shape: Any) -> Any:
        fo = self.forward_layer.compute_output_shape(input_shape)
        states = []
        if self.return_state:
            fo, states = fo[0], list(fo[1:])
        if self.merge_mode == "concat":
            out: Any = tuple(fo[:-1]) + (2 * fo[-1],)
        elif self.merge_mode is None:
            out = [tuple(fo), tuple(fo)]
        else:
            out = tuple(fo)
        if self.return_state:
            return (out if self.merge_mode is None else [out]) + states + states
        return out

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        m = np.asarray(mask) if (self.return_sequences and mask is not None) else None
        out: Any = [m, m] if self.merge_mode is None else m
        if self.return_state:
            return (out if self.merge_mode is None else [out]) + [None] * (2 * self.forward_layer.spec.n_states)
        return out

    def get_config(self) -> dict:
        """Config built from the live forward (and backward) layers, so options set after construction
        (bptt_steps, stateful, carry_state, trainable, ...) survive save/load."""
        cfg = super().get_config()
        orig = self._layer_config["config"]
        fcfg = self.forward_layer.get_config()
        fcfg.pop("input_shape", None)
        fcfg["name"] = orig["name"]
        if orig.get("input_shape") is not None:
            fcfg["input_shape"] = orig["input_shape"]
        cfg.update(layer={"class_name": type(self.forward_layer).__name__, "config": fcfg},
                   merge_mode=self.merge_mode)
        bcfg = self.backward_layer.get_config()
        if self._custom_backward is not None or bcfg != self._derived_backward_config(fcfg):
            cfg["backward_layer"] = serialize(self.backward_layer)
        return cfg

    def _derived_backward_config(self, layer_cfg):
        """The backward layer's config as the constructor derives it from ``layer_cfg``."""
        bcfg = {k: v for k, v in layer_cfg.items() if k != "input_shape"}
        bcfg.update(name="backward_" + layer_cfg["name"], go_backwards=not layer_cfg["go_backwards"])
        if bcfg.get("seed") is not None:
            bcfg["seed"] = int(bcfg["seed"]) + 1
        return bcfg

    @classmethod
    def from_config(cls, config: dict) -> Any:
        cfg = dict(config)
        cfg["layer"] = deserialize(cfg["layer"])
        if cfg.get("backward_layer") is not None:
            cfg["backward_layer"] = deserialize(cfg["backward_layer"])
        return super().from_config(cfg)
