"""``torch.nn`` modules on fastrnn's kernels: drop-in ``LSTM``, ``GRU`` and ``RNN``.

    import fastrnn.torch as frt
    lstm = frt.LSTM(input_size, hidden_size, num_layers=2, batch_first=True, bidirectional=True)
    lstm.load_state_dict(torch_lstm.state_dict())   # the parameters and state_dict of torch.nn.LSTM
    output, (h_n, c_n) = lstm(x)                     # the forward of torch.nn.LSTM

The constructor arguments, parameter names (``weight_ih_l{k}[_reverse]``, ``weight_hh_...``,
``bias_ih_...``, ``bias_hh_...``), their initialisation, the ``state_dict`` layout and the forward
(padded or ``PackedSequence`` input, batched or unbatched, optional initial states; outputs
``output, h_n`` or ``output, (h_n, c_n)``, h_n [num_layers * num_directions, B, H]) are those of
``torch.nn.LSTM`` / ``GRU`` / ``RNN``. ``proj_size`` is not supported. ``bias=False`` registers no
bias parameters (the kernels get zero biases). ``dropout`` applies between layers in training mode
only, like torch.

How it runs: each (layer, direction) is one call of the kernels. Under ``torch.compile`` that call
is the custom operator ``fastrnn::rnn_layer`` (``torch.library.custom_op`` with a fake
implementation and a registered autograd formula, whose backward is the custom operator
``fastrnn::rnn_layer_backward``), so the compiler traces through the modules without a graph
break; the operator returns what backward needs as extra tensors. Eager calls take a plain
``torch.autograd.Function`` over the same kernels, which keeps the training cache on the autograd
node (less dispatch per call; the cache's buffers return to fastrnn's buffer pool when the graph is
freed).

  * CPU float32: the C++ kernels, with the tensors passed as zero-copy NumPy views. The training
    forward's saved activations come back as extra (non-differentiable) outputs of the operator,
    saved for backward by autograd.
  * CPU float64: the NumPy reference (``fastrnn.reference``), so ``torch.autograd.gradcheck`` runs;
    its backward runs the reference forward again for the activations.
  * CUDA tensors: DLPack to CuPy and ``fastrnn.ops`` on the GPU (the CUDA kernels for float32 when
    built, else the reference on the GPU); backward runs the forward again. Needs CuPy.

The kernels keep LSTM's and SimpleRNN's two torch biases as one (b = b_ih + b_hh): the modules add
them with torch ops, so autograd gives both the same gradient, as torch does. The forward saves
activations (training=True) only when grad mode is on and an input or parameter requires grad;
``model.eval()`` only turns dropout off, backward works in both modes.

``import fastrnn`` does not import this module (nor torch); import ``fastrnn.torch`` explicitly.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from . import _cells
from . import ops as _ops
from . import reference as _reference
from ._kernel_cache import KernelCache

__all__ = ["GRU", "LSTM", "RNN", "RNNBase"]

# the custom operators' schemas are inferred from their annotations at run time (on Python 3.9 too)
_OptTensor = Optional[Tensor]

# the cell of each kernel id (fastrnn._cells.CELLS order: rnn_tanh, rnn_relu, lstm, gru)
_CELLS = _cells.CELLS


# --------------------------------------------------------------------------- array conversion

def _kernel_path(x: Tensor) -> bool:
    """True where the C++ kernels run (CPU float32); else the recompute path (float64, CUDA)."""
    return x.device.type == "cpu" and x.dtype == torch.float32


def _np(t: Tensor | None):
    """A NumPy view of a CPU tensor (a copy only when it is not contiguous)."""
    if t is None:
        return None
    return t.detach().contiguous().numpy()


def _xp(t: Tensor | None):
    """The array of a tensor for fastrnn: a NumPy view on the CPU, a CuPy view (DLPack) on CUDA."""
    if t is None:
        return None
    if t.device.type == "cpu":
        return _np(t)
    import cupy

    return cupy.from_dlpack(t.detach().contiguous())


def _tensor(a) -> Tensor:
    """A tensor over a NumPy (zero-copy) or CuPy (DLPack) array."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


class _cupy_stream:
    """On CUDA: CuPy runs on torch's current stream of the device (no cross-stream races)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ctx = None

    def __enter__(self):
        if self.device.type == "cuda":
            import cupy

            dev = self.device.index if self.device.index is not None else torch.cuda.current_device()
            stream = torch.cuda.current_stream(dev)
            self.ctx = cupy.cuda.ExternalStream(stream.cuda_stream, dev)
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def _public_forward(spec, x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, reverse, batch_first, training):
    """{cell}_forward of fastrnn.ops (CuPy arrays) or fastrnn.reference (NumPy float64)."""
    mod = _reference if isinstance(x, np.ndarray) else _ops
    kw = dict(h0=h0, mask=mask, reverse=reverse, batch_first=batch_first, training=training)
    if spec.base == "lstm":
        return mod.lstm_forward(x, w_ih, w_hh, b_ih, c0=c0, **kw)
    if spec.base == "gru":
        return mod.gru_forward(x, w_ih, w_hh, b_ih, b_hh, **kw)
    return mod.rnn_forward(x, w_ih, w_hh, b_ih, nonlinearity=spec.activation, **kw)


def _public_backward(spec, cache, dy, dh_n, dc_n):
    """{cell}_backward of fastrnn.ops (any cache: reference, CUDA; dy and the states may be None)."""
    if spec.base == "lstm":
        return _ops.lstm_backward(cache, dy, (dh_n, dc_n))
    return getattr(_ops, f"{spec.base}_backward")(cache, dy, dh_n)


class _SavedCache(KernelCache):
    """A KernelCache over arrays that tensors saved by autograd own: never given to the buffer pool."""

    __slots__ = ()

    def __del__(self):
        pass


# --------------------------------------------------------------------------- the custom operators

def _shapes(x: Tensor, w_hh: Tensor, batch_first: bool):
    if batch_first:
        B, T, I = x.shape
    else:
        T, B, I = x.shape
    H = w_hh.shape[1]
    return T, B, I, H, w_hh.shape[0] // H


_N_SAVED = 6
#: Eager calls run _Layer (a plain autograd.Function); False sends them through the custom operator
#: as well (the tests compare both).
_EAGER_FUNCTION = True  # x, w_ih, w_hh (the kernels' private copies), gates, h_prev, aux


@torch.library.custom_op("fastrnn::rnn_layer", mutates_args=())
def _rnn_layer(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: _OptTensor, h0: _OptTensor,
               c0: _OptTensor, mask: _OptTensor, cell: int, reverse: bool, batch_first: bool,
               training: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One direction of one layer: (y, h_n, c_n, *saved). c_n is empty for cells without a cell
    state; saved (what backward reads) is empty unless training on the C++ kernels."""
    spec = _CELLS[cell]

    def empty():  # a new one each time: outputs may not alias each other
        return x.new_empty(0)

    if _kernel_path(x):
        y, state, cache = _ops._run_forward(
            spec, _np(x), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh), _np(h0), _np(c0), _np(mask),
            reverse, batch_first, training)
        h_n, c_n = state if spec.n_states == 2 else (state, None)
        out = [torch.from_numpy(y), torch.from_numpy(h_n), empty() if c_n is None else torch.from_numpy(c_n)]
        if cache is None:
            return (*out, *(empty() for _ in range(_N_SAVED)))
        saved = [torch.from_numpy(getattr(cache, name)) if getattr(cache, name) is not None else empty()
                 for name in ("x", "w_ih", "w_hh", "gates", "h_prev", "aux")]
        del cache  # its arrays live on in the saved tensors
        return (*out, *saved)
    with _cupy_stream(x.device):
        y, state, _ = _public_forward(spec, _xp(x), _xp(w_ih), _xp(w_hh), _xp(b_ih), _xp(b_hh), _xp(h0), _xp(c0),
                                      _xp(mask), reverse, batch_first, False)
        h_n, c_n = state if spec.n_states == 2 else (state, None)
        # fresh tensors: a custom operator's outputs may not alias its inputs
        out = [_tensor(y).clone(), _tensor(h_n).clone(), empty() if c_n is None else _tensor(c_n).clone()]
    return (*out, *(empty() for _ in range(_N_SAVED)))


@_rnn_layer.register_fake
def _rnn_layer_fake(x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, cell, reverse, batch_first, training):
    spec = _CELLS[cell]
    T, B, _, H, G = _shapes(x, w_hh, batch_first)

    def empty():
        return x.new_empty(0)

    y = x.new_empty((B, T, H) if batch_first else (T, B, H))
    out = [y, x.new_empty(B, H), x.new_empty(B, H) if spec.n_states == 2 else empty()]
    if not (training and _kernel_path(x)):
        return (*out, *(empty() for _ in range(_N_SAVED)))
    n = T * B
    aux = empty() if spec.aux is None else x.new_empty(n, H)
    return (*out, x.new_empty(x.shape), w_ih.new_empty(w_ih.shape), w_hh.new_empty(w_hh.shape),
            x.new_empty(n, G * H), x.new_empty(n, H), aux)


@torch.library.custom_op("fastrnn::rnn_layer_backward", mutates_args=())
def _rnn_layer_backward(dy: _OptTensor, dh_n: _OptTensor, dc_n: _OptTensor, x: Tensor, w_ih: Tensor, w_hh: Tensor,
                        b_ih: _OptTensor, b_hh: _OptTensor, h0: _OptTensor,
                        c0: _OptTensor, mask: _OptTensor, saved: list[Tensor], cell: int,
                        reverse: bool, batch_first: bool, need_dx: bool
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh); dx is empty unless need_dx, dc0 and db_hh are
    empty for the cells without them. On the C++ kernels ``saved`` is what the forward returned
    (x, w_ih and w_hh are then the kernels' copies); elsewhere the forward runs again."""
    spec = _CELLS[cell]
    if _kernel_path(x):
        xs, wi, wh, gates, hprev, aux = (_np(t) for t in saved)
        T, B, I, H, _ = _shapes(x, w_hh, batch_first)
        mask_u8 = None if mask is None else np.ascontiguousarray(_np(mask), dtype=np.uint8)
        cache = _SavedCache(spec, xs, wi, wh, mask_u8, reverse, batch_first, gates, hprev,
                            None if spec.aux is None else aux, T, B, I, H)
        g = cache.run_backward(_np(dy), _np(dh_n), _np(dc_n), 0, need_dx)
        conv = torch.from_numpy
    else:
        with _cupy_stream(x.device):
            _, _, cache = _public_forward(spec, _xp(x), _xp(w_ih), _xp(w_hh), _xp(b_ih), _xp(b_hh), _xp(h0),
                                          _xp(c0), _xp(mask), reverse, batch_first, True)
            g = _public_backward(spec, cache, _xp(dy), _xp(dh_n), _xp(dc_n))
        conv = _tensor
    biases = [g[name] for name in spec.bias_names] + [None] * (2 - len(spec.bias_names))
    grads = [g["x"] if need_dx else None, g["h0"], g.get("c0"), g["w_ih"], g["w_hh"], *biases]
    return tuple(x.new_empty(0) if a is None else conv(a) for a in grads)


@_rnn_layer_backward.register_fake
def _rnn_layer_backward_fake(dy, dh_n, dc_n, x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, saved, cell, reverse,
                             batch_first, need_dx):
    spec = _CELLS[cell]
    _, B, _, H, G = _shapes(x, w_hh, batch_first)
    return (x.new_empty(x.shape) if need_dx else x.new_empty(0), x.new_empty(B, H),
            x.new_empty(B, H) if spec.n_states == 2 else x.new_empty(0), x.new_empty(w_ih.shape),
            x.new_empty(w_hh.shape), x.new_empty(G * H),
            x.new_empty(G * H) if spec.base == "gru" else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, cell, reverse, batch_first, training = inputs
    ctx.opts = (cell, reverse, batch_first, training)
    ctx.has = (h0 is not None, c0 is not None, b_hh is not None)
    ctx.kernel = _kernel_path(x)
    if ctx.kernel:  # what backward reads: the saved outputs (x, w_ih, w_hh are the kernels' copies)
        ctx.save_for_backward(mask, *output[3:])
    else:  # the forward runs again in backward
        ctx.save_for_backward(mask, x, w_ih, w_hh, b_ih, b_hh, h0, c0)


def _backward(ctx, dy, dh_n, dc_n, *_saved_grads):
    cell, reverse, batch_first, training = ctx.opts
    if not training:
        raise RuntimeError("fastrnn::rnn_layer: backward of a forward run with training=False (nothing saved)")
    mask, *s = ctx.saved_tensors
    if ctx.kernel:
        saved = s
        x, w_ih, w_hh = s[0], s[1], s[2]
        b_ih = b_hh = h0 = c0 = None
    else:
        saved = []
        x, w_ih, w_hh, b_ih, b_hh, h0, c0 = s
    spec = _CELLS[cell]
    if spec.n_states != 2:
        dc_n = None
    need = ctx.needs_input_grad
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = _rnn_layer_backward(
        dy, dh_n, dc_n, x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, saved, cell, reverse, batch_first, bool(need[0]))
    has_h0, has_c0, has_bhh = ctx.has
    return (dx if need[0] else None, dw_ih, dw_hh, db_ih, db_hh if has_bhh else None, dh0 if has_h0 else None,
            dc0 if has_c0 else None, None, None, None, None, None)


_rnn_layer.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- the eager path

class _Layer(torch.autograd.Function):
    """fastrnn::rnn_layer's eager twin: the same kernels, with the training cache held by the
    autograd node instead of returned as tensors. Eager calls take it (less dispatch per call;
    the cache's buffers go back to fastrnn's buffer pool when the graph is freed, and the float64
    and CUDA paths need no second forward); under torch.compile the modules call the custom
    operator. Returns (y, h_n) or (y, h_n, c_n)."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, cell, reverse, batch_first, training):
        spec = _CELLS[cell]
        ctx.set_materialize_grads(False)  # unused outputs reach the kernels as None (zeros)
        ctx.spec, ctx.has, ctx.dev = spec, (h0 is not None, c0 is not None, b_hh is not None), x.device
        if _kernel_path(x):
            ctx.kernel = True
            y, state, cache = _ops._run_forward(
                spec, _np(x), _np(w_ih), _np(w_hh), _np(b_ih), _np(b_hh), _np(h0), _np(c0), _np(mask),
                reverse, batch_first, training)
            conv = torch.from_numpy
        else:
            ctx.kernel = False
            with _cupy_stream(x.device):
                y, state, cache = _public_forward(spec, _xp(x), _xp(w_ih), _xp(w_hh), _xp(b_ih), _xp(b_hh),
                                                  _xp(h0), _xp(c0), _xp(mask), reverse, batch_first, training)
            conv = _tensor
        ctx.cache = cache  # None unless training; kept until the graph is freed (retain_graph works)
        states = state if spec.n_states == 2 else (state,)
        return (conv(y), *(conv(s) for s in states))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dh_n, dc_n=None):
        cache = ctx.cache
        if cache is None:
            raise RuntimeError("fastrnn.torch: backward of a forward run without training (nothing saved)")
        spec = ctx.spec
        need_dx = bool(ctx.needs_input_grad[0])
        if ctx.kernel:
            g = _ops._run_backward(cache, _np(dy), _np(dh_n), _np(dc_n), None, need_dx)
            conv = torch.from_numpy
        else:
            with _cupy_stream(ctx.dev):
                g = _public_backward(spec, cache, _xp(dy), _xp(dh_n), _xp(dc_n))
            conv = _tensor
        has_h0, has_c0, has_bhh = ctx.has
        biases = [g[name] for name in spec.bias_names]
        out = [g["x"] if need_dx else None, g["w_ih"], g["w_hh"], biases[0],
               biases[1] if has_bhh and len(biases) == 2 else None, g["h0"] if has_h0 else None,
               g.get("c0") if has_c0 else None]
        return (*(None if a is None else conv(a) for a in out), None, None, None, None, None)


# --------------------------------------------------------------------------- the modules

_MODES = {"LSTM": _cells.LSTM, "GRU": _cells.GRU, "RNN_TANH": _cells.RNN_TANH, "RNN_RELU": _cells.RNN_RELU}


class RNNBase(torch.nn.Module):
    """The common part of :class:`LSTM`, :class:`GRU` and :class:`RNN` (torch.nn.RNNBase's
    constructor, parameters and checks; the forward on fastrnn's kernels)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__()
        name = type(self).__name__
        if proj_size:
            raise ValueError(f"fastrnn.torch.{name}: proj_size={proj_size} is not supported (fastrnn's LSTM has no "
                             "projection); use torch.nn.LSTM for projected LSTMs")
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if not isinstance(hidden_size, int) or isinstance(hidden_size, bool):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size <= 0:
            raise ValueError("input_size must be a positive int")
        if dropout > 0 and num_layers == 1:
            import warnings

            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                          stacklevel=2)
        self.mode = mode
        self.spec = _MODES[mode]
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.proj_size = bool(bidirectional), 0
        kw = {"device": device, "dtype": dtype}
        D = 2 if bidirectional else 1
        gate_size = self.spec.gates * hidden_size
        self._flat_weights_names: list[str] = []
        for k in range(num_layers):
            for d in range(D):
                i = input_size if k == 0 else hidden_size * D
                sfx = f"_l{k}" + ("_reverse" if d else "")
                params = [("weight_ih", (gate_size, i)), ("weight_hh", (gate_size, hidden_size))]
                if bias:
                    params += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                for pname, shape in params:
                    setattr(self, pname + sfx, torch.nn.Parameter(torch.empty(shape, **kw)))
                    self._flat_weights_names.append(pname + sfx)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)]."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            torch.nn.init.uniform_(w, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """Nothing to do (torch's cuDNN weight flattening has no counterpart here)."""

    @property
    def all_weights(self) -> list[list[torch.nn.Parameter]]:
        per = 4 if self.bias else 2
        ws = [getattr(self, n) for n in self._flat_weights_names]
        return [ws[i:i + per] for i in range(0, len(ws), per)]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    # ----------------------------------------------------------------------- forward

    def _layer_weights(self, k: int, d: int):
        sfx = f"_l{k}" + ("_reverse" if d else "")
        w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
        if self.bias:
            b_ih, b_hh = getattr(self, "bias_ih" + sfx), getattr(self, "bias_hh" + sfx)
        else:
            b_ih = b_hh = w_ih.new_zeros(w_ih.shape[0])
        if self.spec.base == "gru":
            return w_ih, w_hh, b_ih, b_hh
        return w_ih, w_hh, (b_ih + b_hh) if self.bias else b_ih, None  # the kernels' one bias

    def _check_hidden(self, h: Tensor, expected: tuple[int, ...], what: str) -> None:
        if tuple(h.shape) != expected:
            raise RuntimeError(f"Expected {what} size {expected}, got {list(h.shape)}")

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            x, lengths = torch.nn.utils.rnn.pad_packed_sequence(input, batch_first=self.batch_first)
            batched = True
        else:
            x = input
            if x.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {x.dim()}D input "
                                 "instead")
            batched = x.dim() == 3
        bdim = 0 if self.batch_first else 1
        if not batched:
            x = x.unsqueeze(bdim)
        if x.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {x.shape[-1]}")
        w0 = self.weight_ih_l0
        if x.dtype != w0.dtype:
            raise RuntimeError(f"input must have the type {w0.dtype}, got type {x.dtype}")
        B = x.shape[bdim]
        D = 2 if self.bidirectional else 1
        L, H = self.num_layers, self.hidden_size
        lstm = self.spec.n_states == 2
        h0 = c0 = None
        if hx is not None:
            if lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise RuntimeError("LSTM: hx must be a tuple (h_0, c_0)")
                h0, c0 = hx
            else:
                h0 = hx
            states = [h0, c0] if lstm else [h0]
            for s in states:
                want = 3 if batched else 2
                if s.dim() != want:
                    raise RuntimeError(f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, hx "
                                       f"should also be {want}-D but got {s.dim()}-D tensor")
            if not batched:
                h0 = h0.unsqueeze(1)
                c0 = c0.unsqueeze(1) if lstm else None
            self._check_hidden(h0, (L * D, B, H), "hidden[0]" if lstm else "hidden")
            if lstm:
                self._check_hidden(c0, (L * D, B, H), "hidden[1]")
        mask = None
        if lengths is not None:
            T = x.shape[1 if self.batch_first else 0]
            mask = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
        training = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
            or (h0 is not None and h0.requires_grad) or (c0 is not None and c0.requires_grad))
        kid = self.spec.kernel_id
        hs, cs = [], []
        layer_in = x
        for k in range(L):
            ys = []
            for d in range(D):
                idx = k * D + d
                w_ih, w_hh, b_ih, b_hh = self._layer_weights(k, d)
                args = (layer_in, w_ih, w_hh, b_ih, b_hh, None if h0 is None else h0[idx],
                        None if c0 is None else c0[idx], mask, kid, d == 1, self.batch_first, training)
                if _EAGER_FUNCTION and not torch.compiler.is_compiling():
                    out = _Layer.apply(*args)
                    out = out if lstm else (*out, None)
                else:
                    out = _rnn_layer(*args)
                ys.append(out[0])
                hs.append(out[1])
                cs.append(out[2])
            layer_in = ys[0] if D == 1 else torch.cat(ys, dim=-1)
            if self.dropout and self.training and k < L - 1:
                layer_in = torch.nn.functional.dropout(layer_in, self.dropout, training=True)
        output = layer_in
        h_n = torch.stack(hs, 0)
        c_n = torch.stack(cs, 0) if lstm else None
        if packed:
            si = input.sorted_indices
            ys_sorted = output if si is None else output.index_select(bdim, si)
            lens = lengths if si is None else lengths[si.cpu()]
            data = torch.nn.utils.rnn.pack_padded_sequence(ys_sorted, lens, batch_first=self.batch_first,
                                                           enforce_sorted=True).data
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif not batched:
            output = output.squeeze(bdim)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        return (output, (h_n, c_n)) if lstm else (output, h_n)


class LSTM(RNNBase):
    """``torch.nn.LSTM`` on fastrnn's kernels (same arguments, parameters, state_dict and forward;
    ``proj_size`` is refused). Returns ``output, (h_n, c_n)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)


class GRU(RNNBase):
    """``torch.nn.GRU`` on fastrnn's kernels (same arguments, parameters, state_dict and forward).
    Returns ``output, h_n``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype)


class RNN(RNNBase):
    """``torch.nn.RNN`` (Elman, ``nonlinearity`` 'tanh' or 'relu') on fastrnn's kernels (same
    arguments, parameters, state_dict and forward). Returns ``output, h_n``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype)
