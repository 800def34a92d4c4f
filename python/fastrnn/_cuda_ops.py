"""The CUDA kernels (``fastrnn._cuda``) behind :mod:`fastrnn.ops` for CuPy float32 arrays.

ops checks that every array is on x's device and validates the arguments with the shared checks
(``reference._common``) on that device, then calls :func:`forward` / :func:`backward` here,
which make contiguous (and, for training, private) copies, allocate the outputs and the
workspace with CuPy on that device and enqueue the kernels on CuPy's current stream. Nothing here
synchronizes: like any CuPy operation, the results are ready when the stream reaches them.

``calls`` counts the forward and backward calls that ran the CUDA kernels (tests read it to check
the route a CuPy call took).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _cells, backend
from ._kernel_cache import KernelCache, grads_dict
from .reference import _common as C

__all__ = ["CudaKernelCache", "available", "backward", "calls", "forward", "matmul"]

#: Number of calls that ran the CUDA kernels, by kind ("forward", "backward").
calls = {"forward": 0, "backward": 0}

def available(device=None) -> bool:
    """True when the CUDA module is built and its kernels run on the device (None = the current
    one); CuPy float32 arrays on that device then run the kernels."""
    return backend.cuda_kernels_available(device)


class CudaKernelCache(KernelCache):
    """What a training forward of the CUDA kernels saves for backward (opaque to users).

    Holds private copies of x (zero at masked positions) and the weights, the mask and the
    activations the kernels saved (gates, h_prev, aux), all CuPy arrays on device ``device_id``,
    in the layout of the C++ kernels' caches.
    """

    __slots__ = ("device_id",)

    def __init__(self, *args, device_id):
        super().__init__(*args)
        self.device_id = device_id

    def backward(self, dy, dstate=None, bptt_steps=None, need_dx: bool = True) -> dict[str, Any]:
        """Check dy, dstate and bptt_steps, then run the CUDA backward over this cache."""
        return backward(self.cell, self, dy, dstate, bptt_steps, need_dx)

    def run_backward(self, dy, dh_n, dc_n, bptt_steps: int, need_dx: bool = True) -> dict[str, Any]:
        dstate = (dh_n, dc_n) if self.spec.n_states == 2 and (dh_n is not None or dc_n is not None) else dh_n
        return backward(self.cell, self, dy, dstate, bptt_steps or None, need_dx)

    def _extra(self) -> str:
        return f", device={self.device_id}"


def _ptr(a) -> int:
    return 0 if a is None else int(a.data.ptr)


def _stream() -> int:
    import cupy

    return int(cupy.cuda.get_current_stream().ptr)


def check_same_device(fn, device_id, named):
    """ValueError unless every CuPy array among the (name, value) pairs is on device_id (other
    values, None, lists and NumPy arrays, are left to the argument checks)."""
    for name, a in named:
        if type(a).__module__.startswith("cupy") and hasattr(a, "device") and int(a.device.id) != device_id:
            raise ValueError(f"{fn}: {name} is on CUDA device {a.device.id}, but x is on device {device_id} "
                             f"(all arrays must be on one device)")


def forward(cell, spec, x, w_ih, w_hh, biases, h0, c0, reverse, batch_first, training, nonlinearity,
            recurrent_mask=None):
    """Run ``{cell}_forward`` on the GPU; the arguments were validated by ``check_forward_args``
    (recurrent_mask: None or the recurrent dropout mask [B, H], kept in the cache when training).

    Returns (y, state, cache) like the references; cache is a CudaKernelCache or None.
    """
    import cupy

    fn = f"{cell}_forward"
    dev = int(x.device.id)
    check_same_device(fn, dev, [("w_ih", w_ih), ("w_hh", w_hh), ("h0", h0), ("c0", c0), ("mask", spec.mask),
                                ("recurrent_mask", recurrent_mask)] + list(zip(C.BIAS_NAMES[cell], biases)))
    T, B, I, H, G = spec.T, spec.B, spec.I, spec.H, spec.G
    cspec = _cells.by_base(cell, nonlinearity)
    cell_id = cspec.kernel_id
    mod = backend.cuda()
    with cupy.cuda.Device(dev):
        mask_bt = None
        mask_u8 = None
        if spec.mask is not None:  # spec.mask: bool [T, B]; the kernels read uint8 [B, T]
            mask_bt = cupy.ascontiguousarray(spec.mask.T)
            mask_u8 = mask_bt.astype(cupy.uint8)
        if training:  # private copies: in-place edits between forward and backward cannot leak in
            if mask_bt is not None:  # padding is never read, not even by dW_ih = dG^T x
                m = mask_bt if batch_first else mask_bt.T
                xs = cupy.where(m[:, :, None], x, cupy.float32(0))
            else:
                xs = x.copy()
            wi, wh = w_ih.copy(), w_hh.copy()
        else:
            xs = cupy.ascontiguousarray(x)
            wi, wh = cupy.ascontiguousarray(w_ih), cupy.ascontiguousarray(w_hh)
        bs = [cupy.ascontiguousarray(b) for b in biases]
        h0c = None if h0 is None else cupy.ascontiguousarray(h0)
        c0c = None if c0 is None else cupy.ascontiguousarray(c0)
        hm = None
        if recurrent_mask is not None:  # a private copy when training (the cache keeps it)
            hm = recurrent_mask.copy() if training else cupy.ascontiguousarray(recurrent_mask)

        y = cupy.empty((B, T, H) if batch_first else (T, B, H), dtype=cupy.float32)
        h_n = cupy.empty((B, H), dtype=cupy.float32)
        c_n = cupy.empty((B, H), dtype=cupy.float32) if cspec.n_states == 2 else None
        gates = hprev = aux = None
        if training:
            gates = cupy.empty((T * B, G * H), dtype=cupy.float32)
            hprev = cupy.empty((T * B, H), dtype=cupy.float32)
            if cspec.aux is not None:
                aux = cupy.empty((T * B, H), dtype=cupy.float32)
        nws = int(mod.forward_workspace_floats(cell=cell_id, T=T, B=B, I=I, H=H, training=bool(training),
                                               hmask=_ptr(hm)))
        ws = cupy.empty((max(nws, 1),), dtype=cupy.float32)
        mod.forward(cell=cell_id, T=T, B=B, I=I, H=H, batch_first=bool(batch_first), reverse=bool(reverse),
                    mask=_ptr(mask_u8), x=_ptr(xs), w_ih=_ptr(wi), w_hh=_ptr(wh), b_ih=_ptr(bs[0]),
                    b_hh=_ptr(bs[1]) if len(cspec.bias_names) == 2 else 0, h0=_ptr(h0c), c0=_ptr(c0c), y=_ptr(y),
                    h_n=_ptr(h_n), c_n=_ptr(c_n), gates=_ptr(gates), hprev=_ptr(hprev), aux=_ptr(aux),
                    hmask=_ptr(hm), workspace=_ptr(ws), workspace_floats=nws, stream=_stream())
    calls["forward"] += 1
    cache = None
    if training:
        cache = CudaKernelCache(cspec, xs, wi, wh, mask_u8, reverse, batch_first, gates, hprev, aux,
                                T, B, I, H, hm, device_id=dev)
    state = (h_n, c_n) if cspec.n_states == 2 else h_n
    return y, state, cache


def _grad(fn, name, a, shape, device_id):
    """None, or a C-contiguous CuPy float32 array of the given shape on the cache's device."""
    import cupy

    if a is None:
        return None
    C.check_array(fn, name, a, shape, np.float32, cupy)
    check_same_device(fn, device_id, [(name, a)])
    with cupy.cuda.Device(device_id):
        return cupy.ascontiguousarray(a)


def backward(cell, cache, dy, dstate, bptt_steps, need_dx=True):
    """Run ``{cell}_backward`` on the GPU over a CudaKernelCache. Returns the gradient dict."""
    import cupy

    fn = f"{cell}_backward"
    if cache.cell != cell:
        raise ValueError(f"{fn}: cache comes from {cache.cell}_forward, not {cell}_forward")
    k = C.check_bptt_steps(bptt_steps, fn)
    T, B, I, H = cache.T, cache.B, cache.I, cache.H
    G = cache.spec.gates
    dev = cache.device_id
    mod = backend.cuda()
    f32 = cupy.float32
    with cupy.cuda.Device(dev):
        dy = _grad(fn, "dy", dy, (B, T, H) if cache.batch_first else (T, B, H), dev)
        dh_n, dc_n, dh_name = C.split_dstate(fn, cell, dstate)
        dh_n = _grad(fn, dh_name, dh_n, (B, H), dev)
        dc_n = _grad(fn, "dstate[1] (dc_n)", dc_n, (B, H), dev)
        dx = cupy.empty(cache.x.shape, dtype=f32) if need_dx else None
        dh0 = cupy.empty((B, H), dtype=f32)
        dc0 = cupy.empty((B, H), dtype=f32) if cache.spec.n_states == 2 else None
        dw_ih = cupy.empty((G * H, I), dtype=f32)
        dw_hh = cupy.empty((G * H, H), dtype=f32)
        db_ih = cupy.empty((G * H,), dtype=f32)
        db_hh = cupy.empty((G * H,), dtype=f32) if len(cache.spec.bias_names) == 2 else None
        nws = int(mod.backward_workspace_floats(cell=cache.cell_id, T=T, B=B, I=I, H=H,
                                                hmask=_ptr(cache.recurrent_mask)))
        ws = cupy.empty((max(nws, 1),), dtype=f32)
        mod.backward(cell=cache.cell_id, T=T, B=B, I=I, H=H, batch_first=cache.batch_first, reverse=cache.reverse,
                     mask=_ptr(cache.mask), x=_ptr(cache.x), w_ih=_ptr(cache.w_ih), w_hh=_ptr(cache.w_hh),
                     gates=_ptr(cache.gates), hprev=_ptr(cache.hprev), aux=_ptr(cache.aux), dy=_ptr(dy),
                     dh_n=_ptr(dh_n), dc_n=_ptr(dc_n), bptt_steps=0 if k is None or k >= T else k, dx=_ptr(dx),
                     dh0=_ptr(dh0), dc0=_ptr(dc0), dw_ih=_ptr(dw_ih), dw_hh=_ptr(dw_hh), db_ih=_ptr(db_ih),
                     db_hh=_ptr(db_hh), hmask=_ptr(cache.recurrent_mask), workspace=_ptr(ws),
                     workspace_floats=nws, stream=_stream())
    calls["backward"] += 1
    return grads_dict(cache.spec, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)


def matmul(a, b, trans_a=False, trans_b=False, bias=None):
    """op(a) @ op(b) (+ bias) with the library's CUDA GEMM, for CuPy float32 2-D arrays.

    The transposes are strides (no copies). For tests and benchmarks of the GEMM itself.
    """
    import cupy

    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, cupy.ndarray) or v.dtype != cupy.float32 or v.ndim != 2:
            raise TypeError(f"matmul: {name} must be a 2-D cupy float32 array")
    check_same_device("matmul", int(a.device.id), [("b", b), ("bias", bias)])
    M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if Kb != K:
        raise ValueError(f"matmul: inner dimensions differ: op(a) is {M}x{K}, op(b) is {Kb}x{N}")
    mod = backend.cuda()
    with cupy.cuda.Device(int(a.device.id)):
        a = cupy.ascontiguousarray(a)
        b = cupy.ascontiguousarray(b)
        if bias is not None:
            bias = cupy.ascontiguousarray(bias, dtype=cupy.float32)
            if bias.shape != (N,):
                raise ValueError(f"matmul: bias must have shape [{N}], got {list(bias.shape)}")
        rsa, csa = (1, a.shape[1]) if trans_a else (a.shape[1], 1)
        rsb, csb = (1, b.shape[1]) if trans_b else (b.shape[1], 1)
        c = cupy.empty((M, N), dtype=cupy.float32)
        nws = int(mod.gemm_workspace_floats(M=M, N=N, K=K))
        ws = cupy.empty((max(nws, 1),), dtype=cupy.float32)
        mod.gemm(M=M, N=N, K=K, A=_ptr(a), rsa=rsa, csa=csa, B=_ptr(b), rsb=rsb, csb=csb, C=_ptr(c), ldc=N,
                 accumulate=False, bias=_ptr(bias), workspace=_ptr(ws), workspace_floats=nws, stream=_stream())
    return c
