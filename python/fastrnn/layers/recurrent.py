"""Recurrent layers: SimpleRNN, LSTM, GRU and the Bidirectional wrapper.

All recurrent computation runs in ``fastrnn.ops.{rnn,lstm,gru}_forward / _backward`` (the C++
kernels); the layers only loop over time to spread the gradients of masked outputs that repeat
an earlier step's output (Keras's masked-output semantics, below). Layers made with
``dtype="float64"`` run the NumPy references (``fastrnn.reference``) instead, for gradient checks.

Inputs are batch-major [B, T, F]. Weights are in PyTorch layouts (``w_ih [G*H, F]``,
``w_hh [G*H, H]``; LSTM gates i,f,g,o with one bias ``b [4H]``; GRU gates r,z,n with ``b_ih``
and ``b_hh``), initialised like Keras (glorot_uniform input weights; ``w_hh`` the transpose of a
(semi-)orthogonal [H, G*H] matrix K, Keras's recurrent kernel layout, so that K K^T = I; zero
biases, LSTM forget-gate bias 1), so parameter counts equal Keras's.
"""
from __future__ import annotations

import numpy as np

from . import initializers
from .base import Layer, deserialize, register_layer, serialize
from .core import _init_name, _positive_int, _rate

__all__ = ["BaseRNN", "Bidirectional", "GRU", "LSTM", "SimpleRNN"]


def _ops_for(dtype):
    if dtype == np.float64:
        from .. import reference as mod
    else:
        from .. import ops as mod
    return mod


def _repeat_last_valid(y, valid):
    """y [B, T, H] with every step where valid [B, T] is False replaced by y at the last valid step
    before it, and by 0 before the first valid step (Keras's sequence output at masked steps)."""
    T = y.shape[1]
    last = np.maximum.accumulate(np.where(valid, np.arange(T), -1), axis=1)  # [B, T]
    b, t = np.nonzero(~valid)  # only the masked entries are gathered
    src = last[b, t]
    out = y.copy()
    out[b, t] = 0
    keep = src >= 0
    out[b[keep], t[keep]] = y[b[keep], src[keep]]
    return out


def _repeat_last_valid_backward(dy, valid, bptt_steps=None):
    """The adjoint of _repeat_last_valid: a valid step gets its own gradient plus those of the
    invalid steps that repeat it; invalid steps get 0. With truncated BPTT (chunks of bptt_steps
    steps in running order) only repeats within the source step's chunk send their gradient back,
    as when the chunks are trained one after another (a chunk that starts masked outputs 0)."""
    out = np.zeros_like(dy)
    run = np.zeros_like(dy[:, 0])
    for t in range(dy.shape[1] - 1, -1, -1):
        run += dy[:, t]
        v = valid[:, t]
        out[v, t] = run[v]
        run[v] = 0
        if bptt_steps is not None and t % bptt_steps == 0:
            run[:] = 0
    return out


class BaseRNN(Layer):
    """Shared machinery of SimpleRNN, LSTM and GRU (not used directly).

    Call: ``layer(x, training=False, mask=None, initial_state=None, lengths=None)`` with x [B, T, F];
    ``mask`` bool [B, T] (Keras convention, e.g. from ``Embedding(mask_zero=True)``) or ``lengths``
    int [B] (not both); ``initial_state`` a list of [B, H] arrays ([h] or, for LSTM, [h, c]; a bare
    array is accepted for SimpleRNN/GRU). Returns y ([B, T, H] with return_sequences, else [B, H]) or,
    with return_state, ``[y, h]`` / ``[y, h, c]``.

    Backward: ``layer.backward(dy)``; with return_state, ``dy`` may be a list matching the outputs
    ([dy, dh] / [dy, dh, dc], entries may be None). Returns dx [B, T, F] and leaves the gradients of
    the initial state in ``layer.initial_state_grads`` ([dh0] or [dh0, dc0]).

    Masked steps (as in Keras): the state is carried unchanged, and the sequence output there repeats
    the output of the last valid step before it (0 before the first valid step), or is 0 with
    ``zero_output_for_mask=True`` (what Bidirectional sets on the layers it wraps when it returns
    sequences, as Keras does). "Before" is in the order the layer runs (reversed for go_backwards).
    Without return_sequences the output is the final state, except 0 for rows with no valid step
    and, with ``zero_output_for_mask=True``, for rows whose last step run is masked (Keras's last
    output); ``return_state`` returns the states themselves. With ``bptt_steps`` the gradient of a
    repeated output reaches its source step only from within the source's chunk.

    Dropout (training only, variational): ``dropout`` draws one [B, F] input mask per call, shared by
    all time steps (and gates); ``recurrent_dropout`` one [B, H] mask on the state fed back into the
    recurrent matmul (as Keras / Gal & Ghahramani). Both are scaled by 1/(1-rate) and kept in
    ``last_dropout_masks`` = (input mask or None, recurrent mask or None). recurrent_dropout > 0 runs
    one kernel call per sequence (the mask is folded into that sequence's w_hh), which is slower than
    one batched call; the time loop stays in the kernel.

    ``get_weights`` / ``set_weights`` use the PyTorch layout above. A Keras layer's ``get_weights()``
    is in Keras's ([features, gates*units] kernels) and must go through
    ``fastrnn.interop.from_keras``: set_weights refuses it where the shapes differ, but for a
    SimpleRNN with as many features as units they coincide and it cannot tell.
    """

    _cell = "rnn"
    _gates = 1
    _n_states = 1
    _weights_hint = ("; the weights are in PyTorch's layout (w_ih [gates*units, features], w_hh [gates*units, "
                     "units]), not Keras's: convert a Keras layer's weights with fastrnn.interop.from_keras")
    _input_rank = (3, 3)
    _input_desc = "[batch, time, features]"
    _activations = ("tanh",)

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", dropout=0.0,
                 recurrent_dropout=0.0, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, carry_state=False, bptt_steps=None, seed=None, zero_output_for_mask=False,
                 **kwargs):
        super().__init__(**kwargs)
        who = self._who()
        self.units = _positive_int(units, who, "units")
        self.zero_output_for_mask = bool(zero_output_for_mask)
        if not isinstance(activation, str):
            raise TypeError(f"{who}: activation must be a str, got {type(activation).__name__}")
        if activation not in self._activations:
            raise ValueError(
                f"{who}: unknown activation {activation!r}; {type(self).__name__} supports "
                f"{', '.join(repr(a) for a in self._activations)}"
            )
        self.activation = activation
        self.use_bias = bool(use_bias)
        self._kernel_init, self.kernel_initializer = _init_name(kernel_initializer, who, "kernel_initializer")
        self._recurrent_init, self.recurrent_initializer = _init_name(recurrent_initializer, who,
                                                                      "recurrent_initializer")
        self._bias_init, self.bias_initializer = _init_name(bias_initializer, who, "bias_initializer")
        self.dropout = _rate(dropout, who, "dropout")
        self.recurrent_dropout = _rate(recurrent_dropout, who, "recurrent_dropout")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.carry_state = bool(carry_state)
        self.bptt_steps = bptt_steps
        self.seed = seed
        rng = initializers.new_rng(seed)
        self._init_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        self._dropout_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        self.states = None
        self.initial_state_grads = None
        self.last_dropout_masks = (None, None)
        self.w_ih = self.w_hh = None

    # -- options -----------------------------------------------------------------------------
    @property
    def bptt_steps(self):
        """Truncated BPTT length passed to the backward op (None: full backpropagation through time)."""
        return self._bptt_steps

    @bptt_steps.setter
    def bptt_steps(self, value):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{self._who()}: bptt_steps must be None or a positive int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{self._who()}: bptt_steps must be None or a positive int, got {value}")
            value = int(value)
        self._bptt_steps = value

    # -- parameters ----------------------------------------------------------------------------
    def _bias_names(self):
        return ("b",)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2 or input_shape[-1] is None:
            hint = ("; its input has no time axis: if the layer before it is recurrent, give that layer "
                    "return_sequences=True" if len(input_shape) == 1 else "")
            raise ValueError(
                f"{self._who()}: input shape must be (time, features) with features known, got {input_shape}{hint}"
            )
        n_in = int(input_shape[-1])
        G, H, dt, rng = self._gates, self.units, self.dtype, self._init_rng
        self.add_parameter("w_ih", self._kernel_init((G * H, n_in), rng=rng, dtype=dt))
        # Keras draws the whole recurrent kernel in its layout [H, G*H]; w_hh [G*H, H] is its transpose
        w_hh = np.ascontiguousarray(self._recurrent_init((H, G * H), rng=rng, dtype=dt).T)
        self.add_parameter("w_hh", w_hh)
        self._zero_biases = {}
        for bname in self._bias_names():
            if self.use_bias:
                self.add_parameter(bname, self._make_bias(bname))
            else:
                setattr(self, bname, None)
                self._zero_biases[bname] = np.zeros(G * H, dtype=dt)
        super().build((None, n_in))

    def _make_bias(self, bname):
        return self._bias_init((self._gates * self.units,), rng=self._init_rng, dtype=self.dtype)

    def _build_from_weights(self, weights):
        if weights and np.ndim(weights[0]) == 2:
            self.build((None, int(np.shape(weights[0])[1])))

    def _build_shape(self, shape):
        return (None,) + tuple(shape[1:])

    def _bias_value(self, bname):
        p = getattr(self, bname)
        return self._zero_biases[bname] if p is None else p.value

    # -- states --------------------------------------------------------------------------------
    def reset_states(self, states=None):
        """Forget the carried state (the next forward starts from zeros), or set it to ``states``."""
        if states is None:
            self.states = None
            return
        self.states = [s.copy() for s in self._resolve_initial_state(states, None, what="states")]

    def reset_state(self, states=None):
        """Keras 3's name for :meth:`reset_states`."""
        self.reset_states(states)

    def _resolve_initial_state(self, initial_state, B, what="initial_state"):
        if initial_state is None:
            return None
        n = self._n_states
        if isinstance(initial_state, np.ndarray) and n == 1:
            initial_state = [initial_state]
        names = "[h, c]" if n == 2 else "[h]"
        if not isinstance(initial_state, (list, tuple)) or len(initial_state) != n:
            raise ValueError(
                f"{self._who()}: {what} must be a list of {n} array(s) {names} of shape [batch, {self.units}], "
                f"got {type(initial_state).__name__}"
                + (f" of length {len(initial_state)}" if isinstance(initial_state, (list, tuple)) else "")
            )
        out = []
        for i, s in enumerate(initial_state):
            a = np.asarray(s)
            if a.dtype.kind not in "biuf":
                raise TypeError(f"{self._who()}: {what}[{i}] must be a numeric array, got dtype {a.dtype}")
            bb = a.shape[0] if (B is None and a.ndim == 2) else B
            if a.shape != (bb, self.units):
                raise ValueError(
                    f"{self._who()}: {what}[{i}] must have shape [batch, units] = ({bb}, {self.units}), got {a.shape}"
                )
            out.append(np.ascontiguousarray(a, dtype=self.dtype))
        return out

    def _resolve_mask(self, mask, lengths, B, T):
        if lengths is not None:
            if mask is not None:
                raise ValueError(f"{self._who()}: pass either mask or lengths, not both")
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu":
                raise TypeError(f"{self._who()}: lengths must be an integer array, got dtype {lens.dtype}")
            if lens.shape != (B,):
                raise ValueError(f"{self._who()}: lengths must have shape [batch] = ({B},), got {lens.shape}")
            if lens.size and (lens.min() < 0 or lens.max() > T):
                raise ValueError(f"{self._who()}: lengths must lie in [0, {T}], got values in [{lens.min()}, {lens.max()}]")
            mask = np.arange(T)[None, :] < lens[:, None]
        if mask is not None and mask.all():
            return None
        return None if mask is None else np.ascontiguousarray(mask)

    # -- the cell-specific op calls --------------------------------------------------------------
    def _forward_op(self, ops, x, w_hh, init, mask, training):
        """(y [B,T,H], [h_n, (c_n)], cache) from the functional op."""
        raise NotImplementedError

    def _backward_op(self, ops, cache, dy, dstates):
        raise NotImplementedError

    # -- forward / backward --------------------------------------------------------------------
    def call(self, x, training=False, mask=None, initial_state=None, lengths=None):
        B, T, _ = x.shape
        mask = self._resolve_mask(mask, lengths, B, T)
        init = self._resolve_initial_state(initial_state, B)
        if init is None and (self.stateful or self.carry_state) and self.states is not None:
            if self.states[0].shape[0] != B:
                raise ValueError(
                    f"{self._who()}: the carried state has batch size {self.states[0].shape[0]} but the input has "
                    f"batch size {B}; call reset_states() before changing the batch size"
                )
            init = [s.copy() for s in self.states]
        ops = _ops_for(self.dtype)
        x = np.ascontiguousarray(x)
        dp = rdp = None
        if training and self.dropout > 0.0:
            dp = (self._dropout_rng.random((B, x.shape[2])) >= self.dropout).astype(self.dtype)
            dp /= self.dtype.type(1.0 - self.dropout)
            x = x * dp[:, None, :]
        if training and self.recurrent_dropout > 0.0:
            rdp = (self._dropout_rng.random((B, self.units)) >= self.recurrent_dropout).astype(self.dtype)
            rdp /= self.dtype.type(1.0 - self.recurrent_dropout)
        if rdp is None:
            y, states, cache = self._forward_op(ops, x, self.w_hh.value, init, mask, training)
        else:
            y, states, cache = self._forward_rows(ops, x, rdp, init, mask, training)
        fill = None  # the valid steps in output order, when masked outputs repeat the last valid one
        drop = None  # rows whose last output is 0 (return_sequences=False)
        run_valid = None if mask is None else (mask[:, ::-1] if self.go_backwards else mask)  # running order
        if self.return_sequences:
            out = np.ascontiguousarray(y[:, ::-1]) if self.go_backwards else y
            if mask is not None and not self.zero_output_for_mask:
                fill = run_valid
                out = _repeat_last_valid(out, fill)
        else:
            out = states[0].copy()
            if mask is not None:  # Keras's last output: 0 where no step is valid, and with
                drop = ~run_valid.any(axis=1)  # zero_output_for_mask where the last step run is masked
                if self.zero_output_for_mask:
                    drop |= ~run_valid[:, -1]
                out[drop] = 0
                drop = drop if drop.any() else None
        if self.stateful or self.carry_state:
            self.states = [np.array(s, copy=True) for s in states]
        if training:
            self._cache = {"cache": cache, "dp": dp, "rdp": rdp, "B": B, "T": T, "fill": fill, "drop": drop}
        self.last_dropout_masks = (dp, rdp) if training else (None, None)
        if self.return_state:
            return [out] + [np.array(s, copy=True) for s in states]
        return out

    def _forward_rows(self, ops, x, rdp, init, mask, training):
        """Recurrent dropout: one kernel call per sequence with w_hh's columns scaled by that sequence's mask.

        (h * m) @ w_hh^T == h @ (w_hh * m)^T, so the mask applied to the recurrent input at every step
        is folded into the weights; the loop is over the batch, never over time.
        """
        B = x.shape[0]
        if init is None:
            init = [np.zeros((B, self.units), dtype=self.dtype) for _ in range(self._n_states)]
        w_hh = self.w_hh.value
        ys, sts, caches = [], [], []
        for b in range(B):
            y, st, cache = self._forward_op(
                ops, x[b:b + 1], np.ascontiguousarray(w_hh * rdp[b][None, :]),
                [np.ascontiguousarray(s[b:b + 1]) for s in init],
                None if mask is None else np.ascontiguousarray(mask[b:b + 1]), training)
            ys.append(y)
            sts.append(st)
            caches.append(cache)
        y = np.concatenate(ys, axis=0)
        states = [np.concatenate([st[i] for st in sts], axis=0) for i in range(self._n_states)]
        return y, states, caches

    def _split_dy(self, dy):
        n_out = 1 + (self._n_states if self.return_state else 0)
        if isinstance(dy, (list, tuple)):
            if len(dy) != n_out:
                raise ValueError(
                    f"{self._who()}: dy must be a list of {n_out} gradients (one per output), got {len(dy)}"
                )
            dys = list(dy)
        else:
            dys = [dy] + [None] * (n_out - 1)
        return dys + [None] * (1 + self._n_states - len(dys))

    def _backward(self, dy):
        grads, dx = self._compute_backward(dy)
        self._apply_backward(grads)
        return dx

    def _compute_backward(self, dy):
        """(gradients, dx) for ``dy``, changing nothing: Bidirectional computes both directions
        before it applies either, so that a bad gradient for one leaves both layers untouched."""
        c = self._cache
        B, T, H = c["B"], c["T"], self.units
        dys = self._split_dy(dy)
        dy_out, dstates = dys[0], dys[1:]
        dstates = [None if d is None else self._check_dy(d, (B, H), "state gradient") for d in dstates]
        dy_seq = None
        if self.return_sequences:
            if dy_out is not None:
                dy_seq = self._check_dy(dy_out, (B, T, H))
                if c["fill"] is not None:
                    dy_seq = _repeat_last_valid_backward(dy_seq, c["fill"], self.bptt_steps)
                if self.go_backwards:
                    dy_seq = dy_seq[:, ::-1]
                dy_seq = np.ascontiguousarray(dy_seq)
        elif dy_out is not None:
            d = self._check_dy(dy_out, (B, H))
            if c["drop"] is not None:  # those rows output 0, not the state
                d = np.where(c["drop"][:, None], d.dtype.type(0), d)
            dstates[0] = d if dstates[0] is None else dstates[0] + d
        ops = _ops_for(self.dtype)
        if c["rdp"] is None:
            grads = self._backward_op(ops, c["cache"], dy_seq, dstates)
        else:
            grads = self._backward_rows(ops, c["cache"], c["rdp"], dy_seq, dstates)
        dx = grads["x"]
        if c["dp"] is not None:
            dx = dx * c["dp"][:, None, :]
        return grads, dx

    def _apply_backward(self, grads):
        """Accumulate the parameter gradients of :meth:`_compute_backward` and keep the initial
        states' gradients."""
        self.w_ih.grad += grads["w_ih"]
        self.w_hh.grad += grads["w_hh"]
        for bname in self._bias_names():
            p = getattr(self, bname)
            if p is not None:
                p.grad += grads[bname]
        self.initial_state_grads = [grads["h0"]] + ([grads["c0"]] if self._n_states == 2 else [])

    def _backward_rows(self, ops, caches, rdp, dy_seq, dstates):
        rows = []
        for b, cache in enumerate(caches):
            g = self._backward_op(
                ops, cache, None if dy_seq is None else np.ascontiguousarray(dy_seq[b:b + 1]),
                [None if d is None else np.ascontiguousarray(d[b:b + 1]) for d in dstates])
            g = dict(g)
            g["w_hh"] = g["w_hh"] * rdp[b][None, :]
            rows.append(g)
        out = {}
        for key in ("x", "h0", "c0"):
            if key in rows[0]:
                out[key] = np.concatenate([g[key] for g in rows], axis=0)
        for key in ("w_ih", "w_hh") + self._bias_names():
            out[key] = sum(g[key] for g in rows)
        return out

    # -- shapes, masks, config ------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        out = (input_shape[0], self.units) if self.return_sequences else (self.units,)
        if self.return_state:
            return [out] + [(self.units,)] * self._n_states
        return out

    def compute_mask(self, x, mask=None):
        out = None
        if self.return_sequences and mask is not None:
            m = np.asarray(mask)
            out = np.ascontiguousarray(m[:, ::-1]) if self.go_backwards else m
        if self.return_state:
            return [out] + [None] * self._n_states
        return out

    def get_config(self):
        cfg = super().get_config()
        cfg.update(
            units=self.units, activation=self.activation, use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer, recurrent_initializer=self.recurrent_initializer,
            bias_initializer=self.bias_initializer, dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout, return_sequences=self.return_sequences,
            return_state=self.return_state, go_backwards=self.go_backwards, stateful=self.stateful,
            carry_state=self.carry_state, bptt_steps=self.bptt_steps, seed=self.seed,
            zero_output_for_mask=self.zero_output_for_mask,
        )
        return cfg


@register_layer
class SimpleRNN(BaseRNN):
    """Elman RNN: h' = act(x W_ih^T + h W_hh^T + b); activation 'tanh' (default) or 'relu'.

    SimpleRNN(units, activation='tanh', use_bias=True, kernel_initializer='glorot_uniform',
    recurrent_initializer='orthogonal', bias_initializer='zeros', dropout=0.0, recurrent_dropout=0.0,
    return_sequences=False, return_state=False, go_backwards=False, stateful=False, carry_state=False,
    bptt_steps=None, seed=None, zero_output_for_mask=False, name=None, ...). Parameters: w_ih [H, F],
    w_hh [H, H], b [H] (F*H + H*H + H scalars, as Keras). See BaseRNN for calling conventions.
    """

    _cell = "rnn"
    _gates = 1
    _n_states = 1
    _activations = ("tanh", "relu")

    def _forward_op(self, ops, x, w_hh, init, mask, training):
        y, h, cache = ops.rnn_forward(
            x, self.w_ih.value, w_hh, self._bias_value("b"), h0=None if init is None else init[0],
            mask=mask, reverse=self.go_backwards, batch_first=True, training=training,
            nonlinearity=self.activation)
        return y, [h], cache

    def _backward_op(self, ops, cache, dy, dstates):
        return ops.rnn_backward(cache, dy, dstate=dstates[0], bptt_steps=self.bptt_steps)


@register_layer
class LSTM(BaseRNN):
    """LSTM with gates i, f, g, o and one bias b [4H].

    LSTM(units, activation='tanh', recurrent_activation='sigmoid', use_bias=True,
    kernel_initializer='glorot_uniform', recurrent_initializer='orthogonal', bias_initializer='zeros',
    unit_forget_bias=True, dropout=0.0, recurrent_dropout=0.0, return_sequences=False,
    return_state=False, go_backwards=False, stateful=False, carry_state=False, bptt_steps=None,
    seed=None, zero_output_for_mask=False, name=None, ...). Parameters: w_ih [4H, F], w_hh [4H, H], b [4H]
    (4(F*H + H*H + H) scalars, as Keras). States [h, c].
    """

    _cell = "lstm"
    _gates = 4
    _n_states = 2

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", unit_forget_bias=True,
                 **kwargs):
        super().__init__(units, activation=activation, **kwargs)
        if recurrent_activation != "sigmoid":
            raise ValueError(f"{self._who()}: recurrent_activation must be 'sigmoid' (the only one the kernels "
                             f"implement), got {recurrent_activation!r}")
        self.recurrent_activation = "sigmoid"
        self.unit_forget_bias = bool(unit_forget_bias)

    def _make_bias(self, bname):
        b = super()._make_bias(bname)
        if self.unit_forget_bias:
            b[self.units:2 * self.units] = 1.0
        return b

    def _forward_op(self, ops, x, w_hh, init, mask, training):
        h0, c0 = (None, None) if init is None else init
        y, (h, c), cache = ops.lstm_forward(
            x, self.w_ih.value, w_hh, self._bias_value("b"), h0=h0, c0=c0, mask=mask,
            reverse=self.go_backwards, batch_first=True, training=training)
        return y, [h, c], cache

    def _backward_op(self, ops, cache, dy, dstates):
        dh, dc = dstates
        dstate = None if dh is None and dc is None else (dh, dc)
        return ops.lstm_backward(cache, dy, dstate=dstate, bptt_steps=self.bptt_steps)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation, unit_forget_bias=self.unit_forget_bias)
        return cfg


@register_layer
class GRU(BaseRNN):
    """GRU with gates r, z, n in the reset-after form (cuDNN / PyTorch / Keras ``reset_after=True``).

    GRU(units, activation='tanh', recurrent_activation='sigmoid', reset_after=True, use_bias=True,
    kernel_initializer='glorot_uniform', recurrent_initializer='orthogonal', bias_initializer='zeros',
    dropout=0.0, recurrent_dropout=0.0, return_sequences=False, return_state=False, go_backwards=False,
    stateful=False, carry_state=False, bptt_steps=None, seed=None, zero_output_for_mask=False,
    name=None, ...). Parameters: w_ih [3H, F], w_hh [3H, H], b_ih [3H], b_hh [3H] (3(F*H + H*H + 2H) scalars, as Keras).
    """

    _cell = "gru"
    _gates = 3
    _n_states = 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", reset_after=True, **kwargs):
        super().__init__(units, activation=activation, **kwargs)
        if recurrent_activation != "sigmoid":
            raise ValueError(f"{self._who()}: recurrent_activation must be 'sigmoid' (the only one the kernels "
                             f"implement), got {recurrent_activation!r}")
        if reset_after is not True:
            raise ValueError(f"{self._who()}: only reset_after=True (the cuDNN / PyTorch GRU) is supported, "
                             f"got reset_after={reset_after!r}")
        self.recurrent_activation = "sigmoid"
        self.reset_after = True

    def _bias_names(self):
        return ("b_ih", "b_hh")

    def _forward_op(self, ops, x, w_hh, init, mask, training):
        y, h, cache = ops.gru_forward(
            x, self.w_ih.value, w_hh, self._bias_value("b_ih"), self._bias_value("b_hh"),
            h0=None if init is None else init[0], mask=mask, reverse=self.go_backwards, batch_first=True,
            training=training)
        return y, [h], cache

    def _backward_op(self, ops, cache, dy, dstates):
        return ops.gru_backward(cache, dy, dstate=dstates[0], bptt_steps=self.bptt_steps)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation, reset_after=True)
        return cfg


_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


@register_layer
class Bidirectional(Layer):
    """Run a recurrent layer forwards and a copy of it backwards and merge the two outputs (Keras semantics).

    Bidirectional(layer, merge_mode='concat', backward_layer=None, ...). ``forward_layer`` is a copy
    of ``layer`` (built from its config, named 'forward_<name>'); ``backward_layer`` a copy with
    ``go_backwards`` flipped ('backward_<name>'), whose sequence output is put back in time order
    before merging. On a mask, the backward layer runs each sequence from its own last valid step.
    merge_mode: 'concat' (last axis), 'sum', 'mul', 'ave', or None (returns [y_fw, y_bw]). With
    return_state the result is ``[y] + fw_states + bw_states`` (``[y_fw, y_bw] + ...`` for None);
    ``initial_state`` is ``fw_states + bw_states``. count_params is twice the wrapped layer's.
    When ``layer`` has a seed s, the backward copy uses s + 1 (so the two directions differ).
    ``trainable=False`` (given or set later) freezes both directions.
    """

    _weights_hint = BaseRNN._weights_hint

    _input_rank = (3, 3)
    _input_desc = "[batch, time, features]"

    def __init__(self, layer, merge_mode="concat", backward_layer=None, **kwargs):
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
                    f"{self._who()}: backward_layer must be a SimpleRNN, LSTM or GRU, got {type(backward_layer).__name__}"
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
                raise ValueError(f"{self._who()}: backward_layer.go_backwards must be the opposite of layer.go_backwards")
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
    def return_sequences(self):
        """Whether the merged output is a sequence (from the wrapped layer)."""
        return self.forward_layer.return_sequences

    @property
    def return_state(self):
        """Whether the states are returned after the output (from the wrapped layer)."""
        return self.forward_layer.return_state

    @property
    def units(self):
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
    def states(self):
        """Carried states: forward layer's then backward layer's (None when none are carried)."""
        f, b = self.forward_layer.states, self.backward_layer.states
        if f is None and b is None:
            return None
        return list(f or []) + list(b or [])

    def reset_states(self, states=None):
        """Reset both directions (``states``: fw_states + bw_states, or None for zeros)."""
        if states is None:
            self.forward_layer.reset_states()
            self.backward_layer.reset_states()
            return
        fw, bw = self._split_states(states, "states")
        self.forward_layer.reset_states(fw)
        self.backward_layer.reset_states(bw)

    reset_state = BaseRNN.reset_state  # Keras 3's name

    def _split_states(self, states, what):
        n = self.forward_layer._n_states
        if not isinstance(states, (list, tuple)) or len(states) != 2 * n:
            raise ValueError(
                f"{self._who()}: {what} must be a list of {2 * n} arrays (forward states then backward states), "
                f"got {type(states).__name__}" + (f" of length {len(states)}" if isinstance(states, (list, tuple)) else "")
            )
        return list(states[:n]), list(states[n:])

    # -- build / parameters ---------------------------------------------------------------------
    def build(self, input_shape):
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

    def parameters(self):
        self._ensure_built()
        return self.forward_layer.parameters() + self.backward_layer.parameters()

    # -- forward / backward ---------------------------------------------------------------------
    def call(self, x, training=False, mask=None, initial_state=None, lengths=None):
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
            y = np.concatenate([yf, yb], axis=-1)
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
        n = self.forward_layer._n_states
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
                        raise ValueError(f"{self._who()}: dy must have {2 * H} features in the last axis, got shape {d.shape}")
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
    def compute_output_shape(self, input_shape):
        fo = self.forward_layer.compute_output_shape(input_shape)
        states = []
        if self.return_state:
            fo, states = fo[0], list(fo[1:])
        if self.merge_mode == "concat":
            out = tuple(fo[:-1]) + (2 * fo[-1],)
        elif self.merge_mode is None:
            out = [tuple(fo), tuple(fo)]
        else:
            out = tuple(fo)
        if self.return_state:
            return (out if self.merge_mode is None else [out]) + states + states
        return out

    def compute_mask(self, x, mask=None):
        m = np.asarray(mask) if (self.return_sequences and mask is not None) else None
        out = [m, m] if self.merge_mode is None else m
        if self.return_state:
            return (out if self.merge_mode is None else [out]) + [None] * (2 * self.forward_layer._n_states)
        return out

    def get_config(self):
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
    def from_config(cls, config):
        cfg = dict(config)
        cfg["layer"] = deserialize(cfg["layer"])
        if cfg.get("backward_layer") is not None:
            cfg["backward_layer"] = deserialize(cfg["backward_layer"])
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(**cfg)
