"""The GPU side: fastrnn.ops on CuPy arrays against the NumPy references (outputs, final states and
every gradient), the input checks on the CuPy path, the CUDA module and info(), one LSTM forward
against torch.nn.LSTM on CUDA, and the CUDA kernels that CuPy float32 runs (route and fallback,
inference and training, default states, dy=None, masks, truncated BPTT, edge and bigger shapes,
every tile size, both time loops, the GEMM, determinism, streams, errors). The whole module is
skipped where there is no CUDA device. Where a CUDA module file is present next to the package,
the kernel tests run and FAIL if it cannot be imported or its kernels cannot run on the device.

Run on a GPU machine with:  python -m pytest -q -rs tests/test_gpu.py
"""
import importlib.util

import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed, so no CUDA device can be used")


def _cuda_devices():
    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


if _cuda_devices() == 0:
    pytest.skip("no CUDA device (cupy.cuda.runtime.getDeviceCount() failed or returned 0)",
                allow_module_level=True)

import torch  # noqa: E402

import fastrnn  # noqa: E402
from _problems import base_name, forward_args, make_problem  # noqa: E402
from fastrnn import backend, ops, reference  # noqa: E402

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
    assert data["cuda_kernels"] is backend.cuda_kernels_available()
    assert data["cuda_problem"] is None or not data["cuda_kernels"]
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


# --------------------------------------------------------------------------- the CUDA kernels (float32)
#
# CuPy float32 runs fastrnn._cuda. Ground truth: the NumPy reference in float64 on the host, fed the
# same float32 inputs; the kernels compute in float32, so the tolerance scales with the magnitude
# of what is compared (long sums such as dW over T*B positions carry more rounding).

from fastrnn import _cuda_ops  # noqa: E402

# Skipped only where no CUDA module file exists (built without a CUDA compiler); a module that is
# there but does not import or does not run on this device makes these tests fail.
CUDA_MODULE_PRESENT = importlib.util.find_spec("fastrnn._cuda") is not None
kernels = pytest.mark.skipif(not CUDA_MODULE_PRESENT,
                             reason="fastrnn was built without its CUDA module (no CUDA compiler at build time)")


@kernels
def test_the_present_cuda_module_runs_on_this_device():
    assert backend.cuda_import_error() is None, f"fastrnn._cuda failed to import: {backend.cuda_import_error()}"
    mod = backend.cuda()
    assert mod is not None
    support = backend.cuda_kernel_support()
    assert support["ok"], f"the CUDA kernels cannot run on this device: {support}"
    assert backend.cuda_kernels_available() and _cuda_ops.available(int(cupy.cuda.Device().id))
    dev = cupy.cuda.Device()
    cc = str(dev.compute_capability)  # e.g. "90"
    want_cc = (int(cc[:-1]), int(cc[-1]))
    assert tuple(support["compute_capability"]) == want_cc, (support, cc)
    # the image that runs is SASS for an architecture at most the device's, or PTX JIT-compiled
    assert 0 < support["binary_version"] <= 10 * want_cc[0] + want_cc[1]
    assert support["ptx_version"] > 0


def _calls():
    return dict(_cuda_ops.calls)


def _loops():
    return dict(backend.cuda().time_loop_counts())


def _delta(before, after):
    return {k: after[k] - before[k] for k in after}


def _close32(got, want, what, rtol=1e-4, atol=3e-5):
    """got (CuPy float32) equals the float64 host array want up to float32 rounding."""
    assert isinstance(got, cupy.ndarray), f"{what}: expected a cupy.ndarray, got {type(got).__name__}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    g = cupy.asnumpy(got).astype(np.float64)
    assert g.shape == want.shape, f"{what}: shape {g.shape}, expected {want.shape}"
    assert np.isfinite(g).all(), f"{what}: non-finite values"
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(g - want).max())
    np.testing.assert_allclose(g, want, rtol=rtol, atol=atol * scale,
                               err_msg=f"{what}: max abs error {err:.3g} (scale {scale:.3g})")


def _random_mask(rng, B, T):
    """bool [B, T] with holes anywhere: some rows all valid, one all masked (when B > 2), the rest random."""
    m = rng.random((B, T)) < 0.7
    m[0] = True
    if B > 2:
        m[1] = False
    return m


def _problem32(cell, T, B, I, H, seed, batch_first=True, masking=None, scale=None):
    """A problem dict with float32 arrays (weights scaled by 1/sqrt(H) unless scale is given) and
    the masking keyword: None, 'lengths' or 'mask'."""
    rng = np.random.default_rng(seed)
    s = scale if scale is not None else min(0.5, 1.0 / np.sqrt(H))
    p = make_problem(cell, T, B, I, H, dtype=np.float32, seed=seed, batch_first=batch_first, scale=0.5)
    G = p["w_hh"].shape[0] // H
    p["w_ih"] = rng.uniform(-s, s, size=(G * H, I)).astype(np.float32) * np.float32(min(1.0, 4.0 / np.sqrt(I)))
    p["w_hh"] = rng.uniform(-s, s, size=(G * H, H)).astype(np.float32)
    p["lengths"] = None
    mask = None
    if masking == "lengths":
        lens = rng.integers(0, T + 1, size=B)
        lens[rng.integers(0, B)] = T
        p["lengths"] = lens
    elif masking == "mask":
        mask = _random_mask(rng, B, T)
    return p, mask


def _f64(a):
    if isinstance(a, tuple):
        return tuple(_f64(v) for v in a)
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a


def _compare(cell, p, mask, *, reverse=False, batch_first=True, bptt_steps=None, with_dstate=True, seed=1,
             with_dy=True, recurrent_mask=None):
    """Forward + backward through ops on CuPy float32 (the kernels) and the float64 reference
    (recurrent_mask: a float32 [B, H] recurrent dropout mask for both, or None)."""
    base = base_name(cell)
    rng = np.random.default_rng(seed)
    x = p["x"]
    B, T = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
    H = p["w_hh"].shape[1]
    dy = rng.normal(size=(B, T, H) if batch_first else (T, B, H)).astype(np.float32) if with_dy else None
    dstate = None
    if with_dstate:
        dh = rng.normal(size=(B, H)).astype(np.float32)
        dstate = (dh, rng.normal(size=(B, H)).astype(np.float32)) if base == "lstm" else dh
    args, kw = forward_args(cell, p)
    kw.update(reverse=reverse, batch_first=batch_first)
    if mask is not None:
        kw["mask"] = mask
    if recurrent_mask is not None:
        kw["recurrent_mask"] = recurrent_mask
    f64 = _f64

    y, state, cache = getattr(reference, f"{base}_forward")(*f64(args), **{k: f64(v) for k, v in kw.items()})
    grads = getattr(reference, f"{base}_backward")(cache, f64(dy), dstate=f64(dstate), bptt_steps=bptt_steps)

    before = dict(_cuda_ops.calls)
    y_d, state_d, cache_d = getattr(ops, f"{base}_forward")(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
    grads_d = getattr(ops, f"{base}_backward")(cache_d, _dev(dy), dstate=_dev(dstate), bptt_steps=bptt_steps)
    assert _cuda_ops.calls["forward"] == before["forward"] + 1, "the forward did not run the CUDA kernels"
    assert _cuda_ops.calls["backward"] == before["backward"] + 1, "the backward did not run the CUDA kernels"

    _close32(y_d, y, "y")
    if base == "lstm":
        _close32(state_d[0], state[0], "h_n")
        _close32(state_d[1], state[1], "c_n")
    else:
        _close32(state_d, state, "h_n")
    assert sorted(grads_d) == sorted(grads)
    for name in grads:
        _close32(grads_d[name], grads[name], "d" + name)


@kernels
def test_float32_cupy_runs_the_cuda_kernels_and_float64_the_reference():
    p = make_problem("gru", 4, 3, 5, 6, dtype=np.float32, seed=0)
    args, kw = forward_args("gru", p)
    before = dict(_cuda_ops.calls)
    y, h, cache = ops.gru_forward(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
    assert isinstance(cache, _cuda_ops.CudaKernelCache)
    assert _cuda_ops.calls["forward"] == before["forward"] + 1
    ops.gru_backward(cache, y)
    assert _cuda_ops.calls["backward"] == before["backward"] + 1
    _, _, none_cache = ops.gru_forward(*_dev(args), training=False)
    assert none_cache is None and _cuda_ops.calls["forward"] == before["forward"] + 2

    p64 = make_problem("gru", 4, 3, 5, 6, dtype=np.float64, seed=0)
    args64, kw64 = forward_args("gru", p64)
    y64, _, cache64 = ops.gru_forward(*_dev(args64), **{k: _dev(v) for k, v in kw64.items()})
    assert isinstance(cache64, dict) and y64.dtype == np.float64
    ops.gru_backward(cache64, y64)
    assert _cuda_ops.calls["forward"] == before["forward"] + 2
    assert _cuda_ops.calls["backward"] == before["backward"] + 1


@kernels
@pytest.mark.parametrize("masking", [None, "lengths", "mask"], ids=["all", "lengths", "mask"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_kernels_match_the_reference(cell, batch_first, reverse, masking):
    p, mask = _problem32(cell, 7, 5, 3, 9, seed=CELLS.index(cell), batch_first=batch_first, masking=masking,
                         scale=0.5)
    _compare(cell, p, mask, reverse=reverse, batch_first=batch_first)


def _inference(cell, p, mask, *, reverse, batch_first, with_state):
    """Inference forward (training=False) through ops on CuPy float32 and the float64 reference:
    y and the final states, with h0/c0 given or None."""
    base = base_name(cell)
    args, kw = forward_args(cell, p)
    kw.update(reverse=reverse, batch_first=batch_first, training=False)
    if mask is not None:
        kw["mask"] = mask
    if not with_state:
        kw["h0"] = None
        if base == "lstm":
            kw["c0"] = None
    y, state, cache = getattr(reference, f"{base}_forward")(*_f64(args), **{k: _f64(v) for k, v in kw.items()})
    assert cache is None
    before = _calls()
    y_d, state_d, cache_d = getattr(ops, f"{base}_forward")(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
    assert _calls()["forward"] == before["forward"] + 1, "the inference forward did not run the CUDA kernels"
    assert cache_d is None
    _close32(y_d, y, "y (inference)")
    if base == "lstm":
        _close32(state_d[0], state[0], "h_n (inference)")
        _close32(state_d[1], state[1], "c_n (inference)")
    else:
        _close32(state_d, state, "h_n (inference)")
    return y_d, state_d


@kernels
@pytest.mark.parametrize("masking", [None, "lengths", "mask"], ids=["all", "lengths", "mask"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_inference_default_states_and_no_dy_match_the_reference(cell, batch_first, reverse, masking):
    """The inference kernels (training=False) with h0/c0 given and None; a training forward from
    zero states (h0=None, c0=None) and its backward with dy=None (the gradient enters through
    dstate only), dh0/dc0 included; and inference equal to the training forward's outputs."""
    p, mask = _problem32(cell, 7, 5, 3, 9, seed=30 + CELLS.index(cell), batch_first=batch_first, masking=masking,
                         scale=0.5)
    y_inf, _ = _inference(cell, p, mask, reverse=reverse, batch_first=batch_first, with_state=True)
    _inference(cell, p, mask, reverse=reverse, batch_first=batch_first, with_state=False)
    base = base_name(cell)
    args, kw = forward_args(cell, p)
    kw.update(reverse=reverse, batch_first=batch_first)
    if mask is not None:
        kw["mask"] = mask
    y_tr, _, _ = getattr(ops, f"{base}_forward")(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
    np.testing.assert_array_equal(cupy.asnumpy(y_tr), cupy.asnumpy(y_inf))  # same arithmetic, same bits

    q = dict(p)
    q["h0"] = None
    q.pop("c0", None)
    _compare(cell, q, mask, reverse=reverse, batch_first=batch_first, with_dy=False, seed=5)
    _compare(cell, q, mask, reverse=reverse, batch_first=batch_first, with_dy=True, with_dstate=False, seed=6)


@kernels
@pytest.mark.parametrize("bptt_steps", [1, 2, 3, 9], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_truncated_bptt_matches_the_reference(cell, reverse, bptt_steps):
    """bptt_steps 1, 2, 3 and T (= full) on T = 9 with an arbitrary mask."""
    p, mask = _problem32(cell, 9, 6, 4, 11, seed=10 + CELLS.index(cell), masking="mask", scale=0.5)
    _compare(cell, p, mask, reverse=reverse, bptt_steps=bptt_steps)


@kernels
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 2, 5), (6, 1, 4, 3), (5, 4, 1, 7), (4, 3, 5, 1), (3, 2, 1, 1)],
                         ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_edge_shapes(cell, shape):
    T, B, I, H = shape
    p, mask = _problem32(cell, T, B, I, H, seed=sum(shape), masking="lengths" if B > 1 else None, scale=0.5)
    _compare(cell, p, mask)
    _compare(cell, p, mask, reverse=True, batch_first=True, bptt_steps=1, with_dstate=False)


@kernels
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_bigger_shape(cell):
    """T=50, B=64, I=256, H=256 with lengths (time-major): the large tiles and the split-K GEMMs."""
    p, mask = _problem32(cell, 50, 64, 256, 256, seed=5, batch_first=False, masking="lengths")
    _compare(cell, p, mask, batch_first=False, reverse=True)


@pytest.fixture
def step_tiles():
    """Force the step kernels' tile size and time loop; restores the automatic choice afterwards."""
    mod = backend.cuda()
    yield mod.set_step_tiles
    mod.set_step_tiles(-1, -1, -1)


@kernels
@pytest.mark.parametrize("persistent", [0, 1], ids=["launch-per-step", "persistent"])
@pytest.mark.parametrize("tiles", [0, 1], ids=["large", "small"])
@pytest.mark.parametrize("cell", CELLS)
def test_every_step_tile_size(cell, tiles, persistent, step_tiles):
    """Each tile size of the step kernels, with the time loop as one launch per step and as one
    persistent launch, on shapes that fill no tile exactly (and span several)."""
    step_tiles(tiles, tiles, persistent)
    assert backend.cuda().get_step_tiles() == (tiles, tiles, persistent)
    before = _loops()
    for T, B, I, H, masking in ((5, 13, 7, 37, "mask"), (3, 70, 5, 70, "lengths")):
        p, mask = _problem32(cell, T, B, I, H, seed=tiles, masking=masking)
        _compare(cell, p, mask, reverse=bool(tiles % 2), bptt_steps=2)
    ran = _delta(before, _loops())
    kind, other = ("persistent", "per_step") if persistent else ("per_step", "persistent")
    # these grids fit on any GPU, so the persistent loop must have run when asked for
    assert ran[f"forward_{kind}"] == 2 and ran[f"backward_{kind}"] == 2, ran
    assert ran[f"forward_{other}"] == 0 and ran[f"backward_{other}"] == 0, ran


@kernels
@pytest.mark.parametrize("persistent", [0, 1], ids=["launch-per-step", "persistent"])
@pytest.mark.parametrize("tiles", [0, 1], ids=["large", "small"])
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_recurrent_mask_matches_the_reference(cell, tiles, persistent, step_tiles):
    """Recurrent dropout inside the CUDA time loop (h * mask before the product, its gradient
    masked, dW_hh from h_prev * mask) on awkward shapes, every tile size and both time loops,
    masks, reverse, layouts and truncated BPTT, against the float64 reference."""
    step_tiles(tiles, tiles, persistent)
    for T, B, I, H, masking, batch_first, bptt in ((5, 1, 3, 1, None, True, None), (4, 3, 5, 17, "mask", False, 2),
                                                   (6, 13, 7, 33, "lengths", True, 3), (3, 70, 5, 70, "mask", True, None)):
        p, mask = _problem32(cell, T, B, I, H, seed=H, batch_first=batch_first, masking=masking)
        rm = ((np.random.default_rng(B + H).random((B, H)) >= 0.3) / 0.7).astype(np.float32)
        _compare(cell, p, mask, reverse=bool(H % 2), batch_first=batch_first, bptt_steps=bptt, recurrent_mask=rm)


def _run_both_passes(cell, p, mask, *, reverse, bptt_steps, seed=0):
    """ops forward + backward on CuPy float32: host copies of y, the states and every gradient."""
    base = base_name(cell)
    args, kw = forward_args(cell, p)
    kw.update(reverse=reverse, mask=mask)
    x = p["x"]
    B, T, H = x.shape[0], x.shape[1], p["w_hh"].shape[1]
    rng = np.random.default_rng(seed)
    dy = rng.normal(size=(B, T, H)).astype(np.float32)
    dh = rng.normal(size=(B, H)).astype(np.float32)
    dstate = (dh, rng.normal(size=(B, H)).astype(np.float32)) if base == "lstm" else dh
    y, state, cache = getattr(ops, f"{base}_forward")(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
    g = getattr(ops, f"{base}_backward")(cache, _dev(dy), dstate=_dev(dstate), bptt_steps=bptt_steps)
    states = list(state) if base == "lstm" else [state]
    out = {"y": y, **{f"state{i}": v for i, v in enumerate(states)}, **{"d" + k: v for k, v in g.items()}}
    return {k: cupy.asnumpy(v) for k, v in out.items()}


@kernels
@pytest.mark.parametrize("cell", CELLS)
def test_persistent_and_per_step_loops_give_identical_bits(cell, step_tiles):
    """T = 200 steps over 64 x 384 states (192 forward blocks, 200 grid barriers): the persistent
    loop and the launch-per-step loop run the same arithmetic, so every output and gradient is
    bit-identical; the time-loop counters show that each loop ran where it was asked for."""
    T, B, I, H = 200, 64, 32, 384
    p, mask = _problem32(cell, T, B, I, H, seed=40 + CELLS.index(cell), masking="mask")
    results = {}
    for persistent in (1, 0):
        step_tiles(-1, -1, persistent)
        before = _loops()
        results[persistent] = _run_both_passes(cell, p, mask, reverse=True, bptt_steps=64)
        ran = _delta(before, _loops())
        kind = "persistent" if persistent else "per_step"
        assert ran[f"forward_{kind}"] == 1 and ran[f"backward_{kind}"] == 1, (persistent, ran)
        assert sum(ran.values()) == 2, ran
    assert sorted(results[0]) == sorted(results[1])
    for k in results[0]:
        a, b = results[1][k], results[0][k]
        assert np.isfinite(a).all(), k
        assert np.array_equal(a, b), f"{k}: persistent and per-step loops differ (max {np.abs(a - b).max():.3g})"


@kernels
def test_a_refused_persistent_launch_falls_back_to_one_launch_per_step(step_tiles):
    """persistent=2 tries the cooperative launch without the fit check: a grid of thousands of
    blocks cannot be co-resident, the runtime refuses the launch, and the loop runs one launch
    per step with the same bits as when asked for that directly; the refusal does not leak into
    later calls."""
    T, B, I, H = 3, 1024, 8, 1024  # small tiles: 8192 forward blocks, 4096 backward blocks
    p, mask = _problem32("lstm", T, B, I, H, seed=9, masking="lengths")
    step_tiles(1, 1, 0)
    want = _run_both_passes("lstm", p, mask, reverse=False, bptt_steps=None)
    step_tiles(1, 1, 2)
    before = _loops()
    got = _run_both_passes("lstm", p, mask, reverse=False, bptt_steps=None)
    ran = _delta(before, _loops())
    assert ran == {"forward_persistent": 0, "forward_per_step": 1, "backward_persistent": 0,
                   "backward_per_step": 1}, ran
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    step_tiles(-1, -1, -1)
    q, qmask = _problem32("gru", 4, 3, 5, 6, seed=1, masking="mask", scale=0.5)
    _compare("gru", q, qmask)  # a healthy call afterwards


@kernels
def test_a_failed_cuda_call_does_not_leak_into_the_next_call():
    """A runtime error raised by the module's error check is cleared: the next healthy call
    does not report it again."""
    mod = backend.cuda()
    p, mask = _problem32("lstm", 5, 4, 3, 8, seed=3, masking="mask", scale=0.5)
    want = _run_both_passes("lstm", p, mask, reverse=False, bptt_steps=None)
    with pytest.raises(RuntimeError, match="deliberate failure"):
        mod._fail_for_tests()
    got = _run_both_passes("lstm", p, mask, reverse=False, bptt_steps=None)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


@kernels
def test_a_device_without_kernel_image_falls_back_to_the_reference(monkeypatch):
    """Where the build has no kernel image for the GPU (e.g. sm_75 and a build for 80 and 90),
    CuPy float32 runs the reference on the GPU instead of raising; simulated by the recorded
    support of the current device."""
    dev = int(cupy.cuda.Device().id)
    monkeypatch.setitem(backend._kernel_support, dev, {"ok": False, "device": dev, "error": 209,
                                                       "message": "no kernel image is available"})
    assert not backend.cuda_kernels_available(dev) and not _cuda_ops.available(dev)
    p, mask = _problem32("gru", 6, 4, 3, 5, seed=8, masking="lengths", scale=0.5)
    args, kw = forward_args("gru", p)
    before = _calls()
    y, h, cache = ops.gru_forward(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
    assert isinstance(cache, dict) and _calls() == before  # the reference ran
    g = ops.gru_backward(cache, y)
    assert _calls() == before
    y_ref, h_ref, cache_ref = reference.gru_forward(*_f64(args), **{k: _f64(v) for k, v in kw.items()})
    g_ref = reference.gru_backward(cache_ref, cupy.asnumpy(y).astype(np.float64))
    _close32(y, y_ref, "y")
    _close32(h, h_ref, "h_n")
    for k in g_ref:
        _close32(g[k], g_ref[k], "d" + k)


@kernels
@pytest.mark.parametrize("trans_a", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("mnk", [(1, 1, 1), (129, 130, 7), (80, 1, 1600), (1024, 256, 6400), (300, 700, 300),
                                 (2100, 1100, 70), (1000, 2200, 33), (1290, 1700, 129)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_gemm_matches_numpy(mnk, trans_a, trans_b):
    """The GEMM alone: both tile sizes, split-K (long K, small output), transposes as strides.
    The last three shapes have at least 144 output tiles of 128 x 128, which selects the 128 x 128
    tile on GPUs of up to 144 multiprocessors (the H100 has 132), with ragged edges in M, N and K."""
    M, N, K = mnk
    rng = np.random.default_rng(M + N + K)
    a = rng.uniform(-1, 1, size=(K, M) if trans_a else (M, K)).astype(np.float32)
    b = rng.uniform(-1, 1, size=(N, K) if trans_b else (K, N)).astype(np.float32)
    bias = rng.uniform(-1, 1, size=N).astype(np.float32)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64) + bias
    got = _cuda_ops.matmul(cupy.asarray(a), cupy.asarray(b), trans_a, trans_b, bias=cupy.asarray(bias))
    _close32(got, want, "C", atol=3e-6 * np.sqrt(K))


@kernels
def test_cuda_kernels_are_deterministic():
    p, mask = _problem32("lstm", 20, 33, 40, 130, seed=3, masking="mask")
    args, kw = forward_args("lstm", p)
    kw["mask"] = mask
    dy = cupy.asarray(np.random.default_rng(0).normal(size=(33, 20, 130)).astype(np.float32))
    runs = []
    for _ in range(2):
        y, _, cache = ops.lstm_forward(*_dev(args), **{k: _dev(v) for k, v in kw.items()})
        g = ops.lstm_backward(cache, dy, bptt_steps=4)
        runs.append([cupy.asnumpy(y)] + [cupy.asnumpy(g[k]) for k in sorted(g)])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


@kernels
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["bf", "tm"])
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_never_reads_masked_positions(cell, batch_first, training):
    """NaN in x (and dy) at masked positions changes no output, no state and no gradient, in the
    training and in the inference kernels."""
    base = base_name(cell)
    p, mask = _problem32(cell, 6, 5, 4, 7, seed=2, batch_first=batch_first, masking="mask", scale=0.5)
    args, kw = forward_args(cell, p)
    kw.update(mask=mask, batch_first=batch_first, training=training)
    pad = ~mask if batch_first else ~mask.T  # masked positions in x's layout
    dy = np.random.default_rng(1).normal(size=p["x"].shape[:2] + (7,)).astype(np.float32)
    results = []
    for fill in (0.0, np.nan):
        x = p["x"].copy()
        x[pad] = fill
        d = dy.copy()
        d[pad] = fill
        before = _calls()
        y, state, cache = getattr(ops, f"{base}_forward")(_dev(x), *_dev(args[1:]), **{k: _dev(v) for k, v in kw.items()})
        assert _calls()["forward"] == before["forward"] + 1
        states = list(state) if base == "lstm" else [state]
        out = [cupy.asnumpy(y)] + [cupy.asnumpy(v) for v in states]
        if training:
            g = getattr(ops, f"{base}_backward")(cache, _dev(d))
            g.pop("x")  # dx at masked positions is 0 either way; the rest must match exactly
            out += [cupy.asnumpy(g[k]) for k in sorted(g)]
        else:
            assert cache is None
        results.append(out)
    for a, b in zip(*results):
        assert np.isfinite(a).all() and np.array_equal(a, b)


@kernels
def test_cuda_kernels_run_on_the_current_stream_and_keep_private_copies():
    p, mask = _problem32("gru", 8, 4, 6, 10, seed=4, masking="lengths")
    args, kw = forward_args("gru", p)
    args_d = _dev(args)
    kw_d = {k: _dev(v) for k, v in kw.items()}
    y0, h0, cache0 = ops.gru_forward(*args_d, **kw_d)
    g0 = ops.gru_backward(cache0, y0)
    cupy.cuda.Device().synchronize()  # the non-blocking stream does not wait for the default stream
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        y1, h1, cache1 = ops.gru_forward(*args_d, **kw_d)
        args_d[0][...] = 7.0  # in-place edits after the forward: the cache holds its own copies
        args_d[2][...] = -3.0
        g1 = ops.gru_backward(cache1, y1)
    stream.synchronize()
    assert np.array_equal(cupy.asnumpy(y0), cupy.asnumpy(y1))
    assert np.array_equal(cupy.asnumpy(h0), cupy.asnumpy(h1))
    for k in g0:
        assert np.array_equal(cupy.asnumpy(g0[k]), cupy.asnumpy(g1[k])), k


@kernels
@pytest.mark.skipif(_cuda_devices() < 2, reason="needs two CUDA devices")
def test_arrays_on_device_1_run_there_whatever_the_current_device():
    """x and everything else on device 1 while device 0 is current: the checks, the mask from
    lengths, the copies and the outputs are all made on device 1; an array (lengths or mask
    included) on another device than x is refused."""
    p, _ = _problem32("lstm", 6, 4, 3, 5, seed=11, masking="lengths", scale=0.5)
    args, kw = forward_args("lstm", p)
    want_y, (want_h, want_c), _ = reference.lstm_forward(*_f64(args), **{k: _f64(v) for k, v in kw.items()})
    with cupy.cuda.Device(1):
        args1 = _dev(args)
        kw1 = {k: _dev(v) for k, v in kw.items()}
        mask1 = cupy.asarray(np.arange(6)[None, :] < p["lengths"][:, None])
    with cupy.cuda.Device(0):
        for masking in ({"lengths": kw1["lengths"]}, {"lengths": None, "mask": mask1}):
            y, (h, c), cache = ops.lstm_forward(*args1, **{**kw1, **masking})
            assert y.device.id == 1 and h.device.id == 1 and c.device.id == 1
            _close32(y, want_y, "y")
            _close32(h, want_h, "h_n")
            g = ops.lstm_backward(cache, y)
            assert all(v.device.id == 1 for v in g.values())
        with pytest.raises(ValueError, match="lengths is on CUDA device 0, but x is on device 1"):
            ops.lstm_forward(*args1, **{**kw1, "lengths": cupy.asarray(p["lengths"])})
        with pytest.raises(ValueError, match="mask is on CUDA device 0, but x is on device 1"):
            ops.lstm_forward(*args1, **{**kw1, "lengths": None, "mask": cupy.asarray(mask1.get())})
