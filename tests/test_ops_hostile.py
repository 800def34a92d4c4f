"""A hostile-input battery for the public ops (property-based): shapes with zero-size dimensions,
non-contiguous and transposed views, every kind of dtype, lengths and masks of every kind, odd
flags and bptt_steps, thread counts and ISAs.

Each case must either compute what the float64 reference computes on the same inputs (within the
tolerance of test_kernels.py) or raise a clean TypeError / ValueError that names the function or
the argument: never a crash, never another exception. The ops may be stricter than the
references in one way only, the one they document: they take float32 (a float64 array is a
TypeError); otherwise the two refuse the same inputs, with the same exception type.

Reproducible: derandomized, with a bounded number of examples and no deadline (the machine is
shared; timing is not what is tested).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import ops
from fastrnn import reference as ref

ISAS = fastrnn.available_isas()
SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
ARG_NAMES = ("x", "w_ih", "w_hh", "b", "b_ih", "b_hh", "h0", "c0", "lengths", "mask", "reverse", "batch_first",
             "training", "nonlinearity", "activation", "out", "cache", "dy", "dstate", "bptt_steps")
DTYPES = [np.float32] * 6 + [np.float64, np.int32, np.int64, np.bool_, np.complex64, np.float16, object]


def _close(got, want, what):
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = 1.0 + float(np.max(np.abs(want))) if want.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    assert err <= 3e-5 * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


def _clean(exc, fn):
    """A TypeError / ValueError whose message names the function or an argument."""
    assert type(exc) in (TypeError, ValueError) or (isinstance(exc, TypeError) and type(exc).__module__ == "numpy"), \
        f"{fn}: {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert fn in msg or any(n in msg for n in ARG_NAMES), f"{fn}: the message names no argument: {msg}"


def _is_dtype_refusal(exc):
    return isinstance(exc, TypeError) and "float32 for the C++ kernels" in str(exc)


def _to64(v):
    if isinstance(v, np.ndarray) and v.dtype == np.float32:
        return v.astype(np.float64)
    if isinstance(v, (tuple, list)):
        return type(v)(_to64(a) for a in v)
    return v


def _call(f, *args, **kw):
    try:
        return f(*args, **kw), None
    except Exception as exc:  # every kind: classified by the caller
        return None, exc


@st.composite
def arrays(draw, shape, dtype=None, layouts=("c", "c", "c", "t", "s")):
    """An array of ``shape``: C-contiguous, a transposed view or a strided slice, of ``dtype``
    (drawn from DTYPES when None)."""
    dtype = draw(st.sampled_from(DTYPES)) if dtype is None else dtype
    seed = draw(st.integers(0, 2**16))
    vals = np.random.default_rng(seed).standard_normal(shape) * 0.5
    layout = draw(st.sampled_from(layouts))
    if dtype is object:
        a = vals.astype(object)
    elif np.dtype(dtype).kind == "b":
        a = vals > 0
    elif np.dtype(dtype).kind in "iu":
        a = np.rint(vals).astype(dtype)
    else:
        a = vals.astype(dtype)
    if layout == "t" and a.ndim >= 2:
        return np.ascontiguousarray(a.T).T  # same values, Fortran order
    if layout == "s":
        big = np.repeat(a, 2, axis=-1) if a.ndim else a
        return big[..., ::2] if a.ndim else a
    return a


def _lengths_or_mask(draw, T, B, valid=False):
    if valid:  # the kinds the ops take (other layouts and values included)
        kind = draw(st.sampled_from(["none", "lengths", "mask"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        if kind == "lengths":
            lens = rng.integers(0, T + 1, size=B)
            return draw(st.sampled_from([lens, lens.astype(np.uint8), [int(n) for n in lens]])), None
        if kind == "mask":
            m = rng.random((B, T)) < 0.7
            return None, draw(st.sampled_from([m, m.astype(np.int8), m.astype(np.float32), m.tolist(),
                                               np.asfortranarray(m)]))
        return None, None
    kind = draw(st.sampled_from(["none", "none", "lengths", "lengths", "mask", "mask", "both"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "none":
        return None, None
    if kind in ("lengths", "both"):
        v = draw(st.sampled_from(["ok", "ok", "ok", "zeros", "over", "negative", "float", "empty", "list", "short",
                                  "2d", "uint", "bool"]))
        lens = rng.integers(0, T + 1, size=B)
        lengths = {"ok": lens, "zeros": np.zeros(B, np.int64), "over": lens + T + 1, "negative": lens - T - 1,
                   "float": lens.astype(np.float64), "empty": [], "list": [int(n) for n in lens],
                   "short": lens[:-1], "2d": lens[None, :], "uint": lens.astype(np.uint8),
                   "bool": lens > 0}[v]
        if kind == "lengths":
            return lengths, None
    v = draw(st.sampled_from(["bool", "bool", "01", "01f", "other", "shape", "list", "transposed", "object"]))
    m = rng.random((B, T)) < 0.7
    mask = {"bool": m, "01": m.astype(np.int8), "01f": m.astype(np.float32), "other": m.astype(np.int32) * 2,
            "shape": m.T if B != T else m[:, :0], "list": m.tolist(), "transposed": np.asfortranarray(m),
            "object": m.astype(object)}[v]
    return (lengths if kind == "both" else None), mask


FLAGS = st.sampled_from([True, False, True, False, np.bool_(True), np.bool_(False), 0, 1, "yes", None])


def _env(draw):
    fastrnn.set_num_threads(draw(st.integers(1, 4)))
    fastrnn.set_isa(draw(st.sampled_from(ISAS)))


@pytest.fixture(autouse=True)
def _restore_threads_and_isa():
    threads, isa = fastrnn.get_num_threads(), fastrnn.isa()
    yield
    fastrnn.set_num_threads(threads)
    fastrnn.set_isa(isa)


@st.composite
def forward_cases(draw):
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    G = GATES[cell]
    hostile = draw(st.integers(0, 2)) > 0  # else valid dtypes, flags, lengths and masks (any layout)
    flags = FLAGS if hostile else st.booleans()
    dims = st.integers(0, 4) if hostile and draw(st.integers(0, 5)) == 0 else st.integers(1, 4)
    T, B, I, H = (draw(dims) for _ in range(4))
    batch_first = draw(flags)
    bf = batch_first if isinstance(batch_first, (bool, np.bool_)) else True
    xdtype = draw(st.sampled_from(DTYPES)) if hostile else np.float32
    x = draw(arrays((B, T, I) if bf else (T, B, I), xdtype))
    # the other arrays mostly share x's dtype; now and then one differs
    other = (lambda: draw(st.sampled_from(DTYPES))) if hostile and draw(st.integers(0, 5)) == 0 \
        else (lambda: xdtype)
    w_ih = draw(arrays((G * H, I), other()))
    w_hh = draw(arrays((G * H, H), other()))
    biases = [draw(arrays((G * H,), other())) for _ in range(2 if cell == "gru" else 1)]
    if hostile and draw(st.integers(0, 7)) == 0:  # a wrong shape somewhere
        which = draw(st.sampled_from(["w_ih", "w_hh", "b"]))
        if which == "w_ih":
            w_ih = w_ih[:, :-1] if I else np.zeros((G * H, 1), np.float32)
        elif which == "w_hh":
            w_hh = w_hh[:-1]
        else:
            biases[0] = biases[0][:-1]
    kw = {}
    if draw(st.booleans()):
        kw["h0"] = draw(arrays((B, H) if not hostile or draw(st.integers(0, 5)) else (B + 1, H), other()))
    if cell == "lstm" and draw(st.booleans()):
        kw["c0"] = draw(arrays((B, H), other()))
    lengths, mask = _lengths_or_mask(draw, T, B, valid=not hostile)
    if lengths is not None:
        kw["lengths"] = lengths
    if mask is not None:
        kw["mask"] = mask
    kw["reverse"] = draw(flags)
    kw["batch_first"] = batch_first
    kw["training"] = draw(flags)
    if cell == "rnn":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu", "tanh", "sigmoid", None] if hostile else
                                                  ["tanh", "relu"]))
    _env(draw)
    return cell, x, w_ih, w_hh, tuple(biases), kw


@settings(max_examples=800, **SETTINGS)
@given(forward_cases())
def test_forward_is_the_reference_or_a_clean_error(case):
    cell, x, w_ih, w_hh, biases, kw = case
    fn = f"{cell}_forward"
    got, exc = _call(getattr(ops, fn), x, w_ih, w_hh, *biases, **kw)
    ref_same, ref_exc = _call(getattr(ref, fn), x, w_ih, w_hh, *biases, **kw)
    if ref_exc is not None:
        _clean(ref_exc, fn)
    event(f"{fn}: {'ok' if exc is None else type(exc).__name__}")
    if exc is not None:
        _clean(exc, fn)
        # stricter than the reference only about float64 (checked first, whatever else is wrong)
        if not _is_dtype_refusal(exc):
            assert ref_exc is not None, f"{fn}: the reference takes it, the op raised {exc!r}"
            assert type(exc) is type(ref_exc), f"{fn}: op {exc!r}, reference {ref_exc!r}"
        return
    assert ref_exc is None, f"{fn}: the op took what the reference refused: {ref_exc!r}"
    want = getattr(ref, fn)(_to64(x), _to64(w_ih), _to64(w_hh), *_to64(biases),
                            **{k: _to64(v) for k, v in kw.items()})
    y, state, cache = got
    _close(y, want[0], f"{fn} y")
    states = state if cell == "lstm" else (state,)
    wstates = want[1] if cell == "lstm" else (want[1],)
    for s, w in zip(states, wstates):
        _close(s, w, f"{fn} state")
    assert (cache is None) == (want[2] is None)


BPTT = st.sampled_from([None, None, None, 1, 2, 3, 5, 2**31, 2**63, 2**64, np.int64(2), np.uint64(2**64 - 1), 0, -1,
                        -(2**64), 1.5, True, "2"])


@st.composite
def backward_cases(draw):
    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    G = GATES[cell]
    T, B, I, H = (draw(st.integers(1, 4)) for _ in range(4))
    batch_first, reverse = draw(st.booleans()), draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(np.float32)
    w_ih = (rng.standard_normal((G * H, I)) * 0.5).astype(np.float32)
    w_hh = (rng.standard_normal((G * H, H)) * 0.5).astype(np.float32)
    biases = tuple((rng.standard_normal(G * H) * 0.1).astype(np.float32) for _ in range(2 if cell == "gru" else 1))
    lengths, mask = _lengths_or_mask(draw, T, B)
    # only valid forwards here (the forward test covers the others)
    kw = dict(reverse=reverse, batch_first=batch_first)
    if mask is not None and isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (B, T):
        kw["mask"] = mask
    elif lengths is not None and isinstance(lengths, np.ndarray) and lengths.dtype.kind == "i" \
            and lengths.shape == (B,) and lengths.min() >= 0 and lengths.max() <= T:
        kw["lengths"] = lengths
    yshape = (B, T, H) if batch_first else (T, B, H)
    dy_kind = draw(st.sampled_from(["ok", "ok", "ok", "none", "transposed", "strided", "f64", "int", "shape",
                                    "list"]))
    dy = rng.standard_normal(yshape).astype(np.float32)
    dy = {"ok": dy, "none": None, "transposed": np.asfortranarray(dy), "strided": np.repeat(dy, 2, axis=-1)[..., ::2],
          "f64": dy.astype(np.float64), "int": dy.astype(np.int32), "shape": dy[..., :-1] if H > 1 else dy[:, :0],
          "list": dy.tolist()}[dy_kind]
    dh = rng.standard_normal((B, H)).astype(np.float32)
    ds_kind = draw(st.sampled_from(["none", "none", "ok", "shape", "f64", "tuple1"]))
    if cell == "lstm":
        dstate = {"none": None, "ok": (dh, None if draw(st.booleans()) else dh.copy()), "shape": (dh[:, :0], None),
                  "f64": (dh.astype(np.float64), None), "tuple1": (dh,)}[ds_kind]
    else:
        dstate = {"none": None, "ok": dh, "shape": dh[:, :0], "f64": dh.astype(np.float64), "tuple1": (dh,)}[ds_kind]
    bptt = draw(BPTT)
    _env(draw)
    return cell, (x, w_ih, w_hh, biases), kw, dy, dstate, bptt


@settings(max_examples=500, **SETTINGS)
@given(backward_cases())
def test_backward_is_the_reference_or_a_clean_error(case):
    cell, (x, w_ih, w_hh, biases), kw, dy, dstate, bptt = case
    fn = f"{cell}_backward"
    _, _, cache = getattr(ops, f"{cell}_forward")(x, w_ih, w_hh, *biases, **kw)
    _, _, rcache = getattr(ref, f"{cell}_forward")(x, w_ih, w_hh, *biases, **kw)  # float32 reference
    got, exc = _call(getattr(ops, fn), cache, dy, dstate=dstate, bptt_steps=bptt)
    _, ref_exc = _call(getattr(ref, fn), rcache, dy, dstate=dstate, bptt_steps=bptt)
    event(f"{fn}: {'ok' if exc is None else type(exc).__name__}")
    if ref_exc is not None:
        _clean(ref_exc, fn)
    if exc is not None:
        _clean(exc, fn)
        assert ref_exc is not None, f"{fn}: the reference takes it, the op raised {exc!r}"
        assert type(exc) is type(ref_exc), f"{fn}: op {exc!r}, reference {ref_exc!r}"
        return
    assert ref_exc is None, f"{fn}: the op took what the reference refused: {ref_exc!r}"
    kw64 = {k: _to64(v) for k, v in kw.items()}
    _, _, c64 = getattr(ref, f"{cell}_forward")(*_to64((x, w_ih, w_hh)), *_to64(biases), **kw64)
    want = getattr(ref, fn)(c64, None if dy is None else np.asarray(dy, np.float64), dstate=_to64(dstate),
                            bptt_steps=bptt)
    assert set(got) == set(want)
    for k in want:
        _close(got[k], want[k], f"{fn} d{k}")


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_backward_refuses_what_is_not_a_cache(data):
    cell = data.draw(st.sampled_from(["rnn", "lstm", "gru"]))
    fn = f"{cell}_backward"
    cache = data.draw(st.sampled_from([None, {}, {"cell": cell}, {"cell": "lstm" if cell != "lstm" else "gru"},
                                       {"cell": cell, "T": 2, "B": 1, "H": 1}, [], "cache", 3, np.zeros(3)]))
    for f in (getattr(ops, fn), getattr(ref, fn)):
        _, exc = _call(f, cache, None)
        assert exc is not None
        _clean(exc, fn)


@st.composite
def matmul_cases(draw):
    M, K, N = (draw(st.integers(0, 5)) for _ in range(3))
    lead = draw(st.sampled_from([(), (), (2,), (0,), (1, 2)]))
    a = draw(arrays(lead + (M, K), layouts=("c", "c", "t", "s")))
    kb = K if draw(st.integers(0, 7)) else K + 1
    b_shape = draw(st.sampled_from([(kb, N), (kb, N), (kb, N), (kb,), (2, kb, N)]))
    b = draw(arrays(b_shape, layouts=("c", "c", "t", "s")))
    _env(draw)
    return a, b


@settings(max_examples=400, **SETTINGS)
@given(matmul_cases())
def test_matmul_is_numpys_matmul(case):
    a, b = case
    got, exc = _call(ops.matmul, a, b)
    want, want_exc = _call(np.matmul, a, b)
    event(f"matmul: {'ok' if exc is None else type(exc).__name__}"
          f"{' (fastrnn GEMM)' if a.dtype == b.dtype == np.float32 and a.ndim >= 2 and b.ndim == 2 else ''}")
    if want_exc is not None:
        assert exc is not None and isinstance(exc, type(want_exc).__mro__[0]), (exc, want_exc)
        assert isinstance(exc, (TypeError, ValueError)), exc
        return
    assert exc is None, f"matmul raised {exc!r} where a @ b is {want!r}"
    assert np.asarray(got).dtype == np.asarray(want).dtype
    if a.dtype == np.float32 and b.dtype == np.float32:  # fastrnn's GEMM (or numpy's, for its cases)
        _close(got, np.matmul(a.astype(np.float64), b.astype(np.float64)), "matmul")
    else:  # numpy's @ itself
        np.testing.assert_array_equal(got, want)
