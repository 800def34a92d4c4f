"""Keras interop: from_keras / to_keras give layers with the same outputs as Keras 3 layers.

Keras (with the TensorFlow backend) must be installed: ``pip install keras tensorflow-cpu``.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from fastrnn import interop, layers

T, B, I, H = 5, 3, 4, 6
ATOL = 2e-5

KERAS = {"SimpleRNN": keras.layers.SimpleRNN, "LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU}
OURS = {"SimpleRNN": layers.SimpleRNN, "LSTM": layers.LSTM, "GRU": layers.GRU}

# (id, kind, keras kwargs); every case is a return_sequences layer unless stated
CASES = [
    ("simplernn_tanh", "SimpleRNN", {}),
    ("simplernn_relu", "SimpleRNN", {"activation": "relu"}),
    ("simplernn_last", "SimpleRNN", {"return_sequences": False}),
    ("lstm", "LSTM", {}),
    ("lstm_backwards", "LSTM", {"go_backwards": True}),
    ("lstm_last_backwards", "LSTM", {"go_backwards": True, "return_sequences": False}),
    ("gru", "GRU", {}),
    ("gru_backwards", "GRU", {"go_backwards": True}),
    ("gru_last", "GRU", {"return_sequences": False}),
]


def _randomize(klayer, seed):
    rng = np.random.default_rng(seed)
    klayer.set_weights([rng.uniform(-0.6, 0.6, size=w.shape).astype(np.float32) for w in klayer.get_weights()])


def _keras_layer(kind, kw, seed):
    kw = dict(kw)
    kw.setdefault("return_sequences", True)
    kl = KERAS[kind](H, **kw)
    kl.build((None, None, I))
    _randomize(kl, seed)
    return kl


def _x(seed):
    return np.random.default_rng(seed).uniform(-1, 1, size=(B, T, I)).astype(np.float32)


def _keras_out(kl, x):
    return keras.ops.convert_to_numpy(kl(x))


@pytest.fixture(scope="module")
def keras_layers():
    """One random Keras layer per case, built once for the module."""
    return {cid: _keras_layer(kind, kw, seed) for seed, (cid, kind, kw) in enumerate(CASES)}


@pytest.mark.parametrize("cid,kind,kw", CASES, ids=[c[0] for c in CASES])
def test_from_keras_outputs_match(keras_layers, cid, kind, kw):
    kl = keras_layers[cid]
    ours = interop.from_keras(kl)
    assert isinstance(ours, OURS[kind])
    assert ours.count_params() == kl.count_params()
    x = _x(100)
    y = ours(x)
    np.testing.assert_allclose(y, _keras_out(kl, x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("cid,kind,kw", CASES, ids=[c[0] for c in CASES])
def test_to_keras_outputs_match(cid, kind, kw):
    kw = dict(kw)
    kw.setdefault("return_sequences", True)
    ours = OURS[kind](H, **kw)
    ours.build((None, I))
    rng = np.random.default_rng(7)
    for p in ours.parameters():
        p.assign(rng.uniform(-0.6, 0.6, size=p.shape))
    kl = interop.to_keras(ours)
    assert isinstance(kl, KERAS[kind])
    assert kl.return_sequences == kw["return_sequences"] and kl.go_backwards == kw.get("go_backwards", False)
    x = _x(101)
    np.testing.assert_allclose(_keras_out(kl, x), ours(x), atol=ATOL, rtol=1e-5)


def test_gru_gate_reordering_is_exact(keras_layers):
    # Keras z, r, h -> fastrnn r, z, n: the kernels' column blocks are swapped, not copied through
    kl = keras_layers["gru"]
    kernel, rkernel, bias = kl.get_weights()
    ours = interop.from_keras(kl)
    np.testing.assert_array_equal(ours.w_ih.value[:H], kernel[:, H:2 * H].T)      # r
    np.testing.assert_array_equal(ours.w_ih.value[H:2 * H], kernel[:, :H].T)      # z
    np.testing.assert_array_equal(ours.w_hh.value[2 * H:], rkernel[:, 2 * H:].T)  # n
    np.testing.assert_array_equal(ours.b_ih.value[:H], bias[0, H:2 * H])
    np.testing.assert_array_equal(ours.b_hh.value[H:2 * H], bias[1, :H])
    back = interop.to_keras(ours)
    for a, b in zip(back.get_weights(), kl.get_weights()):
        np.testing.assert_array_equal(a, b)


BIDI = [("lstm_concat", "LSTM", "concat", True), ("gru_sum", "GRU", "sum", True),
        ("simplernn_ave_last", "SimpleRNN", "ave", False), ("gru_mul_last", "GRU", "mul", False)]


@pytest.fixture(scope="module")
def keras_bidi():
    out = {}
    for seed, (bid, kind, merge, seq) in enumerate(BIDI):
        kl = keras.layers.Bidirectional(KERAS[kind](H, return_sequences=seq), merge_mode=merge)
        kl.build((None, None, I))
        _randomize(kl, 50 + seed)
        out[bid] = kl
    return out


@pytest.mark.parametrize("bid,kind,merge,seq", BIDI, ids=[b[0] for b in BIDI])
def test_bidirectional_from_keras(keras_bidi, bid, kind, merge, seq):
    kl = keras_bidi[bid]
    ours = interop.from_keras(kl)
    assert isinstance(ours, layers.Bidirectional) and isinstance(ours.forward_layer, OURS[kind])
    assert ours.count_params() == kl.count_params()
    x = _x(102)
    np.testing.assert_allclose(ours(x), _keras_out(kl, x), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("bid,kind,merge,seq", BIDI, ids=[b[0] for b in BIDI])
def test_bidirectional_to_keras(bid, kind, merge, seq):
    ours = layers.Bidirectional(OURS[kind](H, return_sequences=seq), merge_mode=merge)
    ours.build((None, I))
    rng = np.random.default_rng(11)
    for p in ours.parameters():
        p.assign(rng.uniform(-0.6, 0.6, size=p.shape))
    kl = interop.to_keras(ours)
    assert isinstance(kl, keras.layers.Bidirectional) and kl.merge_mode == merge
    x = _x(103)
    np.testing.assert_allclose(_keras_out(kl, x), ours(x), atol=ATOL, rtol=1e-5)


# right padding, a gap and a leading masked step (an explicit mask need not be right-padded)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 1, 1, 0, 1]], bool)
# ... and a row with no valid step
MASK4 = np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]], bool)


def test_masked_batch_matches_keras(keras_bidi):
    # Bidirectional returning sequences: Keras makes both directions output 0 at masked steps
    kl = keras_bidi["lstm_concat"]
    ours = interop.from_keras(kl)
    x = _x(104)
    expected = keras.ops.convert_to_numpy(kl(x, mask=MASK))
    np.testing.assert_allclose(ours(x, mask=MASK), expected, atol=ATOL)
    assert not expected[~MASK].any()


@pytest.mark.parametrize("cid", ["simplernn_tanh", "lstm", "lstm_backwards", "gru", "gru_backwards"])
@pytest.mark.parametrize("zero_output", [False, True])
def test_masked_sequence_outputs_match_keras_everywhere(keras_layers, cid, zero_output):
    # a layer alone repeats the last valid output at masked steps (Keras's zero_output_for_mask=False),
    # or outputs 0 there (True); both directions, a gap and a leading masked step
    kind, kw = next((k, w) for c, k, w in CASES if c == cid)
    kl = KERAS[kind](H, return_sequences=True, zero_output_for_mask=zero_output, **kw)
    kl.build((None, None, I))
    kl.set_weights(keras_layers[cid].get_weights())
    ours = interop.from_keras(kl)
    assert ours.zero_output_for_mask is zero_output
    x = _x(105)
    expected = keras.ops.convert_to_numpy(kl(x, mask=MASK))
    np.testing.assert_allclose(ours(x, mask=MASK), expected, atol=ATOL, rtol=1e-5)
    back = interop.to_keras(ours)
    assert back.zero_output_for_mask is zero_output
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x, mask=MASK)), expected, atol=ATOL, rtol=1e-5)


def test_errors():
    old = keras.layers.GRU(H, reset_after=False)
    old.build((None, None, I))
    with pytest.raises(ValueError, match="reset_after"):
        interop.from_keras(old)
    hard = keras.layers.LSTM(H, recurrent_activation="hard_sigmoid")
    hard.build((None, None, I))
    with pytest.raises(ValueError, match="sigmoid"):
        interop.from_keras(hard)
    with pytest.raises(TypeError, match="SimpleRNN, LSTM, GRU.*got Conv1D"):
        interop.from_keras(keras.layers.Conv1D(3, 2))
    with pytest.raises(ValueError, match="not built"):
        interop.from_keras(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="Dense with activation 'elu'"):
        interop.from_keras(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="elu")]))
    unbuilt = keras.layers.LSTM(H)
    with pytest.raises(ValueError, match="not built"):
        interop.from_keras(unbuilt)
    with pytest.raises(ValueError, match="not built"):
        interop.to_keras(layers.LSTM(H))
    rev = layers.Bidirectional(layers.GRU(H, return_sequences=True, go_backwards=True), input_shape=(T, I))
    with pytest.raises(ValueError, match="go_backwards"):
        interop.to_keras(rev)


def test_return_state_and_no_bias():
    kl = keras.layers.LSTM(H, return_sequences=True, return_state=True, use_bias=False)
    kl.build((None, None, I))
    _randomize(kl, 60)
    ours = interop.from_keras(kl)
    x = _x(105)
    expected = [keras.ops.convert_to_numpy(a) for a in kl(x)]
    got = ours(x)
    assert len(got) == len(expected) == 3  # y, h, c
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=ATOL)
    back = interop.to_keras(ours)
    assert back.return_state
    for a, b in zip(back(x), expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), b, atol=ATOL)


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
@pytest.mark.parametrize("seq", [True, False])
@pytest.mark.parametrize("backwards", [False, True])
@pytest.mark.parametrize("zero_output", [False, True])
def test_masked_outputs_and_states_match_keras_with_initial_state(kind, seq, backwards, zero_output):
    # a nonzero initial state, leading masked steps, a row with no valid step: the last output of
    # return_sequences=False is 0 where Keras's is (no valid step; zero_output_for_mask and a masked
    # last step), the states are the states
    kl = KERAS[kind](H, return_sequences=seq, return_state=True, go_backwards=backwards,
                     zero_output_for_mask=zero_output)
    kl.build((None, None, I))
    _randomize(kl, 60)
    ours = interop.from_keras(kl)
    rng = np.random.default_rng(61)
    x = rng.uniform(-1, 1, size=(4, T, I)).astype(np.float32)
    init = [rng.uniform(-0.5, 0.5, size=(4, H)).astype(np.float32) for _ in range(2 if kind == "LSTM" else 1)]
    expected = [keras.ops.convert_to_numpy(o) for o in kl(x, mask=MASK4, initial_state=init)]
    got = ours(x, mask=MASK4, initial_state=init)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=1e-5)


def test_sequential_with_input_masking_repeatvector_activation_matches_keras():
    """keras.Input, Masking (padded time series), RepeatVector (the encoder-decoder bridge) and
    Activation give Keras's outputs, and training gradients match TensorFlow's."""
    import tensorflow as tf

    from fastrnn.models import Sequential

    rng = np.random.default_rng(31)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    x[0, 4:] = 0.0
    x[2, 2] = 0.0  # a gap inside a sequence
    km = keras.Sequential([keras.Input((6, 3)), keras.layers.Masking(0.0), keras.layers.LSTM(5),
                           keras.layers.RepeatVector(2), keras.layers.GRU(4, return_sequences=True),
                           keras.layers.Activation("tanh")])
    for w in km.layers:
        if w.weights:
            _randomize(w, 7)
    ours = Sequential([layers.Input((6, 3)), layers.Masking(0.0), interop.from_keras(km.layers[1]),
                       layers.RepeatVector(2), interop.from_keras(km.layers[3]), layers.Activation("tanh")])
    want = km(x).numpy()
    np.testing.assert_allclose(ours.predict(x), want, atol=ATOL)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = tf.reduce_sum(km(xt) * dy)
    gx, gk = tape.gradient(out, [xt, km.layers[1].cell.kernel])
    ours(x, training=True)
    ours.zero_grad()
    dx = ours.backward(dy)
    np.testing.assert_allclose(dx, gx.numpy(), atol=ATOL)
    np.testing.assert_allclose(ours.layers[2].w_ih.grad, gk.numpy().T, atol=ATOL)


@pytest.mark.parametrize("lesson", ["sentiment", "forecast", "hello"])
def test_keras_sequential_models_of_the_lessons_convert_exactly(lesson):
    """from_keras on a whole keras.Sequential: the lessons' models give Keras's predictions."""
    from fastrnn.models import Sequential

    K = keras.layers
    rng = np.random.default_rng(32)
    if lesson == "sentiment":  # Embedding(mask_zero) + LSTM + Dense(sigmoid), padded sentences
        km = keras.Sequential([keras.Input((9,), dtype="int32"), K.Embedding(30, 8, mask_zero=True), K.Dropout(0.2),
                               K.Bidirectional(K.LSTM(6)), K.Dense(1, activation="sigmoid")])
        x = rng.integers(1, 30, size=(5, 9))
        x[0, 5:] = x[3, 2:] = 0
    elif lesson == "forecast":  # deep SimpleRNN, 10 steps ahead
        km = keras.Sequential([keras.Input((None, 1)), K.SimpleRNN(7, return_sequences=True), K.SimpleRNN(5),
                               K.Dense(10)])
        x = rng.standard_normal((4, 12, 1)).astype(np.float32)
    else:  # the character-level 'hello' model: per-step softmax
        km = keras.Sequential([keras.Input((5, 4)), K.GRU(6, return_sequences=True),
                               K.TimeDistributed(K.Dense(4)), K.Activation("softmax")])
        x = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(3, 5))]
    for w in km.layers:
        if w.weights:
            _randomize(w, 9)
    ours = interop.from_keras(km)
    assert isinstance(ours, Sequential) and type(ours.layers[0]).__name__ == "InputLayer"
    np.testing.assert_allclose(ours.predict(x), km.predict(x, verbose=0), atol=ATOL)


def test_from_keras_keeps_stateful_and_refuses_unknown_activations():
    K = keras.layers
    km = keras.Sequential([keras.Input((3, 2), batch_size=2), K.LSTM(4, stateful=True), K.Dense(1)])
    _randomize(km.layers[0], 3)
    ours = interop.from_keras(km)
    assert ours.layers[1].stateful
    x = np.random.default_rng(33).standard_normal((2, 3, 2)).astype(np.float32)
    for _ in range(2):  # the second call starts from the state the first left
        np.testing.assert_allclose(ours.predict(x), km.predict(x, verbose=0), atol=ATOL)
    with pytest.raises(ValueError, match="from_keras: Activation with activation 'gelu'"):
        interop.from_keras(K.Activation("gelu"))


def test_luong_dot_attention_on_query_sequences_is_keras_attention():
    """LuongAttention('dot') on [query_seq, values] with a values mask computes what
    keras.layers.Attention() does (context and attention scores)."""
    rng = np.random.default_rng(34)
    q = rng.standard_normal((3, 4, 5)).astype(np.float32)
    v = rng.standard_normal((3, 6, 5)).astype(np.float32)
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = mask[2, 1] = False
    want, want_w = keras.layers.Attention()([q, v], mask=[None, mask], return_attention_scores=True)
    ctx, w = layers.LuongAttention("dot")([q, v], mask=[None, mask])
    np.testing.assert_allclose(ctx, np.asarray(want), atol=ATOL)
    np.testing.assert_allclose(w, np.asarray(want_w), atol=ATOL)


@pytest.mark.parametrize("arch", ["seq2seq_bridge", "sentiment"])
def test_sequential_to_keras_and_back(arch):
    """to_keras on a fastrnn Sequential gives a keras.Sequential with the same predictions, and
    from_keras brings it back unchanged."""
    from fastrnn.models import Sequential

    rng = np.random.default_rng(35)
    layers.set_seed(35)
    if arch == "seq2seq_bridge":
        ours = Sequential([layers.Input((6, 3)), layers.Masking(0.0), layers.LSTM(5), layers.RepeatVector(4),
                           layers.GRU(4, return_sequences=True), layers.TimeDistributed(layers.Dense(3)),
                           layers.Activation("softmax")])
        x = rng.standard_normal((4, 6, 3)).astype(np.float32)
        x[1, 4:] = 0.0
    else:
        ours = Sequential([layers.Embedding(20, 6, mask_zero=True, input_shape=(7,)), layers.Dropout(0.3),
                           layers.Bidirectional(layers.LSTM(4)), layers.Dense(1, activation="sigmoid")])
        x = rng.integers(1, 20, size=(5, 7))
        x[0, 3:] = 0
    ours.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in ours.get_weights()])
    km = interop.to_keras(ours)
    assert isinstance(km, keras.Sequential)
    want = ours.predict(x)
    np.testing.assert_allclose(km.predict(x, verbose=0), want, atol=ATOL)
    back = interop.from_keras(km)
    np.testing.assert_allclose(back.predict(x), want, atol=ATOL)
    assert [type(lay).__name__ for lay in back.layers][1:] == [type(lay).__name__ for lay in ours.layers
                                                               if type(lay).__name__ != "InputLayer"]


def test_to_keras_keeps_stateful_with_its_batch_size():
    from fastrnn.models import Sequential

    rng = np.random.default_rng(36)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    ours = Sequential([layers.Input((5, 3)), layers.LSTM(4, stateful=True), layers.Dense(2)])
    with pytest.raises(ValueError, match="stateful.*batch_size"):
        interop.to_keras(ours)  # no carried state yet: the batch size is unknown
    km = interop.to_keras(ours, batch_size=2)
    assert km.layers[0].stateful
    for _ in range(2):  # both start from zeros and carry their state to the next call
        np.testing.assert_allclose(km.predict(x, verbose=0), ours.predict(x), atol=ATOL)
    km2 = interop.to_keras(ours.layers[1])  # now its carried state gives the batch size
    assert km2.stateful and interop.from_keras(km2).stateful


def test_keras_attention_seq2seq_pattern_as_a_fastrnn_model():
    """The usual Keras tutorial model (encoder LSTM -> decoder LSTM from its states -> Attention over
    [decoder outputs, encoder outputs] -> Concatenate -> Dense softmax) written as a two-input
    fastrnn Model from the Keras layers' weights gives Keras's predictions and its input gradients."""
    import tensorflow as tf

    from fastrnn.models import Model

    K = keras.layers
    B, TX, TY, F, H, V = 3, 6, 4, 5, 7, 9
    ei, di = keras.Input((TX, F)), keras.Input((TY, F))
    enc = K.LSTM(H, return_sequences=True, return_state=True)
    dec = K.LSTM(H, return_sequences=True)
    dense = K.Dense(V, activation="softmax")
    e_out, h, c = enc(ei)
    d_out = dec(di, initial_state=[h, c])
    ctx = K.Attention()([d_out, e_out])
    km = keras.Model([ei, di], dense(K.Concatenate()([ctx, d_out])))
    for lay in (enc, dec, dense):
        _randomize(lay, 11)

    class AttnSeq2Seq(Model):
        def __init__(self):
            super().__init__()
            self.enc, self.dec, self.head = interop.from_keras(enc), interop.from_keras(dec), interop.from_keras(dense)
            self.attn, self.cat = layers.LuongAttention("dot"), layers.Concatenate()

        def forward(self, x, training=False, mask=None):
            e_out, h, c = self.enc(x[0], training=training)
            d_out = self.dec(x[1], training=training, initial_state=[h, c])
            ctx, _ = self.attn([d_out, e_out], training=training)
            return self.head(self.cat([ctx, d_out], training=training), training=training)

        def backward(self, dy):
            dctx, dd_out = self.cat.backward(self.head.backward(dy))
            dq, de_out = self.attn.backward(dctx)
            dxd = self.dec.backward(dd_out + dq)
            dxe = self.enc.backward([de_out] + list(self.dec.initial_state_grads))
            return [dxe, dxd]

    rng = np.random.default_rng(37)
    xe = rng.standard_normal((B, TX, F)).astype(np.float32)
    xd = rng.standard_normal((B, TY, F)).astype(np.float32)
    ours = AttnSeq2Seq()
    np.testing.assert_allclose(ours.predict([xe, xd]), km.predict([xe, xd], verbose=0), atol=ATOL)
    dy = rng.standard_normal((B, TY, V)).astype(np.float32)
    te, td = tf.constant(xe), tf.constant(xd)
    with tf.GradientTape() as tape:
        tape.watch([te, td])
        out = tf.reduce_sum(km([te, td]) * dy)
    ge, gd = tape.gradient(out, [te, td])
    ours([xe, xd], training=True)
    dxe, dxd = ours.backward(dy)
    np.testing.assert_allclose(dxe, ge.numpy(), atol=1e-4)
    np.testing.assert_allclose(dxd, gd.numpy(), atol=1e-4)
