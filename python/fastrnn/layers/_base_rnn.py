"""BaseRNN: the machinery SimpleRNN, LSTM and GRU share (:mod:`fastrnn.layers.recurrent`).

All recurrent computation runs in the C++ kernels of ``fastrnn.ops``, called through its internal
runner (``ops._run_forward`` / ``ops._run_backward``) on the arrays the layer has checked already;
the layers only loop over time to spread the gradients of masked outputs that repeat an earlier
step's output (Keras's masked-output semantics, see BaseRNN). Layers made with
``dtype="float64"`` run the NumPy references (``fastrnn.reference``) instead, for gradient checks.
What a layer knows about its cell (gates, biases, states, activation) comes from its
``fastrnn._cells.CellSpec`` (:attr:`BaseRNN.spec`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

from .. import _cells, _dropout, backend, ops, reference
from .._validation import layer_positive_int, layer_rate
from ..reference._common import check_bptt_steps
from . import initializers
from .base import Layer
from .core import _init_name

__all__ = ["BaseRNN"]


def _ops_for(dtype):
    """The functions that run a layer of ``dtype``: the kernels (float32) or the references (float64)."""
    return reference if dtype == np.float64 else ops


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



class _TrimmedCache:
    """The training cache of a forward run on the first ``kept`` of ``steps`` steps (the rest were
    padding every row had masked): what _backward_op needs to pad dx back to ``steps``."""

    __slots__ = ("inner", "kept", "steps")

    def __init__(self, inner, kept, steps):
        self.inner, self.kept, self.steps = inner, kept, steps

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
    recurrent matmul (as Keras / Gal & Ghahramani; GRU's z * h term keeps the unmasked state, as in
    Keras). Both are scaled by 1/(1-rate) and kept in ``last_dropout_masks`` = (input mask or None,
    recurrent mask or None). The masks come from Philox4x32-10 (fastrnn._dropout) keyed by the
    layer's seed and counting its training calls, so ``fastrnn.set_seed`` or ``seed=`` reproduces
    them for any thread count. The recurrent mask is applied inside the kernels' time loop (one
    [B, H] multiply per step, and its gradient in the backward loop), in one batched call.

    One step at a time (a decoder, or any loop that computes its next input from the last output):
    ``h_t, states = layer.step(x_t, states, training=False)`` runs one time step [B, F] -> [B, H]
    through the same kernels, and ``dx_t, dstates = layer.step_backward(dh_t, dstates)`` its
    backward, accumulating the parameter gradients as ``backward`` does; training steps are
    consumed last first, and a call on a sequence (or ``reset_steps()``) drops those left::

        states, outs = enc_states, []           # e.g. [h, c] of an encoder, or None for zeros
        for t in range(T):
            h, states = dec.step(inputs(t), states, training=True)
            outs.append(h)
        dstates = None
        for t in reversed(range(T)):            # d_outs[t]: the loss gradient w.r.t. outs[t]
            dx_t, dstates = dec.step_backward(d_outs[t], dstates)
        # dstates: the gradients w.r.t. enc_states

    ``get_weights`` / ``set_weights`` use the PyTorch layout above. A Keras layer's ``get_weights()``
    is in Keras's ([features, gates*units] kernels) and must go through
    ``fastrnn.interop.from_keras``: set_weights refuses it where the shapes differ, but for a
    SimpleRNN with as many features as units they coincide and it cannot tell.
    """

    #: The cell (fastrnn._cells): set per class (a SimpleRNN's by its activation).
    _spec: _cells.CellSpec = _cells.RNN_TANH
    _weights_hint = ("; the weights are in PyTorch's layout (w_ih [gates*units, features], w_hh [gates*units, "
                     "units]), not Keras's: convert a Keras layer's weights with fastrnn.interop.from_keras")
    _input_rank = (3, 3)
    _input_desc = "[batch, time, features]"
    #: the input and recurrent weights: Parameters once built (None before)
    w_ih: Any
    w_hh: Any

    def __init__(self, units: int, activation: str = "tanh", use_bias: bool = True,
                 kernel_initializer: str | Callable = "glorot_uniform",
                 recurrent_initializer: str | Callable = "orthogonal", bias_initializer: str | Callable = "zeros",
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, stateful: bool = False,
                 carry_state: bool = False, bptt_steps: int | None = None, seed: int | None = None,
                 zero_output_for_mask: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        who = self._who()
        self.units = layer_positive_int(units, who, "units")
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.activation = self._check_activation(activation)
        self.use_bias = bool(use_bias)
        self._kernel_init, self.kernel_initializer = _init_name(kernel_initializer, who, "kernel_initializer")
        self._recurrent_init, self.recurrent_initializer = _init_name(recurrent_initializer, who,
                                                                      "recurrent_initializer")
        self._bias_init, self.bias_initializer = _init_name(bias_initializer, who, "bias_initializer")
        self.dropout = layer_rate(dropout, who, "dropout")
        self.recurrent_dropout = layer_rate(recurrent_dropout, who, "recurrent_dropout")
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.carry_state = bool(carry_state)
        self.bptt_steps = bptt_steps
        self.seed = seed
        rng = initializers.new_rng(seed)
        self._init_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
        self._dropout_stream = _dropout.DropoutStream(rng)  # the key: one draw, as the old generator's seed
        self.states: list[np.ndarray] | None = None
        self.initial_state_grads = None
        self.last_dropout_masks: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self.w_ih = self.w_hh = None
        self._step_caches: list = []  # caches of training steps (step), consumed last first by step_backward
        self._kw_key: tuple | None = None  # the checked weights of _kernel_weights (their identities are the key)
        self._whh_pack: tuple | None = None  # (w_hh array, its version, ISA path, batch, packed): _packed_whh
        self._wih_t: tuple | None = None  # (w_ih array, its version, w_ih transposed): _transposed_wih

    # -- the cell and options ------------------------------------------------------------------
    @property
    def spec(self) -> _cells.CellSpec:
        """The cell's description (a fastrnn._cells.CellSpec): its gates, bias names, number of
        states (``spec.n_states``: 2 for LSTM's [h, c], else 1) and activation."""
        return self._spec

    def _check_activation(self, activation):
        """``activation`` if the layer's cell has it: 'tanh' or 'relu' for SimpleRNN, 'tanh' for
        LSTM and GRU (TypeError / ValueError otherwise)."""
        spec = self._spec
        supported = _cells.ACTIVATIONS if spec.base == "rnn" else (spec.activation,)
        if not isinstance(activation, str):
            raise TypeError(f"{self._who()}: activation must be a str, got {type(activation).__name__}")
        if activation not in supported:
            raise ValueError(
                f"{self._who()}: unknown activation {activation!r}; {type(self).__name__} supports "
                f"{', '.join(repr(a) for a in supported)}"
            )
        return activation

    @property
    def bptt_steps(self) -> int | None:
        """Truncated BPTT length passed to the backward op (None: full backpropagation through time)."""
        return self._bptt_steps

    @bptt_steps.setter
    def bptt_steps(self, value: int | None) -> None:
        self._bptt_steps = check_bptt_steps(value, self._who())

    # -- parameters ----------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 2 or input_shape[-1] is None:
            hint = ("; its input has no time axis: if the layer before it is recurrent, give that layer "
                    "return_sequences=True" if len(input_shape) == 1 else "")
            raise ValueError(
                f"{self._who()}: input shape must be (time, features) with features known, got {input_shape}{hint}"
            )
        n_in = int(input_shape[-1])
        G, H, dt, rng = self._spec.gates, self.units, self.dtype, self._init_rng
        self.add_parameter("w_ih", self._kernel_init((G * H, n_in), rng=rng, dtype=dt))
        # Keras draws the whole recurrent kernel in its layout [H, G*H]; w_hh [G*H, H] is its transpose
        w_hh = np.ascontiguousarray(self._recurrent_init((H, G * H), rng=rng, dtype=dt).T)
        self.add_parameter("w_hh", w_hh)
        self._zero_biases = {}
        for bname in self._spec.bias_names:
            if self.use_bias:
                self.add_parameter(bname, self._make_bias(bname))
            else:
                setattr(self, bname, None)
                self._zero_biases[bname] = np.zeros(G * H, dtype=dt)
        super().build((None, n_in))

    def _make_bias(self, bname):
        return self._bias_init((self._spec.gates * self.units,), rng=self._init_rng, dtype=self.dtype)

    def _build_from_weights(self, weights):
        if weights and np.ndim(weights[0]) == 2:
            self.build((None, int(np.shape(weights[0])[1])))

    def _build_shape(self, shape):
        return (None,) + tuple(shape[1:])

    def _bias_value(self, bname):
        p = getattr(self, bname)
        return self._zero_biases[bname] if p is None else p.value

    def _kernel_weights(self):
        """(w_ih, w_hh, b_ih, b_hh) of a float32 layer as the kernels take them (b_hh None but for
        GRU): float32, C-contiguous, of the layer's shapes.

        Checked once per set of parameter arrays, by identity: optimizers, ``set_weights`` and
        ``load_weights`` update the arrays in place (same objects, same dtype, shape and layout),
        so the checked tuple stays right; a new array assigned to a Parameter's ``value`` (or a new
        Parameter) is a new key, checked at the next call. An array that is not kernel-ready
        (another dtype, not C-contiguous) is converted at every call and never kept: a kept copy
        would miss the in-place updates of the original. A wrong shape is a ValueError naming
        the parameter."""
        names = self._spec.bias_names
        wi, wh, b1 = self.w_ih.value, self.w_hh.value, self._bias_value(names[0])
        b2 = self._bias_value(names[1]) if len(names) == 2 else None
        k = self._kw_key
        if k is not None and k[0] is wi and k[1] is wh and k[2] is b1 and k[3] is b2:
            return k
        G, H = self._spec.gates, self.units
        shapes = ((G * H, self.input_shape[-1]), (G * H, H), (G * H,), (G * H,))
        ready = []
        for name, a, shape in zip(("w_ih", "w_hh") + names, (wi, wh, b1, b2), shapes):
            if a is None:
                continue
            if np.shape(a) != shape:
                raise ValueError(f"{self._who()}: parameter '{name}' must have shape {shape}, got {np.shape(a)}")
            if not (type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous):
                a = np.ascontiguousarray(a, dtype=np.float32)
            ready.append(a)
        ready = tuple(ready) + ((None,) if b2 is None else ())
        if all(r is v for r, v in zip(ready, (wi, wh, b1, b2))):
            self._kw_key = ready
        return ready

    def _kept(self, slot, param, a, extra, make):
        """A copy derived from a weight array, kept in attribute ``slot`` as (a, param's version,
        *extra, copy) and made again by ``make(a)`` when the array, its Parameter's version (every
        write through the API, see Parameter) or ``extra`` changes, so that a changed weight is
        never used stale. None for an array that is not the parameter's own (a converted copy, a
        CuPy array): the kernel then works from the array itself."""
        if a is not param.value or type(a) is not np.ndarray:
            return None
        key = (a, param._version, *extra)
        k = getattr(self, slot)
        if k is not None and k[0] is a and k[1:-1] == key[1:]:
            return k[-1]
        copy = make(a)
        setattr(self, slot, key + (copy,))
        return copy

    def _packed_whh(self, wh, batch):
        """W_hh in the forward time loop's layout (``core.pack_whh``), kept (_kept; also renewed on
        another ISA path or batch size, on which the layout may depend) for the one-step calls
        (``step``, sequences of length 1), which would otherwise pack all G*H*H weights for a
        product of B*G*H*H multiply-adds, and for inference calls (packing is then paid once, not
        per call). ``wh`` is _kernel_weights' w_hh."""
        return self._kept("_whh_pack", self.w_hh, wh, (backend.isa(), batch),
                          lambda a: backend.core().pack_whh(self._spec.kernel_id, a, batch))

    def _transposed_wih(self, wi):
        """W_ih transposed ([I, G*H], C-contiguous), kept (_kept) for the one-step calls: the x
        projection of a few rows then reads it in place instead of packing all of W_ih at every
        step."""
        return self._kept("_wih_t", self.w_ih, wi, (), lambda a: np.ascontiguousarray(a.T))

    # -- states --------------------------------------------------------------------------------
    def reset_states(self, states: Sequence[ArrayLike] | np.ndarray | None = None) -> None:
        """Forget the carried state (the next forward starts from zeros), or set it to ``states``.

        Args:
            states: None, or the states to carry: a list of [B, units] arrays ([h], or [h, c] for
                LSTM; a bare array for SimpleRNN / GRU). They are copied.
        """
        if states is None:
            self.states = None
            return
        states = self._resolve_initial_state(states, None, what="states")
        rows = [s.shape[0] for s in states]
        if len(set(rows)) > 1:  # refused here, not at the next call
            raise ValueError(f"{self._who()}: states must have the same batch size, got "
                             + ", ".join(f"states[{i}] with {r} rows" for i, r in enumerate(rows)))
        self.states = [s.copy() for s in states]

    def reset_state(self, states: Sequence[ArrayLike] | np.ndarray | None = None) -> None:
        """Keras 3's name for :meth:`reset_states` (same argument)."""
        self.reset_states(states)

    def _resolve_initial_state(self, initial_state, B, what="initial_state"):
        if initial_state is None:
            return None
        n = self._spec.n_states
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
            if lens.size == 0:  # before the dtype: an empty list is float64 to NumPy
                raise ValueError(f"{self._who()}: lengths must have shape [batch] = ({B},), got an empty "
                                 f"array of shape {lens.shape}")
            if lens.dtype.kind not in "iu":
                raise TypeError(f"{self._who()}: lengths must be an integer array, got dtype {lens.dtype}")
            if lens.shape != (B,):
                raise ValueError(f"{self._who()}: lengths must have shape [batch] = ({B},), got {lens.shape}")
            if lens.size and (lens.min() < 0 or lens.max() > T):
                raise ValueError(f"{self._who()}: lengths must lie in [0, {T}], got values in "
                                 f"[{lens.min()}, {lens.max()}]")
            mask = np.arange(T)[None, :] < lens[:, None]
        if mask is not None and mask.all():
            return None
        return None if mask is None else np.ascontiguousarray(mask)

    # -- the op calls ----------------------------------------------------------------------------
    #: Run the kernels only up to the last step any row has valid (see _forward_op); a switch for tests.
    _trim_masked_tail = True

    def _forward_op(self, x, w_hh, init, mask, training, hmask=None):
        """(y [B,T,H], [h_n] or [h_n, c_n], cache) of the cell on x [B, T, F] with w_hh, and the
        recurrent dropout mask hmask (None or C-contiguous [B, H] of the layer's dtype).

        Steps after the last one that any row has valid (the padding at the end of a padded batch)
        change nothing, in either direction (the state is carried through them, their outputs and
        gradients are 0), so float32 layers run the kernels on the steps before them only and pad
        the outputs (and, in backward, dx) with zeros. Not with truncated BPTT, whose windows
        count steps.

        The callers pass what the layer has checked and converted: x, w_hh and the states of
        ``init`` (None or a list of spec.n_states arrays [B, H]) C-contiguous arrays of the layer's
        dtype and shapes, mask None or bool [B, T], training a bool. float32 layers run the kernels
        through the ops' runner, which skips the public op's checks; float64 layers run the
        references, and an empty x the public op (for its error)."""
        if (mask is not None and self._trim_masked_tail and self.dtype == np.float32 and self.bptt_steps is None
                and x.size):
            T = mask.shape[1]
            valid_t = np.flatnonzero(mask.any(axis=0))
            kept = max(1, int(valid_t[-1]) + 1 if valid_t.size else 1)
            if kept < T:
                y, states, cache = self._forward_op(np.ascontiguousarray(x[:, :kept]), w_hh, init,
                                                    np.ascontiguousarray(mask[:, :kept]), training, hmask)
                full = np.zeros((y.shape[0], T, y.shape[2]), y.dtype)
                full[:, :kept] = y
                return full, states, (None if cache is None else _TrimmedCache(cache, kept, T))
        spec = self._spec
        h0 = c0 = None
        if init is not None:
            h0 = init[0]
            if spec.n_states == 2:
                c0 = init[1]
        # the states carried from reset_states(states) may differ in batch size among themselves
        # (the layer checks the first): the public op says which
        if self.dtype == np.float32 and x.size and (init is None or init[-1].shape[0] == x.shape[0]):
            w_ih, wh, b_ih, b_hh = self._kernel_weights()
            packed = wih_t = None
            if w_hh is not self.w_hh.value:  # another w_hh than the layer's (a caller's own)
                wh = w_hh
            elif x.shape[1] == 1:  # a step: packing W_hh and W_ih would cost as much as the step's products
                packed = self._packed_whh(wh, x.shape[0])
                wih_t = self._transposed_wih(w_ih)
            elif not training:  # inference: the packed W_hh kept (at batch 1, ~3 % of a 100-step call)
                packed = self._packed_whh(wh, x.shape[0])
            y, state, cache = ops._run_forward(spec, x, w_ih, wh, b_ih, b_hh, h0, c0, mask, self.go_backwards, True,
                                               training, None, hmask, packed, wih_t)
        else:
            w_ih = self.w_ih.value
            biases = [self._bias_value(name) for name in spec.bias_names]
            kw = {"c0": c0} if spec.n_states == 2 else {}
            if spec.base == "rnn":
                kw["activation"] = spec.activation
            forward = getattr(_ops_for(self.dtype), f"{spec.base}_forward")
            y, state, cache = forward(x, w_ih, w_hh, *biases, h0=h0, mask=mask, reverse=self.go_backwards,
                                      batch_first=True, training=training, recurrent_mask=hmask, **kw)
        return y, (list(state) if spec.n_states == 2 else [state]), cache

    def _backward_op(self, cache, dy, dstates):
        """The op's gradients for the cache of :meth:`_forward_op`: dy None or C-contiguous [B, T, H],
        dstates a list of spec.n_states gradients [B, H] (entries may be None), all of the layer's
        dtype. float32 caches run the kernels' backward through the ops' runner, float64 ones the
        references' backward."""
        if isinstance(cache, _TrimmedCache):  # the forward ran the first `kept` steps only
            grads = self._backward_op(cache.inner, None if dy is None else np.ascontiguousarray(dy[:, :cache.kept]),
                                      dstates)
            dx = grads.get("x")
            if dx is not None:
                full = np.zeros((dx.shape[0], cache.steps, dx.shape[2]), dx.dtype)
                full[:, :cache.kept] = dx
                grads["x"] = full
            return grads
        dh = dstates[0]
        dc = dstates[1] if self._spec.n_states == 2 else None
        return ops._run_backward(cache, dy, None if dh is None else np.ascontiguousarray(dh),
                                 None if dc is None else np.ascontiguousarray(dc), self.bptt_steps)

    # -- forward / backward --------------------------------------------------------------------
    def call(self, x: np.ndarray, training: bool = False, mask: np.ndarray | None = None,
             initial_state: Sequence[ArrayLike] | None = None, lengths: ArrayLike | None = None) -> Any:
        self._step_caches = []  # a call on a sequence ends any step-by-step use
        B, T, _ = x.shape
        if mask is not None or lengths is not None:
            mask = self._resolve_mask(mask, lengths, B, T)
        init = None if initial_state is None else self._resolve_initial_state(initial_state, B)
        if init is None and (self.stateful or self.carry_state) and self.states is not None:
            if self.states[0].shape[0] != B:
                raise ValueError(
                    f"{self._who()}: the carried state has batch size {self.states[0].shape[0]} but the input has "
                    f"batch size {B}; call reset_states() before changing the batch size"
                )
            init = [s.copy() for s in self.states]
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        dp = rdp = None
        if training and (self.dropout > 0.0 or self.recurrent_dropout > 0.0):
            key, call = self._dropout_stream.key, self._dropout_stream.next_call()
            if self.dropout > 0.0:  # stream 0: the input mask [B, F], shared by every step
                dp = _dropout.mask((B, x.shape[2]), key, call, 0, self.dropout, self.dtype)
                x = x * dp[:, None, :]
            if self.recurrent_dropout > 0.0:  # stream 1: the recurrent mask [B, H]
                rdp = _dropout.mask((B, self.units), key, call, 1, self.recurrent_dropout, self.dtype)
        y, states, cache = self._forward_op(x, self.w_hh.value, init, mask, training, rdp)
        fill = None  # the valid steps in output order, when masked outputs repeat the last valid one
        drop = None  # rows whose last output is 0 (return_sequences=False)
        run_valid: Any = None if mask is None else (mask[:, ::-1] if self.go_backwards else mask)  # running order
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

    def _split_dy(self, dy):
        if type(dy) is np.ndarray:  # the output's gradient alone
            return [dy] + [None] * self._spec.n_states
        n_out = 1 + (self._spec.n_states if self.return_state else 0)
        if isinstance(dy, (list, tuple)):
            if len(dy) != n_out:
                raise ValueError(
                    f"{self._who()}: dy must be a list of {n_out} gradients (one per output), got {len(dy)}"
                )
            dys = list(dy)
        else:
            dys = [dy] + [None] * (n_out - 1)
        return dys + [None] * (1 + self._spec.n_states - len(dys))

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
        if dstates[0] is not None or dstates[-1] is not None:
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
        grads = self._backward_op(c["cache"], dy_seq, dstates)
        dx = grads["x"]
        if c["dp"] is not None:
            dx = dx * c["dp"][:, None, :]
        return grads, dx

    def _apply_backward(self, grads):
        """Accumulate the parameter gradients of :meth:`_compute_backward` and keep the initial
        states' gradients."""
        self._accumulate_grads(grads)
        self.initial_state_grads = self._state_grads(grads)

    def _accumulate_grads(self, grads):
        """``p.grad += grads[...]`` for every parameter (the op's gradients, keyed by attribute name)."""
        self.w_ih.grad += grads["w_ih"]
        self.w_hh.grad += grads["w_hh"]
        for bname in self._spec.bias_names:
            p = getattr(self, bname)
            if p is not None:
                p.grad += grads[bname]

    def _state_grads(self, grads):
        """The initial states' gradients of an op's result: [dh0] or [dh0, dc0]."""
        return [grads["h0"]] + ([grads["c0"]] if self._spec.n_states == 2 else [])

    # -- one time step -------------------------------------------------------------------------
    def step(self, x_t: np.ndarray, states: list[np.ndarray] | np.ndarray | None = None,
             training: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run ONE time step: ``(h_t, new_states)`` for the input ``x_t`` [B, F].

        The step runs the same kernel as a sequence of length 1 (the references for float64
        layers). It neither reads nor sets the carried ``states`` of a stateful layer, takes no
        mask, and a single step has no direction (``go_backwards`` changes nothing). Dropout is not
        applied step by step, so a training step of a layer with ``dropout`` or
        ``recurrent_dropout`` > 0 is refused (ValueError).

        Args:
            x_t: The step's input [B, F].
            states: The states before the step, a list ([h] or, for LSTM, [h, c], each
                [B, units]; a bare array for SimpleRNN / GRU), or None for zeros.
            training: Keep what :meth:`step_backward` needs (default False).

        Returns:
            ``(h_t, new_states)``: ``new_states`` is the list of states after the step and
            ``h_t`` [B, units] its first entry (the step's output).

        Example:
            >>> import numpy as np
            >>> from fastrnn import layers
            >>> lstm = layers.LSTM(4, seed=0)
            >>> h, states = lstm.step(np.ones((2, 3), dtype=np.float32), None, training=True)
            >>> dx, dstates = lstm.step_backward(np.ones_like(h))
            >>> h.shape, len(states), dx.shape, [d.shape for d in dstates]
            ((2, 4), 2, (2, 3), [(2, 4), (2, 4)])
        """
        x_t = self._convert_input(x_t)  # (returns an array of the layer's dtype as it is)
        if x_t.ndim != 2:
            raise ValueError(f"{self._who()}: step expects x_t of shape [batch, features], got shape "
                             f"{tuple(x_t.shape)}")
        if not self.built:
            self.build(self._given_input_shape or (None, x_t.shape[1]))
        if x_t.shape[1] != self.input_shape[-1]:
            raise ValueError(f"{self._who()}: step expects x_t with {self.input_shape[-1]} features, got shape "
                             f"{tuple(x_t.shape)}")
        training = bool(training)
        if training and (self.dropout > 0.0 or self.recurrent_dropout > 0.0):
            raise ValueError(f"{self._who()}: step(training=True) does not apply dropout; use a layer with "
                             "dropout=0 and recurrent_dropout=0 (or drop the inputs yourself)")
        B = x_t.shape[0]
        init = self._step_states(states, B)
        x = x_t.reshape(B, 1, x_t.shape[1]) if x_t.flags.c_contiguous else np.ascontiguousarray(x_t[:, None, :])
        _, new_states, cache = self._forward_op(x, self.w_hh.value, init, None, training)
        if training:
            self._step_caches.append((cache, B))
        return new_states[0], new_states

    def _step_states(self, states, B):
        """The states of a step as the kernels take them: the caller's list as it is when every
        entry is already an array of the layer's dtype, C-contiguous, [B, units] (the new_states
        a step returned are), else the checked, converted copies of _resolve_initial_state (with
        its errors)."""
        if type(states) is list and len(states) == self._spec.n_states:
            shape, dt = (B, self.units), self.dtype
            if all(type(s) is np.ndarray and s.dtype == dt and s.shape == shape and s.flags.c_contiguous
                   for s in states):
                return states
        return self._resolve_initial_state(states, B, what="states")

    def step_backward(self, dh_t: np.ndarray | None, dstates: Sequence[np.ndarray | None] | np.ndarray | None = None
                      ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Backpropagate through the LAST training :meth:`step` not yet consumed: ``(dx_t, dstates_prev)``.

        ACCUMULATES the parameter gradients (``p.grad +=``) exactly as :meth:`backward` does.
        Training steps are consumed last first (run step_backward in reverse order of the steps);
        RuntimeError when none is left. A call on a sequence, or :meth:`reset_steps`, drops them.

        Args:
            dh_t: The gradient [B, units] w.r.t. that step's output ``h_t``, or None.
            dstates: The gradients w.r.t. its ``new_states`` (a list like the states, entries may
                be None; a bare array for SimpleRNN / GRU), or None. As ``h_t`` is
                ``new_states[0]``, ``dh_t`` and ``dstates[0]`` add up.

        Returns:
            ``(dx_t, dstates_prev)``: the gradient w.r.t. ``x_t`` [B, F] and the list of gradients
            w.r.t. the step's input ``states``.
        """
        if not self._step_caches:
            raise RuntimeError(f"{self._who()}: step_backward() called without a pending step(..., training=True) "
                               "(each training step is consumed by one step_backward, last step first)")
        cache, B = self._step_caches[-1]
        n, H = self._spec.n_states, self.units
        if dstates is None:
            dstates = [None] * n
        elif isinstance(dstates, np.ndarray) and n == 1:
            dstates = [dstates]
        if not isinstance(dstates, (list, tuple)) or len(dstates) != n:
            raise ValueError(f"{self._who()}: dstates must be None or a list of {n} gradient(s) "
                             f"{'[dh, dc]' if n == 2 else '[dh]'}, got {type(dstates).__name__}"
                             + (f" of length {len(dstates)}" if isinstance(dstates, (list, tuple)) else ""))
        d = [None if g is None else self._check_dy(g, (B, H), "state gradient") for g in dstates]
        if dh_t is not None:
            dh = self._check_dy(dh_t, (B, H), "dh_t")
            d[0] = dh if d[0] is None else d[0] + dh
        self._step_caches.pop()
        grads = self._backward_op(cache, None, d)
        self._accumulate_grads(grads)
        return grads["x"][:, 0], self._state_grads(grads)

    def reset_steps(self) -> None:
        """Drop the caches of training steps not yet consumed by :meth:`step_backward`."""
        self._step_caches = []

    # -- shapes, masks, config ------------------------------------------------------------------
    def compute_output_shape(self, input_shape: Any) -> Any:
        input_shape = tuple(input_shape)
        out = (input_shape[0], self.units) if self.return_sequences else (self.units,)
        if self.return_state:
            return [out] + [(self.units,)] * self._spec.n_states
        return out

    def compute_mask(self, x: ArrayLike, mask: Any = None) -> Any:
        out = None
        if self.return_sequences and mask is not None:
            m = np.asarray(mask)
            out = np.ascontiguousarray(m[:, ::-1]) if self.go_backwards else m
        if self.return_state:
            return [out] + [None] * self._spec.n_states
        return out

    def get_config(self) -> dict:
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

