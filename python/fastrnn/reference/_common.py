"""Helpers shared by the reference cells and the ops layer: argument checks, masks, layouts, truncation.

The checks here define what every functional entry point (``fastrnn.reference`` and ``fastrnn.ops``)
accepts; ops imports them so both reject bad input with the same exceptions and messages.

Public helpers
--------------
check_forward_args(cell, x, w_ih, w_hh, biases, h0=None, c0=None, lengths=None, mask=None,
                   batch_first=True, reverse=False, training=True, nonlinearity="tanh") -> ForwardSpec
check_backward_args(cell, cache, dy, dstate, bptt_steps) -> (dy_tm, dh_n, dc_n, bptt_steps)
check_bptt_steps(bptt_steps) -> int or None
to_time_major(a, batch_first) / from_time_major(a, batch_first)
step_times(T, reverse) -> list of t in processing order
cuts_gradient(s, bptt_steps) -> bool
sigmoid(xp, z)
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _cells
from .._cache import Cache
from ..backend import array_module

#: Gates per cell (by the base name of its functions): rows of w_ih / w_hh are G*H.
GATES: dict[str, int] = {s.base: s.gates for s in _cells.CELLS}
#: Bias argument names per cell, in signature order.
BIAS_NAMES: dict[str, tuple[str, ...]] = {s.base: s.bias_names for s in _cells.CELLS}
#: Dtypes the references accept (results have x's dtype).
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
NONLINEARITIES: tuple[str, ...] = _cells.ACTIVATIONS


class _DefaultActivation(str):
    """The default of ``rnn_forward``'s nonlinearity: the str "tanh", told apart (by identity) from
    a "tanh" the caller gave, so that activation= and nonlinearity= can be checked against each
    other."""

    __slots__ = ()


#: rnn_forward's default nonlinearity ("tanh").
DEFAULT_ACTIVATION = _DefaultActivation("tanh")

#: The arrays of the references: float32 or float64 NumPy arrays (CuPy arrays go where these go).
FloatArray = NDArray[np.floating]
#: lengths (int [B]) or mask (bool or 0/1 [B, T]): arrays or nested sequences.
Steps = Optional[ArrayLike]
#: The gradient dict of ``{cell}_backward``.
Grads = dict[str, FloatArray]


class ForwardSpec(NamedTuple):
    """What check_forward_args learned about a forward call.

    T, B, I, H, G: steps, batch, input features, hidden units, gates.
    dtype: the common floating dtype (float32 or float64) of x, the weights, biases and states.
    xp: the array module (numpy or cupy) of x.
    mask: bool array [T, B] (time-major), True where a step is valid; None when neither lengths
        nor mask was given (every step valid). Built from lengths (t < lengths[b]) or from mask.
    lengths: the validated lengths as an int64 array [B] of module xp, or None when not given.
    """

    T: int
    B: int
    I: int
    H: int
    G: int
    dtype: Any
    xp: Any
    mask: Any | None
    lengths: Any | None


# --------------------------------------------------------------------------- small utilities

def _is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or (_is_cupy(a) and hasattr(a, "dtype") and hasattr(a, "shape"))


def _kind(a) -> str:
    return "cupy.ndarray" if _is_cupy(a) else ("numpy.ndarray" if isinstance(a, np.ndarray) else type(a).__name__)


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def check_flag(fn: str, name: str, value) -> bool:
    """A bool option (Python or NumPy bool); TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__} ({value!r})")


def check_array(fn: str, name: str, a, shape, dtype, xp):
    """Check one float array: an array of module xp with the given shape and dtype.

    shape is a tuple of ints; dtype the expected numpy dtype. Raises TypeError for the wrong kind of
    object, the wrong array module or dtype, and ValueError for the wrong shape.
    """
    if type(a) is np.ndarray and xp is np and a.dtype == dtype and a.shape == tuple(shape):
        return a  # the common case, without the calls below (they are for the messages)
    if not _is_array(a):
        raise TypeError(f"{fn}: {name} must be a numpy or cupy array, got {_kind(a)}")
    if array_module(a) is not xp:
        raise TypeError(
            f"{fn}: {name} must be a {xp.__name__} array like x, got {_kind(a)} (do not mix numpy and cupy)"
        )
    if a.dtype != dtype:
        raise TypeError(f"{fn}: {name} must have dtype {np.dtype(dtype).name} (the dtype of x), got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(
            f"{fn}: {name} must have shape {_shape_str(shape)}, got {_shape_str(a.shape)}"
        )
    return a


def check_bptt_steps(bptt_steps, fn: str = "backward"):
    """None, or a positive int; returns it as a Python int (or None)."""
    if bptt_steps is None:
        return None
    if isinstance(bptt_steps, (bool, np.bool_)) or not isinstance(bptt_steps, (int, np.integer)):
        raise TypeError(f"{fn}: bptt_steps must be None or a positive int, got {type(bptt_steps).__name__}")
    if bptt_steps < 1:
        raise ValueError(f"{fn}: bptt_steps must be None or a positive int, got {int(bptt_steps)}")
    return int(bptt_steps)


def check_nonlinearity(nonlinearity, fn: str = "rnn_forward", name: str = "nonlinearity") -> str:
    """'tanh' or 'relu' (name: the argument in messages)."""
    if not isinstance(nonlinearity, str):
        raise TypeError(f"{fn}: {name} must be 'tanh' or 'relu', got {type(nonlinearity).__name__}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"{fn}: {name} must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity


def resolve_activation(fn: str, activation, nonlinearity):
    """The activation of ``rnn_forward`` from its two spellings: ``activation=`` (the layers' name)
    and ``nonlinearity=`` (the older one, kept as an alias). ValueError when both are given and
    differ. A value given as activation= is checked here (messages name activation); one given as
    nonlinearity= is checked by check_forward_args, as before."""
    if activation is None:
        return "tanh" if nonlinearity is DEFAULT_ACTIVATION else nonlinearity
    if nonlinearity is not DEFAULT_ACTIVATION and nonlinearity != activation:
        raise ValueError(f"{fn}: activation={activation!r} and nonlinearity={nonlinearity!r} differ "
                         f"(nonlinearity is another name for activation: give one)")
    check_nonlinearity(activation, fn, "activation")
    return activation


def _as_xp(fn: str, name: str, a, xp):
    """Lengths/mask may be lists or arrays; an array of the other module is refused."""
    if _is_array(a):
        if array_module(a) is not xp:
            raise TypeError(
                f"{fn}: {name} must be a {xp.__name__} array like x, got {_kind(a)} (do not mix numpy and cupy)"
            )
        return a
    try:
        host = np.asarray(a)
    except Exception as exc:
        raise TypeError(f"{fn}: {name} must be an array or a sequence, got {type(a).__name__}") from exc
    if host.dtype == object:
        raise TypeError(f"{fn}: {name} must be an array of numbers, got {type(a).__name__} of objects")
    return xp.asarray(host)


def lengths_to_mask(xp, lengths, T: int):
    """bool [T, B] with mask[t, b] = t < lengths[b]."""
    return xp.arange(T)[:, None] < lengths[None, :]


def check_lengths(fn: str, lengths, T: int, B: int, xp):
    """Validated lengths: a 1-D integer array of size B with 0 <= lengths[b] <= T, as int64 of module xp."""
    lengths = _as_xp(fn, "lengths", lengths, xp)
    if lengths.size == 0:  # before the dtype: an empty list is float64 to NumPy
        raise ValueError(f"{fn}: lengths must have shape [{B}] (one length per batch row), "
                         f"got an empty array of shape {_shape_str(lengths.shape)}")
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"{fn}: lengths must be an integer array, got dtype {lengths.dtype}")
    if lengths.ndim != 1 or lengths.shape[0] != B:
        raise ValueError(f"{fn}: lengths must have shape [{B}] (one length per batch row), "
                         f"got {_shape_str(lengths.shape)}")
    lengths = lengths.astype(np.int64)
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 0 or hi > T:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{fn}: lengths must be in [0, T={T}], got a length of {bad}")
    return lengths


def check_mask(fn: str, mask, T: int, B: int, xp):
    """Validated mask: [B, T] of bools (or numbers that are all 0 or 1); returned as bool [T, B]."""
    mask = _as_xp(fn, "mask", mask, xp)
    if mask.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: mask must be a bool (or 0/1) array, got dtype {mask.dtype}")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"{fn}: mask must have shape [B, T] = [{B}, {T}], got {_shape_str(mask.shape)}")
    return xp.ascontiguousarray(zero_one_as_bool(fn, mask).T)


def zero_one_as_bool(fn: str, mask):
    """A bool mask from bools, or from numbers that must all be 0 or 1 (ValueError otherwise)."""
    if mask.dtype.kind == "b":
        return mask
    if mask.size and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{fn}: mask must contain only 0/1 (or bool) values")
    return mask != 0


# --------------------------------------------------------------------------- the forward check

def check_forward_args(cell, x, w_ih, w_hh, biases, h0=None, c0=None, lengths=None, mask=None,
                       batch_first=True, reverse=False, training=True, nonlinearity="tanh",
                       recurrent_mask=None) -> ForwardSpec:
    """Validate the arguments of ``{cell}_forward`` and return a ForwardSpec.

    cell: 'rnn', 'lstm' or 'gru'. biases: a tuple, (b,) for rnn and lstm, (b_ih, b_hh) for gru.
    c0 must be None unless cell == 'lstm'; nonlinearity is checked only for 'rnn'.

    Rules: x is a float32/float64 numpy or cupy array of rank 3 ([B,T,I] if batch_first else [T,B,I])
    with no zero-size dimension; w_ih [G*H, I], w_hh [G*H, H] (H >= 1), each bias [G*H]; h0/c0 None or
    [B, H]; recurrent_mask None or [B, H]; all of x's dtype and array module. lengths: 1-D integers
    of size B in [0, T]; mask: [B, T]
    bool or 0/1; not both. Raises TypeError (wrong kind of object, dtype, array module) or ValueError
    (shape, value, option), each naming the argument, the expected and the received value.
    """
    if cell not in GATES:
        raise ValueError(f"unknown cell {cell!r}; expected one of {sorted(GATES)}")
    fn = f"{cell}_forward"
    G = GATES[cell]
    if batch_first is not True and batch_first is not False:  # (the common case skips the calls)
        batch_first = check_flag(fn, "batch_first", batch_first)
    if reverse is not True and reverse is not False:
        check_flag(fn, "reverse", reverse)
    if training is not True and training is not False:
        check_flag(fn, "training", training)
    if cell == "rnn":
        check_nonlinearity(nonlinearity, fn)

    if not _is_array(x):
        raise TypeError(f"{fn}: x must be a numpy or cupy array, got {_kind(x)}")
    xp = np if type(x) is np.ndarray else array_module(x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: x must have dtype float32 or float64, got {x.dtype}")
    dtype = x.dtype
    if x.ndim != 3:
        layout = "[B, T, I] (batch_first=True)" if batch_first else "[T, B, I] (batch_first=False)"
        raise ValueError(f"{fn}: x must have rank 3, shape {layout}, got shape {_shape_str(x.shape)}")
    if batch_first:
        B, T, I = (int(s) for s in x.shape)
    else:
        T, B, I = (int(s) for s in x.shape)
    if min(T, B, I) == 0:
        raise ValueError(
            f"{fn}: x must not be empty, got shape {_shape_str(x.shape)} (T={T}, B={B}, I={I})"
        )

    if not _is_array(w_hh):
        raise TypeError(f"{fn}: w_hh must be a numpy or cupy array, got {_kind(w_hh)}")
    if w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] != G * w_hh.shape[1]:
        raise ValueError(
            f"{fn}: w_hh must have shape [{G}*H, H] with H >= 1 ({cell} has {G} gate{'s' if G > 1 else ''}), "
            f"got {_shape_str(w_hh.shape)}"
        )
    H = int(w_hh.shape[1])
    check_array(fn, "w_hh", w_hh, (G * H, H), dtype, xp)
    check_array(fn, "w_ih", w_ih, (G * H, I), dtype, xp)

    names = BIAS_NAMES[cell]
    if not isinstance(biases, (tuple, list)) or len(biases) != len(names):
        raise TypeError(f"{fn}: expected the biases ({', '.join(names)})")
    for name, b in zip(names, biases):
        check_array(fn, name, b, (G * H,), dtype, xp)

    if h0 is not None:
        check_array(fn, "h0", h0, (B, H), dtype, xp)
    if c0 is not None:
        if cell != "lstm":
            raise ValueError(f"{fn}: c0 is only for lstm")
        check_array(fn, "c0", c0, (B, H), dtype, xp)
    if recurrent_mask is not None:
        check_array(fn, "recurrent_mask", recurrent_mask, (B, H), dtype, xp)

    if lengths is not None and mask is not None:
        raise ValueError(f"{fn}: give lengths or mask, not both")
    lens = None
    m = None
    if lengths is not None:
        lens = check_lengths(fn, lengths, T, B, xp)
        m = lengths_to_mask(xp, lens, T)
    elif mask is not None:
        m = check_mask(fn, mask, T, B, xp)
    return ForwardSpec(T, B, I, H, G, dtype, xp, m, lens)


# --------------------------------------------------------------------------- the backward check

#: The entries of a reference cache that ``{cell}_backward`` reads (a dict without them is not a cache).
_CACHE_COMMON = ("cell", "T", "B", "I", "H", "dtype", "xp", "reverse", "batch_first", "mask", "x", "w_ih", "w_hh",
                 "h_prev")
CACHE_KEYS: dict[str, tuple[str, ...]] = {
    "rnn": _CACHE_COMMON + ("nonlinearity", "act"),
    "lstm": _CACHE_COMMON + ("c_prev", "gates", "tanh_c"),
    "gru": _CACHE_COMMON + ("gates", "u_n"),
}

def split_dstate(fn, cell, dstate):
    """(dh_n, dc_n, the name dh_n goes by in messages) from ``{cell}_backward``'s dstate: a pair
    (dh_n, dc_n) or None for lstm, one array or None otherwise. The arrays are not checked here."""
    if cell != "lstm":
        return dstate, None, "dstate"
    if dstate is None:
        return None, None, "dstate[0] (dh_n)"
    if isinstance(dstate, (tuple, list)) and len(dstate) == 2:
        return dstate[0], dstate[1], "dstate[0] (dh_n)"
    raise TypeError(f"{fn}: dstate must be None or a pair (dh_n, dc_n), got {_kind(dstate)}")


def check_backward_args(cell, cache, dy, dstate, bptt_steps):
    """Validate the arguments of ``{cell}_backward``.

    cache: the dict from ``{cell}_forward(training=True)`` (ValueError if None or from another cell).
    dy: None or y's shape and dtype. dstate: for rnn/gru None or [B, H]; for lstm None or a pair
    (dh_n, dc_n) where either may be None. bptt_steps: None or a positive int.
    Returns (dy, dh_n, dc_n, bptt_steps) with dy time-major [T, B, H] (zeros when None), dh_n and
    dc_n arrays [B, H] (zeros when None; dc_n is None for rnn/gru) and bptt_steps an int or None.
    """
    fn = f"{cell}_backward"
    if cache is None:
        raise ValueError(
            f"{fn}: cache is None; run {cell}_forward with training=True to get a cache for backward"
        )
    if not isinstance(cache, dict) or "cell" not in cache:
        raise TypeError(f"{fn}: cache must be the dict returned by {cell}_forward, got {type(cache).__name__}")
    if cache["cell"] != cell:
        raise ValueError(f"{fn}: cache comes from {cache['cell']}_forward, not {cell}_forward")
    missing = [k for k in CACHE_KEYS[cell] if k not in cache]
    if missing:
        raise ValueError(f"{fn}: cache is not a cache returned by {cell}_forward(training=True): it has no "
                         f"{', '.join(repr(k) for k in missing)}")
    bptt_steps = check_bptt_steps(bptt_steps, fn)
    T, B, H = cache["T"], cache["B"], cache["H"]
    xp, dtype, batch_first = cache["xp"], cache["dtype"], cache["batch_first"]
    if dy is None:
        dy_tm = xp.zeros((T, B, H), dtype=dtype)
    else:
        check_array(fn, "dy", dy, (B, T, H) if batch_first else (T, B, H), dtype, xp)
        dy_tm = to_time_major(dy, batch_first)

    dh_n, dc_n, name = split_dstate(fn, cell, dstate)
    if cell == "lstm":
        if dc_n is not None:
            check_array(fn, "dstate[1] (dc_n)", dc_n, (B, H), dtype, xp)
        else:
            dc_n = xp.zeros((B, H), dtype=dtype)
    if dh_n is not None:
        check_array(fn, name, dh_n, (B, H), dtype, xp)
    else:
        dh_n = xp.zeros((B, H), dtype=dtype)
    return dy_tm, dh_n, dc_n, bptt_steps


# --------------------------------------------------------------------------- layouts, order, truncation

def to_time_major(a, batch_first: bool):
    """[B, T, F] -> [T, B, F] when batch_first (a view), else a unchanged."""
    return a.transpose(1, 0, 2) if batch_first else a


def from_time_major(a, batch_first: bool):
    """[T, B, F] -> [B, T, F] when batch_first (a contiguous copy), else a unchanged."""
    if batch_first:
        return array_module(a).ascontiguousarray(a.transpose(1, 0, 2))
    return a


def step_times(T: int, reverse: bool):
    """The time index of each processing step s = 0..T-1: t = s, or T-1-s when reversed."""
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def cuts_gradient(s: int, bptt_steps) -> bool:
    """True when the recurrent gradient is zeroed as it goes from processing step s back to s-1.

    That happens when s is a positive multiple of bptt_steps (chunks [0,k), [k,2k), ...);
    bptt_steps None means full BPTT.
    """
    return bptt_steps is not None and s > 0 and s % bptt_steps == 0


def sigmoid(xp, z):
    """Logistic function without overflow: exp is only taken of -|z|."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def masked_input(spec: ForwardSpec, x_tm):
    """x time-major with masked steps set to 0, so values at masked steps are never read."""
    if spec.mask is None:
        return x_tm
    return spec.xp.where(spec.mask[:, :, None], x_tm, 0)


def input_projection(x_tm, w_ih, b):
    """x W_ih^T + b for all steps as one matmul: [T, B, I] -> [T, B, G*H]."""
    T, B, I = x_tm.shape
    return (x_tm.reshape(T * B, I) @ w_ih.T + b).reshape(T, B, w_ih.shape[0])


#: cell -> its reference backward; each cell's module registers its own (so that this module, which
#: the cell modules import, need not import them back)
BACKWARD: dict[str, Any] = {}


def register_backward(cell: str):
    """Decorator: record ``fn`` as the reference backward of ``cell`` (for ReferenceCache.backward)."""
    def deco(fn):
        BACKWARD[cell] = fn
        return fn
    return deco


class ReferenceCache(dict, Cache):
    """The cache of a reference forward: a dict with the keys listed in fastrnn.reference's
    docstring (``cache["x"]``, ``cache.get("h_prev")``, ...), and the fields of
    :class:`fastrnn._cache.Cache` as attributes (``cache.x``, ``cache.h_prev``, ``cache.aux``)."""

    __slots__ = ()

    LAYOUT = "time-major: x [T, B, I], mask bool [T, B], h_prev / aux [T, B, H], gates [T, B, G*H]"

    @property
    def spec(self) -> _cells.CellSpec:
        return _cells.by_base(self["cell"], self.get("nonlinearity"))

    cell = property(lambda self: self["cell"])
    T = property(lambda self: self["T"])
    B = property(lambda self: self["B"])
    I = property(lambda self: self["I"])
    H = property(lambda self: self["H"])
    batch_first = property(lambda self: self["batch_first"])
    reverse = property(lambda self: self["reverse"])
    x = property(lambda self: self["x"])
    w_ih = property(lambda self: self["w_ih"])
    w_hh = property(lambda self: self["w_hh"])
    mask = property(lambda self: self["mask"])
    h_prev = property(lambda self: self["h_prev"])
    recurrent_mask = property(lambda self: self.get("recurrent_mask"))

    @property
    def gates(self):
        return self["act"] if self["cell"] == "rnn" else self["gates"]

    @property
    def aux(self):
        name = self.spec.aux
        return None if name is None else self[name]

    def backward(self, dy, dstate=None, bptt_steps=None, need_dx: bool = True) -> dict:
        """``reference.{cell}_backward(self, ...)``, on the device of a CuPy cache's arrays."""
        fn = BACKWARD[self["cell"]]
        x = self.get("x")
        if _is_cupy(x):
            import cupy

            with cupy.cuda.Device(int(x.device.id)):
                grads = fn(self, dy, dstate=dstate, bptt_steps=bptt_steps)
        else:
            grads = fn(self, dy, dstate=dstate, bptt_steps=bptt_steps)
        if not need_dx:
            grads["x"] = None
        return grads


def base_cache(cell, spec: ForwardSpec, x_tm, weights: dict, reverse: bool, batch_first: bool,
               **options) -> ReferenceCache:
    """The option and argument part of a cache (the cell adds its saved activations)."""
    cache = {
        "cell": cell,
        "T": spec.T, "B": spec.B, "I": spec.I, "H": spec.H,
        "dtype": spec.dtype, "xp": spec.xp,
        "reverse": reverse, "batch_first": batch_first,
        "mask": spec.mask,
        "x": x_tm,
    }
    cache.update(weights)
    cache.update(options)
    return ReferenceCache(cache)


def recurrent_input(h, recurrent_mask):
    """What the recurrent product reads: h, or h * recurrent_mask (recurrent dropout)."""
    return h if recurrent_mask is None else h * recurrent_mask


def recurrent_grad(dz, w_hh, recurrent_mask):
    """The gradient that dz [B, G*H] sends back through the recurrent product, dz W_hh (times
    recurrent_mask under recurrent dropout)."""
    d = dz @ w_hh
    return d if recurrent_mask is None else d * recurrent_mask


def step_valid(mask, t: int):
    """bool [B, 1]: which rows are valid at time t, or None when every step is valid."""
    return None if mask is None else mask[t][:, None]


def select(xp, valid, a, b):
    """a where the row is valid, else b (a when valid is None). A select, not a product: NaN/Inf in
    the unselected operand do not leak."""
    return a if valid is None else xp.where(valid, a, b)
