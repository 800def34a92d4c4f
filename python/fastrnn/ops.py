"""Functional kernels: the C++ (AVX2 / AVX-512) implementations behind the signatures of
:mod:`fastrnn.reference`, so the two are interchangeable in user code and tests (``matmul``, the
layers' dense product, has no reference twin: numpy's ``@`` is its reference).

    y, h_n, cache        = rnn_forward(x, w_ih, w_hh, b, h0=None, lengths=None, mask=None,
                                       reverse=False, batch_first=True, training=True, nonlinearity="tanh",
                                       *, activation=None)   # activation=: nonlinearity's other name
    y, (h_n, c_n), cache = lstm_forward(x, w_ih, w_hh, b, h0=None, c0=None, ...)
    y, h_n, cache        = gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, ...)
    grads = {rnn,lstm,gru}_backward(cache, dy, dstate=None, bptt_steps=None)

What the kernels accept (checked before any kernel runs, with the same messages as the references):
  * NumPy arrays of dtype float32 (the references also take float64; a float64 array here raises
    TypeError). Non-contiguous arrays are copied; lists are refused.
  * CuPy arrays return CuPy arrays. float32 runs the CUDA kernels (fastrnn._cuda, via
    fastrnn._cuda_ops) when the CUDA module is built and its kernels run on x's device
    (fastrnn.backend.cuda_kernels_available(device)); float64, a build without the module, or a
    GPU the build has no kernel image for, runs the CuPy-compatible reference on the GPU. Every
    array argument (lengths and mask included) must be on x's device; the checks, copies and
    outputs are made on that device whatever the current one is. backward follows the cache it
    is given.
  * ``matmul(a, b)`` is ``a @ b`` on fastrnn's own GEMM for float32 NumPy operands (numpy's or
    CuPy's ``@`` for anything else); the layers use it for their dense products.
  * ``out=`` (keyword only, forward): an array for y, float32, C-contiguous, writeable, of y's shape.
  * ``recurrent_mask=`` (keyword only, forward): recurrent dropout, [B, H] of x's dtype and array
    module, or None. The recurrent product reads h * recurrent_mask at every step (inside the
    kernels' time loop: one [B, H] multiply per step), and backward masks its gradient the same
    way (see fastrnn.reference for the equations).
NaN and Inf are not checked: in valid steps they propagate through the arithmetic like in the
references (sigmoid/tanh of NaN is NaN; +-Inf saturate). Values at masked positions are never
read: NaN padding changes no output and no gradient.

The training cache holds private copies of x and the weights, so changing them in place between
forward and backward cannot corrupt the gradients. When a cache is dropped, its large buffers
that nothing else refers to are kept for the next training forward of the same shapes (no page
faults and zeroing of fresh memory, which shows at large training shapes), up to a budget (least
recently used shapes go first); the kernels keep their per-thread workspace between calls up to a
limit too. ``set_workspace_limit(nbytes)`` sets both (default 256 MiB each);
``release_workspace()`` frees them now.

Every cache (these kernels', the CUDA kernels', the references') is a fastrnn._cache.Cache: the
same fields under the same names, and its own ``backward``, which ``{cell}_backward`` calls once it
has checked that the cache belongs to the cell.

Callers that have checked and converted their arrays already (the layers) may skip the checks
with the internal runner, :func:`_run_forward` / :func:`_run_backward` (see their contract).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _cells, _cuda_ops, backend
from . import reference as _ref
from ._cache import Cache
from ._cells import _BY_BASE_ACT, CellSpec
from ._kernel_cache import CPU_CACHES, POOL, KernelCache, PooledKernelCache
from ._kernel_cache import check_f32 as _check_f32
from .reference import _common as C

__all__ = [
    "KernelCache",
    "get_workspace_limit",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "matmul",
    "release_workspace",
    "rnn_backward",
    "rnn_forward",
    "set_workspace_limit",
]

#: A float32 NumPy array (CuPy arrays go where these go, see the module docstring).
F32 = NDArray[np.float32]
#: lengths (int [B]) or mask (bool or 0/1 [B, T]): arrays or nested sequences.
Steps = Optional[ArrayLike]
#: The gradient dict of ``{cell}_backward``.
Grads = dict[str, Optional[F32]]


def _f32(fn, name, a):
    """A C-contiguous float32 NumPy array (float64 and other dtypes are refused)."""
    if a is None:
        return None
    if a.dtype != np.float32:
        raise TypeError(
            f"{fn}: {name} must have dtype float32 for the C++ kernels, got {a.dtype} "
            f"(cast with .astype(np.float32), or use fastrnn.reference for float64)"
        )
    return np.ascontiguousarray(a)


def _check_out(fn, out, shape):
    if out is None:
        return None
    _check_f32(fn, "out", out, shape)
    if not out.flags.c_contiguous:
        raise ValueError(f"{fn}: out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")
    return out


def _forward_cupy(cell, x, w_ih, w_hh, biases, h0, c0, lengths, mask, reverse, batch_first, training,
                  nonlinearity, out, recurrent_mask=None):
    """CuPy x: every check, copy and allocation on x's device, then the CUDA kernels (float32,
    where they run on that device) or the array-generic reference on the GPU."""
    import cupy

    fn = f"{cell}_forward"
    named = [("w_ih", w_ih), ("w_hh", w_hh), ("h0", h0), ("c0", c0), ("lengths", lengths), ("mask", mask),
             ("recurrent_mask", recurrent_mask)]
    if isinstance(biases, (tuple, list)):
        named += list(zip(C.BIAS_NAMES[cell], biases))
    dev = int(x.device.id)
    _cuda_ops.check_same_device(fn, dev, named)
    with cupy.cuda.Device(dev):
        spec = C.check_forward_args(cell, x, w_ih, w_hh, biases, h0=h0, c0=c0, lengths=lengths, mask=mask,
                                    batch_first=batch_first, reverse=reverse, training=training,
                                    nonlinearity=nonlinearity, recurrent_mask=recurrent_mask)
        if out is not None:
            raise TypeError(f"{fn}: out is only supported for numpy arrays")
        if spec.dtype == np.float32 and _cuda_ops.available(dev):
            return _cuda_ops.forward(cell, spec, x, w_ih, w_hh, biases, h0, c0, reverse, batch_first, training,
                                     nonlinearity, recurrent_mask)
        ref = getattr(_ref, fn)
        kw = dict(h0=h0, lengths=lengths, mask=mask, reverse=reverse, batch_first=batch_first, training=training,
                  recurrent_mask=recurrent_mask)
        if cell == "lstm":
            kw["c0"] = c0
        if cell == "rnn":
            kw["nonlinearity"] = nonlinearity
        return ref(x, w_ih, w_hh, *biases, **kw)


def _forward(cell, x, w_ih, w_hh, biases, h0, c0, lengths, mask, reverse, batch_first, training,
             nonlinearity, out, recurrent_mask=None):
    """The public forwards: every check and conversion, then _kernel_forward (NumPy) or the CuPy
    route. cell: the base name ("rnn", "lstm", "gru")."""
    fn = f"{cell}_forward"
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        _f32(fn, "x", x)  # says that the kernels take float32 (the references take float64)
    if type(x) is not np.ndarray and C._is_cupy(x) and C._is_array(x):
        return _forward_cupy(cell, x, w_ih, w_hh, biases, h0, c0, lengths, mask, reverse, batch_first, training,
                             nonlinearity, out, recurrent_mask)
    spec = C.check_forward_args(cell, x, w_ih, w_hh, biases, h0=h0, c0=c0, lengths=lengths, mask=mask,
                                batch_first=batch_first, reverse=reverse, training=training,
                                nonlinearity=nonlinearity, recurrent_mask=recurrent_mask)

    shape_y = (spec.B, spec.T, spec.H) if batch_first else (spec.T, spec.B, spec.H)
    out = _check_out(fn, out, shape_y)
    xs = _f32(fn, "x", x)
    wi, wh = _f32(fn, "w_ih", w_ih), _f32(fn, "w_hh", w_hh)
    cspec = _BY_BASE_ACT[(cell, nonlinearity if cell == "rnn" else None)]
    b_ih = _f32(fn, cspec.bias_names[0], biases[0])
    b_hh = _f32(fn, "b_hh", biases[1]) if cell == "gru" else None
    h0 = None if h0 is None else _f32(fn, "h0", h0)
    c0 = None if c0 is None else _f32(fn, "c0", c0)
    hmask = None if recurrent_mask is None else _f32(fn, "recurrent_mask", recurrent_mask)
    return _kernel_forward(cspec, xs, wi, wh, b_ih, b_hh, h0, c0, None if spec.mask is None else spec.mask.T,
                           reverse, batch_first, training, out, spec.T, spec.B, spec.I, spec.H, hmask)


def _kernel_forward(spec, x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, reverse, batch_first, training, out, T, B, I, H,
                    hmask=None, whh_packed=None, wih_t=None):
    """The C++ forward on checked arrays; mask: None or [B, T], bool or 0/1 (nonzero = valid);
    hmask: None or the recurrent dropout mask [B, H] (float32, C-contiguous); whh_packed: None or
    ``core.pack_whh(cell, w_hh, B)`` of this very w_hh (the kernel then skips its packing); wih_t:
    None or this very w_ih transposed, [I, G*H] C-contiguous (the x projection reads it in place).

    The compiled function is called with positional arguments, each spelled as the binding names
    it (tests/test_cells_and_caches.py checks the order against the binding's source): pybind11
    matches keywords by name at every call, about 1 us for these 16. A training forward whose saved
    gates (its largest buffer) reach the pool's ``min_bytes`` takes its buffers from the pool and
    returns a PooledKernelCache, which gives them back when dropped; smaller ones skip the pool
    altogether (plain copies, the kernels' own arrays, a KernelCache with no finaliser)."""
    cell = spec.kernel_id
    mask = None if mask is None else np.ascontiguousarray(mask, dtype=np.uint8)
    gates = hprev = aux = None
    pooled = training and 4 * T * B * w_hh.shape[0] >= POOL.min_bytes
    if pooled:  # private copies: in-place edits between forward and backward cannot leak in
        x, w_ih, w_hh = POOL.copy(x), POOL.copy(w_ih), POOL.copy(w_hh)
        gates, hprev = POOL.take((T * B, w_hh.shape[0])), POOL.take((T * B, H))
        if spec.aux is not None:
            aux = POOL.take((T * B, H))
    elif training:
        x, w_ih, w_hh = x.copy(), w_ih.copy(), w_hh.copy()
    if training and hmask is not None:
        hmask = hmask.copy()
    if training and mask is not None:  # padding is never read, not even by dW_ih = dG^T x
        x[(mask if batch_first else mask.T) == 0] = 0.0
    y, h_n, c_n, gates, hprev, aux = backend.core().forward(
        cell, x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, bool(reverse), bool(batch_first), bool(training), hmask,
        gates, hprev, aux, whh_packed, wih_t)
    if out is not None:
        np.copyto(out, y)
        y = out
    cache = None
    if training:
        cache = (PooledKernelCache if pooled else KernelCache)(spec, x, w_ih, w_hh, mask, reverse, batch_first,
                                                                gates, hprev, aux, T, B, I, H, hmask)
    state = (h_n, c_n) if spec.n_states == 2 else h_n
    return y, state, cache


def _backward(cell, cache, dy, dstate, bptt_steps, need_dx=True):
    """The public backwards: the cache must belong to the cell; it runs its own backward."""
    fn = f"{cell}_backward"
    if isinstance(cache, Cache):  # the C++, CUDA or reference kernels' cache
        if cache.cell != cell:
            raise ValueError(f"{fn}: cache comes from {cache.cell}_forward, not {cell}_forward")
        return cache.backward(dy, dstate, bptt_steps, need_dx)
    if isinstance(cache, dict):  # any other dict: the reference's, on the device of its arrays
        x = cache.get("x")
        if C._is_cupy(x):
            import cupy

            with cupy.cuda.Device(int(x.device.id)):
                return getattr(_ref, fn)(cache, dy, dstate=dstate, bptt_steps=bptt_steps)
        return getattr(_ref, fn)(cache, dy, dstate=dstate, bptt_steps=bptt_steps)
    if cache is None:
        raise ValueError(f"{fn}: cache is None; run {cell}_forward with training=True to get a cache for backward")
    raise TypeError(f"{fn}: cache must be the cache returned by {cell}_forward, got {type(cache).__name__}")


# --------------------------------------------------------------------------- the internal runner

def _run_forward(cell: _cells.CellLike, x: F32, w_ih: F32, w_hh: F32, b_ih: F32,
                 b_hh: F32 | None = None, h0: F32 | None = None, c0: F32 | None = None,
                 mask: NDArray[Any] | None = None, reverse: bool = False, batch_first: bool = True,
                 training: bool = True, out: F32 | None = None, hmask: F32 | None = None,
                 whh_packed: tuple | None = None, wih_t: F32 | None = None) -> tuple[Any, Any, Cache | None]:
    """The forward of the ops without their argument checks, for callers that checked already.

    Returns (y, state, cache) like ``{cell}_forward``: state is (h_n, c_n) for LSTM, else h_n.

    cell: a CellSpec (fastest) or anything fastrnn._cells.cell_spec takes ("lstm", 2, ...);
    b_ih is the one bias of SimpleRNN and LSTM, b_hh GRU's second (None otherwise).

    The caller guarantees, for NumPy float32 x:
      * x, w_ih, w_hh, b_ih (, b_hh), h0, c0 and out are float32 NumPy arrays, C-contiguous, of
        the shapes the public op checks (x [B, T, I] if batch_first else [T, B, I]; w_ih
        [G*H, I]; w_hh [G*H, H]; biases [G*H]; h0 / c0 None or [B, H], c0 for LSTM only; out None
        or y's shape, writeable);
      * mask is None or a NumPy array [B, T] of bools or 0/1 (nonzero = valid step; lengths
        must be turned into such a mask first), in any memory layout;
      * reverse, batch_first and training are bools;
      * hmask (recurrent dropout, the public ops' recurrent_mask) is None or a float32 NumPy
        array [B, H], C-contiguous;
      * whh_packed is None or ``backend.core().pack_whh(cell, w_hh, B)`` of w_hh as it is now (the
        compiled module checks its path, cell, layout and size, not its values; the other routes
        ignore it);
      * wih_t is None or ``np.ascontiguousarray(w_ih.T)`` of w_ih as it is now (shape checked, values
        not; the other routes ignore it).
    Nothing of this is checked here beyond what the compiled module checks itself (dtypes,
    contiguity and shapes, refused with TypeError / ValueError, never read out of bounds); a
    mask of other values (cast to uint8) or a wrong out gives wrong results silently.

    Any other x (CuPy arrays, float64, lists) takes the public op's route, with its checks: the
    runner can be called for every array a layer holds.
    """
    spec = cell if type(cell) is CellSpec else _cells.cell_spec(cell)
    if type(x) is not np.ndarray or x.dtype != np.float32:
        biases = (b_ih, b_hh) if spec.base == "gru" else (b_ih,)
        return _forward(spec.base, x, w_ih, w_hh, biases, h0, c0, None, mask, reverse, batch_first, training,
                        spec.activation, out, hmask)
    if batch_first:
        B, T, I = x.shape
    else:
        T, B, I = x.shape
    return _kernel_forward(spec, x, w_ih, w_hh, b_ih, b_hh, h0, c0, mask, reverse, batch_first, training, out,
                           T, B, I, w_hh.shape[1], hmask, whh_packed, wih_t)


def _run_backward(cache: Cache, dy: F32 | None, dh_n: F32 | None = None, dc_n: F32 | None = None,
                  bptt_steps: int | None = None, need_dx: bool = True) -> Grads:
    """The backward of the ops without their argument checks, for callers that checked already.

    Returns the gradient dict of ``{cell}_backward`` ("x" is None when need_dx is False).

    The caller guarantees: cache is what a training forward (public or _run_forward) returned; dy
    is None or y's shape; dh_n (and dc_n, LSTM only) None or [B, H]; bptt_steps None or a positive
    int. For the C++ kernels' caches the arrays must be C-contiguous float32 NumPy arrays (the
    compiled module refuses others with TypeError, and checks shapes); any other cache (CUDA,
    reference) runs its own checked backward.
    """
    if type(cache) in CPU_CACHES:
        return cache.run_backward(dy, dh_n, dc_n, 0 if bptt_steps is None else bptt_steps, need_dx)
    if cache.cell == "lstm":
        dstate = None if dh_n is None and dc_n is None else (dh_n, dc_n)
    else:
        dstate = dh_n
    return cache.backward(dy, dstate, bptt_steps, need_dx)


# --------------------------------------------------------------------------- the public ops

def rnn_forward(x: F32, w_ih: F32, w_hh: F32, b: F32, h0: F32 | None = None, lengths: Steps = None,
                mask: Steps = None, reverse: bool = False, batch_first: bool = True, training: bool = True,
                nonlinearity: str = C.DEFAULT_ACTIVATION, *, out: F32 | None = None,
                activation: str | None = None, recurrent_mask: F32 | None = None) -> tuple[F32, F32, Cache | None]:
    """SimpleRNN forward, h' = act(x W_ih^T + h W_hh^T + b). Returns (y, h_n, cache).

    activation: 'tanh' (default) or 'relu'; nonlinearity is another name for it (ValueError when
    both are given and differ). recurrent_mask: recurrent dropout [B, H] (see the module)."""
    nonlinearity = C.resolve_activation("rnn_forward", activation, nonlinearity)
    return _forward("rnn", x, w_ih, w_hh, (b,), h0, None, lengths, mask, reverse, batch_first, training,
                    nonlinearity, out, recurrent_mask)


def lstm_forward(x: F32, w_ih: F32, w_hh: F32, b: F32, h0: F32 | None = None, c0: F32 | None = None,
                 lengths: Steps = None, mask: Steps = None, reverse: bool = False, batch_first: bool = True,
                 training: bool = True, *, out: F32 | None = None, recurrent_mask: F32 | None = None
                 ) -> tuple[F32, tuple[F32, F32], Cache | None]:
    """LSTM forward (gates i, f, g, o; one bias b [4H]). Returns (y, (h_n, c_n), cache).
    recurrent_mask: recurrent dropout [B, H] (see the module)."""
    return _forward("lstm", x, w_ih, w_hh, (b,), h0, c0, lengths, mask, reverse, batch_first, training,
                    "tanh", out, recurrent_mask)


def gru_forward(x: F32, w_ih: F32, w_hh: F32, b_ih: F32, b_hh: F32, h0: F32 | None = None,
                lengths: Steps = None, mask: Steps = None, reverse: bool = False, batch_first: bool = True,
                training: bool = True, *, out: F32 | None = None, recurrent_mask: F32 | None = None
                ) -> tuple[F32, F32, Cache | None]:
    """GRU forward (gates r, z, n; linear-before-reset; b_ih, b_hh [3H]). Returns (y, h_n, cache).
    recurrent_mask: recurrent dropout [B, H] (see the module; GRU's z * h term keeps the unmasked h)."""
    return _forward("gru", x, w_ih, w_hh, (b_ih, b_hh), h0, None, lengths, mask, reverse, batch_first,
                    training, "tanh", out, recurrent_mask)


def rnn_backward(cache: Cache, dy: F32 | None, dstate: F32 | None = None,
                 bptt_steps: int | None = None) -> Grads:
    """SimpleRNN BPTT. Returns a dict with x, h0, w_ih, w_hh, b."""
    return _backward("rnn", cache, dy, dstate, bptt_steps)


def lstm_backward(cache: Cache, dy: F32 | None,
                  dstate: Sequence[F32 | None] | None = None, bptt_steps: int | None = None) -> Grads:
    """LSTM BPTT; dstate None or (dh_n, dc_n). Returns a dict with x, h0, c0, w_ih, w_hh, b."""
    return _backward("lstm", cache, dy, dstate, bptt_steps)


def gru_backward(cache: Cache, dy: F32 | None, dstate: F32 | None = None,
                 bptt_steps: int | None = None) -> Grads:
    """GRU BPTT. Returns a dict with x, h0, w_ih, w_hh, b_ih, b_hh."""
    return _backward("gru", cache, dy, dstate, bptt_steps)


def _gemm_operand(m):
    """(array, transposed): m itself when C-contiguous, its transpose (a C-contiguous view) when
    F-contiguous, else a C-contiguous copy."""
    if m.flags.c_contiguous:
        return m, False
    if m.flags.f_contiguous:
        return m.T, True
    return np.ascontiguousarray(m), False


def matmul(a: ArrayLike, b: ArrayLike) -> Any:
    """``a @ b``, on fastrnn's own GEMM (the threads of fastrnn.set_num_threads) when both are
    float32 NumPy arrays, ``b`` is 2-D and ``a`` has 2 or more axes (the leading ones are folded
    into rows); transposed views go in as strides, other layouts are copied. Anything else
    (float64, CuPy arrays, empty or 1-D operands, batched ``b``) is numpy's or CuPy's ``@``, with
    its errors for shapes that do not fit.

    The layers use it for their dense products so that a fastrnn model keeps to one thread pool:
    numpy's OpenBLAS threads keep spinning after each call and would take the cores from the
    recurrent kernels that run next."""
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == np.float32 and b.dtype == np.float32
            and a.ndim >= 2 and b.ndim == 2 and a.shape[-1] == b.shape[0] and a.size and b.size):
        a2, ta = _gemm_operand(a.reshape(-1, a.shape[-1]))
        b2, tb = _gemm_operand(b)
        return backend.core().gemm(a2, b2, ta, tb).reshape(a.shape[:-1] + (b.shape[1],))
    return a @ b


_DENSE_ACT = {"linear": 0, "relu": 1, "tanh": 2, "sigmoid": 3}


def _all_f32(*arrays):
    return all(type(a) is np.ndarray and a.dtype == np.float32 and a.size for a in arrays)


def _dense_forward(x, kernel, bias, activation, out=None):
    """(y, applied) for a Dense layer: ``x @ kernel + bias`` on fastrnn's GEMM with the bias and,
    for linear / relu / tanh / sigmoid, the activation in its write-back (``applied`` True; the
    kernels' vector tanh and sigmoid, within 4e-7 of NumPy's). (None, False) when the arrays are
    not float32 NumPy ones of fitting shapes: the caller takes the unfused path. ``out``: an
    array of y's shape (float32, C-contiguous, its own memory) to write y into, or None."""
    if not (_all_f32(x, kernel) and x.ndim >= 2 and kernel.ndim == 2 and x.shape[-1] == kernel.shape[0]):
        return None, False
    if bias is not None and not (_all_f32(bias) and bias.shape == (kernel.shape[1],)):
        return None, False
    act = _DENSE_ACT.get(activation, 0)
    a2, ta = _gemm_operand(x.reshape(-1, x.shape[-1]))
    b2, tb = _gemm_operand(kernel)
    bias = None if bias is None else np.ascontiguousarray(bias)
    shape = x.shape[:-1] + (kernel.shape[1],)
    if out is not None and out.shape == shape:
        backend.core().dense_gemm(a2, b2, ta, tb, bias, act, out.reshape(-1, shape[-1]))
        return out, activation in _DENSE_ACT
    y = backend.core().dense_gemm(a2, b2, ta, tb, bias, act)
    return y.reshape(shape), activation in _DENSE_ACT


def _matmul_acc(a, b, out, colsum=None):
    """``out += a @ b`` for 2-D operands, accumulated by fastrnn's GEMM in its write-back when all
    are float32 NumPy arrays (out C-contiguous and apart from a and b), else NumPy's. With
    ``colsum`` (a [b.shape[1]] array), also ``colsum += b.sum(axis=0)``: on the GEMM path from b's
    packed blocks (rows added in order, as _colsum_acc; a Dense layer's bias gradient in its
    weight gradient's pass over dZ)."""
    if (_all_f32(a, b, out) and a.ndim == 2 and b.ndim == 2 and out.shape == (a.shape[0], b.shape[1])
            and a.shape[1] == b.shape[0] and out.flags.c_contiguous and out.flags.writeable
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b)
            and (colsum is None or (_all_f32(colsum) and colsum.shape == (b.shape[1],) and colsum.flags.c_contiguous
                                    and colsum.flags.writeable and not any(np.may_share_memory(colsum, o)
                                                                          for o in (a, b, out))))):
        a2, ta = _gemm_operand(a)
        b2, tb = _gemm_operand(b)
        backend.core().dense_gemm(a2, b2, ta, tb, None, 0, out, True, colsum)
        return
    out += matmul(a, b)
    if colsum is not None:
        _colsum_acc(b, colsum)


def _colsum_acc(m, out):
    """``out += m.sum(axis=0)`` for a 2-D ``m``: one vectorised, threaded pass over its rows (the
    rows added in order, as NumPy does) for float32 NumPy arrays, else NumPy's."""
    if (_all_f32(m, out) and m.ndim == 2 and out.shape == (m.shape[1],) and out.flags.c_contiguous
            and out.flags.writeable and not np.may_share_memory(out, m)):
        backend.core().colsum(np.ascontiguousarray(m), out, True)
        return
    out += m.sum(axis=0)


def set_workspace_limit(nbytes: int) -> None:
    """Bound the memory the kernels keep between calls (default 256 MiB):

    * the pooled training-cache buffers (fastrnn._kernel_cache.POOL) hold at most ``nbytes``; a
      buffer that would go over it evicts those of the least recently used shapes first (so
      training on varying sequence lengths keeps the recent shapes only);
    * each thread's kernel workspace is kept between calls only up to ``nbytes``: a call that needs
      more frees it when it returns (and pays the page faults again next time).

    Lowering the limit evicts and trims (the calling thread's workspace) at once; 0 keeps nothing.
    Steady training shapes stay within the default unless a model's caches (about
    4 * T * B * (G*H + 3*H) bytes per recurrent layer) add up to more than it: raise it then."""
    if isinstance(nbytes, (bool, np.bool_)) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"set_workspace_limit: nbytes must be an int, got {type(nbytes).__name__}")
    if not 0 <= nbytes < 2**63:
        raise ValueError(f"set_workspace_limit: nbytes must be in [0, 2**63), got {int(nbytes)}")
    POOL.set_max_bytes(int(nbytes))
    backend.core().set_workspace_limit(int(nbytes))


def get_workspace_limit() -> int:
    """The limit of :func:`set_workspace_limit` (bytes)."""
    return int(backend.core().get_workspace_limit())


def release_workspace() -> None:
    """Free the memory the kernels keep between calls: the calling thread's kernel workspace and
    GEMM packing buffers (and those of the kernels' worker threads), and the pooled training-cache
    buffers (see fastrnn._kernel_cache.BufferPool)."""
    POOL.clear()
    backend.core().release_workspace()
