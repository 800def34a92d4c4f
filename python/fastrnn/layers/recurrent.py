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

from .. import _cells
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


@register_layer
class SimpleRNN(BaseRNN):
    """Elman RNN: h' = act(x W_ih^T + h W_hh^T + b); activation 'tanh' (default) or 'relu'.

    SimpleRNN(units, activation='tanh', use_bias=True, kernel_initializer='glorot_uniform',
    recurrent_initializer='orthogonal', bias_initializer='zeros', dropout=0.0, recurrent_dropout=0.0,
    return_sequences=False, return_state=False, go_backwards=False, stateful=False, carry_state=False,
    bptt_steps=None, seed=None, zero_output_for_mask=False, name=None, ...). Parameters: w_ih [H, F],
    w_hh [H, H], b [H] (F*H + H*H + H scalars, as Keras). See BaseRNN for calling conventions and
    for running one time step at a time: ``h_t, states = layer.step(x_t, states)`` and, after
    training steps, ``dx_t, dstates = layer.step_backward(dh_t, dstates)`` in reverse order.
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
class LSTM(BaseRNN):
    """LSTM with gates i, f, g, o and one bias b [4H].

    LSTM(units, activation='tanh', recurrent_activation='sigmoid', use_bias=True,
    kernel_initializer='glorot_uniform', recurrent_initializer='orthogonal', bias_initializer='zeros',
    unit_forget_bias=True, dropout=0.0, recurrent_dropout=0.0, return_sequences=False,
    return_state=False, go_backwards=False, stateful=False, carry_state=False, bptt_steps=None,
    seed=None, zero_output_for_mask=False, name=None, ...). Parameters: w_ih [4H, F], w_hh [4H, H], b [4H]
    (4(F*H + H*H + H) scalars, as Keras). States [h, c]. See BaseRNN for calling conventions and
    the step API: ``h_t, [h_t, c_t] = lstm.step(x_t, [h, c], training=True)``, then
    ``dx_t, [dh, dc] = lstm.step_backward(dh_t, [dh_next, dc_next])`` for the steps in reverse.
    """

    _spec = _cells.LSTM

    def __init__(self, units: int, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 unit_forget_bias: bool = True, **kwargs):
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
    See BaseRNN for calling conventions and the step API: ``h_t, [h_t] = gru.step(x_t, [h])``
    (``training=True`` to keep what ``dx_t, [dh] = gru.step_backward(dh_t, [dh_next])`` needs).
    """

    _spec = _cells.GRU

    def __init__(self, units: int, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 reset_after: bool = True, **kwargs):
        super().__init__(units, activation=activation, **kwargs)
        if recurrent_activation != "sigmoid":
            raise ValueError(f"{self._who()}: recurrent_activation must be 'sigmoid' (the only one the kernels "
                             f"implement), got {recurrent_activation!r}")
        if reset_after is not True:
            raise ValueError(f"{self._who()}: only reset_after=True (the cuDNN / PyTorch GRU) is supported, "
                             f"got reset_after={reset_after!r}")
        self.recurrent_activation = "sigmoid"
        self.reset_after = True

    def get_config(self):
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation, reset_after=True)
        return cfg

