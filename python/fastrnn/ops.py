"""Functional kernels: the C++ (AVX2 / AVX-512) implementations behind the signatures of
:mod:`fastrnn.reference`, so the two are interchangeable in user code and tests (``matmul``, the
layers' dense product, has no reference twin: numpy's ``@`` is its reference).

    y, h_n, cache        = rnn_forward(x, w_ih, w_hh, b, h0=None, lengths=None, mask=None,
                                       reverse=False, batch_first=True, training=True, nonlinearity="tanh")
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
NaN and Inf are not checked: in valid steps they propagate through the arithmetic like in the
references (sigmoid/tanh of NaN is NaN; +-Inf saturate). Values at masked positions are never
read: NaN padding changes no output and no gradient.

The training cache holds private copies of x and the weights, so changing them in place between
forward and backward cannot corrupt the gradients. When a cache is dropped, its large buffers
that nothing else refers to are kept for the next training forward of the same shapes (no page
faults and zeroing of fresh memory; LSTM (100, 64, 256, 256) training 1.07x);
``release_workspace()`` frees them with the kernels' workspace.
"""
from __future__ import annotations

import numpy as np

from . import _cuda_ops, backend
from ._kernel_cache import POOL, KernelCache, grads_dict
from . import reference as _ref
from .reference import _common as C

__all__ = [
    "KernelCache",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "matmul",
    "release_workspace",
    "rnn_backward",
    "rnn_forward",
]

_CELL_ID = {("rnn", "tanh"): 0, ("rnn", "relu"): 1, ("lstm", None): 2, ("gru", None): 3}


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


def _check_f32(fn, name, a, shape, what="float32"):
    """A NumPy float32 array of the given shape (TypeError / ValueError otherwise)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{fn}: {name} must have dtype {what}, got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {C._shape_str(shape)}, got {C._shape_str(a.shape)}")
    return a


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
                  nonlinearity, out):
    """CuPy x: every check, copy and allocation on x's device, then the CUDA kernels (float32,
    where they run on that device) or the array-generic reference on the GPU."""
    import cupy  # noqa: PLC0415

    fn = f"{cell}_forward"
    named = [("w_ih", w_ih), ("w_hh", w_hh), ("h0", h0), ("c0", c0), ("lengths", lengths), ("mask", mask)]
    if isinstance(biases, (tuple, list)):
        named += list(zip(C.BIAS_NAMES[cell], biases))
    dev = int(x.device.id)
    _cuda_ops.check_same_device(fn, dev, named)
    with cupy.cuda.Device(dev):
        spec = C.check_forward_args(cell, x, w_ih, w_hh, biases, h0=h0, c0=c0, lengths=lengths, mask=mask,
                                    batch_first=batch_first, reverse=reverse, training=training,
                                    nonlinearity=nonlinearity)
        if out is not None:
            raise TypeError(f"{fn}: out is only supported for numpy arrays")
        if spec.dtype == np.float32 and _cuda_ops.available(dev):
            return _cuda_ops.forward(cell, spec, x, w_ih, w_hh, biases, h0, c0, reverse, batch_first, training,
                                     nonlinearity)
        ref = getattr(_ref, fn)
        kw = dict(h0=h0, lengths=lengths, mask=mask, reverse=reverse, batch_first=batch_first, training=training)
        if cell == "lstm":
            kw["c0"] = c0
        if cell == "rnn":
            kw["nonlinearity"] = nonlinearity
        return ref(x, w_ih, w_hh, *biases, **kw)


def _forward(cell, x, w_ih, w_hh, biases, h0, c0, lengths, mask, reverse, batch_first, training,
             nonlinearity, out):
    fn = f"{cell}_forward"
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        _f32(fn, "x", x)  # says that the kernels take float32 (the references take float64)
    if C._is_cupy(x) and C._is_array(x):
        return _forward_cupy(cell, x, w_ih, w_hh, biases, h0, c0, lengths, mask, reverse, batch_first, training,
                             nonlinearity, out)
    spec = C.check_forward_args(cell, x, w_ih, w_hh, biases, h0=h0, c0=c0, lengths=lengths, mask=mask,
                                batch_first=batch_first, reverse=reverse, training=training,
                                nonlinearity=nonlinearity)

    shape_y = (spec.B, spec.T, spec.H) if batch_first else (spec.T, spec.B, spec.H)
    out = _check_out(fn, out, shape_y)
    xs = _f32(fn, "x", x)
    wi, wh = _f32(fn, "w_ih", w_ih), _f32(fn, "w_hh", w_hh)
    bs = [_f32(fn, n, b) for n, b in zip(C.BIAS_NAMES[cell], biases)]
    h0 = _f32(fn, "h0", h0)
    c0 = _f32(fn, "c0", c0)
    mask_u8 = None if spec.mask is None else np.ascontiguousarray(spec.mask.T, dtype=np.uint8)
    bufs = {}
    if training:  # private copies: in-place edits between forward and backward cannot leak in
        xs, wi, wh = POOL.copy(xs), POOL.copy(wi), POOL.copy(wh)
        if mask_u8 is not None:  # padding is never read, not even by dW_ih = dG^T x
            xs[~(spec.mask.T if batch_first else spec.mask)] = 0.0
        n, gh = spec.T * spec.B, wh.shape[0]
        bufs = {"gates": POOL.take((n, gh)), "hprev": POOL.take((n, spec.H))}
        if cell in ("lstm", "gru"):
            bufs["aux"] = POOL.take((n, spec.H))
    cell_id = _CELL_ID[(cell, nonlinearity if cell == "rnn" else None)]
    y, h_n, c_n, gates, hprev, aux = backend.core().forward(
        cell_id, xs, wi, wh, bs[0], bs[1] if cell == "gru" else None, h0, c0, mask_u8,
        bool(reverse), bool(batch_first), bool(training), **bufs)
    if out is not None:
        np.copyto(out, y)
        y = out
    cache = None
    if training:
        cache = KernelCache(cell, cell_id, xs, wi, wh, mask_u8, reverse, batch_first, gates, hprev, aux,
                            spec.T, spec.B, spec.I, spec.H)
    state = (h_n, c_n) if cell == "lstm" else h_n
    return y, state, cache


def _grad_array(fn, name, a, shape):
    if a is None:
        return None
    return np.ascontiguousarray(_check_f32(fn, name, a, shape, "float32 (the dtype of y)"))


def _backward(cell, cache, dy, dstate, bptt_steps, need_dx=True):
    fn = f"{cell}_backward"
    if isinstance(cache, _cuda_ops.CudaKernelCache):  # a cache of the CUDA kernels
        return _cuda_ops.backward(cell, cache, dy, dstate, bptt_steps, need_dx)
    if isinstance(cache, dict):  # a cache of the reference (CuPy inputs): run on the cache's device
        x = cache.get("x")
        if C._is_cupy(x):
            import cupy  # noqa: PLC0415

            with cupy.cuda.Device(int(x.device.id)):
                return getattr(_ref, fn)(cache, dy, dstate=dstate, bptt_steps=bptt_steps)
        return getattr(_ref, fn)(cache, dy, dstate=dstate, bptt_steps=bptt_steps)
    if cache is None:
        raise ValueError(f"{fn}: cache is None; run {cell}_forward with training=True to get a cache for backward")
    if not isinstance(cache, KernelCache):
        raise TypeError(f"{fn}: cache must be the cache returned by {cell}_forward, got {type(cache).__name__}")
    if cache.cell != cell:
        raise ValueError(f"{fn}: cache comes from {cache.cell}_forward, not {cell}_forward")
    k = C.check_bptt_steps(bptt_steps, fn)
    T, B, H = cache.T, cache.B, cache.H
    dy = _grad_array(fn, "dy", dy, (B, T, H) if cache.batch_first else (T, B, H))
    dh_n, dc_n, dh_name = C.split_dstate(fn, cell, dstate)
    dh_n = _grad_array(fn, dh_name, dh_n, (B, H))
    dc_n = _grad_array(fn, "dstate[1] (dc_n)", dc_n, (B, H))
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = backend.core().backward(
        cache.cell_id, cache.x, cache.w_ih, cache.w_hh, cache.mask, cache.reverse, cache.batch_first,
        cache.gates, cache.hprev, cache.aux, dy, dh_n, dc_n, 0 if k is None else k, bool(need_dx))
    return grads_dict(cell, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)


def rnn_forward(x, w_ih, w_hh, b, h0=None, lengths=None, mask=None, reverse=False, batch_first=True,
                training=True, nonlinearity="tanh", *, out=None):
    """SimpleRNN forward, h' = act(x W_ih^T + h W_hh^T + b). Returns (y, h_n, cache)."""
    return _forward("rnn", x, w_ih, w_hh, (b,), h0, None, lengths, mask, reverse, batch_first, training,
                    nonlinearity, out)


def lstm_forward(x, w_ih, w_hh, b, h0=None, c0=None, lengths=None, mask=None, reverse=False, batch_first=True,
                 training=True, *, out=None):
    """LSTM forward (gates i, f, g, o; one bias b [4H]). Returns (y, (h_n, c_n), cache)."""
    return _forward("lstm", x, w_ih, w_hh, (b,), h0, c0, lengths, mask, reverse, batch_first, training,
                    "tanh", out)


def gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0=None, lengths=None, mask=None, reverse=False, batch_first=True,
                training=True, *, out=None):
    """GRU forward (gates r, z, n; linear-before-reset; b_ih, b_hh [3H]). Returns (y, h_n, cache)."""
    return _forward("gru", x, w_ih, w_hh, (b_ih, b_hh), h0, None, lengths, mask, reverse, batch_first,
                    training, "tanh", out)


def rnn_backward(cache, dy, dstate=None, bptt_steps=None):
    """SimpleRNN BPTT. Returns a dict with x, h0, w_ih, w_hh, b."""
    return _backward("rnn", cache, dy, dstate, bptt_steps)


def lstm_backward(cache, dy, dstate=None, bptt_steps=None):
    """LSTM BPTT; dstate None or (dh_n, dc_n). Returns a dict with x, h0, c0, w_ih, w_hh, b."""
    return _backward("lstm", cache, dy, dstate, bptt_steps)


def gru_backward(cache, dy, dstate=None, bptt_steps=None):
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


def matmul(a, b):
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


def release_workspace():
    """Free the memory the kernels keep between calls: the calling thread's kernel workspace and
    GEMM packing buffers (and those of the kernels' worker threads), and the pooled training-cache
    buffers (see fastrnn._kernel_cache.BufferPool)."""
    POOL.clear()
    backend.core().release_workspace()
