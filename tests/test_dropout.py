"""Dropout from Philox4x32-10: the generator against Random123's known answers (C++ and NumPy
twin), the C++ masks against the twin bit for bit on every ISA and thread count, the drop rate
within a binomial bound, the Dropout layer and the RNN layers' dropout against the reference, and
recurrent dropout inside the kernels' time loop (forward and gradients, every cell, awkward sizes,
masks, reverse, truncated BPTT, threads) against the NumPy references, which a finite-difference
check validates in turn."""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastrnn
from _problems import base_name, forward_args, make_problem, numgrad
from fastrnn import _core, _dropout, ops
from fastrnn import layers as L
from fastrnn import reference as ref
from fastrnn.reference import dropout as RD

ISAS = _core.available_isas()

# Random123's kat_vectors (philox4x32 lines): rounds, counter[4], key[2] -> output[4]
KAT = [
    (7, [0, 0, 0, 0], [0, 0], [0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48]),
    (7, [0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662]),
    (7, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A]),
    (10, [0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    (10, [0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (10, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


@pytest.fixture
def threads():
    before = fastrnn.get_num_threads()
    yield fastrnn.set_num_threads
    fastrnn.set_num_threads(before)


def _key(words):
    return words[0] | (words[1] << 32)


# ------------------------------------------------------------------------------------------------ Philox
@pytest.mark.parametrize("rounds, ctr, key, want", KAT)
def test_philox_known_answers_numpy_twin(rounds, ctr, key, want):
    got = RD.philox4x32(np.array([ctr], np.uint32), _key(key), rounds)
    assert got.dtype == np.uint32 and got.tolist() == [want]


def test_philox_known_answers_cpp(isa):
    for rounds, ctr, key, want in KAT:
        got = _core.philox4x32(np.array([ctr], np.uint32), _key(key), rounds)
        assert got.tolist() == [want], (isa, rounds, ctr)


def test_philox_cpp_equals_twin_on_many_counters():
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(1000, 4), dtype=np.uint64).astype(np.uint32)
    key = int(rng.integers(0, 2**63))
    np.testing.assert_array_equal(_core.philox4x32(ctr, key), RD.philox4x32(ctr, key))
    with pytest.raises(ValueError, match="ctr: expected shape"):
        _core.philox4x32(ctr[:, :3].copy(), key)


# ------------------------------------------------------------------------------------------------ masks
def _cpp_dropout(x, n, key, call, stream, rate, want_y=True):
    sc = _dropout.scale(rate, np.float32)
    return _core.dropout(x, n, key, call, stream, RD.dropout_threshold(rate), float(sc), want_y, True)


@pytest.mark.parametrize("n", [1, 3, 17, 63, 64, 65, 1000, 70_001])
def test_cpp_masks_equal_the_twin_on_every_isa_and_thread_count(n, threads):
    key, call, stream, rate = 0xFEDCBA9876543210 & (2**63 - 1), 2**32 - 1, 1, 0.3
    want = RD.dropout_mask(n, key, call, stream, rate, _dropout.scale(rate, np.float32))
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    x[::7] = np.nan  # NaN * 0 is NaN, as in NumPy's x * m
    for name in ISAS:
        _core.set_isa(name)
        for t in (1, 2, 3):
            threads(t)
            y, m = _cpp_dropout(x, n, key, call, stream, rate)
            np.testing.assert_array_equal(m, want, err_msg=f"{name} threads={t}")
            np.testing.assert_array_equal(y, x * want, err_msg=f"{name} threads={t}")
    _core.set_isa(ISAS[-1])


def test_masks_depend_on_key_call_and_stream_only():
    n, rate = 4096, 0.5
    base = RD.dropout_mask(n, 11, 0, 0, rate, 2.0)
    for other in (RD.dropout_mask(n, 12, 0, 0, rate, 2.0), RD.dropout_mask(n, 11, 1, 0, rate, 2.0),
                  RD.dropout_mask(n, 11, 0, 1, rate, 2.0)):
        agree = float((other == base).mean())  # independent masks agree on about half the elements
        assert abs(agree - 0.5) < 6 * math.sqrt(0.25 / n), agree
    np.testing.assert_array_equal(RD.dropout_mask(100, 11, 0, 0, rate, 2.0), base[:100])  # prefix-stable


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.9])
def test_drop_rate_within_six_sigma_on_a_million_draws(rate):
    n = 1_000_000
    _, m = _cpp_dropout(None, n, 1234567, 5, 0, rate, want_y=False)
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(int((m == 0).sum()) - n * rate) < 6 * sigma
    # every lane position of the 64-element groups (each Philox word, each block lane) drops at the rate
    per_lane = (m.reshape(-1, 64) == 0).mean(axis=0)
    lane_sigma = math.sqrt(rate * (1 - rate) / (n // 64))
    assert np.all(np.abs(per_lane - rate) < 6 * lane_sigma), per_lane
    assert set(np.unique(m).tolist()) == {0.0, float(_dropout.scale(rate, np.float32))}


def test_rate_zero_keeps_everything_and_threshold_is_floor():
    assert RD.dropout_threshold(0.0) == 0 and RD.dropout_threshold(0.5) == 2**31
    assert RD.dropout_threshold(1 - 1e-12) == 2**32 - 1
    _, m = _cpp_dropout(None, 1000, 3, 0, 0, 0.0, want_y=False)
    assert np.all(m == 1.0)


def test_dropout_binding_refuses_bad_input():
    with pytest.raises(ValueError, match="x: expected 5 elements"):
        _core.dropout(np.zeros(4, np.float32), 5, 1, 0, 0, 0, 1.0, True, False)
    with pytest.raises(ValueError, match="x: required"):
        _core.dropout(None, 5, 1, 0, 0, 0, 1.0, True, False)
    with pytest.raises(TypeError):
        _core.dropout(np.zeros(4, np.float64), 4, 1, 0, 0, 0, 1.0, True, False)


# ------------------------------------------------------------------------------------------------ Dropout layer
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (4, 7, 33), (64, 56, 128)])
def test_dropout_layer_equals_the_reference_mask_and_its_backward(shape, threads):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    n = x.size
    outs = []
    for t in (1, 2):
        threads(t)
        layer = L.Dropout(0.3, seed=9)
        key = layer._stream.key
        for call in range(2):  # each training call draws a new mask
            y = layer(x, training=True)
            m = RD.dropout_mask(n, key, call, 0, 0.3, _dropout.scale(0.3, np.float32)).reshape(shape)
            np.testing.assert_array_equal(y, x * m)
            dy = np.random.default_rng(call).standard_normal(shape).astype(np.float32)
            np.testing.assert_array_equal(layer.backward(dy), dy * m)
            outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[2])  # threads 1 and 2: the same masks
    if n > 64:
        assert not np.array_equal(outs[0], outs[1])


def test_dropout_layer_float64_and_noise_shape_use_the_same_stream():
    x = np.random.default_rng(2).standard_normal((5, 6, 7))
    d64 = L.Dropout(0.4, seed=1, dtype="float64")
    y = d64(x, training=True)
    keep = RD.dropout_mask(x.size, d64._stream.key, 0, 0, 0.4, 1.0).reshape(x.shape)
    np.testing.assert_array_equal(y, x * (keep.astype(np.float64) * (1.0 / (1.0 - 0.4))))
    shared = L.Dropout(0.4, noise_shape=(None, 1, None), seed=1)
    y = shared(x.astype(np.float32), training=True)
    m = RD.dropout_mask(5 * 7, shared._stream.key, 0, 0, 0.4, _dropout.scale(0.4, np.float32)).reshape(5, 1, 7)
    np.testing.assert_array_equal(y, x.astype(np.float32) * m)
    dy = np.ones_like(y)
    np.testing.assert_array_equal(shared.backward(dy), np.broadcast_to(m, y.shape))
    with pytest.raises(ValueError, match="does not match the last input"):
        shared.backward(np.ones((5, 6, 8), np.float32))


def test_set_seed_makes_dropout_reproducible():
    x = np.ones((16, 40), np.float32)
    runs = []
    for _ in range(2):
        fastrnn.set_seed(123)
        d = L.Dropout(0.5)
        runs.append([d(x, training=True) for _ in range(3)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[0][1])
    fastrnn.set_seed(124)
    assert not np.array_equal(L.Dropout(0.5)(x, training=True), runs[0][0])


# ------------------------------------------------------------------------------------------------ RNN layers
@pytest.mark.parametrize("cls_name", ["SimpleRNN", "LSTM", "GRU"])
def test_rnn_layer_masks_come_from_the_layer_stream(cls_name):
    layer = getattr(L, cls_name)(5, dropout=0.3, recurrent_dropout=0.25, seed=4)
    x = np.random.default_rng(3).standard_normal((3, 4, 6)).astype(np.float32)
    for call in range(2):
        layer(x, training=True)
        mx, mh = layer.last_dropout_masks
        key = layer._dropout_stream.key
        np.testing.assert_array_equal(mx, RD.dropout_mask(18, key, call, 0, 0.3, _dropout.scale(0.3, np.float32))
                                      .reshape(3, 6))
        np.testing.assert_array_equal(mh, RD.dropout_mask(15, key, call, 1, 0.25, _dropout.scale(0.25, np.float32))
                                      .reshape(3, 5))
    layer(x)  # inference draws nothing
    assert layer._dropout_stream.calls == 2 and layer.last_dropout_masks == (None, None)


@pytest.mark.parametrize("cls_name", ["SimpleRNN", "LSTM", "GRU"])
@pytest.mark.parametrize("B, H", [(1, 1), (3, 17), (3, 33)])
def test_rnn_layer_recurrent_dropout_float32_equals_float64_reference(cls_name, B, H):
    kw = dict(return_sequences=True, return_state=True, dropout=0.2, recurrent_dropout=0.3, bptt_steps=2)
    l32 = getattr(L, cls_name)(H, seed=7, **kw)
    l64 = getattr(L, cls_name)(H, seed=7, dtype="float64", **kw)
    rng = np.random.default_rng(B * H)
    x = rng.standard_normal((B, 5, 4))
    l32.build((None, 4))
    l64.build((None, 4))
    l64.set_weights([w.astype(np.float64) for w in l32.get_weights()])
    l64._dropout_stream.key = l32._dropout_stream.key
    mask = rng.random((B, 5)) < 0.8
    o32 = l32(x.astype(np.float32), training=True, mask=mask)
    o64 = l64(x, training=True, mask=mask)
    for a, b in zip(l32.last_dropout_masks, l64.last_dropout_masks):
        np.testing.assert_array_equal(a, b.astype(np.float32))
    for a, b in zip(o32, o64):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
    dys = [rng.standard_normal(o.shape) for o in o64]
    dx32 = l32.backward([d.astype(np.float32) for d in dys])
    dx64 = l64.backward(dys)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=5e-5)
    for p32, p64 in zip(l32.parameters(), l64.parameters()):
        np.testing.assert_allclose(p32.grad, p64.grad, rtol=1e-4, atol=5e-5, err_msg=p32.name)


def test_set_seed_makes_rnn_dropout_reproducible_across_thread_counts(threads):
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype(np.float32)
    runs = []
    for t in (1, 2, 1):
        threads(t)
        fastrnn.set_seed(77)
        layer = L.LSTM(9, dropout=0.3, recurrent_dropout=0.3, return_sequences=True)
        y = layer(x, training=True)
        dx = layer.backward(np.ones_like(y))
        runs.append((y, dx, layer.w_hh.grad.copy()))
    for r in runs[1:]:
        for a, b in zip(r, runs[0]):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------ recurrent_mask in the kernels
CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
# (T, B, I, H): B = 1 and 3, H = 1, 17, 33; (2, 45, 8, 129) splits the rows over 2 threads and
# (3, 6, 8, 200) the hidden units (LSTM, GRU)
SHAPES = [(4, 1, 3, 1), (5, 3, 4, 17), (6, 3, 5, 33), (2, 45, 8, 129), (3, 6, 8, 200)]


def _rmask(B, H, seed, rate=0.3):
    keep = np.random.default_rng(seed).random((B, H)) >= rate
    return keep / (1 - rate)


def _run(cell, p, rm, *, dtype, kernel, bptt, batch_first=True, reverse=False, masking=False):
    name = base_name(cell)
    args, kw = forward_args(cell, p)

    def cast(v):
        return v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v

    args = [cast(a) for a in args]
    kw = {k: cast(v) for k, v in kw.items()}
    if not masking:
        kw["lengths"] = None
    mod = ops if kernel else ref
    y, state, cache = getattr(mod, name + "_forward")(*args, **kw, batch_first=batch_first, reverse=reverse,
                                                      recurrent_mask=rm.astype(dtype))
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    hs = state[0] if isinstance(state, tuple) else state
    dstate = (np.ones_like(hs), np.ones_like(hs)) if name == "lstm" else np.ones_like(hs)
    grads = getattr(mod, name + "_backward")(cache, dy, dstate=dstate, bptt_steps=bptt)
    return y, state, grads


def _close(got, want, what):
    scale = 1.0 + float(np.max(np.abs(want)))
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want)))
    assert err <= 3e-5 * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("bptt", [None, 2])
def test_recurrent_mask_kernels_match_reference(isa, cell, shape, bptt, threads):
    T, B, I, H = shape
    rm = _rmask(B, H, seed=H)
    for batch_first, reverse, masking in [(True, False, False), (False, True, True)]:
        p = make_problem(cell, T, B, I, H, dtype=np.float64, seed=T + H, lengths="random", batch_first=batch_first)
        opts = dict(bptt=bptt, batch_first=batch_first, reverse=reverse, masking=masking)
        y_r, s_r, g_r = _run(cell, p, rm, dtype=np.float64, kernel=False, **opts)
        results = []
        for t in (1, 2):
            threads(t)
            y_k, s_k, g_k = _run(cell, p, rm, dtype=np.float32, kernel=True, **opts)
            _close(y_k, y_r, "y")
            for a, b in zip(np.atleast_1d(s_k) if not isinstance(s_k, tuple) else s_k,
                            np.atleast_1d(s_r) if not isinstance(s_r, tuple) else s_r):
                _close(a, b, "state")
            for key in g_r:
                _close(g_k[key], g_r[key], f"grad {key} ({isa}, threads={t}, {opts})")
            results.append((y_k, g_k))
        np.testing.assert_array_equal(results[0][0], results[1][0])  # bit for bit across thread counts
        for key in results[0][1]:
            np.testing.assert_array_equal(results[0][1][key], results[1][1][key], err_msg=key)


@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_mask_changes_the_result_and_ones_change_nothing(cell):
    T, B, I, H = 4, 3, 3, 6
    p = make_problem(cell, T, B, I, H, dtype=np.float64, seed=1)
    y1, _, g1 = _run(cell, p, np.ones((B, H)), dtype=np.float32, kernel=True, bptt=None)
    name = base_name(cell)
    args, kw = forward_args(cell, p)
    args = [a.astype(np.float32) for a in args]
    kw = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    y0, _, _ = getattr(ops, name + "_forward")(*args, **kw)
    np.testing.assert_array_equal(y1, y0)
    y2, _, g2 = _run(cell, p, _rmask(B, H, 3), dtype=np.float32, kernel=True, bptt=None)
    assert not np.allclose(y2, y1) and not np.allclose(g2["w_hh"], g1["w_hh"])


@pytest.mark.parametrize("cell", CELLS)
def test_reference_recurrent_mask_gradients_match_finite_differences(cell):
    T, B, I, H = 3, 2, 2, 3
    p = make_problem(cell, T, B, I, H, dtype=np.float64, seed=11, lengths=[3, 2])
    rm = _rmask(B, H, 5, rate=0.4)
    assert (rm == 0).any() and (rm > 0).any()
    name = base_name(cell)
    args, kw = forward_args(cell, p)
    fwd, bwd = getattr(ref, name + "_forward"), getattr(ref, name + "_backward")
    r = np.random.default_rng(2).standard_normal((B, T, H))

    def loss():
        y, _, _ = fwd(*args, **kw, recurrent_mask=rm)
        return float(np.sum(r * y))

    y, _, cache = fwd(*args, **kw, recurrent_mask=rm)
    g = bwd(cache, r)
    names = ["x", "w_ih", "w_hh"] + list(cache.spec.bias_names) + ["h0"] + (["c0"] if name == "lstm" else [])
    for key in names:
        np.testing.assert_allclose(g[key], numgrad(loss, p[key]), rtol=1e-6, atol=1e-8, err_msg=key)


def test_recurrent_mask_bad_input_is_refused():
    p = make_problem("lstm", 3, 2, 4, 5, dtype=np.float32, seed=0)
    args, kw = forward_args("lstm", p)
    with pytest.raises(ValueError, match="recurrent_mask"):
        ops.lstm_forward(*args, **kw, recurrent_mask=np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="recurrent_mask"):
        ops.lstm_forward(*args, **kw, recurrent_mask=np.ones((2, 5), np.float64))
    with pytest.raises(ValueError, match="recurrent_mask"):
        ref.lstm_forward(*args, **kw, recurrent_mask=np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="hmask: expected shape"):
        _core.forward(2, p["x"], p["w_ih"], p["w_hh"], p["b"], None, None, None, None, False, True, True,
                      hmask=np.ones((2, 4), np.float32))


def test_cache_keeps_a_private_copy_of_the_recurrent_mask():
    p = make_problem("gru", 3, 2, 4, 5, dtype=np.float32, seed=0)
    args, kw = forward_args("gru", p)
    rm = _rmask(2, 5, 1).astype(np.float32)
    y, _, c = ops.gru_forward(*args, **kw, recurrent_mask=rm)
    want = ops.gru_backward(c, np.ones_like(y))
    assert c.recurrent_mask is not rm and c.fields()["recurrent_mask"] is c.recurrent_mask
    rm[:] = 7.0  # edits after the forward do not reach the backward
    got = ops.gru_backward(c, np.ones_like(y))
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
