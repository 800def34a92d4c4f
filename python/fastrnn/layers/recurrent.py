"""Recurrent layers: SimpleRNN, LSTM, GRU (and the Bidirectional wrapper, re-exported).

All recurrent computation runs in the C++ kernels of ``fastrnn.ops`` (through its internal
runner, on the arrays the layers checked); the layers only loop over time to spread the
gradients of masked outputs that repeat an earlier step's output (Keras's masked-output
semantics, below). Layers made with ``dtype="float64"`` run the NumPy references
(``fastrnn.reference``) instead, for gradient checks.

Inputs are batch-major [B, T, F]. Weights are in PyTorch layouts (``w_ih [G*H, F]``,
``w_hh [G*H, H]``; LSTM gates i,f,g,o with one bias ``b [4H]``; GRU gates r,z,n with ``b_ih``
and ``b_hh``), initialised like Keras (glorot_uniform input weights; ``w_hh`` the transpose of a
(semi-)orthogonal [H, G*H] matrix K, Keras's recurrent kernel layout, so that K K^T = I; zero
biases, LSTM forget-gate bias 1), so parameter counts equal Keras's.
"""
from __future__ import annotations

from typing import Any

from .. import _cells
from .._docstrings import fill_docstring
from ._base_rnn import (  # noqa: F401
    BaseRNN,
    _ops_for,
    _repeat_last_valid,
    _repeat_last_valid_backward,
)
from .base import register_layer
from .bidirectional import Bidirectional

__all__ = ["GRU", "LSTM", "BaseRNN", "Bidirectional", "SimpleRNN"]

# BaseRNN (with the private helpers above) is defined in _base_rnn and Bidirectional in
# bidirectional; both stay importable from here


# The parts of the three layers' docstrings that are the same for all of them (fill_docstring puts
# them in place of the {NAME} lines): the arguments around ``return_state`` and the call
# arguments before ``initial_state``.
_ARGS_BEFORE_RETURN_STATE = """\
use_bias (bool): Add the bias vector(s) (default True; without them the biases are zero).
kernel_initializer (str | Callable): Initializer of ``w_ih`` (default 'glorot_uniform');
    a name from :mod:`fastrnn.layers.initializers` or a callable ``init(shape, rng=, dtype=)``.
recurrent_initializer (str | Callable): Initializer of the recurrent kernel, drawn in
    Keras's layout [H, G*H] and stored transposed as ``w_hh`` (default 'orthogonal').
bias_initializer (str | Callable): Initializer of the bias(es) (default 'zeros').
dropout (float): Input dropout rate in [0, 1), training only: one [B, F] mask per call,
    shared by all time steps (variational, as Keras). Default 0.
recurrent_dropout (float): Dropout rate in [0, 1) on the state fed back into the recurrent
    matmul: one [B, H] mask per call (as Keras / Gal & Ghahramani), applied inside the
    kernels' time loop. Default 0.
return_sequences (bool): Return the whole output sequence [B, T, H] instead of the last
    output [B, H] (default False).
"""

_ARGS_AFTER_RETURN_STATE = """\
go_backwards (bool): Process the sequence in reverse; with ``return_sequences`` the output
    is in the reversed (running) order, as Keras (default False).
stateful (bool): Use each call's final state(s) as the next call's initial state(s), until
    ``reset_states()`` (Keras's ``stateful``; the batch size must then stay the same).
    Default False.
carry_state (bool): Carry the state(s) from call to call as ``stateful`` does; this is the
    flag ``fit(..., tbptt=k)`` sets while it runs a batch in chunks (resetting the states
    at each batch start). Default False.
bptt_steps (int | None): Truncate backpropagation through time to chunks of this many
    steps (positive int); None (default) backpropagates through the whole sequence.
seed (int | None): Seed of the layer's own generators (initial weights, dropout masks);
    None draws from the global generator (:func:`fastrnn.set_seed`).
zero_output_for_mask (bool): Output 0 at masked steps instead of repeating the last valid
    output (Keras's masked-output behaviour, the default False; ``Bidirectional`` sets it
    on the layers it wraps when they return sequences, as Keras does).
**kwargs: ``name``, ``trainable``, ``dtype`` ('float32' runs the C++ kernels, 'float64'
    the NumPy references, for gradient checks), ``input_shape`` (see
    :class:`~fastrnn.layers.Layer`).
"""

_CALL_ARGS_BEFORE_INITIAL_STATE = """\
x: Array [B, T, F].
training (bool): Apply dropout and keep what ``backward`` needs (default False).
mask: Optional bool [B, T], True at real steps (e.g. from ``Embedding(mask_zero=True)``).
    At a masked step the state is carried unchanged and the sequence output repeats the
    last valid step's output (0 before the first valid step), as Keras; without
    ``return_sequences`` the output is the final state, but 0 for rows with no valid step.
"""


@register_layer
@fill_docstring
class SimpleRNN(BaseRNN):
    """Fully connected recurrent layer (Elman RNN), as ``keras.layers.SimpleRNN``.

    Computes ``h_t = activation(x_t W_ih^T + h_{t-1} W_hh^T + b)``. Parameters (PyTorch layouts):
    ``w_ih`` [H, F], ``w_hh`` [H, H], ``b`` [H] (F*H + H*H + H scalars, as Keras). One state [h].
    See :class:`~fastrnn.layers.BaseRNN` for masking, dropout, ``backward`` and running one time
    step at a time: ``h_t, states = layer.step(x_t, states)`` and, after training steps,
    ``dx_t, dstates = layer.step_backward(dh_t, dstates)`` in reverse order.

    Args:
        units (int): Size H of the state and output (positive int).
        activation (str): 'tanh' (default) or 'relu'.
        {_ARGS_BEFORE_RETURN_STATE}
        return_state (bool): Also return the final state(s): ``[y, h]`` (default False).
        {_ARGS_AFTER_RETURN_STATE}

    Call arguments:
        {_CALL_ARGS_BEFORE_INITIAL_STATE}
        initial_state: Optional list of one array [B, H] ([h]; a bare array is accepted); None:
            zeros, or the carried state of a stateful layer.
        lengths: Optional int [B], the valid length of each sequence; an alternative to ``mask``
            (not both).

    Input shape:
        [batch, time, features].

    Output shape:
        [batch, units], or [batch, time, units] with ``return_sequences``; with ``return_state``
        a list ``[output, h]`` whose states are [batch, units].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> rnn = layers.SimpleRNN(8, return_sequences=True, seed=0)
        >>> rnn(np.zeros((2, 5, 3), dtype=np.float32)).shape
        (2, 5, 8)
        >>> rnn.count_params()                      # 3*8 + 8*8 + 8
        96
    """

    _spec = _cells.RNN_TANH  # the activation sets it

    @property
    def activation(self) -> str:
        """'tanh' or 'relu'; setting it changes the cell the layer runs (its ``spec``)."""
        return self._spec.activation

    @activation.setter
    def activation(self, activation: str) -> None:
        self._spec = _cells.cell_spec("rnn", self._check_activation(activation))


@register_layer
@fill_docstring
class LSTM(BaseRNN):
    """Long short-term memory layer, as ``keras.layers.LSTM`` / ``torch.nn.LSTM``.

    Gates i, f, g, o: ``[i, f, g, o] = x_t W_ih^T + h_{t-1} W_hh^T + b`` (i, f, o through the
    sigmoid, g through tanh), ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``. Parameters
    (PyTorch layouts, gate order i, f, g, o): ``w_ih`` [4H, F], ``w_hh`` [4H, H] and one bias ``b``
    [4H] (4(F*H + H*H + H) scalars, as Keras). States [h, c]. See :class:`~fastrnn.layers.BaseRNN`
    for masking, dropout, ``backward`` and the step API:
    ``h_t, [h_t, c_t] = lstm.step(x_t, [h, c], training=True)``, then
    ``dx_t, [dh, dc] = lstm.step_backward(dh_t, [dh_next, dc_next])`` for the steps in reverse.

    Args:
        units (int): Size H of the states and output (positive int).
        activation (str): Must be 'tanh' (the only one the kernels implement).
        recurrent_activation (str): Must be 'sigmoid' (ValueError otherwise).
        unit_forget_bias (bool): Initialise the forget gate's bias to 1 (default True, as Keras).
            The arguments after this one are keyword-only.
        {_ARGS_BEFORE_RETURN_STATE}
        return_state (bool): Also return the final state(s): ``[y, h, c]`` (default False).
        {_ARGS_AFTER_RETURN_STATE}

    Call arguments:
        {_CALL_ARGS_BEFORE_INITIAL_STATE}
        initial_state: Optional list of two arrays [h, c], each [B, H]; None: zeros, or the
            carried state of a stateful layer.
        lengths: Optional int [B], the valid length of each sequence; an alternative to ``mask``
            (not both).

    Input shape:
        [batch, time, features].

    Output shape:
        [batch, units], or [batch, time, units] with ``return_sequences``; with ``return_state``
        a list ``[output, h, c]`` whose states are [batch, units].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> lstm = layers.LSTM(8, return_state=True, seed=0)
        >>> y, h, c = lstm(np.zeros((2, 5, 3), dtype=np.float32))
        >>> y.shape, h.shape, c.shape
        ((2, 8), (2, 8), (2, 8))
        >>> lstm.count_params()                     # 4 * (3*8 + 8*8 + 8)
        384
    """

    _spec = _cells.LSTM

    def __init__(self, units: int, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 unit_forget_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(units, activation=activation, **kwargs)
        if recurrent_activation != "sigmoid":
            raise ValueError(f"{self._who()}: recurrent_activation must be 'sigmoid' (the only one the kernels "
                             f"implement), got {recurrent_activation!r}")
        self.recurrent_activation = "sigmoid"
        self.unit_forget_bias = bool(unit_forget_bias)

    def _make_bias(self, bname):
        b = super()._make_bias(bname)
        if self.unit_forget_bias:
            f = self._spec.gate_names.index("f") * self.units  # the forget gate's rows
            b[f:f + self.units] = 1.0
        return b

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation, unit_forget_bias=self.unit_forget_bias)
        return cfg


@register_layer
@fill_docstring
class GRU(BaseRNN):
    """Gated recurrent unit, reset-after form (cuDNN / PyTorch / Keras ``reset_after=True``).

    Gates r, z, n: ``r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)``, z likewise,
    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.
    Parameters (PyTorch layouts, gate order r, z, n): ``w_ih`` [3H, F], ``w_hh`` [3H, H], ``b_ih``
    [3H], ``b_hh`` [3H] (3(F*H + H*H + 2H) scalars, as Keras). One state [h]. See
    :class:`~fastrnn.layers.BaseRNN` for masking, dropout, ``backward`` and the step API:
    ``h_t, [h_t] = gru.step(x_t, [h])`` (``training=True`` to keep what
    ``dx_t, [dh] = gru.step_backward(dh_t, [dh_next])`` needs).

    Args:
        units (int): Size H of the state and output (positive int).
        activation (str): Must be 'tanh' (the only one the kernels implement).
        recurrent_activation (str): Must be 'sigmoid' (ValueError otherwise).
        reset_after (bool): Must be True (the cuDNN / PyTorch GRU; ValueError otherwise). The
            arguments after this one are keyword-only.
        {_ARGS_BEFORE_RETURN_STATE}
        return_state (bool): Also return the final state(s): ``[y, h]`` (default False).
        {_ARGS_AFTER_RETURN_STATE}

    Call arguments:
        {_CALL_ARGS_BEFORE_INITIAL_STATE}
        initial_state: Optional list of one array [B, H] ([h]; a bare array is accepted); None:
            zeros, or the carried state of a stateful layer.
        lengths: Optional int [B], the valid length of each sequence; an alternative to ``mask``
            (not both).

    Input shape:
        [batch, time, features].

    Output shape:
        [batch, units], or [batch, time, units] with ``return_sequences``; with ``return_state``
        a list ``[output, h]`` whose states are [batch, units].

    Example:
        >>> import numpy as np
        >>> from fastrnn import layers
        >>> gru = layers.GRU(8, seed=0)
        >>> gru(np.zeros((2, 5, 3), dtype=np.float32)).shape
        (2, 8)
        >>> gru.count_params()                      # 3 * (3*8 + 8*8 + 2*8)
        312
    """

    _spec = _cells.GRU

    def __init__(self, units: int, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 reset_after: bool = True, **kwargs: Any) -> None:
        super().__init__(units, activation=activation, **kwargs)
        if recurrent_activation != "sigmoid":
            raise ValueError(f"{self._who()}: recurrent_activation must be 'sigmoid' (the only one the kernels "
                             f"implement), got {recurrent_activation!r}")
        if reset_after is not True:
            raise ValueError(f"{self._who()}: only reset_after=True (the cuDNN / PyTorch GRU) is supported, "
                             f"got reset_after={reset_after!r}")
        self.recurrent_activation = "sigmoid"
        self.reset_after = True

    def get_config(self) -> dict:
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation, reset_after=True)
        return cfg

