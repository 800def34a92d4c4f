"""SimpleRNN, LSTM, GRU and Bidirectional layers: against fastrnn.reference, finite differences and Keras semantics.

Layers made with dtype="float64" run the NumPy references, which makes central finite differences of
the whole layer (dropout, masks, go_backwards, merges, states) exact to ~1e-7; float32 layers run the
C++ kernels and are compared with the float64 reference called directly with the layer's weights.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from _problems import numgrad
from fastrnn import layers as L
from fastrnn import reference as R

# (class name, extra constructor kwargs, reference prefix)
CELLS = [
    ("SimpleRNN", {}, "rnn"),
    ("SimpleRNN", {"activation": "relu"}, "rnn"),
    ("LSTM", {}, "lstm"),
    ("GRU", {}, "gru"),
]
CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
N_STATES = {"SimpleRNN": 1, "LSTM": 2, "GRU": 1}


def make(cls_name, units=3, n_in=2, dtype="float64", seed=0, randomize=True, **kw):
    """A built layer with random (not initializer-shaped) weights, biases included."""
    layer = getattr(L, cls_name)(units, dtype=dtype, seed=seed, **kw)
    layer.build((None, n_in))
    if randomize:
        rng = np.random.default_rng(seed + 100)
        layer.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in layer.get_weights()])
    return layer


def ref_forward(prefix, layer, x, h0=None, c0=None, mask=None, reverse=False, w_hh=None):
    """fastrnn.reference forward in float64 with the layer's weights: (y, [states], cache)."""
    f64 = lambda a: None if a is None else np.asarray(a, dtype=np.float64)  # noqa: E731
    w = [f64(v) for v in layer.get_weights()]
    if w_hh is not None:
        w[1] = w_hh
    kw = dict(h0=f64(h0), mask=mask, reverse=reverse)
    if prefix == "lstm":
        y, (h, c), cache = R.lstm_forward(f64(x), *w, c0=f64(c0), **kw)
        return y, [h, c], cache
    if prefix == "rnn":
        y, h, cache = R.rnn_forward(f64(x), *w, nonlinearity=layer.activation, **kw)
    else:
        y, h, cache = R.gru_forward(f64(x), *w, **kw)
    return y, [h], cache


def random_mask(B, T, rng, right_padded=True):
    if right_padded:
        lens = rng.integers(1, T + 1, size=B)
        lens[0] = T
        return np.arange(T)[None, :] < lens[:, None]
    m = rng.random((B, T)) < 0.7
    m[:, 0] = True
    return m


def as_list(out):
    return list(out) if isinstance(out, list) else [out]


def fd_check_layer(layer, x, call_kw, arrays_extra=(), rtol=2e-6, atol=1e-8, seed=0):
    """Finite differences of sum(r_i * output_i) w.r.t. x, every parameter and the arrays in arrays_extra
    (which call_kw references, e.g. initial states); compares with backward and initial_state_grads."""
    rng = np.random.default_rng(seed)
    outs = as_list(layer(x, training=True, **call_kw))
    rs = [rng.standard_normal(o.shape) for o in outs]

    def loss():
        return float(sum(np.sum(r * o) for r, o in zip(rs, as_list(layer(x, training=True, **call_kw)))))

    layer(x, training=True, **call_kw)
    layer.zero_grad()
    dx = layer.backward(rs if len(rs) > 1 else rs[0])
    grads = {"x": dx, **{p.name: p.grad.copy() for p in layer.parameters()}}
    state_grads = list(layer.initial_state_grads or [])
    np.testing.assert_allclose(grads["x"], numgrad(loss, x), rtol=rtol, atol=atol, err_msg="x")
    for p in layer.parameters():
        np.testing.assert_allclose(grads[p.name], numgrad(loss, p.value), rtol=rtol, atol=atol, err_msg=p.name)
    for i, a in enumerate(arrays_extra):
        np.testing.assert_allclose(state_grads[i], numgrad(loss, a), rtol=rtol, atol=atol,
                                   err_msg=f"initial state {i}")


# ------------------------------------------------------------------------------------------------ vs reference
@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
def test_float32_layer_matches_reference(cls_name, kw, prefix):
    rng = np.random.default_rng(1)
    B, T, I, H = 3, 5, 4, 6
    # zero_output_for_mask: the op (and its reference) writes 0 at masked steps
    layer = make(cls_name, H, I, dtype="float32", return_sequences=True, return_state=True,
                 zero_output_for_mask=True, **kw)
    x = rng.standard_normal((B, T, I))  # float64 in: converted to float32
    init = [rng.uniform(-0.5, 0.5, (B, H)) for _ in range(N_STATES[cls_name])]
    mask = random_mask(B, T, rng, right_padded=False)
    outs = layer(x, training=True, mask=mask, initial_state=init)
    assert all(o.dtype == np.float32 for o in outs)
    y_ref, st_ref, cache = ref_forward(prefix, layer, x, *init, mask=mask)
    np.testing.assert_allclose(outs[0], y_ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(outs[1:], st_ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    dy = rng.standard_normal((B, T, H))
    dh = rng.standard_normal((B, H))
    dstate = (dh, None) if prefix == "lstm" else dh
    g_ref = getattr(R, f"{prefix}_backward")(cache, dy, dstate=dstate)
    dx = layer.backward([dy, dh] + [None] * (N_STATES[cls_name] - 1))
    np.testing.assert_allclose(dx, g_ref["x"], rtol=1e-4, atol=1e-5)
    for p in layer.parameters():
        key = p.name.split("/")[-1]
        np.testing.assert_allclose(p.grad, g_ref[key], rtol=1e-4, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(layer.initial_state_grads[0], g_ref["h0"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gradients_match_finite_differences(cls_name, kw, prefix, return_sequences, go_backwards):
    """x, all parameters and initial-state gradients, with a mask and return_state (float64 layer)."""
    rng = np.random.default_rng(2)
    B, T, I, H = 2, 4, 2, 2
    layer = make(cls_name, H, I, return_sequences=return_sequences, return_state=True,
                 go_backwards=go_backwards, **kw)
    x = rng.standard_normal((B, T, I))
    init = [rng.uniform(-0.5, 0.5, (B, H)) for _ in range(N_STATES[cls_name])]
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=bool)
    fd_check_layer(layer, x, {"mask": mask, "initial_state": init}, arrays_extra=init)


@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_gradients_with_gaps_leading_and_fully_masked_rows(cls_name, kw, prefix, return_sequences, go_backwards,
                                                           zero_output):
    """Finite differences through the masked-output semantics: repeated outputs (gaps, leading masked
    steps, a fully masked row, both directions) and the rows whose last output is 0."""
    rng = np.random.default_rng(13)
    B, T, I, H = 4, 5, 2, 2
    layer = make(cls_name, H, I, return_sequences=return_sequences, return_state=True, go_backwards=go_backwards,
                 zero_output_for_mask=zero_output, **kw)
    x = rng.standard_normal((B, T, I))
    init = [rng.uniform(-0.5, 0.5, (B, H)) for _ in range(N_STATES[cls_name])]
    mask = np.array([[0, 1, 0, 0, 1], [1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=bool)
    fd_check_layer(layer, x, {"mask": mask, "initial_state": init}, arrays_extra=init)


def test_truncated_bptt_sends_a_repeated_output_back_only_within_its_chunk():
    """bptt_steps=2, mask [1, 0, 0, 0]: step 3 repeats step 0's output from another chunk, so a
    gradient on it alone reaches nothing (like the final state, which holds the same value); from
    step 1 (same chunk) it reaches x[0]."""
    layer = make("GRU", 3, 2, return_sequences=True, bptt_steps=2)
    x = np.random.default_rng(14).standard_normal((1, 4, 2))
    mask = np.array([[1, 0, 0, 0]], bool)
    y = layer(x, mask=mask, training=True)
    np.testing.assert_array_equal(y[0, 3], y[0, 0])
    for step, reaches in ((3, False), (1, True)):
        dy = np.zeros_like(y)
        dy[0, step] = 1.0
        layer(x, mask=mask, training=True)
        layer.zero_grad()
        dx = layer.backward(dy)
        assert bool(np.abs(dx[0, 0]).max() > 0) is reaches


# ------------------------------------------------------------------------------------------------ Keras semantics
@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
def test_go_backwards_equals_forward_on_reversed_input(cls_name, kw, prefix):
    """Keras: go_backwards processes the reversed sequence (and mask) and returns outputs in processing order."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 2))
    mask = random_mask(3, 5, rng)
    for rs in (True, False):
        back = make(cls_name, 4, 2, dtype="float32", return_sequences=rs, go_backwards=True, **kw)
        fwd = make(cls_name, 4, 2, dtype="float32", return_sequences=rs, **kw)
        fwd.set_weights(back.get_weights())
        np.testing.assert_allclose(back(x), fwd(x[:, ::-1]), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(back(x, mask=mask), fwd(x[:, ::-1], mask=mask[:, ::-1]), rtol=1e-6, atol=1e-6)
    back = make(cls_name, 4, 2, dtype="float32", return_sequences=True, go_backwards=True, **kw)
    np.testing.assert_array_equal(back.compute_mask(x, mask), mask[:, ::-1])


def test_masked_embedding_lstm_equals_unpadded_runs():
    rng = np.random.default_rng(4)
    lens = [6, 3, 1, 4]
    ids = np.zeros((4, 6), dtype=np.int64)
    for b, n in enumerate(lens):
        ids[b, :n] = rng.integers(1, 20, size=n)
    emb = L.Embedding(20, 5, mask_zero=True, seed=0)
    for rs in (False, True):
        lstm = L.LSTM(7, return_sequences=rs, seed=1)
        x = emb(ids)
        y = lstm(x, mask=emb.compute_mask(ids))
        for b, n in enumerate(lens):
            alone = lstm(emb(ids[b:b + 1, :n]))
            if rs:
                np.testing.assert_allclose(y[b:b + 1, :n], alone, rtol=1e-5, atol=1e-6)
                np.testing.assert_array_equal(y[b, n:], np.broadcast_to(y[b, n - 1], y[b, n:].shape))
            else:
                np.testing.assert_allclose(y[b:b + 1], alone, rtol=1e-5, atol=1e-6)
        assert (lstm.compute_mask(x, emb.compute_mask(ids)) is None) == (not rs)


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "SimpleRNN"])
def test_masked_steps_repeat_the_last_valid_output_or_are_zero(cls_name, go_backwards):
    """Keras semantics: at a masked step the sequence output is the output of the last valid step
    before it in the order the layer runs (0 before the first); zero_output_for_mask=True: 0."""
    rng = np.random.default_rng(12)
    B, T, I, H = 3, 6, 2, 4
    x = rng.standard_normal((B, T, I))
    mask = np.array([[0, 1, 1, 0, 0, 1], [1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
    zeros = make(cls_name, H, I, return_sequences=True, go_backwards=go_backwards, zero_output_for_mask=True,
                 seed=3)
    rep = make(cls_name, H, I, return_sequences=True, go_backwards=go_backwards, seed=3)
    yz, yr = zeros(x, mask=mask), rep(x, mask=mask)
    valid = mask[:, ::-1] if go_backwards else mask  # in output (= running) order
    assert not yz[~valid].any() and yz[valid].all()
    for b in range(B):
        last = np.zeros(H)
        for t in range(T):
            if valid[b, t]:
                last = yz[b, t]
            np.testing.assert_array_equal(yr[b, t], last)
    assert rep.get_config()["zero_output_for_mask"] is False and zeros.get_config()["zero_output_for_mask"] is True


def test_bidirectional_sets_zero_output_for_mask_on_its_layers_when_it_returns_sequences():
    bi = L.Bidirectional(L.LSTM(3, return_sequences=True))
    assert bi.forward_layer.zero_output_for_mask and bi.backward_layer.zero_output_for_mask
    last = L.Bidirectional(L.LSTM(3))
    assert not last.forward_layer.zero_output_for_mask and not last.backward_layer.zero_output_for_mask
    x = np.random.default_rng(0).standard_normal((2, 4, 2))
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    assert not bi(x, mask=mask)[0, 2:].any()


def test_lengths_argument_equals_mask():
    rng = np.random.default_rng(5)
    layer = make("GRU", 3, 2, dtype="float32", return_sequences=True)
    x = rng.standard_normal((3, 4, 2))
    lens = np.array([4, 2, 0])
    np.testing.assert_array_equal(layer(x, lengths=lens), layer(x, mask=np.arange(4) < lens[:, None]))


def _bidir_expected(prefix, bi, x, lens, merge_mode, return_sequences):
    """Forward direction and per-sequence reversed runs of the reference, merged by hand."""
    B, T, _ = x.shape
    H = bi.units
    yf = np.zeros((B, T, H))
    yb = np.zeros((B, T, H))
    hf, hb = np.zeros((B, H)), np.zeros((B, H))
    for b, n in enumerate(lens):
        f, sf, _ = ref_forward(prefix, bi.forward_layer, x[b:b + 1, :n])
        r, sb, _ = ref_forward(prefix, bi.backward_layer, x[b:b + 1, :n][:, ::-1])
        yf[b, :n], yb[b, :n] = f[0], r[0, ::-1]
        hf[b], hb[b] = sf[0][0], sb[0][0]
    a, c = (yf, yb) if return_sequences else (hf, hb)
    return {"concat": np.concatenate([a, c], -1), "sum": a + c, "mul": a * c, "ave": (a + c) / 2,
            None: [a, c]}[merge_mode]


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("cls_name, prefix", [("LSTM", "lstm"), ("GRU", "gru")])
def test_bidirectional_merge_modes_match_reference(merge_mode, cls_name, prefix):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5, 2))
    lens = [5, 3, 2]
    mask = np.arange(5)[None, :] < np.array(lens)[:, None]
    for rs in (True, False):
        bi = L.Bidirectional(make(cls_name, 3, 2, dtype="float32", return_sequences=rs), merge_mode=merge_mode)
        bi.build((None, 2))
        rng2 = np.random.default_rng(7)
        bi.set_weights([rng2.uniform(-0.6, 0.6, w.shape) for w in bi.get_weights()])
        got = bi(x, mask=mask)
        want = _bidir_expected(prefix, bi, x, lens, merge_mode, rs)
        for g, w in zip(as_list(got), as_list(want)):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        assert bi.count_params() == 2 * make(cls_name, 3, 2).count_params()


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_gradients_finite_differences(merge_mode):
    rng = np.random.default_rng(8)
    cls_name = "LSTM" if merge_mode in ("concat", "mul", None) else "GRU"
    inner = getattr(L, cls_name)(2, dtype="float64", return_sequences=True, return_state=True, seed=1)
    bi = L.Bidirectional(inner, merge_mode=merge_mode)
    bi.build((None, 2))
    bi.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in bi.get_weights()])
    x = rng.standard_normal((2, 3, 2))
    init = [rng.uniform(-0.5, 0.5, (2, 2)) for _ in range(2 * N_STATES[cls_name])]
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=bool)
    fd_check_layer(bi, x, {"mask": mask, "initial_state": init}, arrays_extra=init)


@pytest.mark.parametrize("return_state", [False, True])
def test_bidirectional_bad_gradient_for_one_direction_changes_neither(return_state):
    """A dy whose backward-direction part is malformed raises before either layer's gradients
    change; the corrected call then gives what a fresh backward gives."""
    rng = np.random.default_rng(12)
    bi = L.Bidirectional(L.GRU(5, return_sequences=True, return_state=return_state, seed=3), merge_mode=None)
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    out = bi(x, training=True)
    good = [rng.standard_normal(np.shape(o)).astype(np.float32) for o in out]
    bad = list(good)
    if return_state:  # the backward direction's state gradient has the wrong shape
        bad[-1] = np.ones((3, 4), np.float32)
    else:  # [dy_forward, dy_backward] with dy_backward's last axis wrong
        bad[1] = np.ones((3, 6, 4), np.float32)
    params = [bi.forward_layer.w_ih, bi.forward_layer.w_hh, bi.backward_layer.w_ih, bi.backward_layer.w_hh]
    before = [p.grad.copy() for p in params]
    with pytest.raises(ValueError, match="backward_gru"):
        bi.backward(bad)
    for p, g in zip(params, before):
        np.testing.assert_array_equal(p.grad, g)
    dx = bi.backward(good)
    fresh = L.Bidirectional.from_config(bi.get_config())
    fresh(x)  # builds
    fresh.set_weights(bi.get_weights())
    fresh(x, training=True)
    np.testing.assert_array_equal(dx, fresh.backward(good))
    for p, q in zip(params, [fresh.forward_layer.w_ih, fresh.forward_layer.w_hh, fresh.backward_layer.w_ih,
                             fresh.backward_layer.w_hh]):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_bidirectional_structure_names_and_states():
    L.clear_session()
    bi = L.Bidirectional(L.LSTM(4, return_state=True), input_shape=(None, 3))
    assert bi.forward_layer.name == "forward_lstm" and bi.backward_layer.name == "backward_lstm"
    assert bi.backward_layer.go_backwards and not bi.forward_layer.go_backwards
    assert bi.count_params() == 2 * 4 * (3 * 4 + 4 * 4 + 4)
    out = bi(np.ones((2, 5, 3)))
    assert [o.shape for o in out] == [(2, 8), (2, 4), (2, 4), (2, 4), (2, 4)]
    assert bi.compute_output_shape((5, 3)) == [(8,), (4,), (4,), (4,), (4,)]
    # the directions start from different random weights
    assert not np.array_equal(bi.forward_layer.w_ih.value, bi.backward_layer.w_ih.value)


def test_stacked_masked_rnns_equal_unpadded_runs_and_gradients():
    rng = np.random.default_rng(9)
    l1 = make("LSTM", 3, 2, return_sequences=True, seed=1)
    l2 = make("GRU", 2, 3, return_sequences=False, seed=2)
    x = rng.standard_normal((3, 4, 2))
    lens = [4, 2, 3]
    mask = np.arange(4)[None, :] < np.array(lens)[:, None]

    def run(xx, m=None, training=False):
        y1 = l1(xx, mask=m, training=training)
        return l2(y1, mask=l1.compute_mask(xx, m), training=training)

    y = run(x, mask)
    for b, n in enumerate(lens):
        np.testing.assert_allclose(y[b:b + 1], run(x[b:b + 1, :n]), rtol=1e-12, atol=1e-12)
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(r * run(x, mask, training=True)))

    run(x, mask, training=True)
    l1.zero_grad()
    l2.zero_grad()
    dx = l1.backward(l2.backward(r))
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=2e-6, atol=1e-8)
    for p in l1.parameters() + l2.parameters():
        np.testing.assert_allclose(p.grad, numgrad(loss, p.value), rtol=2e-6, atol=1e-8, err_msg=p.name)


@pytest.mark.parametrize("mode", ["stateful", "carry_state"])
@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "SimpleRNN"])
def test_stateful_two_calls_equal_one_call_on_concatenation(mode, cls_name):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 7, 3)).astype(np.float32)
    whole = make(cls_name, 4, 3, dtype="float32", return_sequences=True)
    split = make(cls_name, 4, 3, dtype="float32", return_sequences=True, **{mode: True})
    split.set_weights(whole.get_weights())
    y = whole(x)
    y1, y2 = split(x[:, :3]), split(x[:, 3:], training=True)
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-5, atol=1e-6)
    split.reset_states()
    np.testing.assert_allclose(split(x[:, :3]), y1, rtol=0, atol=0)
    with pytest.raises(ValueError, match="reset_states"):
        split(x[:1])
    split.reset_state()  # Keras 3's name
    split(x[:1])  # a new batch size after reset_states is fine


def test_stateful_state_is_detached_between_calls():
    """The second call's gradient does not flow into the first call's weights' use (truncated there)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 2))
    layer = make("LSTM", 3, 2, return_sequences=True, stateful=True)
    layer(x[:, :3])
    h, c = [s.copy() for s in layer.states]
    ref = make("LSTM", 3, 2, return_sequences=True)
    y = layer(x[:, 3:], training=True)
    y_ref = ref(x[:, 3:], training=True, initial_state=[h, c])
    np.testing.assert_allclose(y, y_ref, rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    np.testing.assert_allclose(layer.backward(dy), ref.backward(dy), rtol=1e-12)
    for p, q in zip(layer.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12)


def test_return_state_values():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 5, 2))
    mask = np.array([[1] * 5, [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=bool)
    layer = make("LSTM", 4, 2, dtype="float32", return_sequences=True, return_state=True)
    y, h, c = layer(x, mask=mask)
    _, (h_ref, c_ref), _ = ref_forward("lstm", layer, x, mask=mask)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
    for b, n in enumerate(mask.sum(1)):
        np.testing.assert_allclose(h[b], y[b, n - 1], rtol=1e-6)
    gru = make("GRU", 4, 2, dtype="float32", return_state=True)
    out = gru(x)
    assert len(out) == 2 and np.array_equal(out[0], out[1])
    assert gru.compute_output_shape((5, 2)) == [(4,), (4,)]


def test_bptt_steps_is_passed_to_the_backward_op():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 6, 2))
    layer = make("GRU", 3, 2, return_sequences=True, bptt_steps=2)
    y = layer(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    _, _, cache = ref_forward("gru", layer, x)
    want = R.gru_backward(cache, dy, bptt_steps=2)
    full = R.gru_backward(cache, dy)
    np.testing.assert_allclose(dx, want["x"], rtol=1e-12)
    np.testing.assert_allclose(layer.w_hh.grad, want["w_hh"], rtol=1e-12)
    assert not np.allclose(want["w_hh"], full["w_hh"])
    with pytest.raises(ValueError, match="bptt_steps must be None or a positive int"):
        layer.bptt_steps = 0


# ------------------------------------------------------------------------------------------------ dropout
@pytest.mark.parametrize("cls_name", ["SimpleRNN", "LSTM", "GRU"])
def test_input_dropout_mask_is_shared_across_time_and_only_in_training(cls_name):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((6, 5, 8)).astype(np.float32)
    layer = make(cls_name, 4, 8, dtype="float32", return_sequences=True, dropout=0.5)
    plain = make(cls_name, 4, 8, dtype="float32", return_sequences=True)
    plain.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(x), plain(x))  # inference: no dropout
    y = layer(x, training=True)
    m = layer.last_dropout_masks[0]
    assert m.shape == (6, 8) and set(np.unique(m)) <= {0.0, 2.0} and (m == 0).any() and (m > 0).any()
    np.testing.assert_allclose(y, plain(x * m[:, None, :]), rtol=1e-6, atol=1e-6)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(dy)
    dropped = np.broadcast_to((m == 0)[:, None, :], dx.shape)
    assert not dx[dropped].any()  # the same features are zero at every time step
    assert np.all(dx[~dropped] != 0)
    plain(x * m[:, None, :], training=True)
    np.testing.assert_allclose(dx, plain.backward(dy) * m[:, None, :], rtol=1e-5, atol=1e-6)


def _oracle(prefix, layer, x, mask_x, mask_h):
    """Step-by-step NumPy oracle with variational dropout: x*mask_x, and h*mask_h fed to the recurrent matmul."""
    w = [np.asarray(v, np.float64) for v in layer.get_weights()]
    B, T, _ = x.shape
    H = layer.units
    h, c = np.zeros((B, H)), np.zeros((B, H))
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ys = []
    for t in range(T):
        xt = x[:, t] * mask_x
        hr = h * mask_h
        if prefix == "rnn":
            h = np.tanh(xt @ w[0].T + hr @ w[1].T + w[2])
        elif prefix == "lstm":
            z = xt @ w[0].T + hr @ w[1].T + w[2]
            i, f, g, o = np.split(z, 4, axis=1)
            c = sig(f) * c + sig(i) * np.tanh(g)
            h = sig(o) * np.tanh(c)
        else:
            a = xt @ w[0].T + w[2]
            u = hr @ w[1].T + w[3]
            r = sig(a[:, :H] + u[:, :H])
            zz = sig(a[:, H:2 * H] + u[:, H:2 * H])
            n = np.tanh(a[:, 2 * H:] + r * u[:, 2 * H:])
            h = (1 - zz) * n + zz * h
        ys.append(h)
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("cls_name, prefix", [("SimpleRNN", "rnn"), ("LSTM", "lstm"), ("GRU", "gru")])
def test_recurrent_dropout_matches_step_oracle_and_finite_differences(cls_name, prefix):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((3, 4, 2))
    layer = make(cls_name, 3, 2, return_sequences=True, dropout=0.3, recurrent_dropout=0.4, seed=3)
    y = layer(x, training=True)
    mx, mh = layer.last_dropout_masks
    assert mh.shape == (3, 3) and (mh == 0).any() and (mh > 0).any()
    np.testing.assert_allclose(y, _oracle(prefix, layer, x, mx, mh), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer(x), _oracle(prefix, layer, x, 1.0, 1.0), rtol=1e-10, atol=1e-12)
    r = rng.standard_normal(y.shape)
    layer(x, training=True)
    mx, mh = layer.last_dropout_masks
    layer.zero_grad()
    dx = layer.backward(r)
    weights = layer.get_weights()

    def loss():
        layer.set_weights(weights)
        return float(np.sum(r * _oracle(prefix, layer, x, mx, mh)))

    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=2e-6, atol=1e-8)
    for i, p in enumerate(layer.parameters()):
        np.testing.assert_allclose(p.grad, numgrad(loss, weights[i]), rtol=2e-6, atol=1e-8, err_msg=p.name)


# ------------------------------------------------------------------------------------------------ params, init
@pytest.mark.parametrize("I, H", [(1, 1), (1, 20), (100, 128), (7, 3)])
def test_parameter_counts_equal_keras(I, H):
    assert L.SimpleRNN(H, input_shape=(None, I)).count_params() == I * H + H * H + H
    assert L.LSTM(H, input_shape=(None, I)).count_params() == 4 * (I * H + H * H + H)
    assert L.GRU(H, input_shape=(None, I)).count_params() == 3 * (I * H + H * H + 2 * H)
    assert L.Bidirectional(L.GRU(H), input_shape=(None, I)).count_params() == 6 * (I * H + H * H + 2 * H)


def test_seed_lesson_parameter_counts():
    assert L.SimpleRNN(1, input_shape=[None, 1]).count_params() == 3
    assert L.LSTM(128, input_shape=(256, 100)).count_params() == 117248
    assert L.GRU(128, input_shape=(256, 100)).count_params() == 88320
    assert L.SimpleRNN(20, input_shape=(None, 20)).count_params() == 820


@pytest.mark.parametrize("cls_name, G", [("SimpleRNN", 1), ("LSTM", 4), ("GRU", 3)])
def test_keras_initializers(cls_name, G):
    I, H = 5, 6
    layer = getattr(L, cls_name)(H, input_shape=(None, I), seed=0)
    w_hh = layer.w_hh.value.astype(np.float64)
    # Keras's recurrent kernel K = w_hh^T [H, G*H] is one (semi-)orthogonal matrix: K K^T = I
    K = w_hh.T
    np.testing.assert_allclose(K @ K.T, np.eye(H), atol=1e-5)
    if G > 1:  # not an orthogonal block per gate
        block = w_hh[:H]
        assert not np.allclose(block @ block.T, np.eye(H), atol=1e-2)
    limit = np.sqrt(6 / (I + G * H))
    w_ih = layer.w_ih.value
    assert np.abs(w_ih).max() <= limit and np.abs(w_ih).max() > 0.5 * limit
    biases = [p.value for p in layer.parameters()[2:]]
    if cls_name == "LSTM":
        b = biases[0]
        np.testing.assert_array_equal(b[H:2 * H], 1.0)
        np.testing.assert_array_equal(np.r_[b[:H], b[2 * H:]], 0.0)
        b_off = L.LSTM(H, input_shape=(None, I), unit_forget_bias=False).b.value
        np.testing.assert_array_equal(b_off, 0.0)
    else:
        assert all(not b.any() for b in biases)
    again = getattr(L, cls_name)(H, input_shape=(None, I), seed=0)
    for a, b in zip(layer.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weight_layouts_and_use_bias_false():
    lstm = L.LSTM(4, input_shape=(None, 3))
    assert [w.shape for w in lstm.get_weights()] == [(16, 3), (16, 4), (16,)]
    gru = L.GRU(4, input_shape=(None, 3))
    assert [p.name.split("/")[1] for p in gru.parameters()] == ["w_ih", "w_hh", "b_ih", "b_hh"]
    nb = make("GRU", 2, 3, use_bias=False)
    assert nb.count_params() == 3 * (3 * 2 + 2 * 2) and nb.b_ih is None
    fd_check_layer(nb, np.random.default_rng(0).standard_normal((2, 3, 3)), {})


# ------------------------------------------------------------------------------------------------ config
def test_config_roundtrip_recurrent_and_bidirectional():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    for layer in [L.LSTM(5, return_sequences=True, go_backwards=True, bptt_steps=3, unit_forget_bias=False),
                  L.SimpleRNN(2, activation="relu", dropout=0.2),
                  L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="ave")]:
        layer(x)
        cfg = json.loads(json.dumps(L.serialize(layer)))
        clone = L.deserialize(cfg)
        assert type(clone) is type(layer)
        assert {k: v for k, v in clone.get_config().items() if k != "name"} == \
               {k: v for k, v in layer.get_config().items() if k != "name"}
        clone.set_weights(layer.get_weights())  # builds from the weight shapes
        np.testing.assert_array_equal(clone(x), layer(x))


def test_bidirectional_trainable_false_freezes_both_directions_and_survives_config():
    x = np.zeros((2, 4, 5), np.float32)
    bi = L.Bidirectional(L.LSTM(3), trainable=False)
    bi(x)
    assert not bi.forward_layer.trainable and not bi.backward_layer.trainable
    assert all(not p.trainable for p in bi.parameters())
    bi2 = L.Bidirectional(L.GRU(3))
    bi2.trainable = False  # set before build
    bi2(x)
    assert all(not p.trainable for p in bi2.parameters())
    clone = L.deserialize(json.loads(json.dumps(L.serialize(bi2))))
    clone(x)
    assert all(not p.trainable for p in clone.parameters())
    # the inner layers keep their flag even when the wrapper itself is trainable again
    bi3 = L.Bidirectional(L.SimpleRNN(2), input_shape=(4, 5))
    bi3.forward_layer.trainable = False
    bi3.backward_layer.trainable = False
    clone3 = L.deserialize(L.serialize(bi3))
    clone3(x)
    assert clone3.trainable and all(not p.trainable for p in clone3.parameters())


def test_bidirectional_config_follows_options_set_after_construction():
    bi = L.Bidirectional(L.LSTM(3, return_sequences=True, seed=7), input_shape=(4, 5))
    bi.bptt_steps = 2
    bi.stateful = True
    clone = L.deserialize(json.loads(json.dumps(L.serialize(bi))))
    assert clone.bptt_steps == 2 and clone.backward_layer.bptt_steps == 2
    assert clone.stateful and clone.backward_layer.stateful
    assert clone.backward_layer.go_backwards and not clone.forward_layer.go_backwards
    assert clone.backward_layer.seed == 8
    # an edit to one direction only is kept too
    bi.forward_layer.carry_state = True
    bi.backward_layer.bptt_steps = 3
    clone = L.deserialize(json.loads(json.dumps(L.serialize(bi))))
    assert clone.forward_layer.carry_state and clone.forward_layer.bptt_steps == 2
    assert clone.backward_layer.bptt_steps == 3 and clone.backward_layer.go_backwards
    clone.set_weights(bi.get_weights())
    x = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    bi.reset_states()
    np.testing.assert_array_equal(clone(x), bi(x))


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    layer = L.LSTM(3, name="enc")
    with pytest.raises(ValueError, match=r"LSTM 'enc'.*\[batch, time, features\].*got shape \(4, 5\)"):
        layer(np.zeros((4, 5)))
    with pytest.raises(RuntimeError, match="LSTM 'enc'.*backward.*training=True"):
        layer.backward(np.zeros((1, 3)))
    layer(np.zeros((2, 4, 5)))
    with pytest.raises(RuntimeError, match="enc"):  # inference forward does not enable backward
        layer.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"enc.*5 features"):
        layer(np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match=r"mask must have shape \[batch, time\] = \(2, 4\), got \(2, 3\)"):
        layer(np.zeros((2, 4, 5)), mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="either mask or lengths"):
        layer(np.zeros((2, 4, 5)), mask=np.ones((2, 4), bool), lengths=[4, 4])
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        layer(np.zeros((2, 4, 5)), lengths=np.array([5, 1]))
    with pytest.raises(ValueError, match=r"initial_state must be a list of 2 array\(s\) \[h, c\]"):
        layer(np.zeros((2, 4, 5)), initial_state=[np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"initial_state\[1\] must have shape \[batch, units\] = \(2, 3\)"):
        layer(np.zeros((2, 4, 5)), initial_state=[np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(TypeError, match="numeric array"):
        layer(np.array([[["a"]]]))
    layer(np.zeros((2, 4, 5)), training=True)
    with pytest.raises(ValueError, match=r"enc.*dy must have shape \(2, 3\)"):
        layer.backward(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"unknown activation 'sigmoid'.*'tanh', 'relu'"):
        L.SimpleRNN(3, activation="sigmoid")
    with pytest.raises(ValueError, match=r"unknown activation 'relu'.*LSTM supports 'tanh'"):
        L.LSTM(3, activation="relu")
    with pytest.raises(ValueError, match="recurrent_activation must be 'sigmoid'"):
        L.GRU(3, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="reset_after=True"):
        L.GRU(3, reset_after=False)
    with pytest.raises(ValueError, match=r"unknown merge_mode 'avg'"):
        L.Bidirectional(L.LSTM(3), merge_mode="avg")
    with pytest.raises(TypeError, match="Bidirectional: layer must be a SimpleRNN, LSTM or GRU, got Dense"):
        L.Bidirectional(L.Dense(3))
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        L.GRU(3, dropout=1.0)
    with pytest.raises(TypeError, match="units must be a positive int"):
        L.LSTM("8")
    bi = L.Bidirectional(L.LSTM(2), name="bi")
    with pytest.raises(ValueError, match=r"bi.*initial_state must be a list of 4 arrays"):
        bi(np.zeros((1, 3, 2)), initial_state=[np.zeros((1, 2))] * 2)
    with pytest.raises(RuntimeError, match="Bidirectional 'bi2'"):
        L.Bidirectional(L.GRU(2), name="bi2").backward(np.zeros((1, 4)))


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "SimpleRNN"])
def test_set_weights_in_keras_layout_points_to_from_keras(cls_name):
    """Keras's kernels are [features, gates*units]: the shape error says which layout fastrnn uses
    and how to convert."""
    layer = getattr(L, cls_name)(4)
    layer.build((None, 3))
    keras_layout = [np.asarray(w).T if np.ndim(w) == 2 else w for w in layer.get_weights()]
    with pytest.raises(ValueError, match=r"PyTorch's layout.*fastrnn\.interop\.from_keras"):
        layer.set_weights(keras_layout)
    with pytest.raises(ValueError, match=r"expected \d arrays.*from_keras"):
        layer.set_weights(keras_layout[:1])


def test_layer_masks_take_bool_or_0_1_like_the_ops():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    layer = make("GRU", 5, 3, return_sequences=True, seed=1)
    m = np.array([[1, 1, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(layer(x, mask=m), layer(x, mask=m.astype(bool)))
    for bad in (2, -1):
        m2 = m.copy()
        m2[0, 0] = bad
        with pytest.raises(ValueError, match="only 0/1"):
            layer(x, mask=m2)
    with pytest.raises(TypeError, match="boolean \\(or 0/1\\)"):
        layer(x, mask=m.astype(np.float32))
    attn = L.LuongAttention("dot")
    with pytest.raises(ValueError, match="only 0/1"):
        attn(x[:, 0], x, mask=np.full((2, 4), 3))


def test_bidirectional_reset_state_is_reset_states():
    bi = L.Bidirectional(L.GRU(3, return_sequences=True, stateful=True))
    x = np.ones((2, 4, 2), np.float32)
    y0 = bi(x)
    assert not np.array_equal(bi(x), y0)  # the carried state changes the second call
    bi.reset_state()
    np.testing.assert_array_equal(bi(x), y0)


def test_bidirectional_set_weights_error_gives_the_layout_hint():
    bi = L.Bidirectional(L.LSTM(3))
    bi.build((None, 2))
    with pytest.raises(ValueError, match="PyTorch's layout.*from_keras"):
        bi.set_weights([w.T for w in bi.get_weights()])


# ------------------------------------------------------------------ the cell spec and the ops runner
@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
def test_layers_describe_their_cell_with_its_spec(cls_name, kw, prefix):
    from fastrnn import _cells

    layer = make(cls_name, units=3, n_in=2, **kw)
    spec = layer.spec
    assert spec is _cells.cell_spec(prefix, kw.get("activation")) and layer.activation == spec.activation
    assert layer.w_ih.shape == (spec.gates * 3, 2) and layer.w_hh.shape == (spec.gates * 3, 3)
    assert [p.name.split("/")[-1] for p in layer.parameters()] == ["w_ih", "w_hh", *spec.bias_names]
    out = make(cls_name, units=3, n_in=2, return_state=True, **kw)(np.ones((2, 4, 2)))
    assert len(out) == 1 + spec.n_states == 1 + N_STATES[cls_name]


def test_simple_rnn_activation_sets_its_spec_and_the_others_keep_tanh():
    from fastrnn import _cells

    x = np.random.default_rng(0).standard_normal((2, 4, 2)).astype(np.float32)
    layer = make("SimpleRNN", dtype="float32")
    relu = make("SimpleRNN", dtype="float32", activation="relu")
    layer.activation = "relu"
    assert layer.spec is _cells.RNN_RELU and layer.get_config()["activation"] == "relu"
    np.testing.assert_array_equal(layer(x), relu(x))
    with pytest.raises(ValueError, match=r"unknown activation 'sigmoid'; SimpleRNN supports 'tanh', 'relu'"):
        layer.activation = "sigmoid"
    assert layer.spec is _cells.RNN_RELU


@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
def test_float32_layers_run_the_ops_runner(monkeypatch, cls_name, kw, prefix):
    """Sequence calls (with recurrent dropout too) and the step API of float32 layers go through
    ops._run_forward / _run_backward, never through the checked public ops."""
    from fastrnn import ops

    calls = []
    for base in ("rnn", "lstm", "gru"):
        for kind in ("forward", "backward"):
            monkeypatch.setattr(ops, f"{base}_{kind}", lambda *a, **k: pytest.fail("a public op ran"))
    run_f, run_b = ops._run_forward, ops._run_backward
    monkeypatch.setattr(ops, "_run_forward", lambda *a, **k: calls.append("f") or run_f(*a, **k))
    monkeypatch.setattr(ops, "_run_backward", lambda *a, **k: calls.append("b") or run_b(*a, **k))
    x = np.random.default_rng(1).standard_normal((3, 4, 2)).astype(np.float32)
    layer = make(cls_name, units=3, n_in=2, dtype="float32", return_sequences=True, **kw)
    layer.backward(np.ones_like(layer(x, training=True)))
    assert calls == ["f", "b"]
    rdp = make(cls_name, units=3, n_in=2, dtype="float32", recurrent_dropout=0.5, **kw)
    rdp.backward(np.ones_like(rdp(x, training=True)))
    assert calls[2:] == ["f", "b"]  # recurrent dropout: one batched call, the mask inside the kernels
    layer.step(x[:, 0], None, training=True)
    layer.step_backward(np.ones((3, 3), np.float32))
    assert calls[4:] == ["f", "b"]


@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
def test_float32_layers_equal_the_public_ops_bit_for_bit(cls_name, kw, prefix):
    from fastrnn import ops

    rng = np.random.default_rng(2)
    layer = make(cls_name, units=5, n_in=3, dtype="float32", return_sequences=True, return_state=True,
                 zero_output_for_mask=True, bptt_steps=2, **kw)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    mask = random_mask(4, 6, rng, right_padded=False)
    n = N_STATES[cls_name]
    init = [rng.standard_normal((4, 5)).astype(np.float32) for _ in range(n)]
    out = layer(x, training=True, mask=mask, initial_state=init)
    op_kw = dict(h0=init[0], mask=mask, **({"c0": init[1]} if n == 2 else {}),
                 **({"activation": layer.activation} if prefix == "rnn" else {}))
    y, state, cache = getattr(ops, f"{prefix}_forward")(x, *layer.get_weights(), **op_kw)
    for got, want in zip(out, [y] + (list(state) if n == 2 else [state])):
        np.testing.assert_array_equal(got, want)
    # state gradients given as transposed (non-contiguous) views
    grads_in = [rng.standard_normal(a.shape[::-1]).astype(np.float32).T if a.ndim == 2 else
                rng.standard_normal(a.shape).astype(np.float32) for a in out]
    dx = layer.backward(grads_in)
    dstate = tuple(grads_in[1:]) if n == 2 else grads_in[1]
    g = getattr(ops, f"{prefix}_backward")(cache, grads_in[0], dstate=dstate, bptt_steps=2)
    np.testing.assert_array_equal(dx, g["x"])
    for p, name in zip(layer.parameters(), ["w_ih", "w_hh", *layer.spec.bias_names]):
        np.testing.assert_array_equal(p.grad, g[name], err_msg=name)
    for got, key in zip(layer.initial_state_grads, ["h0", "c0"]):
        np.testing.assert_array_equal(got, g[key])


@pytest.mark.parametrize("cls_name, kw, prefix", CELLS, ids=CELL_IDS)
def test_layers_keep_the_public_ops_errors_for_what_the_runner_does_not_check(cls_name, kw, prefix):
    for dtype in ("float32", "float64"):
        layer = make(cls_name, units=3, n_in=2, dtype=dtype, **kw)
        for shape in ((0, 4, 2), (2, 0, 2)):
            with pytest.raises(ValueError, match=rf"^{prefix}_forward: x must not be empty"):
                layer(np.zeros(shape), training=True)
        with pytest.raises(ValueError, match=rf"^{prefix}_forward: x must not be empty"):
            layer.step(np.zeros((0, 2)), None, training=True)
    if N_STATES[cls_name] == 2:  # states that differ in batch size: reset_states refuses them, and
        layer = make(cls_name, units=3, n_in=2, dtype="float32", stateful=True, **kw)  # if set by hand,
        with pytest.raises(ValueError, match=r"states must have the same batch size"):  # the op does
            layer.reset_states([np.zeros((2, 3)), np.zeros((5, 3))])
        layer.states = [np.zeros((2, 3), np.float32), np.zeros((5, 3), np.float32)]
        with pytest.raises(ValueError, match=r"^lstm_forward: c0 must have shape \[2, 3\], got \[5, 3\]"):
            layer(np.zeros((2, 4, 2)))
