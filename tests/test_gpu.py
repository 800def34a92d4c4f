"""The GPU side: fastrnn.ops on CuPy arrays against the NumPy references (outputs, final states and
every gradient), the input checks on the CuPy path, the CUDA module and info(), and one LSTM forward
against torch.nn.LSTM on CUDA. The whole module is skipped where there is no CUDA device.

Run on a GPU machine with:  python -m pytest -q -rs tests/test_gpu.py
"""
import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed, so no CUDA device can be used")


def _cuda_devices():
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - CUDARuntimeError without a driver, missing CUDA libraries
        return 0


if _cuda_devices() == 0:
    pytest.skip("no CUDA device (cupy.cuda.runtime.getDeviceCount() failed or returned 0)",
                allow_module_level=True)

import torch  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import backend, ops, reference  # noqa: E402

from _problems import base_name, forward_args, make_problem  # noqa: E402

CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-5)}


def _dev(a):
    """A NumPy array (or a tuple of them) copied to the GPU; other values unchanged."""
    if isinstance(a, tuple):
        return tuple(_dev(v) for v in a)
    return cupy.asarray(a) if isinstance(a, np.ndarray) else a


def _same(got, want, dtype, what):
    """got is a CuPy array of want's dtype and equal to the host array want within TOL."""
    assert isinstance(got, cupy.ndarray), f"{what}: expected a cupy.ndarray, got {type(got).__name__}"
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    np.testing.assert_allclose(cupy.asnumpy(got), want, err_msg=what, **TOL[dtype])


# --------------------------------------------------------------------------- ops on CuPy == NumPy reference

@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_ops_on_cupy_match_the_numpy_reference(cell, dtype, batch_first, reverse):
    T, B, I, H = 7, 5, 3, 9
    base = base_name(cell)
    p = make_problem(cell, T, B, I, H, dtype=dtype, seed=CELLS.index(cell), batch_first=batch_first,
                     lengths="random")
    assert p["lengths"].min() < T  # some rows are padded
    rng = np.random.default_rng(100)
    dy = rng.normal(size=(B, T, H) if batch_first else (T, B, H)).astype(dtype)
    dh = rng.normal(size=(B, H)).astype(dtype)
    dstate = (dh, rng.normal(size=(B, H)).astype(dtype)) if base == "lstm" else dh
    args, kw = forward_args(cell, p)
    kw.update(reverse=reverse, batch_first=batch_first)

    y, state, cache = getattr(reference, f"{base}_forward")(*args, **kw)
    grads = getattr(reference, f"{base}_backward")(cache, dy, dstate=dstate)

    y_d, state_d, cache_d = getattr(ops, f"{base}_forward")(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
    grads_d = getattr(ops, f"{base}_backward")(cache_d, _dev(dy), dstate=_dev(dstate))

    _same(y_d, y, dtype, "y")
    if base == "lstm":
        _same(state_d[0], state[0], dtype, "h_n")
        _same(state_d[1], state[1], dtype, "c_n")
    else:
        _same(state_d, state, dtype, "h_n")
    assert sorted(grads_d) == sorted(grads)
    for name in grads:
        _same(grads_d[name], grads[name], dtype, "d" + name)


# --------------------------------------------------------------------------- bad input on the CuPy path

def _lstm_call(over=(), **kw):
    """ops.lstm_forward on CuPy float32 arrays (T=4, B=3, I=5, H=6) with some arguments replaced."""
    p = make_problem("lstm", 4, 3, 5, 6, dtype=np.float32, seed=0)
    p.update(over)
    args, base = forward_args("lstm", p)
    base.update(kw)
    return ops.lstm_forward(*_dev(args), **{k: _dev(v) for k, v in base.items()})


@pytest.mark.parametrize("over,exc,pattern", [
    ({"x": np.zeros((3, 4), np.float32)}, ValueError, r"x must have rank 3.*got shape \[3, 4\]"),
    ({"x": np.zeros((3, 4, 5), np.int32)}, TypeError, r"x must have dtype float32 or float64, got int32"),
    ({"w_ih": np.zeros((24, 4), np.float32)}, ValueError, r"w_ih must have shape \[24, 5\], got \[24, 4\]"),
    ({"w_hh": np.zeros((24, 6), np.float64)}, TypeError, r"w_hh must have dtype float32"),
    ({"h0": np.zeros((2, 6), np.float32)}, ValueError, r"h0 must have shape \[3, 6\], got \[2, 6\]"),
    ({"lengths": np.array([4, 5, 1])}, ValueError, r"lengths must be in \[0, T=4\], got a length of 5"),
])
def test_cupy_forward_rejects_bad_input(over, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _lstm_call(over)


def test_cupy_and_numpy_do_not_mix():
    p = make_problem("lstm", 4, 3, 5, 6, dtype=np.float32, seed=0)
    args, _ = forward_args("lstm", p)
    x_d, w_ih_d, w_hh_d, b_d = _dev(args)
    with pytest.raises(TypeError, match=r"w_ih must be a cupy array like x.*do not mix numpy and cupy"):
        ops.lstm_forward(x_d, p["w_ih"], w_hh_d, b_d)
    with pytest.raises(TypeError, match=r"lengths must be a cupy array like x"):
        ops.lstm_forward(x_d, w_ih_d, w_hh_d, b_d, lengths=np.array([4, 2, 1]))
    with pytest.raises(TypeError, match="out is only supported for numpy arrays"):
        ops.lstm_forward(x_d, w_ih_d, w_hh_d, b_d, out=cupy.empty((3, 4, 6), cupy.float32))


def test_cupy_backward_rejects_bad_input():
    y, (h, c), cache = _lstm_call()
    _, _, none_cache = _lstm_call(training=False)
    assert none_cache is None
    with pytest.raises(ValueError, match="cache is None; run lstm_forward with training=True"):
        ops.lstm_backward(none_cache, y)
    with pytest.raises(ValueError, match="cache comes from lstm_forward, not gru_forward"):
        ops.gru_backward(cache, y)
    with pytest.raises(ValueError, match=r"dy must have shape \[3, 4, 6\], got \[3, 4, 5\]"):
        ops.lstm_backward(cache, cupy.zeros((3, 4, 5), cupy.float32))
    with pytest.raises(TypeError, match=r"dy must be a cupy array like x"):
        ops.lstm_backward(cache, cupy.asnumpy(y))
    with pytest.raises(ValueError, match=r"dstate\[1\] \(dc_n\) must have shape \[3, 6\]"):
        ops.lstm_backward(cache, y, dstate=(h, cupy.zeros((3, 5), cupy.float32)))


# --------------------------------------------------------------------------- the CUDA module and info()

def test_cuda_module_sees_the_device_and_info_reports_it(capsys):
    if backend.cuda() is None:
        pytest.skip("fastrnn was built without its CUDA module (no CUDA compiler at build time)")
    n = backend.cuda_device_count()
    assert n >= 1
    assert n == _cuda_devices()
    data = fastrnn.info()
    printed = capsys.readouterr().out
    assert data["cuda_module"] is True
    assert data["cuda_devices"] == n
    assert data["cuda_available"] is True
    assert "CUDA available: yes" in printed


# --------------------------------------------------------------------------- LSTM against torch on CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason="this torch build has no CUDA")
def test_cupy_lstm_forward_matches_torch_cuda():
    """float64, so that neither side may use TF32; torch's two biases carry fastrnn's one."""
    T, B, I, H = 7, 5, 3, 9
    p = make_problem("lstm", T, B, I, H, dtype=np.float64, seed=7, batch_first=True)
    args, kw = forward_args("lstm", p)
    y_d, (h_d, c_d), _ = ops.lstm_forward(*_dev(args), **{k: _dev(v) for k, v in kw.items()},
                                          training=False)

    mod = torch.nn.LSTM(I, H, batch_first=True).to(device="cuda", dtype=torch.float64)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(p["w_ih"]))
        mod.weight_hh_l0.copy_(torch.from_numpy(p["w_hh"]))
        b_ih = np.random.default_rng(8).uniform(-0.5, 0.5, size=4 * H)
        mod.bias_ih_l0.copy_(torch.from_numpy(b_ih))
        mod.bias_hh_l0.copy_(torch.from_numpy(p["b"] - b_ih))
        hx = (torch.from_numpy(p["h0"][None]).cuda(), torch.from_numpy(p["c0"][None]).cuda())
        y_t, (h_t, c_t) = mod(torch.from_numpy(p["x"]).cuda(), hx)

    for got, want, what in ((y_d, y_t, "y"), (h_d, h_t[0], "h_n"), (c_d, c_t[0], "c_n")):
        _same(got, want.cpu().numpy(), np.float64, what)
