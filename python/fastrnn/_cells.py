"""One description of each recurrent cell, read by the references, the ops, the CUDA glue and the
tests: its gates, their names, its biases, how many states it carries and the id of its kernel.

    >>> from fastrnn._cells import cell_spec
    >>> cell_spec("LSTM").gates, cell_spec("simple_rnn", "relu").kernel_id
    (4, 1)

Canonical names are those of the compiled kernels' ``Cell`` enum (csrc/fastrnn.h): ``rnn_tanh``
(0), ``rnn_relu`` (1), ``lstm`` (2), ``gru`` (3). :func:`cell_spec` also takes every older
spelling: "rnn" (with an activation), "SimpleRNN" / "simple_rnn" (any case), the ints 0-3 and a
CellSpec itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "GRU",
    "LSTM",
    "RNN_RELU",
    "RNN_TANH",
    "CellLike",
    "CellSpec",
    "by_base",
    "cell_spec",
    "kernel_id",
]


@dataclass(frozen=True)
class CellSpec:
    """What every layer of fastrnn needs to know about one cell.

    name: the canonical name ("rnn_tanh", "rnn_relu", "lstm", "gru").
    base: the prefix of its functions ``{base}_forward`` / ``{base}_backward`` and the ``cell`` of
        its caches ("rnn", "lstm", "gru").
    layer: the name of its layer class ("SimpleRNN", "LSTM", "GRU").
    gates: G, the gate count: w_ih is [G*H, I], w_hh [G*H, H], each bias [G*H].
    gate_names: the gates in the row order of the weights (SimpleRNN: its one candidate "h").
    bias_names: the bias arguments in signature order.
    n_states: the states it carries (LSTM 2: h and c; the others 1: h).
    kernel_id: its value in the compiled kernels' ``Cell`` enum.
    activation: the activation of the candidate state ("tanh" or "relu").
    aux: what the kernels save per step beside the state before it and the gates ("c_prev": the
        LSTM cell state before the step; "u_n": the GRU's W_hn h + b_hn; None for SimpleRNN).
    """

    name: str
    base: str
    layer: str
    gates: int
    gate_names: tuple[str, ...]
    bias_names: tuple[str, ...]
    n_states: int
    kernel_id: int
    activation: str
    aux: str | None

    def __repr__(self) -> str:
        return f"CellSpec({self.name!r})"


RNN_TANH = CellSpec("rnn_tanh", "rnn", "SimpleRNN", 1, ("h",), ("b",), 1, 0, "tanh", None)
RNN_RELU = CellSpec("rnn_relu", "rnn", "SimpleRNN", 1, ("h",), ("b",), 1, 1, "relu", None)
LSTM = CellSpec("lstm", "lstm", "LSTM", 4, ("i", "f", "g", "o"), ("b",), 2, 2, "tanh", "c_prev")
GRU = CellSpec("gru", "gru", "GRU", 3, ("r", "z", "n"), ("b_ih", "b_hh"), 1, 3, "tanh", "u_n")

#: The cells in kernel-id order (CELLS[spec.kernel_id] is spec).
CELLS: tuple[CellSpec, ...] = (RNN_TANH, RNN_RELU, LSTM, GRU)
#: The activations a SimpleRNN takes.
ACTIVATIONS: tuple[str, ...] = ("tanh", "relu")

#: What cell_spec accepts: a name (any case), a kernel id or a CellSpec.
CellLike = Union[str, int, CellSpec]

# (base, activation) -> spec; the references and the ops look their cell up here on every call.
_BY_BASE_ACT: dict[tuple[str, str | None], CellSpec] = {
    ("rnn", "tanh"): RNN_TANH, ("rnn", "relu"): RNN_RELU,
    ("lstm", None): LSTM, ("gru", None): GRU,
}
# lower-case spellings; None: a SimpleRNN whose activation comes from the activation argument
_BY_NAME: dict[str, CellSpec | None] = {
    "rnn": None, "simplernn": None, "simple_rnn": None,
    "rnn_tanh": RNN_TANH, "rnn_relu": RNN_RELU, "lstm": LSTM, "gru": GRU,
}
_ACCEPTED = ("'rnn', 'simplernn', 'simple_rnn' (with activation 'tanh' or 'relu'), 'rnn_tanh', 'rnn_relu', "
             "'lstm', 'gru' (any case), the kernel ids 0-3 or a CellSpec")


def by_base(base: str, activation: str | None = None) -> CellSpec:
    """The spec of ``{base}_forward`` ("rnn", "lstm", "gru"); activation picks the SimpleRNN.

    For arguments already checked (KeyError otherwise): the fast lookup of the ops."""
    return _BY_BASE_ACT[(base, activation if base == "rnn" else None)]


def kernel_id(base: str, activation: str | None = None) -> int:
    """The compiled kernels' id of ``{base}_forward`` with that activation (SimpleRNN only)."""
    return by_base(base, activation).kernel_id


def cell_spec(cell: CellLike, activation: str | None = None, *, arg: str = "cell") -> CellSpec:
    """The canonical CellSpec of any spelling of a cell.

    cell: a CellSpec; a kernel id 0-3; or a name, any case: "rnn", "simplernn", "simple_rnn" (a
    SimpleRNN with ``activation``, default "tanh"), "rnn_tanh", "rnn_relu", "lstm", "gru".
    activation: None, or the activation the cell must have: for the SimpleRNN spellings it picks
    tanh or relu; for any other spelling it must agree with the cell's own.
    arg: the argument's name in messages.

    Raises ValueError naming ``arg`` and the accepted values for anything else.
    """
    if type(cell) is CellSpec:
        spec = cell
    elif isinstance(cell, str):
        key = cell.lower()
        if key not in _BY_NAME:
            raise ValueError(f"{arg}: unknown cell {cell!r}; expected one of {_ACCEPTED}")
        spec = _BY_NAME[key]
        if spec is None:  # a SimpleRNN spelled without its activation
            act = "tanh" if activation is None else activation
            if act not in ACTIVATIONS:
                raise ValueError(f"{arg}: a SimpleRNN's activation must be 'tanh' or 'relu', got {act!r}")
            return _BY_BASE_ACT[("rnn", act)]
    elif isinstance(cell, (int, np.integer)) and not isinstance(cell, (bool, np.bool_)):
        if not 0 <= int(cell) < len(CELLS):
            raise ValueError(f"{arg}: unknown cell {cell!r}; expected one of {_ACCEPTED}")
        spec = CELLS[int(cell)]
    else:
        raise ValueError(f"{arg}: unknown cell {cell!r} ({type(cell).__name__}); expected one of {_ACCEPTED}")
    if activation is not None and activation != spec.activation:
        raise ValueError(f"{arg}: cell {spec.name!r} has activation {spec.activation!r}, got activation={activation!r}")
    return spec
